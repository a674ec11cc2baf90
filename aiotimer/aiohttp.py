"""aiotimer in aiohttp services (the optional extra ``aiohttp``).

::

    app = web.Application()
    scheduler = aiotimer.Scheduler()
    scheduler.add_every_s(60, purge_sessions, param=app)   # the callback gets tick.param == app
    aiotimer.aiohttp.setup(app, scheduler)                  # starts and stops with the app
    aiotimer.aiohttp.add_status_route(app)                  # GET /timers: scheduler.stats(), paged
    aiotimer.aiohttp.add_metrics_route(app)                 # GET /metrics: Prometheus

Ground rules:

* :func:`setup` ties the scheduler's life to the app's through ``app.cleanup_ctx``: the
  scheduler starts during the app's startup, before the server accepts connections, and stops
  gracefully (``grace_s``) during its cleanup, after the server stopped and the requests in
  flight finished. Timers therefore run while the app serves, and never on a stopped app.
* The scheduler runs in a task of its own (:meth:`~aiotimer.Scheduler.start`), not in the task
  that runs the app's startup: aiohttp may run startup and cleanup in different tasks, and a
  task group cannot be exited from a task other than the one that entered it.
* Timers reach the app through ``param``: register with ``param=app`` and read ``tick.param``
  in a callback taking a :class:`~aiotimer.Tick`. Nothing else (no context variable) is needed.
* The status and metrics routes are read-only: ``GET`` (and ``HEAD``) only, and nothing they do
  changes a timer.
* They never stall the loop, however many timers there are: on the loop they take a cheap
  snapshot (a page of timers for ``/timers``; for ``/metrics`` a copy of the counters taken in
  slices of ~2 ms, see :mod:`aiotimer.prometheus`), and serialise it in a worker thread (one
  at a time per app, so a burst of scrapes does not take every thread).
* Misuse fails at once, naming the thing: :func:`setup` twice on one app, a scheduler that
  someone else started, a route path that is already taken, a route helper before
  :func:`setup`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.lowlevel
import anyio.to_thread
from aiohttp import web

from ._scheduler import Scheduler
from ._stats import TimerStats

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = [
    "DEFAULT_PAGE",
    "MAX_PAGE",
    "SCHEDULER_KEY",
    "add_metrics_route",
    "add_status_route",
    "setup",
]

logger = logging.getLogger("aiotimer.aiohttp")

SCHEDULER_KEY: Final = web.AppKey("aiotimer.scheduler", Scheduler)
"""Where :func:`setup` stores the app's scheduler: ``app[SCHEDULER_KEY]``."""
DEFAULT_PAGE: Final = 100
"""Timers in a ``/timers`` answer when the request gives no ``limit``."""
MAX_PAGE: Final = 1000
"""The largest ``limit`` ``/timers`` accepts."""
_SLICE_S: Final = 0.002  # loop time a page of TimerStats may take before yielding
_RENDER_LIMITER: Final = web.AppKey("aiotimer.render_limiter", anyio.CapacityLimiter)


