"""The ``aiotimer`` command, driven in a subprocess (``python -m aiotimer``) as a user would.

Each subprocess test is bounded to a few seconds of real time.
"""

from __future__ import annotations

import datetime
import fcntl
import io
import itertools
import os
import pty
import queue
import re
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
from pathlib import Path
from typing import IO

import pytest

import aiotimer
from aiotimer import cli

ROOT = Path(aiotimer.__file__).resolve().parent.parent  # the checkout under test

TIMERS = """
import aiotimer

scheduler = aiotimer.Scheduler(name="mine")

@scheduler.every_ms(100)
def ping() -> None:
    print("fired", flush=True)

@scheduler.every_s(1, thread=True, timeout_s=2)
def slow() -> None:
    pass
"""


def env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), str(Path(__file__).resolve().parent)])  # process_targets
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with a few user modules, the current directory of the commands."""
    files = {
        "mytimers.py": TIMERS,
        "broken.py": "import aiotimer\nx = 1\ny = x / 0\n",
        "missingdep.py": "import nonexistent_dependency_xyz\n",
        "syntax.py": "def f(:\n    pass\n",
        "nothing.py": "value = 42\n",
        "two.py": "import aiotimer\na = aiotimer.Scheduler()\nb = aiotimer.Scheduler()\n",
        "library.py": """
            import aiotimer
            timers = aiotimer.TimerTable("library")

            @timers.every_s(5, name="library.refresh", missed=aiotimer.Missed.DELAY)
            def refresh() -> None: ...
        """,
        "calendar.py": """
            import aiotimer

            scheduler = aiotimer.Scheduler(name="cal")

            @scheduler.every_cron("0 3 * * MON", tz="Europe/Berlin", name="weekly")
            def weekly() -> None: ...
        """,
        "kamailio_style.py": """
            from aiotimer import kamailio

            def m_clean_silo(ticks, param):
                print("clean", ticks, flush=True)

            kamailio.register_ms_timer(m_clean_silo, None, 100)
        """,
        "kamproc.py": """
            import aiotimer
            from aiotimer import kamailio

            scheduler = aiotimer.Scheduler(name="kam")

            def tick(ticks, param):
                print("worker tick", ticks, param, flush=True)

            with kamailio.use_scheduler(scheduler):  # mod_init, then child_init
                kamailio.register_basic_timers(1)
                kamailio.fork_basic_utimer(kamailio.PROC_TIMER, "KAM TIMER", 1, tick, "p", 100_000)
        """,
        "workerlog.py": """
            import aiotimer
            import process_targets as pt
            from aiotimer.process import TimerProcess

            scheduler = aiotimer.Scheduler(name="svc")
            proc = TimerProcess("cleaner", workers=2)
            proc.add_every_ms(100, pt.log_warning, name="w")
            scheduler.add_process(proc)
        """,
        "badservice.py": """
            import aiotimer

            scheduler = aiotimer.Scheduler(name="svc")

            class Bad:
                name = "bad"

                async def serve(self, scheduler, *, task_status):
                    raise OSError("address already in use: 5060")

                async def stop(self, grace_s): ...

                def stats(self):
                    return {}

            scheduler.add_service(Bad())
        """,
        "selfstop.py": """
            import aiotimer

            scheduler = aiotimer.Scheduler(name="brief")

            @scheduler.every_ms(50)
            async def countdown(tick: aiotimer.Tick) -> None:
                print("run", tick.timer.runs, flush=True)
                if tick.timer.runs == 3:
                    await scheduler.stop()
        """,
        "hang.py": """
            import anyio
            import aiotimer

            scheduler = aiotimer.Scheduler()

            @scheduler.every_ms(50)
            async def stuck() -> None:
                print("stuck", flush=True)
                await anyio.sleep(3600)
        """,
    }
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path


class Command:
    """``python -m aiotimer ARGS`` running in the background; lines are read as they come."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aiotimer", *args],
            cwd=cwd,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        for stream, lines in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            threading.Thread(target=self._read, args=(stream, lines), daemon=True).start()

    def _read(self, stream: IO[str], lines: list[str]) -> None:
        for line in stream:
            lines.append(line)
            if lines is self.stdout:
                self.out.put(line)

    def wait_for_stdout(self, text: str, count: int = 1, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        seen = 0
        while seen < count:
            try:
                line = self.out.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
                pytest.fail(f"no {text!r} x{count} on stdout; stderr: {''.join(self.stderr)}")
            seen += text in line

    def wait_for_stderr(self, text: str, count: int = 1, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while sum(text in line for line in list(self.stderr)) < count:
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"no {text!r} x{count} on stderr: {''.join(self.stderr)}")
            time.sleep(0.02)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 10.0) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        time.sleep(0.05)  # let the reader threads take the last lines
        return code


