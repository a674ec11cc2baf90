"""The example put together: a scheduler running msilo's cleaner and the traffic producer.

``aiotimer demo`` runs :func:`build`'s scheduler; so can ``aiotimer run examples.msilo.app``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import aiotimer
from aiotimer import kamailio

from .module import Msilo
from .producer import Producer
from .store import MessageStore

__all__ = ["Demo", "build"]


@dataclass(frozen=True, slots=True)
class Demo:
    """A built example: run ``scheduler``; the other fields are there to look at."""

    scheduler: aiotimer.Scheduler
    store: MessageStore
    msilo: Msilo
    producer: Producer

    def summary(self) -> str:
        """One line: what was stored, delivered, cleaned, and what is left."""
        p, timer = self.producer, self.scheduler.timers.get("msilo.m_clean_silo")
        cleans = timer.runs if timer is not None else 0
        return (
            f"msilo: {p.stored} message(s) stored, {p.delivered} delivered, {p.failed} failed; "
            f"m_clean_silo ran {cleans} time(s); {len(self.store)} left in {self.store.path}"
        )

    def close(self) -> None:
        self.store.close()


def build(
    db: str = ":memory:",
    *,
    check_time: int = 1,
    clean_period: int = 3,
    produce_every_ms: int = 200,
    expires_s: tuple[int, int] = (2, 6),
    seed: int | None = None,
    clock: aiotimer.Clock | None = None,
    now: Callable[[], float] = time.time,
) -> Demo:
    """A scheduler with msilo registered on it as its ``mod_init`` would (``register_timer``).

    :param db: SQLite file, or ``":memory:"``
    :param check_time: seconds between two cleans (msilo's default is 60; 1 for a demo)
    :param clean_period: purge expired messages every this many cleans
    :param produce_every_ms: a new message (and maybe a delivery) this often
    :param clock: the scheduler's clock (a virtual one in tests)
    :param now: the store's wall clock (Unix seconds), for message expiry
    """
    scheduler = aiotimer.Scheduler(name="msilo", clock=clock)
    store = MessageStore(db, now=now)
    msilo = Msilo(store, check_time=check_time, clean_period=clean_period)
    producer = Producer(store, msilo.ml, seed=seed, expires_s=expires_s)
    with kamailio.use_scheduler(scheduler):
        msilo.mod_init()
        producer.register(produce_every_ms)
    return Demo(scheduler, store, msilo, producer)