def setup(app: web.Application, scheduler: Scheduler, *, grace_s: float | None = None) -> None:
    """Start ``scheduler`` with ``app`` and stop it when the app is cleaned up.

    :param grace_s: how long running callbacks get to finish at shutdown before they are
        cancelled; ``None`` for :meth:`Scheduler.stop <aiotimer.Scheduler.stop>`'s default
    :raises TypeError: for an ``app`` or ``scheduler`` of the wrong type
    :raises ValueError: for a ``grace_s`` that is not a number >= 0
    :raises RuntimeError: if ``app`` already has a scheduler, has already started, or
        ``scheduler`` is already running
    """
    if not isinstance(app, web.Application):
        raise TypeError(f"aiotimer.aiohttp.setup: app must be a web.Application, got {app!r}")
    if not isinstance(scheduler, Scheduler):
        raise TypeError(
            f"aiotimer.aiohttp.setup: scheduler must be an aiotimer.Scheduler, got {scheduler!r}"
        )
    if grace_s is not None and (
        isinstance(grace_s, bool) or not isinstance(grace_s, (int, float)) or not grace_s >= 0
    ):
        raise ValueError(
            f"aiotimer.aiohttp.setup: grace_s must be a number >= 0 or None, got {grace_s!r}"
        )
    other = app.get(SCHEDULER_KEY)
    if other is not None:
        raise RuntimeError(
            f"aiotimer.aiohttp.setup: app {app!r} already has scheduler {other.name!r}; "
            "call setup() once per app"
        )
    if app.frozen:
        raise RuntimeError(
            f"aiotimer.aiohttp.setup: app {app!r} has already started; call setup() before"
        )
    if scheduler.running:
        raise RuntimeError(_started_elsewhere(scheduler))

    async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
        if scheduler.running:
            raise RuntimeError(_started_elsewhere(scheduler))
        await scheduler.start()
        logger.debug("scheduler %r started with %r", scheduler.name, app)
        # No try/finally: aiohttp resumes this generator for cleanup only if startup succeeded,
        # and a finally that awaits would break when the generator is closed by the GC.
        yield
        if grace_s is None:
            await scheduler.stop()
        else:
            await scheduler.stop(grace_s)
        logger.debug("scheduler %r stopped with %r", scheduler.name, app)

    app[SCHEDULER_KEY] = scheduler
    app.cleanup_ctx.append(scheduler_ctx)


def add_status_route(app: web.Application, path: str = "/timers") -> web.AbstractRoute:
    """Serve ``scheduler.stats()`` as JSON on ``GET path`` (read-only), a page of timers at a
    time.

    The answer is ``SchedulerStats.as_dict()`` with ``"timers"`` holding one page, in
    registration order, plus ``"offset"``, ``"limit"`` and ``"next_offset"`` (``null`` on the
    last page; ``"timer_count"`` is the total). Query parameters:

    * ``offset`` (default 0) and ``limit`` (default :data:`DEFAULT_PAGE`, at most
      :data:`MAX_PAGE`): which timers;
    * ``timers=0``: the summary only (``scheduler.stats(timers=False)``: no timer walked).

    A bad parameter is answered ``400`` naming it.

    :raises RuntimeError: if :func:`setup` was not called on ``app`` first
    :raises ValueError: if ``path`` is already routed on ``app``
    """
    scheduler = _scheduler_of(app, "add_status_route")
    _check_free(app, path, "add_status_route")
    _add_render_limiter(app)

    async def timers_status(request: web.Request) -> web.Response:
        query = request.query
        with_timers = _flag(query, "timers", True)
        offset = _count(query, "offset", 0, None)
        limit = _count(query, "limit", DEFAULT_PAGE, MAX_PAGE)
        summary = scheduler.stats(timers=False)
        page: dict[str, TimerStats] = {}
        if with_timers:
            page = await _page_of(scheduler, offset, limit)
        stats = dataclasses.replace(summary, timers=page)
        end = offset + limit
        extra: dict[str, Any] = (
            {
                "offset": offset,
                "limit": limit,
                "next_offset": end if with_timers and end < summary.timer_count else None,
            }
            if with_timers
            else {}
        )

        def render() -> bytes:
            return json.dumps({**stats.as_dict(), **extra}).encode()

        body = await anyio.to_thread.run_sync(render, limiter=app[_RENDER_LIMITER])
        return web.Response(body=body, content_type="application/json")

    return app.router.add_get(path, timers_status)


async def _page_of(scheduler: Scheduler, offset: int, limit: int) -> dict[str, TimerStats]:
    """The :class:`TimerStats` of timers ``offset .. offset + limit`` (registration order),
    taken in slices of loop time."""
    timers = tuple(itertools.islice(scheduler.timers.values(), offset, offset + limit))
    page: dict[str, TimerStats] = {}
    deadline = time.perf_counter() + _SLICE_S
    for timer in timers:
        page[timer.name] = timer.stats
        if time.perf_counter() > deadline:
            await anyio.lowlevel.checkpoint()
            deadline = time.perf_counter() + _SLICE_S
    return page


