"""Dedicated timer processes for :mod:`aiotimer.kamailio`: reservations and forks.

Kamailio reserves processes in ``mod_init`` (``register_basic_timers(n)``) and forks them in
``child_init`` (``fork_basic_timer(...)``), refusing a fork beyond the reservation. Here each
fork declares a one-worker :class:`~aiotimer.process.TimerProcess` running one timer, attached
to the current scheduler (it starts and stops with it); the reservation is counted per
scheduler.

The counts live in a module-level dict keyed by the scheduler (a ``Scheduler`` has slots and no
weak references). An entry is made only by ``register_*_timers`` and forks: a handful per
program.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, final

from ._registrar import PolicyOptions
from ._scheduler import Scheduler
from ._spec import Unit
from .process import TimerProcess
from .process._spec import check_importable, check_picklable

__all__ = ["ProcessId", "fork", "reserve"]


@final
class ProcessId(int):
    """What the ``fork_*`` functions return: an ``int >= 0`` (the fork's number on its
    scheduler; Kamailio returns the child's pid, which here is known only once the scheduler
    has started the process) carrying the :class:`~aiotimer.process.TimerProcess` as
    :attr:`process` (its ``workers[0].pid``, ``stats()``...)."""

    process: TimerProcess

    def __new__(cls, value: int, process: TimerProcess) -> ProcessId:
        self = super().__new__(cls, value)
        self.process = process
        return self

    def __repr__(self) -> str:
        return f"ProcessId({int(self)}, {self.process!r})"


@dataclass
class _Reservation:
    reserved: int = 0
    forked: list[str] = field(default_factory=list)  # the descs, in fork order


_reservations: dict[Scheduler, _Reservation] = {}


def reservation(scheduler: Scheduler) -> _Reservation:
    found = _reservations.get(scheduler)
    if found is None:
        found = _reservations[scheduler] = _Reservation()
    return found


def reserve(where: str, scheduler: Scheduler, n: object) -> int:
    """Add ``n`` processes to ``scheduler``'s reservation; returns 0 (Kamailio's success)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{where}: the number of timers must be an int, got {n!r}")
    if n < 0:
        raise ValueError(f"{where}: the number of timers must be >= 0, got {n}")
    reservation(scheduler).reserved += n
    return 0


def fork(
    where: str,
    scheduler: Scheduler,
    child_id: object,
    desc: object,
    make_sock: object,
    f: Callable[..., Any],
    param: Any,
    callback: Callable[..., Any],
    interval: int,
    unit: Unit,
    basic: bool,
    inline: bool,
    options: PolicyOptions,
) -> ProcessId:
    """Declare and attach the one-timer process of a ``fork_*`` call; checks everything first.

    :param callback: what the worker runs (the façade's adapter around ``f``)
    :param inline: run the worker on the scheduler's loop and clock (tests)
    """
    if isinstance(child_id, bool) or not isinstance(child_id, int):
        raise TypeError(f"{where}: child_id must be an int (e.g. PROC_TIMER), got {child_id!r}")
    if not isinstance(desc, str) or not desc:
        raise TypeError(f"{where}: desc (the process name) must be a non-empty str, got {desc!r}")
    if not isinstance(make_sock, int):
        raise TypeError(f"{where}({desc!r}): make_sock must be an int or bool, got {make_sock!r}")
    label = f"{where}({desc!r})"
    check_importable(label, "f", f, strict=False)
    check_picklable(label, "param", param)
    booked = reservation(scheduler)
    if len(booked.forked) >= booked.reserved:
        already = f" ({', '.join(map(repr, booked.forked))})" if booked.forked else ""
        raise RuntimeError(
            f"{label}: {booked.reserved} timer process(es) reserved on scheduler "
            f"{scheduler.name!r} and {len(booked.forked)} already forked{already}; call "
            f"register_basic_timers({len(booked.forked) + 1}) (or more) before forking"
        )
    proc = TimerProcess(desc, inline=inline)
    if basic:
        add = proc.add_basic_s if unit is Unit.S else proc.add_basic_ms
    else:
        add = proc.add_every_s if unit is Unit.S else proc.add_every_ms
    add(interval, callback, **options)
    scheduler.add_process(proc)
    booked.forked.append(desc)
    return ProcessId(len(booked.forked) - 1, proc)
