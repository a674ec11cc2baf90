"""``python -m aiotimer``: the ``aiotimer`` command."""

import sys

from .cli import main

sys.exit(main())
