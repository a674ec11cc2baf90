"""The claim stores against a model: any sequence of claim batches (several nodes, old and new
instants, repeats) and prunes gets the answers of a plain fence per timer, on every store.

The model: per timer, the newest instant ever won; a claim wins iff its instant is newer, and
then becomes the fence. Pruning never changes an answer. The history holds exactly the winners
that were not pruned, each with the node that won it.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from cluster_stores import KINDS, store_url, unique_cluster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiotimer.cluster import open_store

T0 = 1_800_000_000_000

claim = st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 30))


def _in_order(claims: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The same claims, timers interleaved as drawn, each timer's instants increasing (the
    stores refuse a batch whose timer goes back)."""
    queues = {t: sorted(k for u, k in claims if u == t) for t, _ in claims}
    return [(t, T0 + queues[t].pop(0) * 1000) for t, _ in claims]


batch = st.lists(claim, max_size=8, unique=True).map(_in_order)
step = st.one_of(
    st.tuples(st.just("claim"), st.sampled_from(["n0", "n1", "n2"]), batch),
    st.tuples(st.just("prune"), st.integers(0, 30)),
)


@pytest.mark.parametrize("kind", KINDS)
def test_every_store_answers_like_the_fence_model(kind: str, tmp_path: Path) -> None:
    url = store_url(kind, tmp_path)

    @settings(
        max_examples=40 if kind == "sqlite" else 25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(st.lists(step, max_size=12))
    def check(steps: list[tuple]) -> None:  # type: ignore[type-arg]
        anyio.run(run, steps)

    async def run(steps: list[tuple]) -> None:  # type: ignore[type-arg]
        store = open_store(url, unique_cluster("model"))
        await store.open()
        try:
            fence: dict[str, int] = {}
            winners: dict[tuple[str, int], str] = {}
            for s in steps:
                if s[0] == "prune":
                    cutoff_ms = T0 + s[1] * 1000
                    await store.prune(cutoff_ms * 1_000_000)
                    winners = {p: n for p, n in winners.items() if p[1] >= cutoff_ms}
                    continue
                _, node, claims = s
                expected = []
                for timer, instant in claims:
                    won = timer not in fence or instant > fence[timer]
                    if won:
                        fence[timer] = instant
                        winners[timer, instant] = node
                    expected.append(won)
                assert await store.claim(node, claims) == expected, (node, claims)
            history = await store.history(limit=1000)
            assert {(r.timer, r.instant_ms): r.node for r in history} == winners
        finally:
            await store.drop()
            await store.close()

    check()
