"""The ``streamrank`` command: one module per stage, each a set of module-level click commands.

:mod:`streamrank.cli.main` holds the root group and adds every stage's commands; the shared
option helpers are in :mod:`streamrank.cli.params`. No package imports this one.
"""
