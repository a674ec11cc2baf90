"""aiotimer.aiohttp: the scheduler lives and dies with the app; the status route."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient

import aiotimer.aiohttp
from aiotimer import Scheduler, Tick
from aiotimer.aiohttp import SCHEDULER_KEY, add_status_route, setup
from aiotimer.testing import VirtualClock

EVENTS = web.AppKey("events", list[str])


def leftover_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("aiotimer")]


@pytest_asyncio.fixture
async def problems() -> AsyncIterator[Callable[[], list[str]]]:
    """``problems()``: what reached the loop's exception handler ("Task was destroyed but it
    is pending!", unretrieved task exceptions) and the warnings raised, after a collection."""
    loop = asyncio.get_running_loop()
    errors: list[str] = []
    loop.set_exception_handler(lambda _, context: errors.append(str(context.get("message"))))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        def collect() -> list[str]:
            gc.collect()
            return errors + [str(w.message) for w in caught]

        yield collect
    loop.set_exception_handler(None)


def app_with(scheduler: Scheduler) -> web.Application:
    app = web.Application()
    setup(app, scheduler)
    return app


def test_the_module_uses_the_real_aiohttp() -> None:
    assert aiotimer.aiohttp.web is aiohttp.web
    assert aiotimer.aiohttp.__name__ == "aiotimer.aiohttp"


# -- lifecycle -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_timers_run_while_the_app_serves_and_stop_when_it_is_cleaned_up(
    aiohttp_client: AiohttpClient, virtual_clock: VirtualClock
) -> None:
    scheduler = Scheduler(clock=virtual_clock, name="svc")
    runs: list[int] = []
    scheduler.add_every_ms(20, lambda: runs.append(1), name="rtp")
    app = app_with(scheduler)
    assert app[SCHEDULER_KEY] is scheduler
    assert not scheduler.running

    client = await aiohttp_client(app)
    assert scheduler.running
    await virtual_clock.advance(1.0)
    assert len(runs) == 50

    await client.close()
    assert not scheduler.running
    await virtual_clock.advance(1.0)
    assert len(runs) == 50
    assert leftover_tasks() == []


@pytest.mark.asyncio
async def test_startup_and_cleanup_in_different_tasks_leave_no_task_and_no_warning(
    problems: Callable[[], list[str]],
) -> None:
    # The scheduler runs in a task of its own: cleanup may run in any task.
    scheduler = Scheduler()
    scheduler.add_every_ms(1, lambda: None)
    runner = web.AppRunner(app_with(scheduler))
    await asyncio.create_task(runner.setup())
    assert scheduler.running
    await asyncio.sleep(0.05)
    await asyncio.create_task(runner.cleanup())
    assert not scheduler.running
    await asyncio.sleep(0)
    assert leftover_tasks() == []
    assert problems() == []


@pytest.mark.asyncio
async def test_cleanup_lets_a_running_callback_finish_within_grace(
    virtual_clock: VirtualClock,
) -> None:
    # t = 1.0 s: the run starts (takes 0.3 s); 1.1 s: cleanup begins; 1.3 s: run done, stopped
    finished: list[float] = []

    async def slow() -> None:
        await virtual_clock.sleep(0.3)
        finished.append(virtual_clock.now_ns() / 1e9)

    scheduler = Scheduler(clock=virtual_clock)
    scheduler.add_every_s(1, slow, name="slow")
    app = web.Application()
    setup(app, scheduler, grace_s=1.0)
    runner = web.AppRunner(app)
    await runner.setup()
    await virtual_clock.advance(1.1)
    cleanup = asyncio.create_task(runner.cleanup())
    await virtual_clock.advance(0.1)
    assert not cleanup.done()
    await virtual_clock.advance(0.1)
    await cleanup
    assert finished == [1.3]
    assert not scheduler.running


@pytest.mark.asyncio
async def test_cleanup_cancels_a_callback_still_running_after_grace(
    virtual_clock: VirtualClock,
) -> None:
    cancelled: list[bool] = []

    async def stuck() -> None:
        try:
            await virtual_clock.sleep(3600)
        except BaseException:
            cancelled.append(True)
            raise

    scheduler = Scheduler(clock=virtual_clock)
    scheduler.add_every_s(1, stuck, name="stuck")
    app = web.Application()
    setup(app, scheduler, grace_s=0.5)
    runner = web.AppRunner(app)
    await runner.setup()
    await virtual_clock.advance(1.0)
    cleanup = asyncio.create_task(runner.cleanup())
    await virtual_clock.advance(0.5)
    await cleanup
    assert cancelled == [True]


