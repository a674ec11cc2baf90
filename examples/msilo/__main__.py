"""``python -m examples.msilo [--seconds N] [--db PATH]``: the same as ``aiotimer demo``."""

from __future__ import annotations

import sys

from aiotimer.cli import main

sys.exit(main(["demo", *sys.argv[1:]]))
