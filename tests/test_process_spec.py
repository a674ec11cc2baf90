"""Declaring a timer process: what a worker could not run is refused at registration."""

from __future__ import annotations

import functools
import threading

import process_targets as pt
import pytest

import aiotimer
from aiotimer.process import Mode, RestartPolicy, TimerProcess, attach


def test_decorators_return_the_function_and_declare_a_sync_timer() -> None:
    proc = TimerProcess("p")
    assert proc.every_s(5)(pt.record) is pt.record
    (timer,) = proc.timers
    assert timer.mode is Mode.SYNC
    assert timer.name == "process_targets.record"
    assert timer.spec.interval == 5
    assert timer.spec.unit is aiotimer.Unit.S


def test_basic_timers_keep_the_interval_written() -> None:
    proc = TimerProcess("p")
    spec = proc.add_basic_s(2, pt.record, name="b", param=1)
    proc.add_basic_ms(150, pt.record)
    basic_s, basic_ms = proc.timers
    assert basic_s.spec is spec
    assert basic_s.mode is Mode.BASIC
    assert basic_s.name == "b"
    assert basic_ms.spec.interval == 150
    assert basic_ms.spec.unit is aiotimer.Unit.MS


def test_unnamed_timers_of_the_same_callback_get_numbered_names() -> None:
    proc = TimerProcess("p")
    proc.add_every_ms(10, pt.record)
    proc.add_basic_ms(10, pt.record)
    assert [t.name for t in proc.timers] == ["process_targets.record", "process_targets.record#2"]


def test_a_name_taken_is_refused() -> None:
    proc = TimerProcess("p")
    proc.add_every_ms(10, pt.record, name="x")
    with pytest.raises(ValueError, match="timer 'x': a timer of that name is already declared"):
        proc.add_basic_ms(10, pt.noop, name="x")


def test_a_function_decorated_twice_is_refused() -> None:
    proc = TimerProcess("p")
    proc.every_ms(10)(pt.record)
    with pytest.raises(ValueError, match=r"function process_targets.record is already a timer"):
        proc.every_ms(20)(pt.record)


def test_a_lambda_is_refused_naming_the_timer() -> None:
    proc = TimerProcess("p")
    with pytest.raises(TypeError, match=r"timer 'lam': callback .*<lambda> is a lambda"):
        proc.add_every_s(1, lambda: None, name="lam")


def test_a_closure_is_refused_naming_the_function() -> None:
    proc = TimerProcess("p")
    closure = pt.not_importable_factory()
    with pytest.raises(TypeError, match=r"factory\.<locals>\.inner is defined inside a function"):
        proc.add_basic_s(1, closure)


def test_a_nested_function_is_refused_by_the_decorator() -> None:
    proc = TimerProcess("p")

    with pytest.raises(TypeError, match="is defined inside a function"):

        @proc.every_s(1)
        def nested() -> None: ...


def test_a_method_of_a_local_class_is_refused() -> None:
    class Local:
        def run(self) -> None: ...

    proc = TimerProcess("p")
    with pytest.raises(TypeError, match=r"timer 'm': callback .*Local is defined inside"):
        proc.add_every_s(1, Local().run, name="m")


def test_a_partial_of_a_module_function_is_accepted() -> None:
    proc = TimerProcess("p")
    proc.add_every_s(1, functools.partial(pt.fail), name="partial")


def test_a_param_that_does_not_pickle_is_refused_naming_it() -> None:
    proc = TimerProcess("p")
    with pytest.raises(TypeError, match=r"timer 'lock': param must pickle .*got lock"):
        proc.add_every_s(1, pt.record, name="lock", param=threading.Lock())


def test_an_on_error_hook_must_be_importable_too() -> None:
    proc = TimerProcess("p")
    with pytest.raises(TypeError, match=r"timer 'h': on_error hook .* is a lambda"):
        proc.add_every_s(1, pt.record, name="h", on_error=lambda t, e: None)


def test_parent_message_handlers_must_be_importable_and_parent_side_ones_need_not() -> None:
    proc = TimerProcess("p")
    with pytest.raises(TypeError, match=r"timer process 'p': on_parent_message handler .*lambda"):
        proc.on_parent_message(lambda obj: None)
    assert proc.on_parent_message(pt.echo_to_parent) is pt.echo_to_parent
    proc.on_message(lambda info, obj: None)  # runs in the parent: anything callable


