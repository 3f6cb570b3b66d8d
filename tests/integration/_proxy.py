"""A loopback TCP proxy that can be partitioned: the fallback when namespaces are impossible.

``PartitionProxy(target_port)`` listens on ``127.0.0.1:<port>`` and relays every connection to
``127.0.0.1:<target_port>``, on an event loop of its own thread so any code (synchronous or
not, in this process) can drive it. ``partition()`` makes it behave like a silent network cut
seen from both ends: it stops relaying bytes (nothing is read, so TCP flow control pushes back
on the senders), holds new connections without opening their upstream, and holds every close
too (no FIN crosses a cut). ``heal()`` releases everything held, in order. A peer whose
heartbeat gives up during the cut closes its socket; that close reaches the other side after
the heal, exactly as a retransmitted FIN would.

It differs from a namespace cut in one way: held bytes are delivered at the heal instead of
being retransmitted on TCP's backoff schedule, so it flatters a protocol that keeps one TCP
connection across a partition. Use namespaces when root.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from hybridsync.transport._relay import relay

__all__ = ["PartitionProxy"]

_T = TypeVar("_T")


class PartitionProxy:
    """``127.0.0.1:port`` → ``127.0.0.1:target_port``, with ``partition()``/``heal()``."""

    def __init__(self, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._open = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0
        self.bytes_relayed = 0
        self._server = self._call(self._listen())
        self.port: int = self._server.sockets[0].getsockname()[1]

    # ---- control (any thread) -------------------------------------------------------------

    def partition(self) -> None:
        """Stop relaying: bytes, new connections and closes are held until ``heal()``."""
        self._call(self._set(False))

    def heal(self) -> None:
        """Relay again, releasing whatever was held."""
        self._call(self._set(True))

    @property
    def partitioned(self) -> bool:
        return not self._open.is_set()

    def close(self) -> None:
        """Close the listener and every relayed connection; stop the thread (idempotent)."""
        if self._loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> PartitionProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the loop's side ------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _set(self, open_: bool) -> None:
        if open_:
            self._open.set()
        else:
            self._open.clear()

    async def _listen(self) -> asyncio.Server:
        self._open.set()
        return await asyncio.start_server(self._accept, self.host, 0)

    async def _shutdown(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for w in list(self._writers):
            w.close()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            pass  # close(): a handler of start_server must not end cancelled (3.11 logs it)
        finally:
            self._writers.discard(writer)
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._open.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            return
        self._writers.add(up_writer)
        self.connections += 1
        try:
            await asyncio.gather(self._relay(reader, up_writer), self._relay(up_reader, writer))
        finally:
            self._writers.discard(up_writer)
            up_writer.close()

    async def _relay(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        await relay(src, dst, self._open, self._count)

    def _count(self, n: int) -> None:
        self.bytes_relayed += n
