"""The one root of streamrank's own exceptions (after ``faust/exceptions.py`` and ``feast/errors.py``).

Every error class the project defines derives from :class:`StreamrankError`, so a caller can
catch the project's errors as one type and still catch the builtin it also is (most are a
``ValueError`` too: bad input, a config that does not fit, a refused snapshot).
"""

from __future__ import annotations


class StreamrankError(Exception):
    """Root of every exception streamrank raises on purpose."""


class ConfigError(StreamrankError, ValueError):
    """A setting (environment variable, ``--set`` value, config file) that cannot be used."""
