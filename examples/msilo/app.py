"""The example as an app module: ``aiotimer run examples.msilo.app`` (from the repository root).

The database is ``$MSILO_DB`` if set, else an in-memory one.
"""

from __future__ import annotations

import os

from .demo import build

demo = build(os.environ.get("MSILO_DB", ":memory:"))
scheduler = demo.scheduler
