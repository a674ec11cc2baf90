"""msilo's timer, ported: ``m_clean_silo`` registered with ``register_timer`` from ``mod_init``.

The C original (Kamailio's ``modules/msilo/msilo.c``, the timer example of its developer guide)::

    register_timer(m_clean_silo, 0, ms_check_time);

    void m_clean_silo(unsigned int ticks, void *param)
    {
        /* delete delivered messages, MAX_DEL_KEYS ids per delete */
        /* reset the send time of failed reminders */
        if(ticks % (ms_check_time * ms_clean_period) < ms_check_time)
            /* delete expired messages: exp_time <= time(NULL) */
    }

What changed in the port:

* ``m_clean_silo`` runs in a worker thread (``thread=True``): its database work never blocks the
  event loop, and the loop's other timers keep their time while it runs.
* ``check_time`` and ``clean_period`` must be >= 1: Kamailio accepts 0 and then computes
  ``ticks % 0``.
* Deletes are batched with ``id IN (...)``, :data:`MAX_DEL_KEYS` ids at a time. Kamailio's
  ``MAX_DEL_KEYS`` is 1, because its DB API joins the keys of one delete with AND.
* It returns what it cleaned (a :class:`CleanReport`, ignored by the timer) and logs it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

from aiotimer.kamailio import TimerId, register_timer

from .store import MS_MSG_DONE, MS_MSG_ERRO, MS_MSG_TSND, MessageList, MessageStore

__all__ = ["MAX_DEL_KEYS", "CleanReport", "Msilo"]

logger = logging.getLogger("msilo")

MAX_DEL_KEYS: Final = 50
"""Delivered messages deleted per statement."""


@dataclass(frozen=True, slots=True)
class CleanReport:
    """What one run of ``m_clean_silo`` did."""

    ticks: int
    delivered: int  # delivered messages deleted
    batches: int  # DELETE statements for them
    reminders_reset: int  # failed reminders whose send time was reset
    expired: int | None  # expired messages purged; None on runs that do not purge

    @property
    def purged(self) -> bool:
        return self.expired is not None


class Msilo:
    """The msilo module's state: its store, its message list and its timer settings.

    :param store: the ``silo`` table
    :param check_time: seconds between two runs of ``m_clean_silo`` (msilo's ``check_time``,
        default 60)
    :param clean_period: purge expired messages every this many runs (msilo's
        ``clean_period``, default 10)
    :param max_del_keys: delivered messages deleted per statement
    :raises ValueError: a setting below 1 (``check_time`` 0 would make ``ticks % 0``)
    """

    def __init__(
        self,
        store: MessageStore,
        *,
        check_time: int = 60,
        clean_period: int = 10,
        max_del_keys: int = MAX_DEL_KEYS,
    ) -> None:
        for what, value in (
            ("check_time", check_time),
            ("clean_period", clean_period),
            ("max_del_keys", max_del_keys),
        ):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"msilo: {what} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(
                    f"msilo: {what} must be >= 1, got {value!r}"
                    + (" (Kamailio would compute ticks % 0)" if what != "max_del_keys" else "")
                )
        self.store = store
        self.ml = MessageList()
        self.check_time = check_time
        self.clean_period = clean_period
        self.max_del_keys = max_del_keys
        self.last: CleanReport | None = None
        self.deleted = 0  # delivered messages deleted, in all
        self.purged = 0  # expired messages purged, in all

    def mod_init(self, *, thread: bool = True) -> TimerId:
        """Register ``m_clean_silo`` on the current scheduler, as msilo's ``mod_init`` does.

        :param thread: run it in a worker thread (keep it: the database work blocks)
        """
        return register_timer(
            self.m_clean_silo, None, self.check_time, name="msilo.m_clean_silo", thread=thread
        )

    def m_clean_silo(self, ticks: int, param: Any) -> CleanReport:
        """Delete delivered messages, reset failed reminders and, every ``clean_period`` runs,
        purge the expired messages.

        :param ticks: seconds since the start, at the run's grid point
        """
        logger.debug("cleaning stored messages - %d", ticks)
        delivered = batches = reset = 0
        batch: list[int] = []
        for mid, flags in self.ml.reset():
            if flags & MS_MSG_DONE:
                batch.append(mid)
                if len(batch) == self.max_del_keys:
                    delivered += self.store.delete(batch)
                    batches += 1
                    batch = []
            if flags & MS_MSG_ERRO and flags & MS_MSG_TSND:
                self.store.reset_send_time(mid)
                reset += 1
        if batch:
            delivered += self.store.delete(batch)
            batches += 1
        expired = None
        if ticks % (self.check_time * self.clean_period) < self.check_time:
            expired = self.store.delete_expired()
        report = CleanReport(ticks, delivered, batches, reset, expired)
        self.last = report
        self.deleted += delivered
        self.purged += expired or 0
        logger.info(
            "m_clean_silo at %d s: deleted %d delivered message(s) in %d batch(es), "
            "reset %d failed reminder(s), %s; %d stored",
            ticks,
            delivered,
            batches,
            reset,
            "no purge due" if expired is None else f"purged {expired} expired",
            len(self.store),
        )
        return report
