"""The Redis claim store: the lowest-latency store for claims (redis-py asyncio, extra ``redis``).

``redis://host:6379/0`` (``rediss://`` for TLS, ``unix:///path.sock``).

Ground rules:

* **Keys.** Four keys per cluster, all with the hash tag ``{aiotimer:<cluster>}`` so that they
  live in one slot and the scripts work on Redis Cluster: ``...:fence`` (hash: timer -> newest
  claimed instant), ``...:open`` (hash: claimed, not finished runs), ``...:nodes`` (sorted set:
  node -> liveness expiry) and ``...:history`` (a stream of finished runs, capped with
  ``XADD MAXLEN ~ max_history``; a finished run leaves ``open`` for ``history``).
* **Claims** are a Lua script run with ``EVALSHA``: atomic, one round trip. A batch of more
  than 1,000 claims is split into scripts of at most 1,000 (a script blocks the server while it
  runs; 1,000 claims take about a millisecond, far from the 5 s busy-script threshold), sent
  together in one pipeline: still one round trip. Each claim is atomic; a batch is not.
* **The fence** is the grid instant: per timer a claim wins only for an instant newer than the
  one in ``fence`` (compared as decimal strings by length then digits, exact for 64-bit
  instants, where Lua's doubles are not). ``fence`` never expires.
* **The store's clock** is ``TIME``; liveness and leases are measured on it inside the scripts.
* **No retries.** redis-py retries a failed command by default; a retried claim could be
  refused after its first attempt won, and then nobody would run the point. This store sends
  each command once and reports failures as :class:`StoreUnavailable`.
* **Cancellation.** A call cancelled mid-flight (a stop, a timeout) must not leave its reply
  on the connection for the next command to read (CVE-2023-28858/28859): redis-py >= 4.5.4
  disconnects such a connection; the tests check it on the redis-py installed.
* **The guarantee is weaker than PostgreSQL's.** Redis replication is asynchronous: a failover
  of the primary, or a restart of a Redis that keeps nothing on disk, can lose recent claims and
  fences and let a grid point run twice. Use the grid instant as the idempotency key of the
  callback's own writes where a duplicate matters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

from ._store import (
    NodeInfo,
    Outcome,
    RunOutcome,
    RunRecord,
    StoreBase,
    StoreError,
    StoreUnavailable,
    check_claims,
    check_cutoff_ns,
    check_lease,
    check_limit,
    check_node,
    check_positive_s,
    check_results,
    require_asyncio,
)

try:
    import redis.asyncio as aioredis
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import NoScriptError, RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "the Redis claim store needs redis-py: pip install 'aiotimer[redis]'"
    ) from exc

__all__ = ["MAX_CLAIMS_PER_SCRIPT", "RedisStore"]

T = TypeVar("T")

MAX_CLAIMS_PER_SCRIPT: Final = 1000
"""Claims per script run: bounds how long one script blocks the server."""

# Shared Lua: instants and times travel as decimal strings; `newer` compares two of them
# exactly (no leading zeros: Python's str(int)).
LUA_PRELUDE: Final = """
local function newer(a, b)
    if #a ~= #b then return #a > #b end
    return a > b
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_s = string.format('%.0f', now)
"""
# KEYS: fence, open. ARGV: node, lease_us ('' = none), the claims as one string
# "timer NUL instant NUL ..." (one argument: redis-py packs 20,000 arguments slowly).
# Returns one '1' or '0' per claim, as one string. `open` values: node NUL claimed_us NUL
# lease_until_us ('' = none).
CLAIM_LUA: Final = (
    LUA_PRELUDE
    + """
