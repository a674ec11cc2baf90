"""Log records of a worker process, shipped to the parent and re-emitted on its loggers.

Ground rules:

* In the child, one handler on the root logger forwards every record at or above the worker's
  level (the parent root logger's effective level, unless ``TimerProcess(log_level=...)`` says
  otherwise): aiotimer's own records and the user's alike. The child has no other handler, so
  the parent's logging configuration decides where records go, as if they were its own.
* A record travels as a dict of plain values: its message already formatted, its exception
  already turned into text (a traceback object does not pickle), extra attributes kept when
  they pickle and replaced by their ``repr`` when they do not.
* The parent re-emits it with ``logging.getLogger(record.name).handle(record)``, adding a
  ``worker`` attribute (``"name[i]"``); ``record.process`` stays the child's pid and
  ``record.processName`` its title.
* Forwarding never raises into the code that logged, and never recurses (a record logged while
  forwarding one is dropped). It shares the pipe's bounded buffer with ``send_to_parent()``:
  when 16 MiB already wait for the parent, a record is dropped rather than buffered.
"""

from __future__ import annotations

import logging
import pickle
import threading
from collections.abc import Callable
from typing import Any, Final

from ._context import WorkerInfo

__all__ = ["ForwardHandler", "record_to_dict", "reemit"]

_STANDARD: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def record_to_dict(record: logging.LogRecord) -> dict[str, Any]:
    """A picklable copy of ``record`` (what :class:`logging.handlers.QueueHandler` prepares,
    keeping the extras that pickle)."""
    data = dict(record.__dict__)
    data["msg"] = record.getMessage()
    data["args"] = None
    if record.exc_info:
        if not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        data["exc_text"] = record.exc_text
    data["exc_info"] = None
    data.pop("message", None)
    for key, value in list(data.items()):
        if key in _STANDARD or value is None or isinstance(value, (str, int, float, bool)):
            continue
        try:
            pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        except Exception:
            data[key] = repr(value)
    return data


def reemit(data: dict[str, Any], worker: WorkerInfo) -> None:
    """Hand a forwarded record to the parent's logger of the same name (if it is enabled)."""
    record = logging.makeLogRecord(data)
    record.worker = str(worker)
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


class ForwardHandler(logging.Handler):
    """The child's root handler: sends each record to ``send(data)`` (thread-safe)."""

    def __init__(self, send: Callable[[dict[str, Any]], None], level: int) -> None:
        super().__init__(level)
        self._send = send
        self._busy = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._busy, "active", False):
            return  # logged while forwarding (a channel error): dropped, not recursed
        self._busy.active = True
        try:
            self._send(record_to_dict(record))
        except Exception:
            pass  # the parent is going away; nothing sensible to do with the record
        finally:
            self._busy.active = False