def _flag(query: Any, name: str, default: bool) -> bool:
    text = query.get(name)
    if text is None:
        return default
    if text in ("1", "true"):
        return True
    if text in ("0", "false"):
        return False
    raise web.HTTPBadRequest(text=f"{name} must be 0, 1, true or false, got {text!r}")


def _count(query: Any, name: str, default: int, most: int | None) -> int:
    text = query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0 or (most is not None and value > most):
        bound = f" and <= {most}" if most is not None else ""
        raise web.HTTPBadRequest(text=f"{name} must be a whole number >= 0{bound}, got {text!r}")
    return value


def _add_render_limiter(app: web.Application) -> None:
    """One rendering thread at a time for the app's status and metrics routes (created on the
    app's loop, at startup)."""
    if _render_limiter_ctx in app.cleanup_ctx:
        return
    app.cleanup_ctx.append(_render_limiter_ctx)


async def _render_limiter_ctx(app: web.Application) -> AsyncIterator[None]:
    app[_RENDER_LIMITER] = anyio.CapacityLimiter(1)
    yield


def add_metrics_route(
    app: web.Application,
    path: str = "/metrics",
    *,
    registry: CollectorRegistry | None = None,
    max_timer_series: int | None = None,
) -> web.AbstractRoute:
    """Serve ``registry`` (prometheus_client's global ``REGISTRY`` by default) on ``GET path``,
    with the app's scheduler registered on it while the app runs (see
    :mod:`aiotimer.prometheus`). Answers OpenMetrics to scrapers that ask for it. A scrape
    copies the numbers on the loop in slices and renders them in a worker thread
    (:func:`aiotimer.prometheus.generate`), so it never stalls the timers.

    Needs the ``prometheus`` extra.

    :param max_timer_series: the scheduler's cap on ``timer`` label values
        (``aiotimer.prometheus.DEFAULT_MAX_TIMER_SERIES`` if ``None``)
    :raises RuntimeError: if :func:`setup` was not called on ``app`` first
    :raises ValueError: if ``path`` is already routed on ``app``, or for a bad
        ``max_timer_series``
    """
    from prometheus_client.registry import REGISTRY

    from . import prometheus

    scheduler = _scheduler_of(app, "add_metrics_route")
    _check_free(app, path, "add_metrics_route")
    target = REGISTRY if registry is None else registry
    cap = prometheus.DEFAULT_MAX_TIMER_SERIES if max_timer_series is None else max_timer_series
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ValueError(
            f"aiotimer.aiohttp.add_metrics_route: max_timer_series must be an int >= 1, "
            f"got {max_timer_series!r}"
        )
    _add_render_limiter(app)

    async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
        prometheus.register(scheduler, registry=target, max_timer_series=cap)
        yield
        prometheus.unregister(scheduler, registry=target)

    async def metrics(request: web.Request) -> web.Response:
        body, content_type = await prometheus.generate(
            target, accept=request.headers.get("Accept", ""), limiter=app[_RENDER_LIMITER]
        )
        return web.Response(body=body, headers={"Content-Type": content_type})

    app.cleanup_ctx.append(metrics_ctx)  # after setup()'s: registered while the scheduler runs
    return app.router.add_get(path, metrics)


def _scheduler_of(app: web.Application, helper: str) -> Scheduler:
    scheduler = app.get(SCHEDULER_KEY)
    if scheduler is None:
        raise RuntimeError(
            f"aiotimer.aiohttp.{helper}: app {app!r} has no scheduler; "
            "call aiotimer.aiohttp.setup(app, scheduler) first"
        )
    return scheduler


def _check_free(app: web.Application, path: str, helper: str) -> None:
    for resource in app.router.resources():
        if resource.canonical == path:
            raise ValueError(
                f"aiotimer.aiohttp.{helper}: path {path!r} is already routed on app {app!r} "
                f"({resource!r}); pass another path"
            )


def _started_elsewhere(scheduler: Scheduler) -> str:
    return (
        f"aiotimer.aiohttp.setup: scheduler {scheduler.name!r} is already running; setup() "
        "starts it with the app and stops it with the app, so nothing else may start it "
        "(another app's setup(), or start()/serve() in your code)"
    )
