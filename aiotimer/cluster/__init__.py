"""Cluster timers: each grid point of a cluster timer runs once across processes and hosts.

Every node that holds a cluster timer claims ``(cluster, timer, grid instant)`` in a shared
store and exactly one wins (see :mod:`aiotimer.cluster._store` for the guarantees). Stores:
SQLite (one host, many processes), PostgreSQL (``postgres`` extra) and Redis (``redis`` extra),
chosen by URL with :func:`open_store`.
"""

from ._open import open_store
from ._rendezvous import preferred_node
from ._store import (
    ClaimStore,
    NodeInfo,
    Outcome,
    RunOutcome,
    RunRecord,
    StoreError,
    StoreUnavailable,
    mask_url,
)

__all__ = [
    "ClaimStore",
    "NodeInfo",
    "Outcome",
    "RunOutcome",
    "RunRecord",
    "StoreError",
    "StoreUnavailable",
    "mask_url",
    "open_store",
    "preferred_node",
]