def run(cwd: Path, *args: str, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiotimer", *args],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- run ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_fires_timers_until_a_signal_then_stops_gracefully_with_exit_code_0(
    project: Path, signum: signal.Signals
) -> None:
    command = Command(project, "run", "mytimers:scheduler")
    command.wait_for_stdout("fired", count=3)
    command.signal(signum)
    assert command.wait() == 0
    log = "".join(command.stderr)
    assert f"{signum.name} received: stopping (grace 5 s)" in log
    assert "scheduler 'mine' stopped" in log
    assert "Traceback" not in log


def test_a_second_signal_stops_at_once(project: Path) -> None:
    command = Command(project, "run", "hang", "--grace", "60")
    command.wait_for_stdout("stuck")
    command.signal(signal.SIGTERM)  # graceful: would wait 60 s for the stuck callback
    time.sleep(0.3)
    started = time.monotonic()
    command.signal(signal.SIGTERM)
    assert command.wait(timeout=5) == 128 + signal.SIGTERM
    assert time.monotonic() - started < 3
    assert "SIGTERM received again: stopping now" in "".join(command.stderr)


def test_a_scheduler_that_stops_itself_ends_the_command(project: Path) -> None:
    result = run(project, "run", "selfstop")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "run 1\nrun 2\nrun 3\n"
    assert "scheduler 'brief' stopped" in result.stderr


def test_run_a_file_without_attr_for_some_seconds_on_plain_asyncio(project: Path) -> None:
    result = run(project, "run", str(project / "mytimers.py"), "--seconds", "0.5", "--no-uvloop")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("fired") >= 3
    assert "0.5 s are up: stopping" in result.stderr


def test_run_finds_timers_registered_on_the_default_scheduler(project: Path) -> None:
    result = run(project, "run", "kamailio_style", "--seconds", "0.45")
    assert result.returncode == 0, result.stderr
    assert "clean 100\nclean 200\nclean 300\n" in result.stdout


def test_status_lines_are_logged_when_stdout_is_not_a_terminal(project: Path) -> None:
    result = run(project, "run", "mytimers", "--seconds", "0.7", "--status-every", "0.3")
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"status: timer 'mytimers\.ping' every 100 ms: runs=\d+ missed=0 errors=0 "
        r"late last=\S+ p50=\S+ p99=\S+ max=\S+",
        result.stderr,
    )


