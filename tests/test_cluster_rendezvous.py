"""Rendezvous hashing picks each timer's preferred node: the same answer in every process,
balanced over the nodes, and only the timers of a node that leaves (or joins) move."""

from __future__ import annotations

import collections
import os
import subprocess
import sys

import pytest

from aiotimer.cluster import preferred_node
from aiotimer.cluster._rendezvous import rendezvous_score

NODES = ["node-a", "node-b", "node-c"]
TIMERS = [f"timer-{i}" for i in range(10_000)]


def test_the_answer_is_pinned_across_versions_and_platforms() -> None:
    # Nodes of different versions of aiotimer must agree: the hash is part of the protocol.
    assert rendezvous_score("purge", "node-a") == 5368898480793112228
    assert preferred_node("purge", NODES) == "node-b"
    assert [preferred_node(f"t{i}", NODES) for i in range(6)] == [
        "node-c",
        "node-b",
        "node-a",
        "node-a",
        "node-c",
        "node-a",
    ]


def test_another_process_with_another_hash_seed_gives_the_same_answers() -> None:
    code = (
        "from aiotimer.cluster import preferred_node\n"
        f"print([preferred_node(f'timer-{{i}}', {NODES!r}) for i in range(200)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert out.strip() == repr([preferred_node(t, NODES) for t in TIMERS[:200]])


def test_the_order_and_repeats_of_the_live_nodes_do_not_matter() -> None:
    for timer in TIMERS[:500]:
        assert preferred_node(timer, reversed(NODES)) == preferred_node(timer, NODES)
        assert preferred_node(timer, NODES + NODES[:1]) == preferred_node(timer, NODES)


def test_timers_spread_evenly_over_the_nodes() -> None:
    nodes = [f"n{i}" for i in range(5)]
    counts = collections.Counter(preferred_node(t, nodes) for t in TIMERS)
    assert set(counts) == set(nodes)
    for node, count in counts.items():
        assert 1800 <= count <= 2200, (node, count)  # 2000 expected; 4.5 sigma is ~±190


def test_only_the_timers_of_a_node_that_leaves_move() -> None:
    before = {t: preferred_node(t, NODES) for t in TIMERS}
    after = {t: preferred_node(t, ["node-a", "node-c"]) for t in TIMERS}
    moved = {t for t in TIMERS if before[t] != after[t]}
    assert moved == {t for t in TIMERS if before[t] == "node-b"}


def test_a_node_that_joins_takes_about_its_share_and_nothing_else_moves() -> None:
    before = {t: preferred_node(t, NODES) for t in TIMERS}
    after = {t: preferred_node(t, [*NODES, "node-d"]) for t in TIMERS}
    moved = [t for t in TIMERS if before[t] != after[t]]
    assert all(after[t] == "node-d" for t in moved)
    assert 2200 <= len(moved) <= 2800  # a quarter of 10,000


def test_no_live_node_is_an_error_naming_the_timer() -> None:
    with pytest.raises(ValueError, match="timer 'purge': no live node to prefer"):
        preferred_node("purge", [])
