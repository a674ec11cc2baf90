"""Stores for the cluster tests: URLs of the real servers, unique cluster names, and the
module-level code that racing node processes run.

PostgreSQL and Redis URLs come from ``AIOTIMER_POSTGRES_URL`` and ``AIOTIMER_REDIS_URL``
(default: the local servers). A store whose server does not answer is skipped with the reason,
or fails the test when ``AIOTIMER_REQUIRE_SERVICES=1`` (CI).
"""

from __future__ import annotations

import asyncio
import os
import socket
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import pytest

from aiotimer.cluster import ClaimStore, open_store

POSTGRES_URL = os.environ.get("AIOTIMER_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("AIOTIMER_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("AIOTIMER_REQUIRE_SERVICES") == "1"
KINDS = ("sqlite", "postgres", "redis")

_reachable: dict[str, str | None] = {}


def _unreachable_reason(url: str, default_port: int) -> str | None:
    """Why the server behind ``url`` cannot be reached (``None``: a TCP connect works)."""
    if url not in _reachable:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or default_port
        try:
            socket.create_connection((host, port), timeout=1.0).close()
        except OSError as exc:
            _reachable[url] = f"{host}:{port} unreachable ({exc})"
        else:
            _reachable[url] = None
    return _reachable[url]


def store_url(kind: str, tmp_path: Path) -> str:
    """The URL of a store of ``kind``; skips (or fails, with AIOTIMER_REQUIRE_SERVICES=1)
    when its server is unreachable."""
    if kind == "sqlite":
        return f"sqlite://{tmp_path / 'claims.db'}"
    url, port, var = {
        "postgres": (POSTGRES_URL, 5432, "AIOTIMER_POSTGRES_URL"),
        "redis": (REDIS_URL, 6379, "AIOTIMER_REDIS_URL"),
    }[kind]
    reason = _unreachable_reason(url, port)
    if reason is not None:
        message = f"{kind} server for {var}: {reason}"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message} (AIOTIMER_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    return url


def unique_cluster(prefix: str = "test") -> str:
    """A cluster name no other test or run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# -- racing node processes (spawned: everything here is module-level) ---------------------------


def race_node(
    url: str,
    cluster: str,
    node: str,
    timers: list[str],
    instants: list[int],
    barrier: Any,
    results: Any,
) -> None:
    """Claim every ``(timer, instant)``, one batch per instant (as a node would at each grid
    point), after every node reached ``barrier``; put ``(node, won claims)`` on ``results``."""

    async def run() -> list[tuple[str, int]]:
        store: ClaimStore = open_store(url, cluster, timeout_s=30.0)
        await store.open()
        try:
            await asyncio.to_thread(barrier.wait)
            won: list[tuple[str, int]] = []
            for instant in instants:
                batch = [(timer, instant) for timer in timers]
                flags = await store.claim(node, batch)
                won += [claim for claim, flag in zip(batch, flags, strict=True) if flag]
            return won
        finally:
            await store.close()

    try:
        results.put((node, asyncio.run(run())))
    except BaseException as exc:
        results.put((node, f"{type(exc).__name__}: {exc}"))
        raise


# -- a TCP proxy that can cut a store off and heal it ---------------------------------------------


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to a server; :meth:`cut` drops every connection and refuses
    new ones (as a network partition or a restarting server would), :meth:`heal` lets them in
    again. Use it as an async context manager inside a task group's reach."""

    def __init__(self, target_host: str, target_port: int, local_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.local_host = local_host
        self.port = 0
        self._cut = False
        self._streams: set[Any] = set()

    async def __aenter__(self) -> CuttableProxy:
        import anyio

        self._listener = await anyio.create_tcp_listener(local_host=self.local_host)
        self.port = self._listener.extra(anyio.abc.SocketAttribute.local_port)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._listener.serve, self._handle)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        await self._listener.aclose()

    def url(self, url: str, host: str = "127.0.0.1") -> str:
        """``url`` pointed at the proxy (reached at ``host``) instead of the server."""
        parts = urllib.parse.urlsplit(url)
        auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{auth}{host}:{self.port}"))

    async def cut(self) -> None:
        self._cut = True
        for stream in list(self._streams):
            await stream.aclose()

    def heal(self) -> None:
        self._cut = False

    async def _handle(self, client: Any) -> None:
        import anyio

        if self._cut:
            await client.aclose()
            return
        try:
            server = await anyio.connect_tcp(*self.target)
        except OSError:
            await client.aclose()
            return
        self._streams |= {client, server}

        async def pump(src: Any, dst: Any) -> None:
            try:
                async for chunk in src:
                    await dst.send(chunk)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass
            finally:
                await src.aclose()
                await dst.aclose()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(pump, client, server)
                tg.start_soon(pump, server, client)
        finally:
            self._streams -= {client, server}