def run_on_pty(cwd: Path, *args: str, timeout_s: float = 10) -> tuple[int, str]:
    """``python -m aiotimer ARGS`` on a 40x120 pseudo-terminal: its exit code and all it
    wrote to the terminal."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, on a 120-column pseudo-terminal
        os.chdir(cwd)
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        # COLUMNS and LINES would win over the terminal's size (pytest-xdist's workers set
        # them to 80x24): the command must see the 120 columns set here.
        child_env = {k: v for k, v in env().items() if k not in ("COLUMNS", "LINES")}
        os.execve(sys.executable, [sys.executable, "-m", "aiotimer", *args], child_env)
    chunks = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode()


def screen_after(output: str) -> list[str]:
    """The lines a terminal holds (scrollback included) after ``output``: text, CR, LF and the
    two sequences the table uses (``ESC[nF``: n lines up, to column 0; ``ESC[J``: erase to
    the end of the screen)."""
    lines, row, col = [""], 0, 0
    for token in re.split(r"(\x1b\[\d*[A-Za-z]|\n|\r)", output):
        if token == "\n":
            row += 1
            if row == len(lines):
                lines.append("")
        elif token == "\r":
            col = 0
        elif token.startswith("\x1b["):
            n, command = int(token[2:-1] or 1), token[-1]
            if command == "F":
                row, col = max(0, row - n), 0
            elif command == "J":
                lines[row] = lines[row][:col]
                del lines[row + 1 :]
            else:
                raise AssertionError(f"unexpected escape sequence {token!r}")
        elif token:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + token + line[col + len(token) :]
            col += len(token)
    return lines


def test_a_terminal_gets_a_live_table_under_the_log_lines(project: Path) -> None:
    code, screen = run_on_pty(project, "run", "mytimers", "--seconds", "1.3")
    assert code == 0
    assert re.search(r"TIMER +EVERY +STATE +RUNS +MISSED +ERRORS +LATE last +p50 +p99 +max", screen)
    assert re.search(r"mytimers\.ping +every 100 ms +active +\d+ +0 +0", screen)
    assert "\x1b[4F\x1b[J" in screen  # title, header and 2 timers erased before a redraw
    assert "scheduler 'mine' running 2 timer(s)" in screen  # log lines still show


def test_the_programs_prints_scroll_above_the_live_table_which_stays_one_block(
    project: Path,
) -> None:
    example = str(ROOT / "examples" / "hello_timers.py")
    code, output = run_on_pty(project, "run", example, "--seconds", "3.5")
    assert code == 0
    screen = screen_after(output)
    heartbeats = [i for i, line in enumerate(screen) if "] heartbeat, " in line]
    assert [screen[i][:7] for i in heartbeats] == ["[  1 s]", "[  2 s]", "[  3 s]"], screen
    headers = [i for i, line in enumerate(screen) if line.startswith("TIMER ")]
    assert len(headers) == 1, screen  # one table: the last one, no stale copies
    titles = [i for i, line in enumerate(screen) if line.startswith("── hello ·")]
    assert titles == [headers[0] - 1], screen
    assert heartbeats[-1] < titles[0]  # the prints are above it
    assert any("scheduler 'hello' stopped" in line for line in screen[headers[0] :])


def test_run_starts_the_timer_processes_and_stops_them(project: Path) -> None:
    command = Command(project, "run", "kamproc")
    command.wait_for_stdout("worker tick", count=2, timeout=15)
    command.signal(signal.SIGTERM)
    assert command.wait() == 0
    # a basic timer sleeps 100 ms after each run: the second run drifts by the first's time
    assert re.search(r"worker tick 100 p\nworker tick 2\d\d p\n", "".join(command.stdout))


def test_a_workers_log_lines_name_the_worker(project: Path) -> None:
    command = Command(project, "run", "workerlog")
    command.wait_for_stderr("slow disk on run 2", count=2, timeout=15)
    command.signal(signal.SIGTERM)
    assert command.wait() == 0
    lines = "".join(command.stderr)
    for index in (0, 1):
        assert re.search(
            rf"WARNING +mywork \(worker cleaner\[{index}\]\): slow disk on run 1\n", lines
        ), lines
    assert re.search(r"INFO +aiotimer\.cli: scheduler 'svc' running", lines)  # no worker


# -- list --------------------------------------------------------------------------------------


def test_list_prints_the_timers_with_interval_kind_policies_and_process(project: Path) -> None:
    result = run(project, "list", "mytimers")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TIMER", "INTERVAL", "KIND", "POLICIES", "PROCESS", "NEXT", "RUNS"]
    assert re.match(r"mytimers\.ping +every 100 ms +periodic +- +- +-$", lines[1])
    assert re.match(r"mytimers\.slow +every 1 s +periodic +timeout_s=2, thread +- +-$", lines[2])
    assert lines[3] == "2 timer(s) on scheduler 'mine'"


def test_list_shows_a_calendar_timers_next_three_runs_in_its_zone(project: Path) -> None:
    result = run(project, "list", "calendar")
    assert result.returncode == 0, result.stderr
    row = result.stdout.splitlines()[1]
    assert row.startswith("weekly ")
    assert "cron '0 3 * * MON' Europe/Berlin" in row
    runs = re.findall(r"(\d{4}-\d\d-\d\d) 03:00:00 (CES?T)", row)
    assert len(runs) == 3
    days = [datetime.date.fromisoformat(day) for day, _ in runs]
    assert all(day.weekday() == 0 for day in days)  # Mondays, at 03:00 local time
    assert [b - a for a, b in itertools.pairwise(days)] == [datetime.timedelta(days=7)] * 2


def test_list_shows_the_timers_of_timer_processes(project: Path) -> None:
    result = run(project, "list", "kamproc")
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"kamproc\.tick +every 100 ms +periodic, basic +- +KAM TIMER \(1 worker\)", result.stdout
    )


def test_list_a_timer_table(project: Path) -> None:
    result = run(project, "list", "library:timers")
    assert result.returncode == 0, result.stderr
    assert re.search(r"library\.refresh +every 5 s +periodic +missed=delay", result.stdout)


# -- errors: one line, no traceback ------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "code", "message"),
    [
        ("nosuchmod", 2, "no module named 'nosuchmod' (looked in {cwd} and sys.path)"),
        ("nosuch.py", 2, "no such file: nosuch.py"),
        ("mytimers:nope", 2, "module 'mytimers' has no attribute 'nope'"),
        ("nothing:value", 2, "nothing:value is int 42, not an aiotimer Scheduler or TimerTable"),
        ("nothing", 2, "no Scheduler or TimerTable in module 'nothing'"),
        ("two", 2, "module 'two' has several Schedulers (a, b); name one: two:a"),
        ("broken", 1, "importing 'broken' failed: ZeroDivisionError: division by zero "),
        (
            "missingdep",
            1,
            "importing 'missingdep' failed: ModuleNotFoundError: "
            "No module named 'nonexistent_dependency_xyz' ({cwd}/missingdep.py, line 1)",
        ),
        ("syntax.py", 1, "importing 'syntax.py' failed: SyntaxError: invalid syntax ("),
        ("", 2, "target '' is empty: give MODULE[:ATTR] or path/to/file.py[:ATTR]"),
        ("  ", 2, "target '  ' is empty"),
    ],
)
def test_a_users_mistake_ends_with_one_clear_line(
    project: Path, target: str, code: int, message: str
) -> None:
    result = run(project, "list", target)
    assert result.returncode == code
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("aiotimer: error: ")
    assert message.format(cwd=project) in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("target", ["nosuchmod", "broken", ""])
def test_run_reports_the_same_mistakes_the_same_way(project: Path, target: str) -> None:
    assert run(project, "run", target).stderr == run(project, "list", target).stderr


def test_a_scheduler_that_cannot_start_is_one_clear_line(project: Path) -> None:
    result = run(project, "run", "badservice")
    assert result.returncode == 1
    assert result.stderr.endswith(
        "aiotimer: error: scheduler 'svc' failed to start: OSError: address already in use: 5060\n"
    )
    assert "Traceback" not in result.stderr


def test_debug_logging_adds_the_traceback_of_an_import_failure(project: Path) -> None:
    result = run(project, "list", "broken", "--log-level", "debug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert result.stderr.endswith(
        "ZeroDivisionError: division by zero (" + str(project) + "/broken.py, line 3)\n"
    )


# -- demo --------------------------------------------------------------------------------------


def test_demo_runs_msilo_on_an_in_memory_database(project: Path) -> None:
    result = run(project, "demo", "--seconds", "1.1")
    assert result.returncode == 0, result.stderr
    assert "m_clean_silo at 1 s: deleted" in result.stderr
    assert re.search(r"msilo: \d+ message\(s\) stored, .* left in :memory:", result.stdout)


def test_demo_on_a_database_file(project: Path) -> None:
    db = project / "silo.db"
    result = run(project, "demo", "--seconds", "0.5", "--db", str(db))
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(db) as conn:
        (stored,) = conn.execute("SELECT COUNT(*) FROM silo").fetchone()
    assert stored >= 1
    assert f"{stored} left in {db}" in result.stdout


# -- in process --------------------------------------------------------------------------------


def test_uvloop_is_the_default_when_installed_and_a_clear_error_when_asked_for_but_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvloop

    assert cli._backend_options(None) == {"loop_factory": uvloop.new_event_loop}
    assert cli._backend_options(False) == {}
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    assert cli._backend_options(None) == {}
    with pytest.raises(cli.CliError, match="--uvloop: uvloop is not installed") as caught:
        cli._backend_options(True)
    assert caught.value.code == 2


def test_the_status_table_shows_runs_lateness_and_errors() -> None:
    stats = {
        "timers": {
            "t": {
                "every": "every 1 s",
                "state": "active",
                "runs": 7,
                "missed": 1,
                "errors": 2,
                "last_lateness_s": 0.0002,
                "lateness": {"count": 7, "p50_s": 0.00004, "p99_s": 0.0031, "max_s": 1.5},
            }
        }
    }
    assert cli.status_rows(stats) == [
        ("TIMER", "EVERY", "STATE", "RUNS", "MISSED", "ERRORS", "LATE last", "p50", "p99", "max"),
        ("t", "every 1 s", "active", "7", "1", "2", "200µs", "40µs", "3.1ms", "1.50s"),
    ]


def test_the_live_table_walks_only_the_timers_that_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.shutil, "get_terminal_size", lambda *a: os.terminal_size((120, 20)))
    scheduler = aiotimer.Scheduler(name="big")
    for _ in range(5000):
        scheduler.add_every_s(1, print)
    walked = 0
    original = aiotimer.Timer.stats

    def counting(timer: aiotimer.Timer) -> aiotimer.TimerStats:
        nonlocal walked
        walked += 1
        return original.fget(timer)  # type: ignore[attr-defined,no-any-return]

    monkeypatch.setattr(aiotimer.Timer, "stats", property(counting))
    lines = cli._TerminalStatus(io.StringIO(), 1.0).render(scheduler)
    assert walked == 12  # the room: 20 lines - 8
    assert "5000 timer(s)" in lines[0]
    assert lines[-1] == "… and 4989 more timer(s)"
    assert len(lines) == 1 + 12 + 1  # title, header + 11 timers, the "more" line
