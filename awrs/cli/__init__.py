"""The ``awrs`` command line (``awrs = "awrs.cli:main"``; also ``python -m awrs.cli``).

- :mod:`~awrs.cli.commands`: the parser and every subcommand but the two below;
- :mod:`~awrs.cli.options`: options and error handling shared with ``awrs eval`` and ``awrs serve``
  (whose own options live in :mod:`awrs.evaluation.cli` and :mod:`awrs.server.cli`);
- :mod:`~awrs.cli.doctor`: ``awrs doctor``, what this machine can run.
"""

from .commands import build_parser, constraint_from_args, format_result, main

__all__ = ["build_parser", "constraint_from_args", "format_result", "main"]
