"""aiotimer in aiohttp services (the optional extra ``aiohttp``).

::

    app = web.Application()
    scheduler = aiotimer.Scheduler()
    scheduler.add_every_s(60, purge_sessions, param=app)   # the callback gets tick.param == app
    aiotimer.aiohttp.setup(app, scheduler)                  # starts and stops with the app
    aiotimer.aiohttp.add_status_route(app)                  # GET /timers: scheduler.stats()
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
* Misuse fails at once, naming the thing: :func:`setup` twice on one app, a scheduler that
  someone else started, a route path that is already taken, a route helper before
  :func:`setup`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

from aiohttp import web

from ._scheduler import Scheduler

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = ["SCHEDULER_KEY", "add_metrics_route", "add_status_route", "setup"]

logger = logging.getLogger("aiotimer.aiohttp")

SCHEDULER_KEY: Final = web.AppKey("aiotimer.scheduler", Scheduler)
"""Where :func:`setup` stores the app's scheduler: ``app[SCHEDULER_KEY]``."""


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
    """Serve ``scheduler.stats()`` as JSON on ``GET path`` (read-only).

    :raises RuntimeError: if :func:`setup` was not called on ``app`` first
    :raises ValueError: if ``path`` is already routed on ``app``
    """
    scheduler = _scheduler_of(app, "add_status_route")
    _check_free(app, path, "add_status_route")

    async def timers_status(request: web.Request) -> web.Response:
        return web.json_response(scheduler.stats().as_dict())

    return app.router.add_get(path, timers_status)


def add_metrics_route(
    app: web.Application, path: str = "/metrics", *, registry: CollectorRegistry | None = None
) -> web.AbstractRoute:
    """Serve ``registry`` (prometheus_client's global ``REGISTRY`` by default) on ``GET path``,
    with the app's scheduler registered on it while the app runs (see
    :mod:`aiotimer.prometheus`). Answers OpenMetrics to scrapers that ask for it.

    Needs the ``prometheus`` extra.

    :raises RuntimeError: if :func:`setup` was not called on ``app`` first
    :raises ValueError: if ``path`` is already routed on ``app``
    """
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.registry import REGISTRY

    from . import prometheus

    scheduler = _scheduler_of(app, "add_metrics_route")
    _check_free(app, path, "add_metrics_route")
    target = REGISTRY if registry is None else registry

    async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
        prometheus.register(scheduler, registry=target)
        yield
        prometheus.unregister(scheduler, registry=target)

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(target), headers={"Content-Type": content_type})

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
