"""The dedicated-process variant: expired messages purged by a timer process of its own.

Kamailio modules move slow timer work to a process of its own (``register_basic_timers(1)`` in
``mod_init``, ``fork_basic_timer(...)`` in ``child_init``), so that it delays no other timer.
Here the purge of expired messages, the part of ``m_clean_silo`` that needs only the database,
runs that way: the worker opens its own connection to the database file.

The delivered-message cleanup stays with :class:`~.module.Msilo` on the main scheduler: it
needs the message list, which lives in the main process (Kamailio keeps it in shared memory).
"""

from __future__ import annotations

import logging

from aiotimer.kamailio import PROC_TIMER, ProcessId, fork_basic_timer

from .store import MessageStore

__all__ = ["fork_cleaner", "m_clean_expired"]

logger = logging.getLogger("msilo.process")

_stores: dict[str, MessageStore] = {}  # one connection per database, per process


def m_clean_expired(ticks: int, db_path: str) -> None:
    """Purge the expired messages of the database at ``db_path`` (runs in the worker)."""
    store = _stores.get(db_path)
    if store is None:
        store = _stores[db_path] = MessageStore(db_path)
    purged = store.delete_expired()
    logger.info("m_clean_expired at %d s: purged %d expired; %d stored", ticks, purged, len(store))


def fork_cleaner(db_path: str, check_time: int) -> ProcessId:
    """Fork the cleaner process (from ``child_init``; reserve it in ``mod_init`` with
    ``register_basic_timers(1)``): it purges expired messages every ``check_time`` seconds.

    :raises ValueError: ``db_path`` is ``":memory:"`` (such a database is private to one
        connection: another process cannot see it), or ``check_time`` < 1
    """
    if db_path == ":memory:":
        raise ValueError(
            "msilo: the cleaner process needs a database file; an in-memory database is "
            "private to its connection, got ':memory:'"
        )
    if isinstance(check_time, bool) or not isinstance(check_time, int) or check_time < 1:
        raise ValueError(f"msilo: check_time must be an int >= 1, got {check_time!r}")
    return fork_basic_timer(PROC_TIMER, "MSILO CLEANER", 1, m_clean_expired, db_path, check_time)