@pytest.mark.asyncio
async def test_a_timer_reaches_the_app_through_param(
    aiohttp_client: AiohttpClient, virtual_clock: VirtualClock
) -> None:
    def record(tick: Tick) -> None:
        app: web.Application = tick.param
        app[EVENTS].append(f"{tick.timer.name}@{tick.ticks}")

    app = web.Application()
    app[EVENTS] = []
    scheduler = Scheduler(clock=virtual_clock)
    scheduler.add_every_s(1, record, param=app, name="record")
    setup(app, scheduler)
    await aiohttp_client(app)
    await virtual_clock.advance(2.0)
    assert app[EVENTS] == ["record@1", "record@2"]


@pytest.mark.asyncio
async def test_a_sub_application_can_own_the_scheduler(
    aiohttp_client: AiohttpClient, virtual_clock: VirtualClock
) -> None:
    scheduler = Scheduler(clock=virtual_clock)
    runs: list[int] = []
    scheduler.add_every_ms(100, lambda: runs.append(1))
    admin = app_with(scheduler)
    add_status_route(admin)
    app = web.Application()
    app.add_subapp("/admin", admin)
    client = await aiohttp_client(app)
    await virtual_clock.advance(0.5)
    response = await client.get("/admin/timers")
    assert (await response.json())["state"] == "running"
    assert len(runs) == 5
    await client.close()
    assert not scheduler.running


def test_the_lifecycle_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        scheduler = Scheduler()
        scheduler.add_every_ms(5, lambda: None, name="fast")
        app = app_with(scheduler)
        add_status_route(app)
        async with TestClient(TestServer(app)) as client:
            for _ in range(200):  # real time: up to 2 s for the first runs
                await asyncio.sleep(0.01)
                if scheduler.get_timer("fast").runs >= 3:
                    break
            body = await (await client.get("/timers")).json()
            assert body["timers"]["fast"]["runs"] >= 3
        assert not scheduler.running
        assert leftover_tasks() == []

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


# -- the status route ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_status_route_returns_the_scheduler_stats_as_json(
    aiohttp_client: AiohttpClient, virtual_clock: VirtualClock
) -> None:
    scheduler = Scheduler(clock=virtual_clock, name="svc")
    scheduler.add_every_ms(20, lambda: None, name="rtp")
    scheduler.add_every_s(60, lambda: None, name="msilo-clean")
    app = app_with(scheduler)
    add_status_route(app)
    client = await aiohttp_client(app)
    await virtual_clock.advance(1.0)

    response = await client.get("/timers")
    assert response.status == 200
    assert response.content_type == "application/json"
    body = await response.json()
    assert body == {
        **scheduler.stats().as_dict(),
        "offset": 0,
        "limit": aiotimer.aiohttp.DEFAULT_PAGE,
        "next_offset": None,
    }
    assert body["scheduler"] == "svc"
    assert body["state"] == "running"
    assert body["timers"]["rtp"]["runs"] == 50
    assert body["timers"]["msilo-clean"]["every"] == "every 60 s"


@pytest.mark.asyncio
async def test_the_status_route_is_read_only(
    aiohttp_client: AiohttpClient, virtual_clock: VirtualClock
) -> None:
    scheduler = Scheduler(clock=virtual_clock)
    scheduler.add_every_ms(20, lambda: None, name="rtp")
    app = app_with(scheduler)
    add_status_route(app, "/status/timers")
    client = await aiohttp_client(app)
    before = scheduler.stats()
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        response = await client.request(method, "/status/timers", json={"rtp": "cancel"})
        assert response.status == 405, method
    assert (await client.head("/status/timers")).status == 200
    assert scheduler.stats() == before
    assert scheduler.get_timer("rtp").state.value == "active"


@pytest.mark.asyncio
async def test_the_status_route_pages_through_the_timers_in_registration_order(
    aiohttp_client: AiohttpClient, virtual_clock: VirtualClock
) -> None:
    scheduler = Scheduler(clock=virtual_clock, name="svc")
    for i in range(250):
        scheduler.add_every_s(1, lambda: None, name=f"t{i:03}")
    app = app_with(scheduler)
    add_status_route(app)
    client = await aiohttp_client(app)

    first = await (await client.get("/timers")).json()
    assert list(first["timers"]) == [f"t{i:03}" for i in range(100)]  # the default page
    assert (first["offset"], first["limit"], first["next_offset"]) == (0, 100, 100)
    assert first["timer_count"] == 250
    last = await (await client.get("/timers", params={"offset": 200, "limit": 80})).json()
    assert list(last["timers"]) == [f"t{i:03}" for i in range(200, 250)]
    assert last["next_offset"] is None
    past = await (await client.get("/timers", params={"offset": 900})).json()
    assert past["timers"] == {}


