"""Affinity without a leader: each timer's preferred node, by rendezvous hashing.

Rendezvous (highest-random-weight) hashing scores every ``(timer, node)`` pair with a stable
hash and prefers the node with the highest score. Every node computes the same answer from the
same live-node list, with no coordination; when a node joins or leaves, only the timers it
wins or held move (about ``1/n`` of them), the others keep their node.

The hash is BLAKE2b (8-byte digest) of the UTF-8 names, not Python's ``hash()``, which is
salted per process and would give every process a different answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["preferred_node", "rendezvous_score"]


def rendezvous_score(timer: str, node: str) -> int:
    """The stable 64-bit weight of ``node`` for ``timer``."""
    # The NUL separator keeps ("ab", "c") and ("a", "bc") apart; names never hold NUL.
    digest = hashlib.blake2b(
        timer.encode() + b"\0" + node.encode(), digest_size=8, person=b"aiotimer"
    ).digest()
    return int.from_bytes(digest, "big")


def preferred_node(timer: str, live_nodes: Iterable[str]) -> str:
    """The live node that claims ``timer`` first (the others back it up after a delay).

    :param live_nodes: the names of the live nodes (any order; duplicates are harmless)
    :raises ValueError: if ``live_nodes`` is empty
    """
    # Ties (a 2**-64 chance) go to the greatest name, so every node still agrees.
    best = max(live_nodes, key=lambda node: (rendezvous_score(timer, node), node), default=None)
    if best is None:
        raise ValueError(f"timer {timer!r}: no live node to prefer")
    return best
