"""Bounded asyncio helpers shared by the loopback peer tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


def run(coro: Awaitable[None], timeout_s: float = 90.0) -> None:
    """Run ``coro`` on a fresh event loop, failing after ``timeout_s``."""

    async def bounded() -> None:
        async with asyncio.timeout(timeout_s):
            await coro

    asyncio.run(bounded())


async def wait_until(cond: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Poll ``cond`` every 20 ms; AssertionError naming ``what`` after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)
