"""Logging of the long-running commands: plain text unless stderr is a terminal, progress at INFO.

Faust's worker (mode) logs through ``colorlog`` with ANSI colour codes whatever its output is,
so a worker's log file was full of escape codes. :func:`worker_logging_config` is the
``logging.config.dictConfig`` document the project's Faust workers pass instead: one stderr
handler, colours only on a terminal, the root (and so every third-party logger) at
``--log-level``, and :data:`PROGRESS` (``streamrank.progress``) at INFO whatever that level
(except ``error``/``critical``, which ask for quiet): progress lines with real figures are what
an operator reads, the third-party INFO chatter is not.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

#: The logger of start lines and periodic progress lines of every long-running command.
PROGRESS = logging.getLogger("streamrank.progress")

LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Third-party warnings that are understood and leave an operator nothing to act on (issue 23), at ERROR:
#:
#: * ``kafka.net.selector``: kafka-python 3.0's I/O thread warns "It is blocking the event loop" when
#:   one of its own tasks ran over 0.1 s of wall time. In the server and the learners that is its
#:   thread waiting for the GIL behind torch or a request handler (seen at 0.11-0.83 s on the 2 busy
#:   cores of the README's by-hand loop), not a sync call in our code; what it would cost (a send not
#:   acknowledged) is counted by our own metrics (impressions unacknowledged in /healthz).
#: * ``mode.timers``: "Timer learn-ldro-tick is overlapping": the learner's tick did a learning step
#:   longer than the tick's interval (0.55-1.0 s against 0.5 s under load); the next tick starts at
#:   once, and the step times are in the progress line and status.json.
UNDERSTOOD_NOISE: dict[str, str] = {"kafka.net.selector": "ERROR", "mode.timers": "ERROR"}
QUIET_LEVELS = ("ERROR", "CRITICAL")


def progress_level(loglevel: str) -> str:
    """The level of :data:`PROGRESS` for ``--log-level loglevel``: INFO unless quiet was asked for."""
    level = loglevel.upper()
    return level if level in (*QUIET_LEVELS, "DEBUG") else "INFO"


def worker_logging_config(loglevel: str, stream: Any = None) -> dict[str, Any]:
    """The dictConfig for a Faust worker at ``--log-level loglevel`` (module docstring)."""
    stream = stream if stream is not None else sys.stderr
    tty = bool(getattr(stream, "isatty", lambda: False)())
    formatter = ({"()": "colorlog.ColoredFormatter", "fmt": "%(log_color)s" + LINE_FORMAT} if tty
                 else {"format": LINE_FORMAT})
    level = loglevel.upper()
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"default": formatter},
            # the handler passes everything; the loggers' levels decide
            "handlers": {"default": {"class": "logging.StreamHandler", "stream": stream, "formatter": "default"}},
            "root": {"level": level, "handlers": ["default"]},
            "loggers": {PROGRESS.name: {"level": progress_level(loglevel)}, "faust": {"level": level},
                        **{name: {"level": quiet} for name, quiet in UNDERSTOOD_NOISE.items()}}}


def quiet_understood_noise() -> None:
    """Set :data:`UNDERSTOOD_NOISE`'s loggers to their levels (for processes that use basicConfig)."""
    for name, level in UNDERSTOOD_NOISE.items():
        logging.getLogger(name).setLevel(level)


def format_metrics(metrics: dict[str, Any]) -> str:
    """``name=value`` pairs of the numeric metrics (4 significant digits), or ``-`` when there are none."""
    pairs = [f"{k}={v:.4g}" for k, v in sorted(metrics.items())
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return " ".join(pairs) or "-"


def plain_worker(app: Any, loglevel: str, worker_class: Any = None) -> Any:
    """A Faust worker for ``app`` logging with :func:`worker_logging_config` and no terminal spinner.

    Faust's spinner writes cursor escape codes even to a file, and while it is on, the worker
    sets the first root handler to ``loglevel``, which would drop the INFO progress lines."""
    import warnings  # noqa: PLC0415

    import faust  # noqa: PLC0415 - slow to import; only the workers need it

    # understood third-party noise that mode would log as WARNING through its stdout redirect:
    # kafka-python 3.0 loads its protocol schemas with importlib.resources' legacy read_text
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"kafka(\.|$)")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"importlib\.resources")

    worker = (worker_class or faust.Worker)(app, loglevel=loglevel, quiet=True,
                                            logging_config=worker_logging_config(loglevel))
    worker.spinner = None
    return worker
