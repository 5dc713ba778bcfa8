# The two commands of the README: `make demo` (main job, end to end) and `make test`.
.PHONY: setup demo test mutation bench clean

setup:
	@scripts/setup.sh

demo:
	@scripts/setup.sh
	.venv/bin/streamrank demo

test:
	@scripts/setup.sh --test
	.venv/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Mutation testing of the core modules (not part of `make test`): out/mutation/summary.json + report.md.
# ONLY=path/to/core.py mutates one module.
mutation:
	@scripts/setup.sh --test
	.venv/bin/python scripts/mutation.py $(if $(ONLY),--only $(ONLY))

clean:
	-.venv/bin/streamrank down --purge
	rm -rf .streamrank out
