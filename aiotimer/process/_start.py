"""How worker processes start: the start method, and what the fork server imports first.

Ground rules:

* A worker is never forked from the parent: the parent runs an event loop, whose state, threads
  and locks a fork would copy mid-flight. It is either a fresh interpreter (``spawn``), or
  forked by a fork server (``forkserver``): a small process that runs no loop and no thread but
  its own, and forks a child on request.
* On Linux the default is ``forkserver`` (the default Python 3.14 chose for multiprocessing);
  elsewhere ``spawn``, which every platform has.
* The fork server is multiprocessing's own: one per parent process, booted by the first
  ``forkserver`` start, then reused by every start and restart of every timer process (the
  workers' parent pid stays the same). Multiprocessing boots a new one only if it died.
* Before that first start, :func:`start_context` adds to multiprocessing's preload list (keeping
  what is there: ``__main__`` by default, and whatever the application gave
  ``multiprocessing.set_forkserver_preload``) the worker module, the event loop's modules and
  the modules of the process's callbacks, hooks and handlers; all the timer processes of a
  scheduler are prepared before any starts. :func:`boot_server` boots the server with the
  parent's ``sys.path`` and main module (``_preload.py``: older Pythons leave them out).
  The server imports all that once; each worker is forked with it loaded, so it imports
  nothing before its first tick.
* A running server imports nothing more. A timer process first started after the server
  booted, whose callbacks live in modules the server did not import, still works: each of its
  workers imports those modules when it starts (what a spawned worker pays, for those modules
  only). The list still grows, and applies if multiprocessing ever boots a new server.
* A preloaded module is imported once, in the server, and every worker inherits what its import
  did: a module that opens a connection or starts a thread when imported belongs in a process
  with ``context="spawn"``. An exception other than ``ImportError`` while the server imports
  kills the server: the starts then fail, saying so.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
import multiprocessing
import os
import sys
import threading
from collections.abc import Iterable
from multiprocessing import spawn
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Final

from ._preload import ENV as _PREPARE_ENV

if TYPE_CHECKING:
    from ._timer_process import ContextName, TimerProcess

__all__ = [
    "boot_server",
    "default_context",
    "forkserver_available",
    "start_context",
    "start_forked",
    "worker_modules",
]

logger = logging.getLogger("aiotimer.process.start")

_BOOT_MODULE: Final = "aiotimer.process._preload"
"""Imported first by the server: it sets the server's path and main module (see there)."""
_PREPARED: Final = ("sys_path", "sys_argv", "init_main_from_name", "init_main_from_path")
"""What the server takes from the parent's preparation data (a worker takes all of it)."""
_boot_lock = threading.Lock()  # starts run in threads: one boots, the others find it booted
_WORKER_MODULES: Final = (
    "aiotimer.process._worker",  # and with it aiotimer's core and the pipe
    "anyio._backends._asyncio",  # anyio.run(backend="asyncio") imports it lazily
    "ctypes",  # prctl(PR_SET_PDEATHSIG)
    "setproctitle",  # where installed (the server skips what does not import)
    "multiprocessing.popen_forkserver",  # a forked child imports it to unpickle itself
)


def forkserver_available() -> bool:
    return "forkserver" in multiprocessing.get_all_start_methods()


def default_context() -> ContextName:
    """``"forkserver"`` on Linux, ``"spawn"`` elsewhere."""
    return "forkserver" if sys.platform == "linux" and forkserver_available() else "spawn"


def worker_modules(proc: TimerProcess) -> list[str]:
    """What a worker of ``proc`` imports before its first tick: the worker module, the loop's,
    and the modules of the callbacks, ``on_error`` hooks and parent-message handlers."""
    modules = list(_WORKER_MODULES)
    if proc.use_uvloop is not False and importlib.util.find_spec("uvloop") is not None:
        modules.append("uvloop")
    functions: list[object] = list(proc._parent_message_handlers)
    for timer in proc.timers:
        functions.append(timer.spec.callback)
        if timer.spec.policy.on_error is not None:
            functions.append(timer.spec.policy.on_error)
    for fn in functions:
        module = _module_of(fn)
        if module is not None and module not in modules:
            modules.append(module)
    return modules


def _module_of(fn: object) -> str | None:
    """The module a worker imports to find ``fn`` (checked importable at declaration)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.ismethod(fn):
        fn = fn.__func__
    elif not (inspect.isfunction(fn) or inspect.isbuiltin(fn) or inspect.isclass(fn)):
        fn = type(fn)  # a callable instance: its class
    module = getattr(fn, "__module__", None)
    return module if isinstance(module, str) and module != "builtins" else None


def start_context(proc: TimerProcess) -> SpawnContext | ForkServerContext:
    """The multiprocessing context that starts ``proc``'s workers; for ``forkserver``, with
    :func:`worker_modules` added to the fork server's preload list first.

    Called for every timer process of a scheduler before any of its workers starts.
    """
    if proc.context == "spawn":
        return multiprocessing.get_context("spawn")
    _preload(worker_modules(proc))
    return multiprocessing.get_context("forkserver")


def _preload(modules: Iterable[str]) -> None:
    import multiprocessing.forkserver  # here: a spawned worker that imports this needs it not

    server = multiprocessing.forkserver._forkserver
    # multiprocessing has a setter and no getter: the list is read where the setter keeps it,
    # so that what the application preloads is kept.
    current: list[str] = list(getattr(server, "_preload_modules", None) or ["__main__"])
    added = [m for m in (_BOOT_MODULE, *modules) if m not in current]
    if not added:
        return
    if getattr(server, "_forkserver_pid", None) is not None:
        logger.debug(
            "the fork server already runs: workers import %s when they start", ", ".join(added)
        )
    if _BOOT_MODULE in added:
        current.insert(0, added.pop(0))
    multiprocessing.set_forkserver_preload(current + added)


def start_forked(process: BaseProcess) -> None:
    """Start ``process`` (of the ``forkserver`` context) from a thread: it waits for the fork
    server, which the first start boots (:func:`boot_server`) and which imports its preload
    list before it forks anything.

    :raises RuntimeError: the fork server died (it does when a preloaded module raises)
    """
    boot_server()
    try:
        process.start()
    except (EOFError, ConnectionError) as exc:
        raise RuntimeError(
            f"the fork server ended before it forked the worker ({type(exc).__name__}); did a "
            "module it preloads fail to import? (the fork server's traceback is on stderr)"
        ) from None


def boot_server() -> None:
    """Boot the fork server, if it does not run (yet, or any more), with the parent's
    ``sys.path``, ``sys.argv`` and main module (handed over in its environment, the variable
    gone as soon as it is spawned). Call it after :func:`start_context`, before each start.
    """
    import json
    import multiprocessing.forkserver

    with _boot_lock:
        # Each time, not only the first: if the server died (its workers with it), the one
        # multiprocessing boots instead gets the same. For the moment of a boot, a subprocess
        # another thread starts inherits the variable too; _preload acts only in a fork server.
        data = spawn.get_preparation_data("aiotimer fork server")
        os.environ[_PREPARE_ENV] = json.dumps({k: data[k] for k in _PREPARED if k in data})
        try:
            multiprocessing.forkserver.ensure_running()  # a no-op when it runs
        finally:
            del os.environ[_PREPARE_ENV]
