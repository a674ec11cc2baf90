"""msilo's storage: the ``silo`` table in SQLite, and the in-memory list of delivery states.

Ground rules:

* One SQLite connection per store, opened with ``check_same_thread=False`` and used only under
  the store's lock: the timers that use it run with ``thread=True``, and the scheduler's thread
  limiter may run consecutive runs on different worker threads. Every method is one short
  transaction, safe from any thread.
* Times in the table are Unix seconds, as msilo stores them (``inc_time``, ``exp_time``,
  ``snd_time``). The store reads them from an injected ``now`` (``time.time`` by default) so
  tests can run expiry on virtual time.
* :class:`MessageList` is msilo's ``msg_list`` (``ms_msg_list.c``): which messages are being
  delivered and how that ended. The delivery path sets flags; ``m_clean_silo`` takes the ended
  ones with :meth:`MessageList.reset`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple

__all__ = [
    "MS_MSG_DONE",
    "MS_MSG_ERRO",
    "MS_MSG_NULL",
    "MS_MSG_SENT",
    "MS_MSG_TSND",
    "Message",
    "MessageList",
    "MessageStore",
]

# msilo's message flags (ms_msg_list.h)
MS_MSG_NULL: Final = 0
MS_MSG_SENT: Final = 1  # being delivered
MS_MSG_DONE: Final = 4  # delivered (a 2xx came back): delete it
MS_MSG_ERRO: Final = 8  # delivery failed: keep it for the next attempt
MS_MSG_TSND: Final = 16  # it was a reminder sent at its send time

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS silo (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    src_addr TEXT NOT NULL,
    dst_addr TEXT NOT NULL,
    body TEXT NOT NULL,
    ctype TEXT NOT NULL DEFAULT 'text/plain',
    inc_time INTEGER NOT NULL,
    exp_time INTEGER NOT NULL,
    snd_time INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS silo_exp_time ON silo (exp_time);
"""


class Message(NamedTuple):
    """One row of the ``silo`` table."""

    id: int
    src_addr: str
    dst_addr: str
    body: str
    ctype: str
    inc_time: int
    exp_time: int
    snd_time: int


class MessageStore:
    """The ``silo`` table of stored offline messages.

    :param path: an SQLite database file, or ``":memory:"`` (the default)
    :param now: the wall clock, in Unix seconds
    """

    def __init__(self, path: str = ":memory:", *, now: Callable[[], float] = time.time) -> None:
        self.path = path
        self._now = now
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.executescript(_SCHEMA)

    def __repr__(self) -> str:
        return f"<MessageStore {self.path!r}>"

    def now(self) -> int:
        """Whole Unix seconds now, on the store's clock."""
        return int(self._now())

    def store(
        self,
        src_addr: str,
        dst_addr: str,
        body: str,
        *,
        expires_s: int,
        ctype: str = "text/plain",
        snd_time: int = 0,
    ) -> int:
        """Store a message for an offline user (msilo's ``m_store``); returns its id.

        :param expires_s: seconds from now until it may be purged (``exp_time``)
        :param snd_time: for a reminder, when to send it (Unix seconds); 0 for none
        """
        if expires_s < 0:
            raise ValueError(f"expires_s must be >= 0, got {expires_s!r}")
        now = self.now()
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO silo (src_addr, dst_addr, body, ctype, inc_time, exp_time, snd_time)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (src_addr, dst_addr, body, ctype, now, now + expires_s, snd_time),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def delete(self, ids: Sequence[int]) -> int:
        """Delete the messages ``ids`` (one statement); returns how many rows went."""
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))
        with self._lock:
            return self._db.execute(f"DELETE FROM silo WHERE id IN ({marks})", tuple(ids)).rowcount

    def delete_expired(self) -> int:
        """Delete every message whose ``exp_time`` is now or earlier (msilo's ``OP_LEQ``);
        returns how many."""
        now = self.now()
        with self._lock:
            return self._db.execute("DELETE FROM silo WHERE exp_time <= ?", (now,)).rowcount

    def reset_send_time(self, mid: int) -> None:
        """Set a reminder's ``snd_time`` to 0 after it failed (msilo's ``ms_reset_stime``)."""
        with self._lock:
            self._db.execute("UPDATE silo SET snd_time = 0 WHERE id = ?", (mid,))

    def ids(self) -> list[int]:
        """The ids of the stored messages, in order."""
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT id FROM silo ORDER BY id")]

    def rows(self) -> list[Message]:
        """Every stored message, in id order."""
        with self._lock:
            cursor = self._db.execute(
                "SELECT id, src_addr, dst_addr, body, ctype, inc_time, exp_time, snd_time "
                "FROM silo ORDER BY id"
            )
            return [Message(*row) for row in cursor]

    def get(self, mid: int) -> Message | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, src_addr, dst_addr, body, ctype, inc_time, exp_time, snd_time "
                "FROM silo WHERE id = ?",
                (mid,),
            ).fetchone()
        return None if row is None else Message(*row)

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM silo").fetchone()
        return int(count)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class MessageList:
    """msilo's ``msg_list``: delivery states of the messages being sent, by message id.

    The delivery path calls :meth:`set_flag` (``MS_MSG_SENT`` when it sends, then
    ``MS_MSG_DONE`` or ``MS_MSG_ERRO`` from the reply); the cleaner calls :meth:`reset`.
    Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flags: dict[int, int] = {}

    def set_flag(self, mid: int, flag: int) -> None:
        """Add ``flag`` to the flags of message ``mid`` (added to the list if new)."""
        with self._lock:
            self._flags[mid] = self._flags.get(mid, MS_MSG_NULL) | flag

    def flags(self, mid: int) -> int:
        with self._lock:
            return self._flags.get(mid, MS_MSG_NULL)

    def reset(self) -> list[tuple[int, int]]:
        """Take out the messages whose delivery ended (``DONE`` or ``ERRO``): ``(id, flags)``
        pairs in id order (msilo's ``msg_list_check`` + ``msg_list_reset``). Messages still
        being sent stay."""
        ended = MS_MSG_DONE | MS_MSG_ERRO
        with self._lock:
            out = sorted((mid, f) for mid, f in self._flags.items() if f & ended)
            for mid, _ in out:
                del self._flags[mid]
        return out

    def __len__(self) -> int:
        with self._lock:
            return len(self._flags)
