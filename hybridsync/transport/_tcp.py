"""asyncio TCP: each record is a 4-byte big-endian length followed by that many bytes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from hybridsync.errors import FrameError, TransportError
from hybridsync.transport._base import format_url

__all__ = ["LENGTH_BYTES", "TcpListener", "TcpStream", "open_tcp", "serve_tcp"]

LENGTH_BYTES = 4
# The OS may hold this much of our outgoing data before send() waits (asyncio's high-water).
WRITE_BUFFER_BYTES = 256 * 1024


class TcpStream:
    """A :class:`~hybridsync.transport.RecordStream` over an asyncio TCP connection."""

    __slots__ = ("_bytes_in", "_bytes_out", "_reader", "_remote", "_writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        writer.transport.set_write_buffer_limits(high=WRITE_BUFFER_BYTES)
        peername = writer.get_extra_info("peername")
        if isinstance(peername, tuple) and len(peername) >= 2:
            self._remote = format_url(str(peername[0]), int(peername[1]))
        else:
            self._remote = "tcp://?"
        self._bytes_in = 0
        self._bytes_out = 0

    @property
    def remote(self) -> str:
        return self._remote

    @property
    def bytes_in(self) -> int:
        return self._bytes_in

    @property
    def bytes_out(self) -> int:
        return self._bytes_out

    async def send(self, record: bytes) -> None:
        if self._writer.is_closing():
            raise TransportError(f"connection to {self._remote} is closed")
        self._writer.write(len(record).to_bytes(LENGTH_BYTES, "big") + record)
        self._bytes_out += LENGTH_BYTES + len(record)
        try:
            await self._writer.drain()
        except OSError as exc:  # ConnectionResetError, BrokenPipeError
            raise TransportError(f"connection to {self._remote} failed: {exc}") from None

    async def recv(self, max_bytes: int) -> bytes:
        try:
            head = await self._reader.readexactly(LENGTH_BYTES)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise FrameError("connection closed inside a record's length prefix") from None
            raise TransportError(f"{self._remote} closed the connection") from None
        except OSError as exc:
            raise TransportError(f"connection to {self._remote} failed: {exc}") from None
        size = int.from_bytes(head, "big")
        if size > max_bytes:  # checked before a single byte of the body is allocated
            raise FrameError(f"record of {size} bytes exceeds the limit of {max_bytes}")
        try:
            body = await self._reader.readexactly(size)
        except asyncio.IncompleteReadError as exc:
            raise FrameError(
                f"truncated record: {len(exc.partial)} of {size} bytes before the end"
            ) from None
        except OSError as exc:
            raise TransportError(f"connection to {self._remote} failed: {exc}") from None
        self._bytes_in += LENGTH_BYTES + size
        return body

    def close(self) -> None:
        self._writer.close()

    def abort(self) -> None:
        self._writer.transport.abort()

    async def wait_closed(self) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await self._writer.wait_closed()


async def open_tcp(host: str, port: int, *, timeout_s: float) -> TcpStream:
    """Connect, or raise :class:`~hybridsync.errors.TransportError` within ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        raise TransportError(f"connecting to {format_url(host, port)} timed out") from None
    except OSError as exc:
        raise TransportError(f"cannot connect to {format_url(host, port)}: {exc}") from None
    return TcpStream(reader, writer)


class TcpListener:
    """A listening socket that hands every accepted connection to ``on_connect``."""

    __slots__ = ("_server", "host", "port")

    def __init__(self, server: asyncio.Server, host: str) -> None:
        self._server = server
        self.host = host
        self.port = int(server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return format_url(self.host, self.port)

    async def close(self) -> None:
        self._server.close()
        await self._server.wait_closed()


async def serve_tcp(host: str, port: int, on_connect: Callable[[TcpStream], None]) -> TcpListener:
    """Listen on ``host:port`` (0 = any free port). ``on_connect`` runs on the event loop for
    each connection and must not block; it owns the stream from then on."""

    def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        on_connect(TcpStream(reader, writer))

    try:
        server = await asyncio.start_server(accepted, host, port)
    except OSError as exc:
        raise TransportError(f"cannot listen on {format_url(host, port)}: {exc}") from None
    return TcpListener(server, host)
