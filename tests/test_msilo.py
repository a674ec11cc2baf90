"""The msilo example (examples/msilo): m_clean_silo on virtual time, table checked after each clean.

check_time 60 s, clean_period 3: a clean every 60 s, a purge of expired messages when
``ticks % 180 < 60``::

    t (s):    0         60          120         180
    clean:              delivered   delivered   delivered + expired
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import aiotimer
from aiotimer import kamailio
from aiotimer.testing import VirtualClock
from examples.msilo import MessageStore, Msilo, build
from examples.msilo.process import fork_cleaner
from examples.msilo.store import MS_MSG_DONE, MS_MSG_ERRO, MS_MSG_SENT, MS_MSG_TSND

WALL0 = 1_700_000_000  # the wall clock (Unix seconds) at virtual time 0


def wall(clock: VirtualClock) -> Callable[[], float]:
    return lambda: WALL0 + clock.now_ns() / 1e9


@pytest.fixture
def store(virtual_clock: VirtualClock) -> MessageStore:
    return MessageStore(now=wall(virtual_clock))


@pytest.fixture
def scheduler(virtual_clock: VirtualClock) -> aiotimer.Scheduler:
    return aiotimer.Scheduler(clock=virtual_clock)


def register(scheduler: aiotimer.Scheduler, msilo: Msilo) -> kamailio.TimerId:
    with kamailio.use_scheduler(scheduler):
        return msilo.mod_init()


def msg(store: MessageStore, expires_s: int, *, snd_time: int = 0) -> int:
    return store.store("sip:a@x", "sip:b@x", "hi", expires_s=expires_s, snd_time=snd_time)


@pytest.mark.anyio
async def test_each_clean_deletes_delivered_messages_and_every_third_purges_expired_ones(
    virtual_clock: VirtualClock, store: MessageStore, scheduler: aiotimer.Scheduler
) -> None:
    msilo = Msilo(store, check_time=60, clean_period=3)
    register(scheduler, msilo)
    m1 = msg(store, 100)  # expires at 100 s
    m2 = msg(store, 1000)  # delivered before the first clean
    m3 = msg(store, 150, snd_time=WALL0 + 30)  # a reminder whose sending failed
    m4 = msg(store, 10_000)
    m5 = msg(store, 10_000)  # still being sent at the first clean, delivered by the second
    msilo.ml.set_flag(m2, MS_MSG_SENT | MS_MSG_DONE)
    msilo.ml.set_flag(m3, MS_MSG_SENT | MS_MSG_TSND | MS_MSG_ERRO)
    msilo.ml.set_flag(m5, MS_MSG_SENT)
    async with scheduler:
        await virtual_clock.advance(60)
        assert msilo.last is not None
        assert (msilo.last.ticks, msilo.last.delivered, msilo.last.expired) == (60, 1, None)
        assert store.ids() == [m1, m3, m4, m5]
        m3_row = store.get(m3)
        assert m3_row is not None
        assert m3_row.snd_time == 0  # the failed reminder's send time was reset

        msilo.ml.set_flag(m5, MS_MSG_DONE)
        await virtual_clock.advance(60)
        assert (msilo.last.ticks, msilo.last.delivered, msilo.last.expired) == (120, 1, None)
        assert store.ids() == [m1, m3, m4]  # m1 expired at 100 s, but 120 is no purge run

        await virtual_clock.advance(60)
        assert (msilo.last.ticks, msilo.last.delivered, msilo.last.expired) == (180, 0, 2)
        assert store.ids() == [m4]


@pytest.mark.anyio
async def test_delivered_messages_are_deleted_in_batches_of_max_del_keys(
    virtual_clock: VirtualClock, store: MessageStore, scheduler: aiotimer.Scheduler
) -> None:
    msilo = Msilo(store, check_time=1, clean_period=100, max_del_keys=2)
    register(scheduler, msilo)
    ids = [msg(store, 3600) for _ in range(6)]
    for mid in ids[:5]:
        msilo.ml.set_flag(mid, MS_MSG_SENT | MS_MSG_DONE)
    async with scheduler:
        await virtual_clock.advance(1)
    assert msilo.last is not None
    assert (msilo.last.delivered, msilo.last.batches) == (5, 3)
    assert store.ids() == ids[5:]


@pytest.mark.anyio
async def test_a_failed_message_stays_for_the_next_attempt(
    virtual_clock: VirtualClock, store: MessageStore, scheduler: aiotimer.Scheduler
) -> None:
    msilo = Msilo(store, check_time=1, clean_period=100)
    register(scheduler, msilo)
    mid = msg(store, 3600, snd_time=0)
    msilo.ml.set_flag(mid, MS_MSG_SENT | MS_MSG_ERRO)
    async with scheduler:
        await virtual_clock.advance(1)
    assert store.ids() == [mid]
    assert len(msilo.ml) == 0  # its delivery ended: out of the list


@pytest.mark.anyio
async def test_the_database_work_runs_in_a_worker_thread(
    virtual_clock: VirtualClock, scheduler: aiotimer.Scheduler
) -> None:
    threads: list[int] = []

    class Recording(MessageStore):
        def delete_expired(self) -> int:
            threads.append(threading.get_ident())
            return super().delete_expired()

    msilo = Msilo(Recording(now=wall(virtual_clock)), check_time=1, clean_period=1)
    tid = register(scheduler, msilo)
    assert tid.timer.spec.policy.thread
    async with scheduler:
        await virtual_clock.advance(3)
    assert len(threads) == 3
    assert threading.get_ident() not in threads


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"check_time": 0}, ValueError, r"check_time must be >= 1, got 0 \(Kamailio would"),
        ({"clean_period": 0}, ValueError, r"clean_period must be >= 1, got 0 \(Kamailio would"),
        ({"max_del_keys": 0}, ValueError, "max_del_keys must be >= 1, got 0$"),
        ({"check_time": "60"}, TypeError, "check_time must be an int, got '60'"),
    ],
)
def test_settings_below_1_are_refused(
    store: MessageStore, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=f"msilo: {match}"):
        Msilo(store, **kwargs)  # type: ignore[arg-type]


def test_a_store_on_a_file_keeps_its_messages(tmp_path: Path) -> None:
    path = str(tmp_path / "silo.db")
    store = MessageStore(path)
    mid = msg(store, 60)
    store.close()
    again = MessageStore(path)
    assert again.ids() == [mid]
    again.close()


@pytest.mark.anyio
async def test_the_demo_keeps_the_table_consistent(virtual_clock: VirtualClock) -> None:
    demo = build(seed=7, clock=virtual_clock, now=wall(virtual_clock))
    async with demo.scheduler:
        await virtual_clock.advance(10.5)
    p, msilo, store = demo.producer, demo.msilo, demo.store
    assert p.stored == 52  # every 200 ms for 10.5 s
    assert msilo.deleted > 0
    assert msilo.purged > 0
    # Every stored message is still there, or was deleted as delivered, or purged as expired.
    assert p.stored == len(store) + msilo.deleted + msilo.purged
    msilo.m_clean_silo(0, None)  # one more clean, with a purge (0 % 3 < 1)
    now = store.now()
    assert all(row.exp_time > now for row in store.rows())
    assert "52 message(s) stored" in demo.summary()
    demo.close()


@pytest.mark.anyio
async def test_the_dedicated_process_variant_purges_expired_messages(
    virtual_clock: VirtualClock, tmp_path: Path
) -> None:
    db = str(tmp_path / "silo.db")
    store = MessageStore(db)  # the real wall clock: expired at once, or in an hour
    expired, kept = msg(store, 0), msg(store, 3600)
    scheduler = aiotimer.Scheduler(clock=virtual_clock)
    with kamailio.use_scheduler(scheduler, inline_processes=True):
        kamailio.register_basic_timers(1)  # mod_init
        pid = fork_cleaner(db, 60)  # child_init
    assert pid.process.name == "MSILO CLEANER"
    async with scheduler:
        await virtual_clock.advance(59)
        assert store.ids() == [expired, kept]
        await virtual_clock.advance(1)
        assert store.ids() == [kept]
    store.close()


def test_the_cleaner_process_refuses_an_in_memory_database() -> None:
    with pytest.raises(ValueError, match="needs a database file; an in-memory database is"):
        fork_cleaner(":memory:", 60)
