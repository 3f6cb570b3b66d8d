"""asyncio TCP: each record is a 4-byte big-endian length followed by that many bytes.

:class:`TcpStream` is the connection's asyncio ``Protocol`` itself: bytes are parsed into
records as they are read, so a session that ``deliver``\\ s is handed each record in the
same event-loop step that read it (no ``StreamReader``, no task wake-up per record), and
``write`` puts every record of one flush into one ``transport.write``.

It is a ``BufferedProtocol``: the socket is read into a buffer the stream keeps
(``recv_into``). A plain ``Protocol`` is handed ``sock.recv(256 KiB)``, whose 256 KiB
allocation (an ``mmap``/``munmap`` pair in glibc, above its mmap threshold) cost about 26 us
per read on the benchmark machine (docs/benchmarks.md) -- more than opening a record -- on
the path of every frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any

from hybridsync.errors import FrameError, TransportError
from hybridsync.transport._base import format_url

__all__ = ["LENGTH_BYTES", "TcpListener", "TcpStream", "open_tcp", "serve_tcp"]

LENGTH_BYTES = 4
# The OS may hold this much of our outgoing data before write_room_bytes is 0 and drain()
# waits (asyncio's high-water mark; it resumes at a quarter of it).
WRITE_BUFFER_BYTES = 256 * 1024
# recv() (pull) stops reading from the socket while this much is buffered and not taken.
READ_BUFFER_BYTES = 128 * 1024
# One socket read takes at most this much (into the stream's own buffer, made at the first
# read; asyncio's own reads are 256 KiB into a fresh allocation each time).
READ_CHUNK_BYTES = 64 * 1024
_LENGTH = struct.Struct(">I")


def _no_delay(sock: Any) -> None:
    """TCP_NODELAY: a record goes out when written, not held back by Nagle's algorithm for
    the acknowledgement of the previous one (RFC 896). asyncio sets it only on sockets whose
    ``proto`` is ``IPPROTO_TCP``; ``socket.socket(AF_INET, SOCK_STREAM)`` has 0 (``wrap``)."""
    if (
        sock is not None
        and sock.family in (socket.AF_INET, socket.AF_INET6)
        and sock.type == socket.SOCK_STREAM
    ):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class TcpStream(asyncio.BufferedProtocol):
    """A :class:`~hybridsync.transport.RecordStream` over an asyncio TCP connection (made by
    :func:`open_tcp`, :func:`serve_tcp` or :meth:`TcpStream.wrap`)."""

    __slots__ = (
        "_buf",
        "_bytes_in",
        "_bytes_out",
        "_closed",
        "_drain_waiters",
        "_eof",
        "_lost",
        "_lost_exc",
        "_max_bytes",
        "_on_end",
        "_on_made",
        "_on_record",
        "_read_buffer_bytes",
        "_read_paused",
        "_read_view",
        "_remote",
        "_stopped",
        "_transport",
        "_waiter",
        "_write_paused",
    )

    def __init__(
        self,
        *,
        on_made: Callable[[TcpStream], None] | None = None,
        read_buffer_bytes: int = READ_BUFFER_BYTES,
    ) -> None:
        self._on_made = on_made
        self._read_buffer_bytes = read_buffer_bytes
        self._transport: asyncio.Transport | None = None
        self._remote = "tcp://?"
        self._bytes_in = 0
        self._bytes_out = 0
        self._buf = bytearray()  # bytes received and not yet taken as records
        self._read_view: memoryview | None = None  # what the socket is read into
        self._read_paused = False
        self._waiter: asyncio.Future[None] | None = None  # recv() waiting for bytes
        self._eof = False  # no more bytes will come
        self._lost = False  # connection_lost ran
        self._lost_exc: BaseException | None = None
        self._on_record: Callable[[bytes], None] | None = None  # set while delivering
        self._on_end: Callable[[BaseException], None] | None = None
        self._max_bytes = 0
        self._stopped = False  # delivery ended (handler raised, stream ended): drop input
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def wrap(cls, sock: socket.socket, *, read_buffer_bytes: int = READ_BUFFER_BYTES
                   ) -> TcpStream:
        """A stream over an already connected socket (e.g. one with options set first)."""
        loop = asyncio.get_running_loop()
        _, stream = await loop.create_connection(
            lambda: cls(read_buffer_bytes=read_buffer_bytes), sock=sock
        )
        return stream

    # ---- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER_BYTES)
        _no_delay(transport.get_extra_info("socket"))
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple) and len(peername) >= 2:
            self._remote = format_url(str(peername[0]), int(peername[1]))
        if self._on_made is not None:
            on_made, self._on_made = self._on_made, None
            on_made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        view = self._read_view
        if view is None:
            view = self._read_view = memoryview(bytearray(READ_CHUNK_BYTES))
        return view

    def buffer_updated(self, nbytes: int) -> None:
        view = self._read_view
        assert view is not None
        self._bytes_in += nbytes
        on_record = self._on_record
        if on_record is not None and not self._buf and nbytes >= LENGTH_BYTES:
            size = _LENGTH.unpack_from(view)[0]
            if size + LENGTH_BYTES == nbytes and size <= self._max_bytes:
                # the usual read: exactly one record, handed over without parsing on
                try:
                    on_record(bytes(view[LENGTH_BYTES:nbytes]))
                except Exception as exc:
                    self._stop(exc)
                return
        self._feed(bytes(view[:nbytes]))  # copied out: the next read reuses the buffer

    def data_received(self, data: bytes) -> None:
        """Bytes read elsewhere, as if read from the socket (asyncio itself calls
        :meth:`get_buffer` and :meth:`buffer_updated`)."""
        self._bytes_in += len(data)
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        if self._on_record is None:
            if self._stopped:
                return
            self._buf += data  # pull: recv() takes the records
            if len(self._buf) > self._read_buffer_bytes and not self._read_paused:
                self._read_paused = True
                if self._transport is not None:
                    self._transport.pause_reading()
            self._wake()
            return
        buf = self._buf
        if buf:  # a record spans reads: complete it before parsing on
            buf += data
            n = len(buf)
            if n < LENGTH_BYTES:
                return
            size = _LENGTH.unpack_from(buf)[0]
            if size > self._max_bytes:
                self._stop(self._oversized(size))
                return
            if n < LENGTH_BYTES + size:
                return
            data = bytes(buf)
            buf.clear()
        self._parse(data)

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        if self._on_record is not None:
            self._stop(self._end_error())
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = self._lost = True
        self._lost_exc = exc
        self._wake()
        for w in self._drain_waiters:
            if not w.done():
                w.set_result(None)
        self._drain_waiters.clear()
        if self._on_record is not None:
            self._stop(self._end_error())
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for w in self._drain_waiters:
            if not w.done():
                w.set_result(None)
        self._drain_waiters.clear()

    # ---- RecordStream ----------------------------------------------------------------------
    @property
    def remote(self) -> str:
        return self._remote

    @property
    def bytes_in(self) -> int:
        return self._bytes_in

    @property
    def bytes_out(self) -> int:
        return self._bytes_out

    @property
    def write_room_bytes(self) -> int:
        t = self._transport
        if t is None or self._write_paused or t.is_closing():
            return 0
        # not paused: asyncio holds at most the high-water mark
        return WRITE_BUFFER_BYTES + 1 - t.get_write_buffer_size()

    def write(self, records: Sequence[bytes]) -> None:
        t = self._transport
        if t is None or t.is_closing():
            raise TransportError(f"connection to {self._remote} is closed")
        if len(records) == 1:
            record = records[0]
            data = _LENGTH.pack(len(record)) + record
        elif records:
            parts: list[bytes] = []
            for record in records:
                parts.append(_LENGTH.pack(len(record)))
                parts.append(record)
            data = b"".join(parts)
        else:
            return
        t.write(data)
        self._bytes_out += len(data)

    async def drain(self) -> None:
        while True:
            t = self._transport
            if self._lost or t is None or t.is_closing():
                raise TransportError(f"connection to {self._remote} is closed"
                                     + (f": {self._lost_exc}" if self._lost_exc else ""))
            if not self._write_paused:
                return
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(waiter)
            await waiter

    async def send(self, record: bytes) -> None:
        self.write((record,))
        await self.drain()

    async def recv(self, max_bytes: int) -> bytes:
        if self._on_record is not None or self._stopped:
            raise TransportError("recv() on a stream that delivers its records")
        while True:
            record = self._take(max_bytes)
            if record is not None:
                return record
            if self._eof:
                raise self._end_error()
            if self._read_paused:
                self._read_paused = False
                if self._transport is not None:
                    self._transport.resume_reading()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def deliver(
        self,
        on_record: Callable[[bytes], None],
        on_end: Callable[[BaseException], None],
        max_bytes: int,
    ) -> None:
        if self._on_record is not None or self._stopped:
            raise TransportError("deliver() was already called")
        self._on_record, self._on_end, self._max_bytes = on_record, on_end, max_bytes
        if self._read_paused:
            self._read_paused = False
            if self._transport is not None and not self._eof:
                self._transport.resume_reading()
        if self._buf:  # what arrived before, as if it arrived now
            data = bytes(self._buf)
            self._buf.clear()
            self._feed(data)
        if self._eof and self._on_record is not None:
            self._stop(self._end_error())

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    async def wait_closed(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._closed)

    # ---- internals ---------------------------------------------------------------------------
    def _parse(self, data: bytes) -> None:
        """Hand every complete record in ``data`` to the handler; keep the rest."""
        n = len(data)
        pos = 0
        unpack = _LENGTH.unpack_from
        while n - pos >= LENGTH_BYTES:
            size = unpack(data, pos)[0]
            if size > self._max_bytes:  # before anything is allocated for it
                self._stop(self._oversized(size))
                return
            end = pos + LENGTH_BYTES + size
            if end > n:
                break
            record = data[pos + LENGTH_BYTES : end]
            pos = end
            on_record = self._on_record
            if on_record is None:  # stopped, or closed by the handler
                return
            try:
                on_record(record)
            except Exception as exc:
                self._stop(exc)
                return
            if self._transport is None or self._transport.is_closing():
                return  # the handler closed the stream: the rest is not for anyone
        if pos < n:
            self._buf += memoryview(data)[pos:]

    def _take(self, max_bytes: int) -> bytes | None:
        """The next record from the buffer (pull), or None until it is complete."""
        buf = self._buf
        if len(buf) < LENGTH_BYTES:
            return None
        size = _LENGTH.unpack_from(buf)[0]
        if size > max_bytes:  # before anything is allocated for it
            raise self._oversized(size, max_bytes)
        end = LENGTH_BYTES + size
        if len(buf) < end:
            return None
        record = bytes(buf[LENGTH_BYTES:end])
        del buf[:end]
        return record

    def _stop(self, exc: BaseException) -> None:
        """End delivery for good: drop what is buffered, stop reading, tell ``on_end``."""
        on_end = self._on_end
        self._on_record = self._on_end = None
        self._stopped = True
        self._buf.clear()
        t = self._transport
        if t is not None and not t.is_closing():
            t.pause_reading()
        if on_end is not None:
            on_end(exc)

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _oversized(self, size: int, max_bytes: int | None = None) -> FrameError:
        limit = self._max_bytes if max_bytes is None else max_bytes
        return FrameError(f"record of {size} bytes exceeds the limit of {limit}")

    def _end_error(self) -> TransportError | FrameError:
        """Why no further record will come."""
        if self._lost_exc is not None:
            return TransportError(f"connection to {self._remote} failed: {self._lost_exc}")
        buf = self._buf
        if not buf:
            return TransportError(f"{self._remote} closed the connection")
        if len(buf) < LENGTH_BYTES:
            return FrameError("connection closed inside a record's length prefix")
        size = _LENGTH.unpack_from(buf)[0]
        return FrameError(
            f"truncated record: {len(buf) - LENGTH_BYTES} of {size} bytes before the end"
        )



async def open_tcp(host: str, port: int, *, timeout_s: float) -> TcpStream:
    """Connect, or raise :class:`~hybridsync.errors.TransportError` within ``timeout_s``."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            _, stream = await loop.create_connection(TcpStream, host, port)
    except TimeoutError:
        raise TransportError(f"connecting to {format_url(host, port)} timed out") from None
    except OSError as exc:
        raise TransportError(f"cannot connect to {format_url(host, port)}: {exc}") from None
    return stream


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
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(lambda: TcpStream(on_made=on_connect), host, port)
    except OSError as exc:
        raise TransportError(f"cannot listen on {format_url(host, port)}: {exc}") from None
    return TcpListener(server, host)
