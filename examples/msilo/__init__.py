"""msilo's timer, ported to aiotimer: an offline-message store in SQLite cleaned by a timer.

Kamailio's msilo module stores SIP MESSAGEs for offline users and registers
``m_clean_silo`` with ``register_timer`` to delete delivered messages and, every
``clean_period`` runs, the expired ones. This package is that, on :mod:`aiotimer.kamailio`:

* :mod:`.store`: the ``silo`` table (SQLite, ``:memory:`` or a file) and the message list;
* :mod:`.module`: :class:`Msilo` with ``mod_init`` and ``m_clean_silo``;
* :mod:`.producer`: stands in for the SIP traffic (stores, delivers, fails);
* :mod:`.demo`: :func:`build` puts them on a scheduler; ``aiotimer demo`` runs it;
* :mod:`.process`: the dedicated-process variant (``fork_basic_timer``) of the expiry purge.
"""

from .demo import Demo, build
from .module import MAX_DEL_KEYS, CleanReport, Msilo
from .producer import Producer
from .store import Message, MessageList, MessageStore

__all__ = [
    "MAX_DEL_KEYS",
    "CleanReport",
    "Demo",
    "Message",
    "MessageList",
    "MessageStore",
    "Msilo",
    "Producer",
    "build",
]
