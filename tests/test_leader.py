"""The single-host leader lock: one process runs the guarded timers; another takes over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import aiotimer
from aiotimer import Scheduler, Tick, TimerState
from aiotimer.leader import LeaderLock
from aiotimer.testing import VirtualClock

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fcntl.flock is Unix only")


def pair(
    clock: VirtualClock, lock_file: Path, runs: list[str], **lock_options: object
) -> tuple[Scheduler, LeaderLock, Scheduler, LeaderLock]:
    """Two schedulers (two would-be processes), each with a 100 ms timer "job", sharing one
    lock file: flock locks belong to the open file, so two opens in one process exclude each
    other as two processes do."""
    a = Scheduler(clock=clock, name="a")
    b = Scheduler(clock=clock, name="b")
    a.add_every_ms(100, lambda: runs.append("a"), name="job")
    b.add_every_ms(100, lambda: runs.append("b"), name="job")
    lock_a = LeaderLock(lock_file, **lock_options)  # type: ignore[arg-type]
    lock_b = LeaderLock(lock_file, **lock_options)  # type: ignore[arg-type]
    a.add_service(lock_a)
    b.add_service(lock_b)
    return a, lock_a, b, lock_b


@pytest.mark.anyio
async def test_the_first_to_lock_runs_the_guarded_timer_the_other_does_not(
    virtual_clock: VirtualClock, tmp_path: Path
) -> None:
    runs: list[str] = []
    a, lock_a, b, lock_b = pair(virtual_clock, tmp_path / "t.lock", runs)
    async with a, b:
        await virtual_clock.advance(1.0)
        assert (lock_a.is_leader, lock_b.is_leader) == (True, False)
        assert runs == ["a"] * 10
        assert b.get_timer("job").state is TimerState.PAUSED
    assert (tmp_path / "t.lock").read_text() == f"{os.getpid()}\n"


@pytest.mark.anyio
async def test_a_follower_takes_over_within_one_interval_when_the_leader_stops(
    virtual_clock: VirtualClock, tmp_path: Path
) -> None:
    # interval 100 ms; b retries every 100 ms (its shortest guarded interval)
    # t (ms):  0 ... 1000 | a stops  ... 1100 | b leads ... 1200: b's first run
    runs: list[str] = []
    a, _, b, lock_b = pair(virtual_clock, tmp_path / "t.lock", runs)
    async with a, b:  # a locks first
        await virtual_clock.advance(1.0)
        await a.stop()
        assert not lock_b.is_leader
        await virtual_clock.advance(0.1)
        assert lock_b.is_leader
        assert b.get_timer("job").state is TimerState.ACTIVE
        runs.clear()
        await virtual_clock.advance(0.1)
        assert runs == ["b"]
        await virtual_clock.advance(0.5)
        assert runs == ["b"] * 6
    assert lock_b.leaderships == 1


@pytest.mark.anyio
async def test_the_lock_is_released_only_after_the_leader_drained_its_runs(
    virtual_clock: VirtualClock, tmp_path: Path
) -> None:
    # a's run of "slow" starts at 1.0 s and takes 0.3 s; a is told to stop at 1.1 s.
    # b retries every 50 ms but may lead only once a's run ended (1.3 s).
    async def slow() -> None:
        await virtual_clock.sleep(0.3)

    lock_file = tmp_path / "t.lock"
    a = Scheduler(clock=virtual_clock, name="a")
    b = Scheduler(clock=virtual_clock, name="b")
    for s in (a, b):
        s.add_every_s(1, slow, name="slow")
        s.add_service(LeaderLock(lock_file, retry_s=0.05))
    lock_b = b.services["leader"]
    assert isinstance(lock_b, LeaderLock)
    async with a, b, anyio.create_task_group() as tg:  # a locks first
        await virtual_clock.advance(1.1)
        assert a.get_timer("slow").running == 1
        tg.start_soon(a.stop)
        await virtual_clock.advance(0.15)
        assert not lock_b.is_leader  # a still drains
        await virtual_clock.advance(0.1)
        assert not a.running
        assert lock_b.is_leader


@pytest.mark.anyio
async def test_only_the_named_timers_are_guarded(
    virtual_clock: VirtualClock, tmp_path: Path
) -> None:
    runs: list[str] = []
    a, _, b, lock_b = pair(virtual_clock, tmp_path / "t.lock", runs, timers=["job"])
    a.add_every_ms(250, lambda: runs.append("a-local"), name="local")
    b.add_every_ms(250, lambda: runs.append("b-local"), name="local")
    async with a, b:
        await virtual_clock.advance(0.5)
    assert sorted(set(runs)) == ["a", "a-local", "b-local"]
    assert lock_b.stats().guarded == ("job",)


@pytest.mark.anyio
async def test_a_timer_the_user_paused_stays_paused_through_takeover_and_stop(
    virtual_clock: VirtualClock, tmp_path: Path
) -> None:
    runs: list[str] = []
    a, _, b, lock_b = pair(virtual_clock, tmp_path / "t.lock", runs)
    parked = b.add_every_ms(100, lambda: runs.append("parked"), name="parked")
    parked.pause()
    async with a, b:  # a locks first
        await a.stop()
        await virtual_clock.advance(0.5)
        assert lock_b.is_leader
        assert parked.state is TimerState.PAUSED
        assert "parked" not in runs
    assert parked.state is TimerState.PAUSED
    assert b.get_timer("job").state is TimerState.PENDING  # re-armed by the next start


@pytest.mark.anyio
async def test_a_follower_hands_back_the_paused_state_when_it_stops(
    virtual_clock: VirtualClock, tmp_path: Path
) -> None:
    runs: list[str] = []
    a, _, b, _ = pair(virtual_clock, tmp_path / "t.lock", runs)
    async with a:
        await b.start()
        assert b.get_timer("job").state is TimerState.PAUSED
        await b.stop()
        assert b.get_timer("job").state is TimerState.PENDING


@pytest.mark.anyio
async def test_the_default_retry_is_capped_at_one_second(
    virtual_clock: VirtualClock, tmp_path: Path
) -> None:
    lock_file = tmp_path / "t.lock"
    a = Scheduler(clock=virtual_clock, name="a")
    b = Scheduler(clock=virtual_clock, name="b")
    for s in (a, b):
        s.add_every_s(60, lambda: None, name="hourly-ish")
        s.add_service(LeaderLock(lock_file))
    lock_b = b.services["leader"]
    assert isinstance(lock_b, LeaderLock)
    async with a, b:  # a locks first
        await a.stop()
        await virtual_clock.advance(0.99)
        assert not lock_b.is_leader
        await virtual_clock.advance(0.01)
        assert lock_b.is_leader


@pytest.mark.anyio
async def test_stats_show_the_role_and_reach_the_scheduler_stats(
    virtual_clock: VirtualClock, tmp_path: Path
) -> None:
    def job(tick: Tick) -> None:
        pass

    s = Scheduler(clock=virtual_clock)
    s.add_every_s(1, job, name="job")
    s.add_service(LeaderLock(tmp_path / "t.lock", name="host-leader"))
    async with s:
        assert s.stats().services["host-leader"].as_dict() == {
            "lock_file": str(tmp_path / "t.lock"),
            "is_leader": True,
            "pid": os.getpid(),
            "guarded": ["job"],
            "leaderships": 1,
        }


# -- misuse --------------------------------------------------------------------------------


def start_failure(exc: BaseException) -> BaseException:
    """The service's error that failed ``start()``: the core re-raises it inside the task
    group's ExceptionGroup (unwrapping it there is proposed to the core)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@pytest.mark.anyio
