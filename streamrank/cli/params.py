"""Option helpers every stage's commands share: ``--set KEY=VALUE`` parsing, JSON output, data defaults."""

from __future__ import annotations

import json

import click

from common.paths import shared_data

#: The real public data folder (``../shared/data`` or ``$STREAMRANK_DATA``).
DEFAULT_DATA = shared_data()


def parse_sets(pairs: tuple[str, ...] | list[str]) -> dict:
    """``--set KEY=VALUE`` pairs as a dict; a value is JSON when it parses as JSON, else the string."""
    out: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--set")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def echo_json(doc) -> None:
    """Print ``doc`` as indented JSON (anything not JSON-native via ``str``)."""
    click.echo(json.dumps(doc, indent=2, default=str))
