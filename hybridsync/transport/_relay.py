"""A byte relay that a gate can hold: the demo's silent network cut (``hybridsync._demo``)
and the tests' partitionable loopback proxy (``tests/integration/_proxy.py``) both use it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

CHUNK = 1 << 16


async def relay(src: asyncio.StreamReader, dst: asyncio.StreamWriter, gate: asyncio.Event,
                on_chunk: Callable[[int], None] | None = None) -> None:
    """Copy ``src`` to ``dst`` while ``gate`` is set; while it is clear, nothing moves and
    nothing is closed (a silent cut: no FIN, no reset). A chunk read just before a cut is
    held until the gate opens again. Ends at end of stream (passed on as EOF) or on a
    socket error; ``on_chunk`` hears the size of every chunk relayed."""
    while True:
        await gate.wait()
        try:
            chunk = await src.read(CHUNK)
        except OSError:
            chunk = b""
        await gate.wait()  # a cut during the read holds this chunk (or the close)
        if not chunk:
            with contextlib.suppress(OSError):
                if dst.can_write_eof():
                    dst.write_eof()
            return
        try:
            dst.write(chunk)
            await dst.drain()
        except OSError:
            return
        if on_chunk is not None:
            on_chunk(len(chunk))