local node, lease = ARGV[1], ARGV[2]
local until_s = ''
if lease ~= '' then until_s = string.format('%.0f', now + tonumber(lease)) end
local record = node .. '\\0' .. now_s .. '\\0' .. until_s
local won = {}
for timer, instant in string.gmatch(ARGV[3], '([^%z]+)%z(%d+)%z') do
    local field = timer .. '\\0' .. instant
    local last = redis.call('HGET', KEYS[1], timer)
    local ok = '0'
    if (not last) or newer(instant, last) then
        redis.call('HSET', KEYS[1], timer, instant)
        redis.call('HSET', KEYS[2], field, record)
        ok = '1'
    elseif lease ~= '' then
        -- at least once: take over a leased run whose lease expired unfinished
        local held = redis.call('HGET', KEYS[2], field)
        if held then
            local lease_until = string.match(held, '%z[^%z]*%z(%d+)$')
            if lease_until and tonumber(lease_until) < now then
                redis.call('HSET', KEYS[2], field, record)
                ok = '1'
            end
        end
    end
    won[#won + 1] = ok
end
return table.concat(won)
"""
)
# KEYS: open, history. ARGV: node, max_history, then timer, instant, outcome, duration_ns.
FINISH_LUA: Final = (
    LUA_PRELUDE
    + """
local node = ARGV[1]
for i = 3, #ARGV, 4 do
    local field = ARGV[i] .. '\\0' .. ARGV[i + 1]
    local held = redis.call('HGET', KEYS[1], field)
    if held and string.sub(held, 1, #node + 1) == node .. '\\0' then
        local claimed = string.match(held, '^[^%z]*%z(%d+)')
        redis.call('HDEL', KEYS[1], field)
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
            't', ARGV[i], 'i', ARGV[i + 1], 'n', node, 'c', claimed, 'f', now_s,
            'o', ARGV[i + 2], 'd', ARGV[i + 3])
    end
end
return 0
"""
)
# KEYS: nodes. ARGV: node ('' = only read), ttl_us. Returns node, expiry_us pairs.
LIVE_LUA: Final = (
    LUA_PRELUDE
    + """
if ARGV[1] ~= '' then
    redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[2])), ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_s)
return redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
"""
)
# KEYS: open, history, nodes. ARGV: cutoff_ms (an instant), cutoff_us, HSCAN cursor.
# Prunes one HSCAN page of `open` (so a script never walks a huge hash at once); on the last
# page (cursor back to 0) also trims the history stream and the expired nodes.
# Returns {next cursor, deleted}.
PRUNE_LUA: Final = (
    LUA_PRELUDE
    + """
local page = redis.call('HSCAN', KEYS[1], ARGV[3], 'COUNT', 1000)  -- about 1,000 per page
local deleted = 0
local fields = page[2]
for i = 1, #fields, 2 do
    local instant = string.match(fields[i], '%z(%d+)$')
    if instant and newer(ARGV[1], instant) then
        redis.call('HDEL', KEYS[1], fields[i])
        deleted = deleted + 1
    end
