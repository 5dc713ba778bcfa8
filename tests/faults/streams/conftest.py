"""Make the streams test helpers (tests/integration/streams/streams_expect.py) importable here."""

import sys
from pathlib import Path

_HELPERS = Path(__file__).resolve().parents[2] / "integration" / "streams"
if str(_HELPERS) not in sys.path:
    sys.path.insert(0, str(_HELPERS))
