"""``python -m awrs.server``: the same as ``awrs serve``."""

from __future__ import annotations

import argparse
import sys

from ..errors import AwrsError
from .cli import add_serve_arguments, run_serve


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m awrs.server",
                                     description="Serve an OpenAI-compatible API with constrained outputs.")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_serve(args)
    except AwrsError as err:
        print(f"awrs: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
