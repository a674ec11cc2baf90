"""The ``aiotimer`` command: run, list and demo schedulers (``python -m aiotimer`` too).

::

    aiotimer run MODULE[:ATTR]      run a Scheduler (or a TimerTable) until SIGINT/SIGTERM
    aiotimer run path/to/file.py[:ATTR]
    aiotimer list MODULE[:ATTR]     print its timers
    aiotimer demo [--seconds N] [--db PATH]   the msilo example on SQLite
    aiotimer cluster URL [--name NAME]   a cluster's live nodes and last runs, from its store

Ground rules:

* A target is ``MODULE`` or a ``.py`` file, with an optional ``:ATTR`` (dotted). Without ATTR,
  the module's one :class:`~aiotimer.Scheduler` is used, else its one
  :class:`~aiotimer.TimerTable` (on a new scheduler), else the default scheduler if the module
  registered timers on it (``@aiotimer.every_s``, :mod:`aiotimer.kamailio`). The current
  directory (or the file's directory) comes first on ``sys.path``, as with ``python -m``.
* Mistakes a user can make (no such module or file, no such attribute, not a scheduler, the
  module failing at import) end with one line on stderr and exit code 2 (1 for a module that
  raised), never a traceback (``--log-level debug`` adds it).
* The first SIGINT or SIGTERM stops the scheduler gracefully (running callbacks get
  ``--grace`` seconds) and exits 0; a second one stops at once (exit 128 + signal number).
* On a terminal the timers' table is redrawn about once a second at the bottom, with the log
  lines and whatever the program prints scrolling above it; when stdout is not a terminal,
  the same numbers are logged as plain lines every ``--status-every`` seconds (10 by
  default; 0 turns them off).
* Standard library only, besides aiotimer's own dependencies (anyio; uvloop when installed).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import io
import itertools
import logging
import math
import os
import shutil
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import IO, Any, Final

import anyio
from anyio.abc import TaskStatus

from ._default import default_scheduler
from ._policy import DEFAULT_POLICY, Policy
from ._scheduler import DEFAULT_GRACE_S, Scheduler
from ._spec import TimerSpec
from ._table import TimerTable

__all__ = ["CliError", "load_target", "main"]

logger = logging.getLogger("aiotimer.cli")

_LOG_FORMAT: Final = "%(asctime)s %(levelname)-7s %(source)s: %(message)s"
_LEVELS: Final = ("debug", "info", "warning", "error", "critical")


class _Formatter(logging.Formatter):
    """The command's log lines: ``time LEVEL logger: message``, and ``logger (worker
    name[i]): message`` for a record a worker process sent (``_logs.py`` sets ``worker``)."""

    def __init__(self) -> None:
        super().__init__(_LOG_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        worker = getattr(record, "worker", None)
        record.source = record.name if worker is None else f"{record.name} (worker {worker})"
        return super().formatMessage(record)


class CliError(Exception):
    """A user's mistake: printed as one line, then exit with ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


# -- targets -------------------------------------------------------------------------------------


def load_target(target: str) -> Scheduler:
    """The scheduler that ``target`` (``MODULE[:ATTR]`` or ``FILE.py[:ATTR]``) names.

    :raises CliError: the target cannot be found, fails to import, or is not a scheduler
    """
    where, attr = _split_target(target)
    if not where.strip():
        raise CliError(f"target {target!r} is empty: give MODULE[:ATTR] or path/to/file.py[:ATTR]")
    module = _import_file(where) if _is_path(where) else _import_module(where)
    if attr is not None:
        return _as_scheduler(_get_attr(module, where, attr), f"{where}:{attr}")
    return _find_scheduler(module, where)


def _split_target(target: str) -> tuple[str, str | None]:
    where, colon, attr = target.rpartition(":")
    if colon and where and all(part.isidentifier() for part in attr.split(".")):
        return where, attr
    if target.endswith(":"):
        raise CliError(f"target {target!r} has an empty attribute after ':'")
    return target, None  # no ':', or a ':' that is not an attribute (C:\timers.py)


def _is_path(where: str) -> bool:
    return where.endswith(".py") or "/" in where or os.sep in where


def _import_module(name: str) -> ModuleType:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise CliError(
                f"no module named {name!r} (looked in {cwd} and sys.path); "
                "run from the folder that holds it, or give a path to a .py file"
            ) from None
        raise _import_failed(name, exc) from None
    except Exception as exc:
        raise _import_failed(name, exc) from None