async def test_an_unknown_timer_name_fails_start_naming_it(
    virtual_clock: VirtualClock, tmp_path: Path
) -> None:
    s = Scheduler(clock=virtual_clock, name="svc")
    s.add_service(LeaderLock(tmp_path / "t.lock", timers=["nope"]))
    with pytest.raises(Exception) as info:  # noqa: PT011 (checked by start_failure)
        await s.start()
    error = start_failure(info.value)
    assert isinstance(error, ValueError)
    assert "scheduler 'svc' has no timer 'nope' to guard" in str(error)
    assert not s.running


@pytest.mark.anyio
async def test_a_lock_file_in_a_missing_directory_fails_start_naming_it(
    virtual_clock: VirtualClock, tmp_path: Path
) -> None:
    path = tmp_path / "missing" / "t.lock"
    s = Scheduler(clock=virtual_clock)
    s.add_service(LeaderLock(path))
    with pytest.raises(Exception) as info:  # noqa: PT011 (checked by start_failure)
        await s.start()
    error = start_failure(info.value)
    assert isinstance(error, FileNotFoundError)
    assert "cannot open lock file" in str(error)
    assert error.filename == str(path)


@pytest.mark.anyio
async def test_one_lock_cannot_serve_two_running_schedulers(
    virtual_clock: VirtualClock, tmp_path: Path
) -> None:
    lock = LeaderLock(tmp_path / "t.lock")
    a = Scheduler(clock=virtual_clock, name="a")
    b = Scheduler(clock=virtual_clock, name="b")
    a.add_service(lock)
    b.add_service(lock)
    async with a:
        with pytest.raises(Exception) as info:  # noqa: PT011 (checked by start_failure)
            await b.start()
        error = start_failure(info.value)
        assert isinstance(error, RuntimeError)
        assert "already serves a scheduler" in str(error)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"timers": []}, ValueError, "timers is empty"),
        ({"timers": "job"}, TypeError, r"got the str 'job'; write timers=\['job'\]"),
        ({"timers": [3]}, TypeError, "timers must be names or Timer handles, got 3"),
        ({"retry_s": 0}, ValueError, "retry_s must be a finite number > 0, got 0"),
        ({"retry_s": float("nan")}, ValueError, "retry_s must be a finite number > 0, got nan"),
    ],
)
def test_bad_options_are_refused_when_built(
    tmp_path: Path, options: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        LeaderLock(tmp_path / "t.lock", **options)  # type: ignore[arg-type]


def test_a_path_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(TypeError, match="path must be a str or PathLike, got 3"):
        LeaderLock(3)  # type: ignore[arg-type]


# -- real processes ------------------------------------------------------------------------

WORKER = """
import asyncio, logging, os, sys, time

import aiotimer
from aiotimer.leader import LeaderLock

lock_file, log_file, interval_ms = sys.argv[1], sys.argv[2], int(sys.argv[3])
logging.basicConfig(
    filename=log_file, level=logging.INFO, format="log %(process)d %(created).6f %(message)s"
)


def job() -> None:
    with open(log_file, "a") as log:
        log.write(f"run {os.getpid()} {time.time():.6f}\\n")


async def main() -> None:
    scheduler = aiotimer.Scheduler()
    scheduler.add_every_ms(interval_ms, job, name="job")
    scheduler.add_service(LeaderLock(lock_file))
    async with scheduler:
        await asyncio.Event().wait()


asyncio.run(main())
"""
INTERVAL_S = 0.2
SLACK_S = 0.8  # process scheduling on a loaded machine; the mechanism is tested exactly above


def events(log_file: Path, kind: str) -> list[tuple[int, float]]:
    """``(pid, time)`` of the ``run`` lines, or of the ``leads`` / ``follows`` log lines."""
    found = []
    for line in log_file.read_text().splitlines():
        parts = line.split()
        if parts[0] == kind or (parts[0] == "log" and parts[5] == kind):
            found.append((int(parts[1]), float(parts[2])))
    return found


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


@pytest.mark.slow
def test_three_processes_one_runner_and_failover_after_sigkill(tmp_path: Path) -> None:
    lock_file, log_file, script = tmp_path / "t.lock", tmp_path / "events.log", tmp_path / "w.py"
    log_file.touch()
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(Path(aiotimer.__file__).parent.parent)}
    interval_ms = str(round(INTERVAL_S * 1000))
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(lock_file), str(log_file), interval_ms], env=env
        )
        for _ in range(3)
    ]
    try:
        wait_for(
            lambda: len(events(log_file, "leads")) + len(events(log_file, "follows")) == 3,
            30,
            "3 processes to start",
        )
        time.sleep(5 * INTERVAL_S)
        [(leader, _)] = events(log_file, "leads")
        assert {pid for pid, _ in events(log_file, "run")} == {leader}
        assert len(events(log_file, "run")) >= 3

        os.kill(leader, signal.SIGKILL)
        killed_at = time.time()
        next(p for p in procs if p.pid == leader).wait(10)
        wait_for(lambda: len(events(log_file, "leads")) == 2, 10, "a new leader")
        new_leader, led_at = events(log_file, "leads")[1]
        assert new_leader != leader
        assert led_at - killed_at < INTERVAL_S + SLACK_S

        time.sleep(5 * INTERVAL_S)
        after = [pid for pid, t in events(log_file, "run") if t > killed_at]
        assert set(after) == {new_leader}
        assert len(after) >= 3
        assert all(p.poll() is None for p in procs if p.pid != leader)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
