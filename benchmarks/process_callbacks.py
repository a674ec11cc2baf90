"""What the workers of ``benchmarks.process`` run, in a module of its own written as an
application's timers module is (aiotimer and its worker API, none of the benchmark's own
imports), so that a worker's start measures what aiotimer costs, not the benchmark."""

from __future__ import annotations

import os
import time
from typing import Any

import aiotimer
from aiotimer.process import send_to_parent


def first_tick(tick: aiotimer.Tick) -> None:
    """At the first run: the worker's pid and the time, to the parent."""
    if tick.timer.runs == 1:
        send_to_parent(("first", os.getpid(), time.monotonic_ns()))


def echo(obj: Any) -> None:
    """Parent message handler: send it back."""
    send_to_parent(obj)
