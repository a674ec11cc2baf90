"""How workers start: the default context, the warm fork server, and spawn when asked.

The real-process tests are marked slow, like those of ``test_process_real``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import process_targets as pt
import pytest

import aiotimer
from aiotimer.process import TimerProcess, WorkerInfo, attach
from aiotimer.process._start import worker_modules

TESTS = Path(__file__).parent
linux_only = pytest.mark.skipif(
    sys.platform != "linux", reason="the fork server is the default on Linux only"
)


def on_error_hook(timer: aiotimer.Timer, exc: BaseException) -> None:
    """An ``on_error`` hook in this module (for the preload list)."""


# -- the default, and what can be asked -------------------------------------------------------


@linux_only
def test_the_default_context_on_linux_is_the_fork_server() -> None:
    assert TimerProcess("p").context == "forkserver"
    assert "forkserver" in repr(TimerProcess("p"))


def test_the_default_context_elsewhere_is_spawn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert TimerProcess("p").context == "spawn"


def test_the_default_context_without_a_fork_server_is_spawn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    assert TimerProcess("p").context == "spawn"


def test_asking_for_a_fork_server_where_there_is_none_names_the_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    with pytest.raises(ValueError, match="timer process 'p': context 'forkserver' is not avail"):
        TimerProcess("p", context="forkserver")


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_an_asked_context_is_kept(context: Any) -> None:
    assert TimerProcess("p", context=context).context == context


def test_the_server_preloads_the_worker_the_loop_and_the_modules_of_what_workers_run() -> None:
    proc = TimerProcess("p")
    proc.add_every_ms(10, functools.partial(pt.noop), on_error=on_error_hook)
    proc.on_parent_message(pt.echo_to_parent)
    modules = worker_modules(proc)
    assert modules[0] == "aiotimer.process._worker"
    assert "anyio._backends._asyncio" in modules
    assert "process_targets" in modules
    assert __name__ in modules
    assert ("uvloop" in modules) == (importlib.util.find_spec("uvloop") is not None)
    assert len(modules) == len(set(modules))


def test_a_process_without_uvloop_does_not_preload_it() -> None:
    assert "uvloop" not in worker_modules(TimerProcess("p", use_uvloop=False))


# -- real processes ---------------------------------------------------------------------------

FAST = {"heartbeat_s": 0.1, "heartbeat_timeout_s": 2.0, "stats_interval_s": 0.1}


@pytest.fixture
def anyio_backend() -> object:
    return "asyncio"


@pytest.fixture
def no_orphans() -> Iterator[None]:
    yield
    left = multiprocessing.active_children()
    for process in left:
        process.kill()
        process.join(5)
    assert not left, f"processes left running: {left}"


class Parents:
    """Collects ``process_targets.report_parent``'s reports: {worker pid: its parent's pid}."""

    def __init__(self) -> None:
        self.of: dict[int, int] = {}
        self._changed = anyio.Event()

    def __call__(self, info: WorkerInfo, obj: Any) -> None:
        if obj[0] == "parent":
            self.of[obj[2]] = obj[3]
            self._changed.set()
            self._changed = anyio.Event()

    async def of_worker(self, pid: int | None) -> int:
        with anyio.fail_after(10):
            while pid not in self.of:
                await self._changed.wait()
        return self.of[pid]  # type: ignore[index]

    async def of_another(self, old_pid: int) -> tuple[int, int]:
        """(pid, parent's pid) of the first worker that is not ``old_pid`` (its replacement)."""
        with anyio.fail_after(10):
            while not self.of.keys() - {old_pid}:
                await self._changed.wait()
        (pid,) = self.of.keys() - {old_pid}
        return pid, self.of[pid]


async def _first_parent(context: Any) -> tuple[int, int]:
    """Start a scheduler with one worker of ``context``: (worker pid, its parent's pid)."""
    parents = Parents()
    proc = TimerProcess("start", context=context, **FAST)
    proc.add_every_ms(5, pt.report_parent)
    proc.on_message(parents)
    scheduler = aiotimer.Scheduler()
    attach(scheduler, proc)
    with anyio.fail_after(30):
        await scheduler.start()
    try:
        pid = proc.workers[0].pid
        assert pid is not None
        return pid, await parents.of_worker(pid)
    finally:
        await scheduler.stop()


@linux_only
@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.usefixtures("no_orphans")
async def test_restarts_and_later_starts_fork_from_the_same_server() -> None:
    parents = Parents()
    proc = TimerProcess("restart", **FAST)
    proc.add_every_ms(5, pt.report_parent)
    proc.on_message(parents)
    scheduler = aiotimer.Scheduler()
    attach(scheduler, proc)
    with anyio.fail_after(30):
        await scheduler.start()
    try:
        worker = proc.workers[0]
        first = worker.pid
        server = await parents.of_worker(first)
        assert server not in (os.getpid(), first)  # forked by the server, not by us
        assert first is not None
        os.kill(first, signal.SIGKILL)
        second, its_server = await parents.of_another(first)
        assert its_server == server
        assert (worker.pid, worker.restarts) == (second, 1)
    finally:
        await scheduler.stop()
    _, later = await _first_parent(None)
    assert later == server


@linux_only
@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.usefixtures("no_orphans")
async def test_workers_that_died_with_their_fork_server_restart_from_a_new_one() -> None:
    parents = Parents()
    proc = TimerProcess("server-death", **FAST)
    proc.add_every_ms(5, pt.report_parent)
    proc.on_message(parents)
    reports: dict[int, Any] = {}
    proc.on_message(lambda info, obj: reports.setdefault(obj[2], obj))
    scheduler = aiotimer.Scheduler()
    attach(scheduler, proc)
    with anyio.fail_after(30):
        await scheduler.start()
    try:
        first = proc.workers[0].pid
        assert first is not None
        server = await parents.of_worker(first)
        os.kill(server, signal.SIGKILL)  # its workers die with it (they asked Linux to)
        second, new_server = await parents.of_another(first)
        assert new_server not in (server, os.getpid())
        # The new server was booted like the first: it imported the callbacks' module, which
        # only the parent's sys.path finds.
        assert reports[second][4] == new_server
    finally:
        await scheduler.stop()


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.usefixtures("no_orphans")
async def test_spawn_still_starts_workers_of_our_own_when_asked() -> None:
    _, parent = await _first_parent("spawn")
    assert parent == os.getpid()  # a fresh interpreter started by us, no server in between


@linux_only
@pytest.mark.slow
def test_the_server_imported_the_main_script_and_the_callbacks_module_for_its_workers() -> None:
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent)}  # process_targets: by the script's path
    out = subprocess.run(
        [sys.executable, str(TESTS / "process_preload.py")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=TESTS.parent,
        check=True,
    )
    report = json.loads(out.stdout)
    _index, worker, server, targets_imported_by = report["parent"]
    (main_imported_by,) = report["main"]
    assert report["context"] == "forkserver"
    assert server not in (report["pid"], worker)
    # Imported once, by the server, before it forked the worker: the worker imported neither.
    assert main_imported_by == server
    assert targets_imported_by == server


BROKEN_PRELOAD = """
import multiprocessing, anyio, aiotimer, process_targets as pt
from aiotimer.process import TimerProcess, attach

async def main():
    multiprocessing.set_forkserver_preload(["raises_on_import"])
    proc = TimerProcess("broken")
    proc.add_every_ms(20, pt.noop)
    scheduler = aiotimer.Scheduler()
    attach(scheduler, proc)
    try:
        await scheduler.start()
    except Exception as exc:
        print(exc)

anyio.run(main)
"""


@linux_only
@pytest.mark.slow
def test_a_fork_server_killed_by_a_preloaded_module_fails_start_saying_so(
    tmp_path: Path,
) -> None:
    (tmp_path / "raises_on_import").with_suffix(".py").write_text("raise RuntimeError('no')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(TESTS)])}
    out = subprocess.run(
        [sys.executable, "-c", BROKEN_PRELOAD],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    assert "worker 'broken'[0] did not start" in out.stdout
    assert "the fork server ended before it forked the worker" in out.stdout
    assert "RuntimeError: no" in out.stderr  # the server's traceback


@pytest.mark.slow
def test_a_subprocess_that_inherits_the_boot_variable_is_left_alone() -> None:
    from aiotimer.process._preload import ENV

    prepared = {"sys_argv": ["not", "mine"], "sys_path": ["/not/mine"]}
    env = {**os.environ, ENV: json.dumps(prepared)}
    code = "import sys, aiotimer.process._preload; print(sys.argv, '/not/mine' in sys.path)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.split() == ["['-c']", "False"]