@pytest.mark.parametrize("option", ["missed", "overlap", "max_catchup"])
def test_grid_options_do_not_apply_to_basic_timers(option: str) -> None:
    value = {"missed": aiotimer.Missed.BURST, "overlap": aiotimer.Overlap.QUEUE, "max_catchup": 3}
    proc = TimerProcess("p")
    with pytest.raises(TypeError, match=f"timer 'b': {option}= does not apply to a basic timer"):
        proc.add_basic_s(1, pt.record, name="b", **{option: value[option]})  # type: ignore[arg-type]


def test_interval_errors_are_the_schedulers() -> None:
    proc = TimerProcess("p")
    with pytest.raises(ValueError, match="timer 'z': interval_s must be finite and > 0, got 0"):
        proc.add_basic_s(0, pt.record, name="z")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"workers": 0}, ValueError, "workers must be an int >= 1, got 0"),
        ({"context": "fork"}, ValueError, "context 'fork' is refused"),
        ({"context": "thread"}, ValueError, "context must be 'spawn' or 'forkserver'"),
        ({"restart": "sometimes"}, ValueError, "restart mode must be one of"),
        ({"heartbeat_timeout_s": 0.5}, ValueError, "heartbeat_timeout_s must be above"),
        ({"stats_interval_s": 0}, ValueError, "stats_interval_s must be a finite number > 0"),
        ({"log_level": "INFO"}, TypeError, "log_level must be an int or None"),
    ],
)
def test_bad_process_options_are_refused_naming_them(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=f"timer process 'p': {match}"):
        TimerProcess("p", **kwargs)  # type: ignore[arg-type]


def test_restart_backoff_doubles_from_the_second_restart_and_is_capped() -> None:
    policy = RestartPolicy(backoff_s=0.1, backoff_max_s=0.5)
    assert [policy.delay_s(n) for n in range(6)] == [0.0, 0.1, 0.2, 0.4, 0.5, 0.5]
    assert policy.restarts_after(1)
    assert policy.restarts_after(-9)
    assert not policy.restarts_after(0)
    assert RestartPolicy(mode="always").restarts_after(0)
    assert not RestartPolicy(mode="never").restarts_after(1)


def test_the_restart_diagram_shows_the_default_policy() -> None:
    doc = RestartPolicy.__doc__ or ""
    default = RestartPolicy()
    assert (
        f"backoff_s={default.backoff_s:g}, backoff_max_s={default.backoff_max_s:g}, "
        f"max_restarts={default.max_restarts}, window_s={default.window_s:g}"
    ) in doc
    shown = doc.split("restart:")[1].split("\n")[0].split("|")[1:]
    delays = [float(cell.split()[0]) for cell in shown]
    assert delays == [default.delay_s(n) for n in range(default.max_restarts)]


def test_workers_are_handles_with_an_index() -> None:
    proc = TimerProcess("p", workers=3)
    assert [(w.name, w.index, w.state.value) for w in proc.workers] == [
        ("p", 0, "stopped"),
        ("p", 1, "stopped"),
        ("p", 2, "stopped"),
    ]


def test_a_stopped_worker_takes_no_message() -> None:
    proc = TimerProcess("p")
    with pytest.raises(RuntimeError, match=r"worker 'p'\[0\] cannot take messages: it is stopped"):
        proc.workers[0].send_nowait("hi")


def test_attach_refuses_duplicates_and_other_types() -> None:
    scheduler = aiotimer.Scheduler(name="s")
    proc = TimerProcess("p")
    attach(scheduler, proc)
    with pytest.raises(ValueError, match="timer process 'p' is already attached to scheduler 's'"):
        attach(scheduler, proc)
    with pytest.raises(ValueError, match="a timer process named 'p' is already attached"):
        attach(scheduler, TimerProcess("p"))
    with pytest.raises(TypeError, match=r"add_process\(\) takes a TimerProcess, got str"):
        attach(scheduler, "p")  # type: ignore[arg-type]
    assert "aiotimer.process" in scheduler.services


def test_the_full_check_before_start_sees_a_function_replaced_in_its_module() -> None:
    proc = TimerProcess("p")
    proc.add_every_s(1, pt.noop, name="n")
    original = pt.noop
    try:
        pt.noop = functools.wraps(original)(lambda: None)  # type: ignore[assignment]
        with pytest.raises(TypeError, match=r"timer 'n': callback process_targets.noop is not the"):
            proc._payload()
    finally:
        pt.noop = original  # type: ignore[assignment]