end
if page[1] == '0' then
    deleted = deleted + redis.call('XTRIM', KEYS[2], 'MINID', ARGV[1])
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[2])
end
return {page[1], deleted}
"""
)
SCRIPTS: Final = {"claim": CLAIM_LUA, "finish": FINISH_LUA, "live": LIVE_LUA, "prune": PRUNE_LUA}

UNAVAILABLE: Final = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)


class RedisStore(StoreBase):
    """A :class:`~aiotimer.cluster.ClaimStore` in Redis (see the module's rules).

    :param url: ``redis://[user:password@]host:6379/0``
    :param cluster: the cluster name (data: many clusters share one Redis)
    :param connect_timeout_s: how long connecting may take
    :param timeout_s: how long one call may take
    :param max_history: finished runs kept in the history stream (approximately: ``MAXLEN ~``)
    """

    def __init__(
        self,
        url: str,
        cluster: str = "default",
        *,
        connect_timeout_s: float = 5.0,
        timeout_s: float = 5.0,
        max_history: int = 100_000,
    ) -> None:
        super().__init__(url, cluster, connect_timeout_s=connect_timeout_s, timeout_s=timeout_s)
        if isinstance(max_history, bool) or not isinstance(max_history, int) or max_history < 1:
            raise ValueError(f"{self!r}: max_history must be an int >= 1, got {max_history!r}")
        self._redis_url = url  # unmasked: only ever handed to redis-py
        self._max_history = max_history
        prefix = "{aiotimer:" + self._cluster + "}:"
        self._fence_key = prefix + "fence"
        self._open_key = prefix + "open"
        self._nodes_key = prefix + "nodes"
        self._history_key = prefix + "history"
        self._client: aioredis.Redis | None = None
        self._shas: dict[str, str] = {}

    # -- plumbing ------------------------------------------------------------------------

    async def open(self) -> None:
        if self._client is not None:
            return
        require_asyncio(self, "redis-py")
        client = aioredis.Redis.from_url(
            self._redis_url,
            socket_connect_timeout=self._connect_timeout_s,
            socket_timeout=self._timeout_s,
            retry=Retry(NoBackoff(), 0),
            retry_on_error=[],
            decode_responses=True,
        )
        try:
            await self._guard(self._load_scripts, client)
        except BaseException:
            await client.aclose()
            raise
        self._client = client

    async def _load_scripts(self, client: aioredis.Redis) -> None:
        pipe = client.pipeline(transaction=False)
        for lua in SCRIPTS.values():
            pipe.script_load(lua)
        shas = await pipe.execute()
        self._shas = dict(zip(SCRIPTS, shas, strict=True))

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _guard(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """One round trip: ``fn(*args)``, bounded in time, with redis-py's errors typed."""
        self._round_trips += 1
        try:
            async with asyncio.timeout(self._connect_timeout_s + self._timeout_s):
                return await fn(*args)
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"{self._url}: {type(exc).__name__}: {exc}") from None
        except RedisError as exc:
            raise StoreError(f"{self._url}: {type(exc).__name__}: {exc}") from exc

    async def _command(self, *args: str | int) -> Any:
        """One raw command (redis-py parses its reply by the command's name)."""
        return await self._require().execute_command(*args)  # type: ignore[no-untyped-call]

    def _require(self) -> aioredis.Redis:
        if self._client is None:
            raise StoreError(f"{self!r} is not open")
        return self._client

    async def _eval(self, script: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        """``EVALSHA`` of one of :data:`SCRIPTS`; reloads the scripts once if the server lost
        them (a restart, ``SCRIPT FLUSH``)."""
        client = self._require()

        async def run() -> Any:
            try:
                return await client.evalsha(self._shas[script], len(keys), *keys, *args)
            except NoScriptError:
                await self._load_scripts(client)
                return await client.evalsha(self._shas[script], len(keys), *keys, *args)

        return await self._guard(run)

    # -- the store -----------------------------------------------------------------------

    async def clock_ns(self) -> int:
        client = self._require()
        seconds, micros = await self._guard(client.time)
        return int(seconds) * 1_000_000_000 + int(micros) * 1000

    async def heartbeat(self, node: str, ttl_s: float) -> list[NodeInfo]:
        check_node(node)
        ttl_us = int(check_positive_s("ttl_s", ttl_s) * 1e6)
        return _nodes(await self._eval("live", [self._nodes_key], [node, str(ttl_us)]))

    async def nodes(self) -> list[NodeInfo]:
        return _nodes(await self._eval("live", [self._nodes_key], ["", "0"]))

    async def leave(self, node: str) -> None:
        check_node(node)
        client = self._require()
        await self._guard(client.zrem, self._nodes_key, node)

    async def claim(
        self, node: str, claims: Sequence[tuple[str, int]], *, lease_s: float | None = None
    ) -> list[bool]:
        check_node(node)
        check_claims(claims)
        lease = check_lease(lease_s)
        if not claims:
            return []
        head = [node, "" if lease is None else str(int(lease * 1e6))]
        keys = [self._fence_key, self._open_key]
        pieces = [
            claims[i : i + MAX_CLAIMS_PER_SCRIPT]
            for i in range(0, len(claims), MAX_CLAIMS_PER_SCRIPT)
        ]
        if len(pieces) == 1:
            won = await self._eval("claim", keys, [*head, _packed(claims)])
            return _flags(won, len(claims))
        client = self._require()

        async def run() -> list[Any]:
            # One pipeline: every piece in one round trip. A piece that hit NOSCRIPT (the
            # server lost the scripts) is rerun once the scripts are loaded again.
            results: list[Any] = await self._pipeline_evals(client, keys, head, pieces)
            if any(isinstance(r, NoScriptError) for r in results):
                await self._load_scripts(client)
                retry = [p for p, r in zip(pieces, results, strict=True) if _noscript(r)]
                again = iter(await self._pipeline_evals(client, keys, head, retry))
                results = [next(again) if _noscript(r) else r for r in results]
            for r in results:
                if isinstance(r, Exception):
                    raise r
            return results

        return _flags("".join(await self._guard(run)), len(claims))

    async def _pipeline_evals(
        self,
        client: aioredis.Redis,
        keys: list[str],
        head: list[str],
        pieces: list[Sequence[tuple[str, int]]],
    ) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for piece in pieces:
            pipe.evalsha(self._shas["claim"], len(keys), *keys, *head, _packed(piece))
        return list(await pipe.execute(raise_on_error=False))

    async def finish(self, node: str, results: Sequence[RunOutcome]) -> None:
        check_node(node)
        check_results(results)
        if not results:
            return
        keys = [self._open_key, self._history_key]
        pieces = []
        for i in range(0, len(results), MAX_CLAIMS_PER_SCRIPT):  # bounded scripts, as claims
            args = [node, str(self._max_history)]
            for r in results[i : i + MAX_CLAIMS_PER_SCRIPT]:
                args += (r.timer, str(r.instant_ms), r.outcome.value, str(r.duration_ns))
            pieces.append(args)
        if len(pieces) == 1:
            await self._eval("finish", keys, pieces[0])
            return
        client = self._require()

        async def run() -> None:
            for attempt in range(2):  # again once if the server lost the scripts
                pipe = client.pipeline(transaction=False)
                for args in pieces:
                    pipe.evalsha(self._shas["finish"], len(keys), *keys, *args)
                results = await pipe.execute(raise_on_error=False)
                if attempt == 0 and any(_noscript(r) for r in results):
                    await self._load_scripts(client)
                    continue  # finishing twice is harmless: a finished run is not held
                for r in results:
                    if isinstance(r, Exception):
                        raise r
                return

        await self._guard(run)

    async def history(self, timer: str | None = None, limit: int = 100) -> list[RunRecord]:
        """Claimed, not finished runs (from ``open``) and the newest finished runs (from the
        stream, read newest first), merged newest instant first; several round trips when
        ``timer`` is given and the stream must be paged through."""
        check_limit(limit)
        held: dict[str, str] = await self._guard(self._command, "HGETALL", self._open_key)
        records = []
        for field, value in held.items():
            t, instant = field.rsplit("\0", 1)
            if timer is None or t == timer:
                node, claimed_us, _ = value.split("\0")
                records.append(
                    RunRecord(t, int(instant), node, int(claimed_us) * 1000, None, None, None)
                )
        finished: list[RunRecord] = []
        top, page = "+", max(limit, 1000)
        while len(finished) < limit:
            entries: list[tuple[str, dict[str, str]]] = await self._guard(
                self._command, "XREVRANGE", self._history_key, top, "-", "COUNT", page
            )
            for _, f in entries:
                if timer is None or f["t"] == timer:
                    finished.append(
                        RunRecord(
                            f["t"],
                            int(f["i"]),
                            f["n"],
                            int(f["c"]) * 1000,
                            int(f["f"]) * 1000,
                            Outcome(f["o"]),
                            int(f["d"]),
                        )
                    )
            if len(entries) < page:
                break
            top = "(" + entries[-1][0]
        merged = sorted(records + finished, key=lambda r: (-r.instant_ms, r.timer))
        return merged[:limit]

    async def prune(self, older_than_ns: int) -> int:
        """:meth:`ClaimStore.prune`, one round trip per 1,000 unfinished runs (a page of
        ``HSCAN``). The history stream is trimmed by finish time (its entry IDs), the
        unfinished runs by grid instant."""
        older_than_ns = check_cutoff_ns(older_than_ns)
        keys = [self._open_key, self._history_key, self._nodes_key]
        cutoffs = [str(older_than_ns // 1_000_000), str(older_than_ns // 1000)]
        cursor, total = "0", 0
        while True:
            cursor, deleted = await self._eval("prune", keys, [*cutoffs, cursor])
            total += int(deleted)
            if cursor == "0":
                return total

    async def drop(self) -> None:
        """Delete every key of this cluster, fence included (tests and tear-down only: a
        dropped fence lets old grid points be claimed again)."""
        client = self._require()
        keys = [self._fence_key, self._open_key, self._nodes_key, self._history_key]
        await self._guard(client.delete, *keys)


def _packed(claims: Sequence[tuple[str, int]]) -> str:
    """Claims as one script argument: ``timer NUL instant NUL`` each (names hold no NUL)."""
    return "".join([f"{timer}\0{instant_ms}\0" for timer, instant_ms in claims])


def _flags(won: str, expected: int) -> list[bool]:
    if len(won) != expected:  # a reply that is not the answer to this question
        raise StoreError(f"claim script answered {len(won)} flags for {expected} claims")
    return [flag == "1" for flag in won]


def _noscript(result: object) -> bool:
    return isinstance(result, NoScriptError)


def _nodes(flat: list[str]) -> list[NodeInfo]:
    pairs = [NodeInfo(flat[i], int(float(flat[i + 1])) * 1000) for i in range(0, len(flat), 2)]
    return sorted(pairs, key=lambda n: n.node)
