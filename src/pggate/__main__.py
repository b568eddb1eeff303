"""``python -m pggate``: the same as the ``pggate`` command."""

import sys

from pggate.cli import main

sys.exit(main())