def _import_file(where: str) -> ModuleType:
    path = Path(where)
    if not path.is_file():
        raise CliError(f"no such file: {where}")
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() == path.resolve():
            return loaded
        raise CliError(f"cannot load {where}: a module named {name!r} is already imported")
    folder = str(path.parent.resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)  # its sibling modules import as from a script
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CliError(f"cannot load {where} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise _import_failed(where, exc) from None
    return module


def _import_failed(what: str, exc: BaseException) -> CliError:
    """One line: the exception and where it was raised (the innermost frame not in importlib)."""
    message = str(exc)
    if isinstance(exc, SyntaxError) and exc.filename:
        message, place = str(exc.msg), f" ({exc.filename}, line {exc.lineno})"
    else:
        frames = [
            f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")
        ]
        place = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    logger.debug("importing %s failed", what, exc_info=exc)
    return CliError(f"importing {what!r} failed: {type(exc).__name__}: {message}{place}", code=1)


def _get_attr(module: ModuleType, where: str, attr: str) -> object:
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CliError(f"module {where!r} has no attribute {attr!r}") from None
    return obj


def _as_scheduler(obj: object, label: str) -> Scheduler:
    if isinstance(obj, Scheduler):
        return obj
    if isinstance(obj, TimerTable):
        scheduler = Scheduler(name=obj.name)
        scheduler.add_table(obj)
        return scheduler
    shown = repr(obj) if len(repr(obj)) <= 60 else repr(obj)[:59] + "…"
    raise CliError(
        f"{label} is {type(obj).__name__} {shown}, not an aiotimer Scheduler or TimerTable"
    )


def _find_scheduler(module: ModuleType, where: str) -> Scheduler:
    for kind in (Scheduler, TimerTable):
        found: dict[int, tuple[str, object]] = {}
        for name, value in vars(module).items():
            if isinstance(value, kind) and not name.startswith("_"):
                found.setdefault(id(value), (name, value))
        if len(found) == 1:
            ((name, value),) = found.values()
            return _as_scheduler(value, f"{where}:{name}")
        if found:
            names = ", ".join(sorted(name for name, _ in found.values()))
            raise CliError(
                f"module {where!r} has several {kind.__name__}s ({names}); "
                f"name one: {where}:{min(name for name, _ in found.values())}"
            )
    if default_scheduler().timers:  # @aiotimer.every_s(...), aiotimer.kamailio.register_timer
        return default_scheduler()
    raise CliError(
        f"no Scheduler or TimerTable in module {where!r}, and no timer on the default scheduler;"
        f" name one with {where}:ATTR"
    )


# -- list ----------------------------------------------------------------------------------------


def _policy_text(policy: Policy) -> str:
    """The fields that differ from the default policy: ``thread, timeout_s=2``."""
    parts = []
    for field in dataclasses.fields(Policy):
        value = getattr(policy, field.name)
        if value == getattr(DEFAULT_POLICY, field.name):
            continue
        if value is True:
            parts.append(field.name)
        elif callable(value):
            parts.append(f"{field.name}={getattr(value, '__qualname__', value)}")
        else:
            shown = value.value if hasattr(value, "value") else value
            parts.append(f"{field.name}={shown}")
    return ", ".join(parts) or "-"


def _timer_rows(scheduler: Scheduler) -> list[tuple[str, TimerSpec, str, str]]:
    """``(name, spec, mode, process)`` of every timer of ``scheduler`` and of its timer
    processes (``mode``: ``basic`` or ``sync`` for a process's timer)."""
    rows = [(name, timer.spec, "", "-") for name, timer in scheduler.timers.items()]
    if "aiotimer.process" not in sys.modules:
        return rows  # no timer process can exist without the process layer
    from .process._hub import HUB_NAME, ProcessHub

    hub = scheduler.services.get(HUB_NAME)
    if isinstance(hub, ProcessHub):
        for proc in hub.processes.values():
            where = f"{proc.name} ({len(proc.workers)} worker{'s' * (len(proc.workers) > 1)})"
            rows += [(t.name, t.spec, t.mode.value, where) for t in proc.timers]
    return rows


def _print_table(rows: Sequence[Sequence[str]], out: IO[str]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


def next_runs(spec: TimerSpec, wall_ns: int, n: int = 3) -> str:
    """A calendar timer's next ``n`` runs after ``wall_ns``, in its time zone; else ``-``."""
    if spec.trigger is None:
        return "-"
    upcoming = spec.trigger.upcoming(n, wall_ns)
    return ", ".join(d.strftime("%Y-%m-%d %H:%M:%S %Z") for d in upcoming) or "none"


def _list(scheduler: Scheduler, out: IO[str]) -> None:
    rows = [("TIMER", "INTERVAL", "KIND", "POLICIES", "PROCESS", "NEXT RUNS")]
    wall_ns = scheduler.clock.wall_ns()
    for name, spec, mode, process in _timer_rows(scheduler):
        kind = f"{spec.kind.value}, {mode}" if mode else spec.kind.value
        rows.append(
            (
                name,
                spec.describe(),
                kind,
                _policy_text(spec.policy),
                process,
                next_runs(spec, wall_ns),
            )
        )
    _print_table(rows, out)
    out.write(f"{len(rows) - 1} timer(s) on scheduler {scheduler.name!r}\n")


# -- status --------------------------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f}ms"
    return f"{seconds:.2f}s"


_HEADER: Final = (
    "TIMER",
    "EVERY",
    "STATE",
    "RUNS",
    "MISSED",
    "ERRORS",
    "LATE last",
    "p50",
    "p99",
    "max",
)


def status_rows(stats: dict[str, Any]) -> list[tuple[str, ...]]:
    """The status table (header first) from ``scheduler.stats()``: the scheduler's timers, then
    those of its timer processes' workers as they last reported (``proc[i] timer``)."""
    timers: list[tuple[str, dict[str, Any]]] = list(stats["timers"].items())
    processes = stats.get("services", {}).get("aiotimer.process", {})
    for proc, workers in processes.get("workers", {}).items():
        for worker in workers:
            child = worker.get("stats") or {}
            for name, t in child.get("timers", {}).items():
                timers.append((f"{proc}[{worker['index']}] {name}", t))
    rows: list[tuple[str, ...]] = [_HEADER]
    for name, t in timers:
        late = t["lateness"]
        rows.append(
            (
                name,
                t["every"],
                t["state"],
                str(t["runs"]),
                str(t["missed"]),
                str(t["errors"]),
                _duration(t.get("last_lateness_s")),
                _duration(late["p50_s"]),
                _duration(late["p99_s"]),
                _duration(late["max_s"]),
            )
        )
    return rows


def cluster_lines(stats: dict[str, Any]) -> list[str]:
    """One line per attached Cluster service, from ``scheduler.stats()``'s JSON form."""
    lines = []
    for service in stats.get("services", {}).values():
        if not (isinstance(service, dict) and {"cluster", "node", "live_nodes"} <= set(service)):
            continue
        timers = service.get("timers", {}).values()
        won = sum(t["won"] for t in timers)
        elsewhere = sum(t["run_elsewhere"] for t in timers)
        p50 = service["claim_latency"]["p50_s"]
        refusing = " · REFUSING: clock off the store's" if service["refusing"] else ""
        lines.append(
            f"cluster {service['cluster']!r} as {service['node']} · "
            f"{len(service['live_nodes'])} live node(s) · won {won} · elsewhere {elsewhere} · "
            f"store errors {service['store_errors']} · claim p50 {_duration(p50)}{refusing}"
        )
    return lines


class _LogStatus:
    """Plain status lines, one per timer, every ``every_s`` (stdout is not a terminal)."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s

    async def run(self, scheduler: Scheduler) -> None:
        if not self.every_s:
            return
        while True:
            await anyio.sleep(self.every_s)
            stats = scheduler.stats().as_dict()
            for line in cluster_lines(stats):
                logger.info("status: %s", line)
            for name, every, _, runs, missed, errors, last, p50, p99, top in status_rows(stats)[1:]:
                logger.info(
                    "status: timer %r %s: runs=%s missed=%s errors=%s "
                    "late last=%s p50=%s p99=%s max=%s",
                    *(name, every, runs, missed, errors, last, p50, p99, top),
                )

    def finish(self, scheduler: Scheduler) -> None:
        pass


class _TerminalStatus(logging.Handler):
    """The live table at the bottom of the terminal; log lines and the program's output scroll
    above it, and the table stays one block at the bottom.

    Also a logging handler: a record erases the table, is written, and the table comes back,
    so the two never overwrite each other (records from worker threads too: one lock). While
    the table is on screen, ``sys.stdout`` (and ``sys.stderr`` when it is the terminal too)
    are replaced by :class:`_Above`, which does the same for ``print()``: whole lines go
    above the table, a partial line waits for its end. (A worker process writes to the
    terminal directly: its prints can still cut through the table; its log records come
    through the parent and cannot.)
    """

    def __init__(self, out: IO[str], every_s: float) -> None:
        super().__init__()
        self.out = out
        self.every_s = every_s or 1.0
        self.drawn: list[str] = []
        self.screen_lock = threading.RLock()
        self.setFormatter(_Formatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_above(self.format(record) + "\n")
        except Exception:
            self.handleError(record)

    def write_above(self, text: str) -> None:
        """Write whole lines above the table."""
        with self.screen_lock:
            self.out.write(self._erase() + text + self._draw(self.drawn))
            self.out.flush()

    def _erase(self) -> str:
        return f"\x1b[{len(self.drawn)}F\x1b[J" if self.drawn else ""

    @staticmethod
    def _draw(lines: list[str]) -> str:
        return "".join(f"{line}\n" for line in lines)

    def render(self, scheduler: Scheduler) -> list[str]:
        size = shutil.get_terminal_size()
        room = max(3, size.lines - 8)
        # Only the timers that fit are walked: a redraw every second must not cost O(timers).
        summary = scheduler.stats(timers=False)
        shown = {t.name: t.stats for t in itertools.islice(scheduler.timers.values(), room)}
        stats = dataclasses.replace(summary, timers=shown).as_dict()
        rows = status_rows(stats)
        total = summary.timer_count + len(rows) - 1 - len(shown)  # + workers' timers
        hidden = total + 1 - room
        if hidden > 0:
            rows = rows[:room]
        widths = [min(40, max(len(row[i]) for row in rows)) for i in range(len(_HEADER))]
        hint = " · Ctrl-C stops" if stats["state"] == "running" else ""
        title = (
            f"── {stats['scheduler']} · {stats['state']} · {stats['ticks']} s · {total} timer(s)"
            f" · {stats['wakeups']} wake-ups{hint} ──"
        )
        lines = [title[: size.columns]]
        lines += [line[: size.columns] for line in cluster_lines(stats)]
        for row in rows:
            cells = [
                (c if len(c) <= w else c[: w - 1] + "…").ljust(w) if i < 3 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  ".join(cells)[: size.columns])
        if hidden > 0:
            lines.append(f"… and {hidden} more timer(s)")
        wall_ns = scheduler.clock.wall_ns()
        for name in shown:  # calendar timers: their next runs, in their time zone
            spec = scheduler.timers[name].spec
            if spec.trigger is not None:
                lines.append(f"  {name} next: {next_runs(spec, wall_ns)}"[: size.columns])
        return lines

    async def run(self, scheduler: Scheduler) -> None:
        saved = sys.stdout, sys.stderr
        above = [_Above(self, sys.stdout)]
        sys.stdout = above[0]
        if sys.stderr is not None and sys.stderr.isatty():
            above.append(_Above(self, sys.stderr))
            sys.stderr = above[1]
        try:
            while True:
                self.refresh(scheduler)
                await anyio.sleep(self.every_s)
        finally:
            sys.stdout, sys.stderr = saved
            for stream in above:
                stream.end()

    def refresh(self, scheduler: Scheduler) -> None:
        lines = self.render(scheduler)
        with self.screen_lock:
            self.out.write(self._erase() + self._draw(lines))
            self.out.flush()
            self.drawn = lines

    def finish(self, scheduler: Scheduler) -> None:
        self.refresh(scheduler)  # the final numbers stay on the screen
        self.drawn = []


class _Above(io.TextIOBase):
    """``sys.stdout`` or ``sys.stderr`` while the live table is on screen: what is printed goes
    above the table, a whole line at a time (what ``rich.live.Live(redirect_stdout=True)``
    does)."""

    def __init__(self, status: _TerminalStatus, original: IO[str]) -> None:
        super().__init__()
        self._status = status
        self._original = original
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            whole, newline, self._partial = (self._partial + text).rpartition("\n")
            if newline:
                self._status.write_above(whole + newline)
        return len(text)

    def end(self) -> None:
        """The table is going away: write out a partial line left behind."""
        with self._lock:
            if self._partial:
                self._status.write_above(self._partial + "\n")
                self._partial = ""

    def isatty(self) -> bool:
        return self._original.isatty()

    def fileno(self) -> int:
        return self._original.fileno()


_Status = _LogStatus | _TerminalStatus


def _status_for(every_s: float | None) -> _Status:
    if sys.stdout.isatty():
        return _TerminalStatus(sys.stdout, 1.0 if every_s is None else every_s)
    return _LogStatus(10.0 if every_s is None else every_s)


# -- run -----------------------------------------------------------------------------------------


def _configure_logging(level: str, status: _Status) -> None:
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    if isinstance(status, _TerminalStatus):
        root.addHandler(status)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Formatter())
        root.addHandler(handler)


def _backend_options(use_uvloop: bool | None) -> dict[str, Any]:
    if use_uvloop is False:
        return {}
    try:
        import uvloop
    except ImportError:
        if use_uvloop:
            raise CliError(
                "--uvloop: uvloop is not installed (pip install 'aiotimer[uvloop]'), "
                "or use --no-uvloop"
            ) from None
        return {}
    return {"loop_factory": uvloop.new_event_loop}


class _StartFailed(Exception):
    """The scheduler (or one of its services, e.g. a timer process) could not start."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(cause)
        self.cause = cause


def _start_failure(exc: BaseException) -> Exception | None:
    """The cause of a :class:`_StartFailed` in ``exc`` (task groups wrap it in groups)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, _StartFailed):
        cause = exc.cause
        while isinstance(cause, ExceptionGroup) and len(cause.exceptions) == 1:
            cause = cause.exceptions[0]
        return cause
    return None


async def _serve(
    scheduler: Scheduler, status: _Status, seconds: float | None, grace_s: float
) -> int:
    """Run ``scheduler`` until a signal (or ``seconds``); the exit code."""
    exit_code = 0
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:

            async def run_scheduler(*, task_status: TaskStatus[None]) -> None:
                await scheduler.serve(task_status=task_status)
                tg.cancel_scope.cancel()  # stopped: by a signal, the time limit or itself

            async def stop(reason: str) -> None:
                logger.info("%s: stopping (grace %g s)", reason, grace_s)
                await scheduler.stop(grace_s)

            async def watch_signals() -> None:
                nonlocal exit_code
                stopping = False
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if not stopping:
                        stopping = True
                        tg.start_soon(stop, f"{name} received")
                    else:
                        logger.warning("%s received again: stopping now", name)
                        exit_code = 128 + signum
                        tg.cancel_scope.cancel()

            async def time_limit(limit_s: float) -> None:
                await anyio.sleep(limit_s)
                await stop(f"{limit_s:g} s are up")

            try:
                await tg.start(run_scheduler)
            except Exception as exc:
                raise _StartFailed(exc) from exc
            logger.info(
                "scheduler %r running %d timer(s); SIGINT (Ctrl-C) or SIGTERM stops it",
                scheduler.name,
                len(_timer_rows(scheduler)),
            )
            tg.start_soon(watch_signals)
            tg.start_soon(status.run, scheduler)
            if seconds:
                tg.start_soon(time_limit, seconds)
    status.finish(scheduler)
    return exit_code


def _run(scheduler: Scheduler, args: argparse.Namespace, status: _Status) -> int:
    options = _backend_options(args.uvloop)
    try:
        code = anyio.run(
            _serve, scheduler, status, args.seconds, args.grace, backend_options=options
        )
    except BaseException as exc:
        cause = _start_failure(exc)
        if cause is None:
            raise
        logger.debug("scheduler %r failed to start", scheduler.name, exc_info=cause)
        raise CliError(
            f"scheduler {scheduler.name!r} failed to start: {type(cause).__name__}: {cause}",
            code=1,
        ) from None
    logger.info("scheduler %r stopped", scheduler.name)
    return code


# -- demo ----------------------------------------------------------------------------------------


def _load_msilo() -> ModuleType:
    """The msilo example: ``examples/msilo`` of the source checkout this package runs from
    (an editable install, or ``PYTHONPATH``), else ``aiotimer._examples.msilo`` (a wheel that
    ships it)."""
    root = Path(__file__).resolve().parent.parent
    package = root / "examples" / "msilo" / "__init__.py"
    if package.is_file():
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        module = importlib.import_module("examples.msilo")
        if Path(module.__file__ or "").resolve() == package:
            return module
    try:
        return importlib.import_module("aiotimer._examples.msilo")
    except ModuleNotFoundError:
        raise CliError(
            "the msilo example is not part of this install (it lives in examples/msilo of "
            "aiotimer's repository): install aiotimer from a clone with 'pip install -e .'",
            code=1,
        ) from None


def _demo(args: argparse.Namespace, status: _Status) -> int:
    msilo = _load_msilo()
    demo = msilo.build(args.db)
    scheduler: Scheduler = demo.scheduler
    logger.info(
        "aiotimer demo: Kamailio's msilo on SQLite (%s): register_timer(m_clean_silo, None, "
        "%d) deletes delivered messages; every %d runs it purges expired ones",
        args.db,
        demo.msilo.check_time,
        demo.msilo.clean_period,
    )
    try:
        code = _run(scheduler, args, status)
        print(demo.summary())
    finally:
        demo.close()
    return code


# -- main ----------------------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiotimer",
        description="Run, list and try aiotimer schedulers.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    running = argparse.ArgumentParser(add_help=False)
    running.add_argument(
        "--uvloop",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run on uvloop (default: if it is installed)",
    )
    running.add_argument(
        "--log-level", default="info", type=str.lower, choices=_LEVELS, help="default: info"
    )
    running.add_argument(
        "--status-every",
        type=_positive_float,
        default=None,
        metavar="S",
        help="refresh the status every S seconds (default: 1 on a terminal, else 10; 0: off)",
    )
    running.add_argument(
        "--grace",
        type=_positive_float,
        default=DEFAULT_GRACE_S,
        metavar="S",
        help=f"on stop, running callbacks get S seconds to finish (default {DEFAULT_GRACE_S:g})",
    )

    run = commands.add_parser(
        "run",
        parents=[running],
        help="run a scheduler until SIGINT/SIGTERM",
        description="Run the Scheduler (or TimerTable) TARGET names until SIGINT or SIGTERM.",
    )
    run.add_argument("target", metavar="TARGET", help="MODULE[:ATTR] or path/to/file.py[:ATTR]")
    run.add_argument(
        "--seconds", type=_positive_float, default=None, metavar="N", help="stop after N seconds"
    )

    listing = commands.add_parser(
        "list", help="print the timers of a scheduler", description="Print TARGET's timers."
    )
    listing.add_argument("target", metavar="TARGET", help="MODULE[:ATTR] or path/to/file.py[:ATTR]")
    listing.add_argument("--log-level", default="warning", type=str.lower, choices=_LEVELS)

    demo = commands.add_parser(
        "demo",
        parents=[running],
        help="run the msilo example (Kamailio's offline-message cleaner) on SQLite",
        description="Run the msilo example: messages stored in SQLite, cleaned by a timer.",
    )
    demo.add_argument(
        "--seconds",
        type=_positive_float,
        default=10.0,
        metavar="N",
        help="stop after N seconds (default 10; 0: until Ctrl-C)",
    )
    demo.add_argument(
        "--db", default=":memory:", metavar="PATH", help="SQLite file (default: in memory)"
    )
    cluster = commands.add_parser(
        "cluster",
        help="print a cluster's live nodes and each timer's last runs, from its store",
        description="Read a cluster store (sqlite:///path, postgresql://..., redis://...) and "
        "print its live nodes and each timer's last runs. Read-only.",
    )
    cluster.add_argument("url", metavar="URL", help="the store's URL")
    cluster.add_argument("--name", default="default", help="the cluster name (default: default)")
    cluster.add_argument(
        "--runs", type=int, default=3, metavar="N", help="runs shown per timer (default 3)"
    )
    cluster.add_argument(
        "--timeout", type=_positive_float, default=5.0, metavar="S", help="store timeout (5 s)"
    )
    cluster.add_argument("--log-level", default="warning", type=str.lower, choices=_LEVELS)
    return parser


def _cluster(args: argparse.Namespace) -> int:
    from .cluster import StoreError, open_store
    from .cluster._report import store_report

    if args.runs < 1:
        raise CliError(f"--runs must be >= 1, got {args.runs}")

    async def report() -> str:
        store = open_store(
            args.url, args.name, connect_timeout_s=args.timeout, timeout_s=args.timeout
        )
        await store.open()
        try:
            return await store_report(store, args.runs)
        finally:
            await store.close()

    try:
        sys.stdout.write(anyio.run(report))
    except (StoreError, ValueError, ImportError) as exc:
        raise CliError(str(exc), code=1) from None
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``aiotimer`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    status: _Status = (
        _status_for(args.status_every) if args.command not in ("list", "cluster") else _LogStatus(0)
    )
    _configure_logging(args.log_level, status)
    try:
        if args.command == "list":
            _list(load_target(args.target), sys.stdout)
            return 0
        if args.command == "demo":
            return _demo(args, status)
        if args.command == "cluster":
            return _cluster(args)
        return _run(load_target(args.target), args, status)
    except CliError as exc:
        sys.stderr.write(f"aiotimer: error: {exc}\n")
        return exc.code
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
