"""``python -m awrs.cli``: the ``awrs`` command."""

import sys

from .commands import main

sys.exit(main())
