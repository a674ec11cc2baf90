"""A small aiohttp service with aiotimer: a ms timer, a s timer, /timers and /metrics.

Run it::

    python examples/aiohttp_service.py --port 8080
    curl localhost:8080/            # what the timers computed
    curl localhost:8080/timers      # scheduler.stats() as JSON
    curl localhost:8080/metrics     # Prometheus

Several processes on one host (gunicorn workers, or this script started twice) all serve
requests, but only one of them runs the once-per-host timer when they share a lock file::

    python examples/aiohttp_service.py --port 8080 --lock-file /tmp/aiohttp_service.lock &
    python examples/aiohttp_service.py --port 8081 --lock-file /tmp/aiohttp_service.lock &

Needs the extras: ``pip install 'aiotimer[aiohttp,prometheus]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler

import aiotimer
import aiotimer.aiohttp
from aiotimer.leader import LeaderLock
from aiotimer.process import TimerProcess

logger = logging.getLogger("aiohttp_service")


@dataclass
class Traffic:
    """What the request middleware counts and the timers turn into numbers."""

    requests: int = 0
    seen: int = 0  # requests counted by the last rate sample
    rate_per_s: float = 0.0  # exponentially smoothed requests per second
    recent: dict[str, float] = field(default_factory=dict)  # path -> last request (epoch s)


TRAFFIC = web.AppKey("traffic", Traffic)
RATE_INTERVAL_MS = 100
RECENT_TTL_S = 60


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    traffic = request.app[TRAFFIC]
    traffic.requests += 1
    traffic.recent[request.path] = time.time()
    return await handler(request)


def sample_rate(tick: aiotimer.Tick) -> None:
    """Every 100 ms: the request rate of this process (an inline sync callback)."""
    traffic = tick.param[TRAFFIC]  # param=app at registration: timers reach the app this way
    new = traffic.requests - traffic.seen
    traffic.seen = traffic.requests
    per_s = new * 1000 / RATE_INTERVAL_MS
    traffic.rate_per_s += 0.2 * (per_s - traffic.rate_per_s)


async def forget_old_paths(tick: aiotimer.Tick) -> None:
    """Every second: drop paths not requested for a minute (a coroutine callback). With
    --lock-file it stands for once-per-host work: only the leader process runs it."""
    traffic = tick.param[TRAFFIC]
    cutoff = time.time() - RECENT_TTL_S
    for path in [p for p, t in traffic.recent.items() if t < cutoff]:
        del traffic.recent[path]
    logger.debug("tick %d: %d recent paths", tick.ticks, len(traffic.recent))


async def index(request: web.Request) -> web.Response:
    traffic = request.app[TRAFFIC]
    return web.json_response(
        {
            "requests": traffic.requests,
            "rate_per_s": round(traffic.rate_per_s, 2),
            "recent_paths": sorted(traffic.recent),
        }
    )


def slow_work() -> None:
    """Runs in the worker process: blocking work that would stall the app's loop."""
    time.sleep(0.05)


def create_app(*, lock_file: str | None = None) -> web.Application:
    """The app and its scheduler (also usable as a gunicorn factory:
    ``gunicorn 'aiohttp_service:create_app()' -k aiohttp.GunicornWebWorker``)."""
    app = web.Application(middlewares=[count_requests])
    app[TRAFFIC] = Traffic()

    scheduler = aiotimer.Scheduler(name="aiohttp_service")
    scheduler.add_every_ms(RATE_INTERVAL_MS, sample_rate, param=app, name="sample-rate")
    scheduler.add_every_s(1, forget_old_paths, param=app, name="forget-old-paths")

    # -- dedicated timer process ------------------------------------------------------------
    # Slow, blocking work goes to a worker process with its own event loop (DESIGN §3), so it
    # delays no timer of this loop. Attached to `scheduler`, it starts and stops with the app
    # like the timers above, and its numbers come through this process: /timers and /metrics
    # show them (worker="slow-work[0]"). Its callback is a module-level function: the worker
    # imports it by name.
    slow = TimerProcess("slow-work", stats_interval_s=0.5)
    slow.add_every_s(1, slow_work, name="slow-work")
    scheduler.add_process(slow)
    # ----------------------------------------------------------------------------------------

    if lock_file is not None:
        scheduler.add_service(LeaderLock(lock_file, timers=["forget-old-paths"]))

    aiotimer.aiohttp.setup(app, scheduler)
    aiotimer.aiohttp.add_status_route(app)  # GET /timers
    aiotimer.aiohttp.add_metrics_route(app)  # GET /metrics
    app.router.add_get("/", index)
    return app


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed, else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--lock-file", help="share once-per-host timers with other processes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    web.run_app(
        create_app(lock_file=args.lock_file),
        host=args.host,
        port=args.port,
        loop=new_event_loop(),
    )


if __name__ == "__main__":
    main()
