"""Shared fixtures: every async core test runs on asyncio, uvloop and trio (anyio's plugin)."""

from __future__ import annotations

import sys

import pytest

_BACKENDS = [pytest.param(("asyncio", {}), id="asyncio")]
if sys.platform != "win32":
    import uvloop

    _BACKENDS.append(
        pytest.param(("asyncio", {"loop_factory": uvloop.new_event_loop}), id="uvloop")
    )
_BACKENDS.append(pytest.param(("trio", {}), id="trio"))


@pytest.fixture(params=_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    return request.param
