"""Cluster timers: each grid point of a cluster timer runs once across processes and hosts.

::

    from aiotimer.cluster import Cluster

    scheduler.add_service(Cluster("postgresql://app@db/svc"))
    @scheduler.every_s(60, cluster=True)   # once per minute across every node of the cluster
    async def purge_sessions() -> None: ...

Every node that holds a cluster timer claims ``(cluster, timer, grid instant)`` in a shared
store and exactly one wins (see :mod:`aiotimer.cluster._store` for the guarantees). Stores:
SQLite (one host, many processes), PostgreSQL (``postgres`` extra) and Redis (``redis`` extra),
chosen by URL with :func:`open_store`.
"""

from ._cluster import Cluster, ClusterStats, ClusterTimerStats
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
    "Cluster",
    "ClusterStats",
    "ClusterTimerStats",
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
