"""``aiotimer cluster URL``: a cluster's live nodes and each timer's last runs, from its store.

Read-only: it never claims, heartbeats or prunes. The URL is shown with its password masked.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from ._store import ClaimStore, NodeInfo, RunRecord

__all__ = ["render_report", "store_report"]

HISTORY_SCAN: int = 2000
"""Runs read from the store to find each timer's last ones (newest first)."""


def _utc(ns: int) -> str:
    moment = datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def render_report(
    url: str,
    cluster: str,
    now_ns: int,
    nodes: Sequence[NodeInfo],
    history: Sequence[RunRecord],
    runs_per_timer: int,
) -> str:
    """The report as text: live nodes, then each timer's last ``runs_per_timer`` runs."""
    lines = [f"cluster {cluster!r} on {url}, store time {_utc(now_ns)}", ""]
    if nodes:
        lines.append(f"live nodes ({len(nodes)}):")
        node_rows = [(n.node, f"{(n.expires_ns - now_ns) / 1e9:.1f} s") for n in nodes]
        lines += _table(["node", "expires in"], node_rows)
    else:
        lines.append("live nodes: none")
    lines.append("")
    by_timer: dict[str, list[RunRecord]] = {}
    for record in history:  # newest instant first
        runs = by_timer.setdefault(record.timer, [])
        if len(runs) < runs_per_timer:
            runs.append(record)
    if not by_timer:
        lines.append("runs: none recorded")
        return "\n".join(lines) + "\n"
    lines.append(f"last runs per timer (up to {runs_per_timer}):")
    rows = []
    for timer in sorted(by_timer):
        for r in by_timer[timer]:
            late_ms = (r.claimed_ns - r.instant_ms * 1_000_000) / 1e6
            if r.outcome is None:
                state, duration = "claimed, not finished", "-"
            else:
                state = r.outcome.value
                duration = f"{(r.duration_ns or 0) / 1e6:.1f} ms"
            rows.append(
                (
                    timer,
                    _utc(r.instant_ms * 1_000_000),
                    r.node,
                    f"{late_ms:+.1f} ms",
                    state,
                    duration,
                )
            )
    lines += _table(["timer", "grid instant", "node", "claimed", "state", "duration"], rows)
    return "\n".join(lines) + "\n"


async def store_report(store: ClaimStore, runs_per_timer: int = 3) -> str:
    """Read ``store`` (already open) and render its report."""
    if isinstance(runs_per_timer, bool) or not isinstance(runs_per_timer, int):
        raise TypeError(f"runs_per_timer must be an int, got {runs_per_timer!r}")
    if runs_per_timer < 1:
        raise ValueError(f"runs_per_timer must be >= 1, got {runs_per_timer}")
    now_ns = await store.clock_ns()
    nodes = await store.nodes()
    history = await store.history(limit=HISTORY_SCAN)
    return render_report(store.url, store.cluster, now_ns, nodes, history, runs_per_timer)
