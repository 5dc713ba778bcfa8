"""Makes ``serving_kit`` (tests/integration/serving) importable from the serving fault tests."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration" / "serving"))