@pytest.mark.asyncio
async def test_the_status_route_summary_walks_no_timer(
    aiohttp_client: AiohttpClient, virtual_clock: VirtualClock
) -> None:
    scheduler = Scheduler(clock=virtual_clock, name="svc")
    for _ in range(50):
        scheduler.add_every_s(1, lambda: None)
    app = app_with(scheduler)
    add_status_route(app)
    client = await aiohttp_client(app)
    body = await (await client.get("/timers", params={"timers": "0"})).json()
    assert body == scheduler.stats(timers=False).as_dict()
    assert body["timers"] == {}
    assert body["timer_count"] == 50


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"limit": "1001"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"offset": "x"}, "offset"),
        ({"timers": "maybe"}, "timers"),
    ],
)
async def test_a_bad_status_parameter_is_a_400_naming_it(
    aiohttp_client: AiohttpClient, virtual_clock: VirtualClock, query: dict[str, str], named: str
) -> None:
    app = app_with(Scheduler(clock=virtual_clock))
    add_status_route(app)
    client = await aiohttp_client(app)
    response = await client.get("/timers", params=query)
    assert response.status == 400
    assert (await response.text()).startswith(named)


# -- misuse --------------------------------------------------------------------------------


def test_setup_twice_on_one_app_is_refused() -> None:
    app = app_with(Scheduler(name="first"))
    with pytest.raises(RuntimeError, match=r"already has scheduler 'first'; call setup\(\) once"):
        setup(app, Scheduler(name="second"))


@pytest.mark.asyncio
async def test_setup_with_a_running_scheduler_is_refused() -> None:
    async with Scheduler(name="busy") as scheduler:
        with pytest.raises(RuntimeError, match="scheduler 'busy' is already running"):
            setup(web.Application(), scheduler)


@pytest.mark.asyncio
async def test_a_scheduler_started_by_someone_else_fails_the_app_startup() -> None:
    scheduler = Scheduler(name="busy")
    runner = web.AppRunner(app_with(scheduler))
    async with scheduler:
        with pytest.raises(RuntimeError, match="scheduler 'busy' is already running"):
            await runner.setup()
    await runner.cleanup()


@pytest.mark.asyncio
async def test_one_scheduler_on_two_apps_fails_the_second_startup() -> None:
    scheduler = Scheduler(name="shared")
    first, second = web.AppRunner(app_with(scheduler)), web.AppRunner(app_with(scheduler))
    await first.setup()
    with pytest.raises(RuntimeError, match="scheduler 'shared' is already running"):
        await second.setup()
    await first.cleanup()
    assert not scheduler.running


@pytest.mark.asyncio
async def test_setup_after_the_app_started_is_refused() -> None:
    app = web.Application()
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        with pytest.raises(RuntimeError, match="has already started; call setup"):
            setup(app, Scheduler())
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_status_path_that_is_taken_is_refused(method: str) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app = app_with(Scheduler())
    app.router.add_route(method, "/timers", handler)
    with pytest.raises(ValueError, match="path '/timers' is already routed"):
        add_status_route(app)
    add_status_route(app, "/timers.json")


def test_the_status_route_twice_is_refused() -> None:
    app = app_with(Scheduler())
    add_status_route(app)
    with pytest.raises(ValueError, match="path '/timers' is already routed"):
        add_status_route(app)


def test_the_status_route_before_setup_is_refused() -> None:
    with pytest.raises(RuntimeError, match=r"has no scheduler; call aiotimer.aiohttp.setup"):
        add_status_route(web.Application())


@pytest.mark.parametrize(
    ("app", "scheduler", "grace_s", "error", "message"),
    [
        (object(), Scheduler(), None, TypeError, "app must be a web.Application"),
        (web.Application(), object(), None, TypeError, "scheduler must be an aiotimer.Scheduler"),
        (web.Application(), Scheduler(), -1, ValueError, "grace_s must be a number >= 0"),
        (web.Application(), Scheduler(), "5", ValueError, "grace_s must be a number >= 0"),
    ],
)
def test_bad_arguments_to_setup_are_refused(
    app: Any, scheduler: Any, grace_s: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        setup(app, scheduler, grace_s=grace_s)
