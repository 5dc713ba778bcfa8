"""The ``streamrank`` command line (:mod:`streamrank.cli`): a thin layer over the packages, imported by none of them."""
