"""Traffic for the example: stands in for the SIP side of msilo.

In Kamailio, ``m_store`` stores a MESSAGE for an offline user, ``m_dump`` sends the stored ones
when the user registers, and the reply to each sets its flag in the message list. Here a
periodic timer plays all of that with a seeded random source: each run stores a message with an
expiry, and settles the delivery of some earlier ones (delivered, failed, or nothing yet, in
which case the message waits until it expires).
"""

from __future__ import annotations

import logging
import random
from collections import deque
from typing import Any

from aiotimer.kamailio import TimerId, register_ms_timer

from .store import MS_MSG_DONE, MS_MSG_ERRO, MS_MSG_SENT, MS_MSG_TSND, MessageList, MessageStore

__all__ = ["Producer"]

logger = logging.getLogger("msilo.producer")

_USERS = ("alice", "bob", "carol", "dave", "erin")


class Producer:
    """Stores messages and settles deliveries, once per run of its timer.

    :param store: where messages are stored
    :param ml: the message list the delivery results go to
    :param seed: seed of the random source (reproducible runs)
    :param expires_s: a message expires this many seconds after it is stored (a range)
    :param deliver: chance that a run delivers the oldest waiting message
    :param fail: chance that such a delivery fails (the message stays, or a reminder is reset)
    """

    def __init__(
        self,
        store: MessageStore,
        ml: MessageList,
        *,
        seed: int | None = None,
        expires_s: tuple[int, int] = (2, 6),
        deliver: float = 0.6,
        fail: float = 0.2,
    ) -> None:
        self.store = store
        self.ml = ml
        self.random = random.Random(seed)
        self.expires_s = expires_s
        self.deliver = deliver
        self.fail = fail
        self.waiting: deque[tuple[int, bool]] = deque()  # (id, is a reminder), not delivered
        self.stored = self.delivered = self.failed = 0

    def register(self, every_ms: int) -> TimerId:
        """Register :meth:`produce` on the current scheduler, in a worker thread."""
        return register_ms_timer(self.produce, None, every_ms, name="msilo.producer", thread=True)

    def produce(self, ticks_raw: int, param: Any) -> None:
        rnd = self.random
        src, dst = rnd.sample(_USERS, 2)
        reminder = rnd.random() < 0.1
        mid = self.store.store(
            f"sip:{src}@example.org",
            f"sip:{dst}@example.org",
            f"message at {ticks_raw} ms",
            expires_s=rnd.randint(*self.expires_s),
            snd_time=self.store.now() + 60 if reminder else 0,
        )
        self.stored += 1
        self.waiting.append((mid, reminder))
        if rnd.random() < self.deliver:
            mid, reminder = self.waiting.popleft()
            flags = MS_MSG_SENT | (MS_MSG_TSND if reminder else 0)
            if rnd.random() < self.fail:
                self.ml.set_flag(mid, flags | MS_MSG_ERRO)
                self.failed += 1
            else:
                self.ml.set_flag(mid, flags | MS_MSG_DONE)
                self.delivered += 1
