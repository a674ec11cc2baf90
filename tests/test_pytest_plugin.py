"""The pytest plugin's fixtures work under pytest-asyncio (strict and auto) and anyio."""

from __future__ import annotations

import pytest

TEST = """
import aiotimer, pytest
{marker}
async def test_hourly(virtual_clock):
    s = aiotimer.Scheduler(clock=virtual_clock)
    seen = []
    s.add_every_s(3600, lambda t: seen.append(t.ticks))
    async with s:
        await virtual_clock.advance(3 * 3600)
    assert seen == [3600, 7200, 10800]

{marker}
async def test_autojump(autojump_clock):
    await autojump_clock.sleep(86400)
    assert autojump_clock.now_ns() == 86400 * 10**9
"""


@pytest.mark.parametrize(
    ("marker", "args"),
    [
        ("@pytest.mark.asyncio", ["-p", "asyncio", "-o", "asyncio_mode=strict"]),
        ("", ["-p", "asyncio", "-o", "asyncio_mode=auto"]),
        ("@pytest.mark.anyio", ["-p", "anyio"]),
    ],
    ids=["pytest-asyncio-strict", "pytest-asyncio-auto", "anyio"],
)
def test_fixtures_under_each_plugin(
    pytester: pytest.Pytester, marker: str, args: list[str]
) -> None:
    pytester.makepyfile(TEST.format(marker=marker))
    result = pytester.runpytest_subprocess(
        *args, "-o", "asyncio_default_fixture_loop_scope=function"
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == outcomes.get("errors", 0) == 0
    assert outcomes["passed"] >= 2  # anyio's plugin may run each test on several backends
