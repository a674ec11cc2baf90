"""The first module a fork server booted by aiotimer imports (``_start`` puts it at the head of
the preload list): it gives the server its parent's ``sys.path``, ``sys.argv`` and main module.

Python's fork server means to do this itself (it preloads ``__main__`` by default), but 3.11
(and 3.12 and 3.13 before their fixes of gh-117378 and gh-126631) ignores the parent's
``sys.path`` and never imports the main module, so each forked worker would run the main script
again (and import all it imports), and the callbacks' modules outside the default path would
not be preloaded. Here the server runs, once, the same
``multiprocessing.spawn.prepare`` each of its children runs (``_fixup_main_*`` then sees the
main module in place and does nothing).

Imported anywhere but in a fork server that aiotimer booted, it does nothing.
"""

from __future__ import annotations

import os
import sys
from multiprocessing import process, spawn
from typing import Any, Final

ENV: Final = "AIOTIMER_FORKSERVER_PREPARE"
"""The parent's preparation data (JSON), in the fork server's environment only."""


def _in_fork_server() -> bool:
    """Imported by the preload loop of ``multiprocessing.forkserver.main`` (and not by a
    subprocess that inherited the variable from a parent booting its server meanwhile)?"""
    forkserver = sys.modules.get("multiprocessing.forkserver")
    if forkserver is None:
        return False
    main_code = forkserver.main.__code__
    frame = sys._getframe()
    while frame is not None and frame.f_code is not main_code:
        frame = frame.f_back  # type: ignore[assignment]
    return frame is not None


def _prepare() -> None:
    raw = os.environ.pop(ENV, None)  # popped: the workers forked later must not see it
    if raw is None or not _in_fork_server():
        return
    import json  # here: where nothing is to be done, importing this module costs nothing

    current: Any = process.current_process()
    # While set, a main module without its `if __name__ == "__main__":` guard cannot start
    # processes: it fails here as it would in a spawned child (multiprocessing does the same).
    current._inheriting = True
    try:
        spawn.prepare(json.loads(raw))
    except BaseException:  # even SystemExit: each worker prepares again, and fails as spawned
        pass
    finally:
        del current._inheriting


_prepare()
