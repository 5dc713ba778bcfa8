"""Logging of the long-running commands (common/logs.py): progress visible at INFO, third-party
INFO hidden at the default level, no ANSI codes off a terminal."""

from __future__ import annotations

import io
import logging
import logging.config

import pytest

from common.logs import PROGRESS, format_metrics, progress_level, worker_logging_config


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, PROGRESS.level, logging.getLogger("aiokafka").level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    PROGRESS.setLevel(saved[2])
    logging.getLogger("aiokafka").setLevel(saved[3])


def test_at_the_default_level_progress_shows_and_third_party_info_does_not(restore_logging):
    out = io.StringIO()
    logging.config.dictConfig(worker_logging_config("warning", stream=out))
    PROGRESS.info("ldro: applied %d", 48)
    logging.getLogger("aiokafka").info("Discovered coordinator")
    logging.getLogger("faust").warning("a real warning")
    text = out.getvalue()
    assert "INFO streamrank.progress: ldro: applied 48" in text
    assert "Discovered coordinator" not in text and "WARNING faust: a real warning" in text
    assert "\x1b[" not in text  # a log file gets no colour codes


def test_a_terminal_gets_colours_and_quiet_levels_silence_progress(restore_logging):
    tty = Terminal()
    logging.config.dictConfig(worker_logging_config("info", stream=tty))
    logging.getLogger("some.library").info("visible at info")
    assert "\x1b[" in tty.getvalue() and "visible at info" in tty.getvalue()
    out = io.StringIO()
    logging.config.dictConfig(worker_logging_config("error", stream=out))
    PROGRESS.info("hidden")
    assert out.getvalue() == ""
    assert [progress_level(x) for x in ("debug", "info", "warning", "error", "critical")] == \
        ["DEBUG", "INFO", "INFO", "ERROR", "CRITICAL"]


def test_metrics_are_printed_with_their_names_and_non_numbers_left_out():
    assert format_metrics({"pg_loss": -0.0739812, "examples": 16, "ok": True, "note": "x"}) == \
        "examples=16 pg_loss=-0.07398"
    assert format_metrics({}) == "-"


def test_understood_third_party_warnings_are_quiet_in_workers_and_in_basic_config(restore_logging):
    import logging.config

    from common.logs import UNDERSTOOD_NOISE, quiet_understood_noise, worker_logging_config

    logging.config.dictConfig(worker_logging_config("warning", stream=io.StringIO()))
    for name in ("kafka.net.selector", "mode.timers"):
        assert logging.getLogger(name).getEffectiveLevel() == logging.ERROR
    assert logging.getLogger("serving.watcher").getEffectiveLevel() == logging.WARNING  # only those are quieted
    for name in UNDERSTOOD_NOISE:
        logging.getLogger(name).setLevel(logging.NOTSET)
    quiet_understood_noise()
    assert all(logging.getLogger(name).level == logging.ERROR for name in UNDERSTOOD_NOISE)
