"""Bounded asyncio helpers, and the peer options and convergence check, shared by the
loopback peer tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import hybridsync as hs

# hs.Peer options that make sessions detect, redial and sync within a test's time
FAST_PEER: dict[str, Any] = {
    "heartbeat_s": 0.3,
    "sync_interval_s": 0.05,
    "reconnect_min_s": 0.05,
    "reconnect_max_s": 0.5,
    "handshake_timeout_s": 3.0,
}


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


def converged(*mems: hs.Memory) -> bool:
    """Same state and same heads on every replica."""
    first = mems[0]
    return all(
        m.state_digest() == first.state_digest() and m.heads == first.heads for m in mems[1:]
    )
