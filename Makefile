# The two commands of the README: `make demo` (main job, end to end) and `make test`.
.PHONY: setup demo test bench clean

setup:
	@scripts/setup.sh

demo:
	@scripts/setup.sh
	.venv/bin/streamrank demo

test:
	@scripts/setup.sh --test
	.venv/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

clean:
	-.venv/bin/streamrank down
	rm -rf .streamrank out
