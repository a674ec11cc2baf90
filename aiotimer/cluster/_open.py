"""``open_store(url, cluster)``: the claim store for a URL, chosen by its scheme."""

from __future__ import annotations

import urllib.parse

from ._store import ClaimStore, mask_url

__all__ = ["SCHEMES", "open_store"]

SCHEMES = ("sqlite", "postgresql", "postgres", "redis", "rediss", "unix")


def open_store(
    url: str,
    cluster: str = "default",
    *,
    connect_timeout_s: float = 5.0,
    timeout_s: float = 5.0,
) -> ClaimStore:
    """The (not yet opened) claim store for ``url``, scoped to the cluster ``cluster``.

    * ``sqlite:///abs/path.db``: stdlib ``sqlite3``, one host;
    * ``postgresql://user@host/db`` (or ``postgres://``): asyncpg, extra ``postgres``;
    * ``redis://host:6379/0`` (``rediss://``, ``unix://``): redis-py, extra ``redis``.

    The PostgreSQL and Redis stores run on asyncio only (their drivers do); SQLite runs on any
    anyio backend.

    :param connect_timeout_s: how long :meth:`~ClaimStore.open` (and a reconnect) may take
    :param timeout_s: how long one call may take before it raises ``StoreUnavailable``
    :raises ValueError: for an unknown scheme (the URL is shown with its password masked)
    :raises ImportError: naming the extra to install when the driver is missing
    """
    if not isinstance(url, str):
        raise TypeError(f"store URL must be a str, got {type(url).__name__}")
    scheme = urllib.parse.urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme == "sqlite":
        from ._sqlite import SqliteStore

        return SqliteStore(url, cluster, connect_timeout_s=connect_timeout_s, timeout_s=timeout_s)
    if scheme in ("postgresql", "postgres"):
        from ._postgres import PostgresStore

        return PostgresStore(url, cluster, connect_timeout_s=connect_timeout_s, timeout_s=timeout_s)
    if scheme in ("redis", "rediss", "unix"):
        from ._redis import RedisStore

        return RedisStore(url, cluster, connect_timeout_s=connect_timeout_s, timeout_s=timeout_s)
    raise ValueError(
        f"store URL {mask_url(url)!r}: unknown scheme {scheme!r}; expected one of "
        f"{', '.join(s + '://' for s in SCHEMES)}"
    )
