"""The y-protocols WebSocket endpoint of a peer: the only module that imports ``websockets``.

A thin asyncio driver around :class:`~hybridsync.interop._room.YjsRoom`: it accepts
connections to ``/<space>`` (percent-decoded; any other path gets HTTP 404), checks the
token given as the URL query ``?token=`` (HTTP 401 otherwise — y-websocket's
``WebsocketProvider`` sends it with ``params: {token}``), refuses connections beyond
``max_clients`` (HTTP 503), lets ``websockets`` enforce ``max_message_bytes`` (close 1009),
and moves bytes between the sockets and the room. Each connection has a bounded outbox
drained by its own writer task; a client that does not read is closed (1013), it resyncs
when it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections import deque
from collections.abc import Sequence
from http import HTTPStatus
from urllib.parse import parse_qs, unquote

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Origin

from hybridsync.errors import ConfigError, TransportError
from hybridsync.interop._room import CLOSE, YjsRoom
from hybridsync.replica import Memory

__all__ = ["YjsEndpoint"]

log = logging.getLogger("hybridsync.interop")

_TICK_S = 0.5
_MAX_REASON_BYTES = 123  # RFC 6455 §5.5: a close frame's payload is at most 125 bytes


def _reason(text: str) -> str:
    raw = text.encode()[:_MAX_REASON_BYTES]
    return raw.decode("utf-8", "ignore")


class _Link:
    """One client connection: its socket, outbox and writer."""

    __slots__ = ("closed", "conn", "outbox", "queued", "wake", "writer", "ws")

    def __init__(self, conn: int, ws: ServerConnection) -> None:
        self.conn = conn
        self.ws = ws
        self.outbox: deque[bytes | tuple[int, str]] = deque()
        self.queued = 0
        self.wake = asyncio.Event()
        self.closed = False  # a close was queued
        self.writer: asyncio.Task[None] | None = None


class YjsEndpoint:
    """Serves ``mem``'s fields document to y-websocket clients; start with :meth:`start`."""

    def __init__(
        self,
        mem: Memory,
        *,
        host: str,
        port: int,
        token: str | None,
        readonly: bool,
        max_message_bytes: int,
        max_clients: int,
        origins: Sequence[str] | None,
        max_outbox_bytes: int,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ConfigError("websocket host must be a non-empty str")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"websocket port must be an int in [0, 65535], got {port!r}")
        if token is not None and (not isinstance(token, str) or not token
                                  or len(token.encode()) > 1024):
            raise ConfigError("websocket_token must be None or a non-empty str (≤ 1024 bytes)")
        if not isinstance(readonly, bool):
            raise ConfigError("websocket_readonly must be a bool")
        for value, what, lo, hi in (
            (max_message_bytes, "websocket_max_message_bytes", 1024, 64 << 20),
            (max_clients, "websocket_max_clients", 1, 65536),
            (max_outbox_bytes, "max_outbox_bytes", 1 << 16, 1 << 32),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ConfigError(f"{what} must be an int in [{lo}, {hi}], got {value!r}")
        if origins is not None and (isinstance(origins, str)
                                    or not all(isinstance(o, str) for o in origins)):
            raise ConfigError("websocket_origins must be a list of origin strings")
        self.mem = mem
        self._host = host
        self._port_wanted = port
        self._token = None if token is None else token.encode()
        self._max_message_bytes = max_message_bytes
        self._max_clients = max_clients
        self._max_outbox = max_outbox_bytes
        self._origins = None if origins is None else [Origin(o) for o in origins]
        self._loop = asyncio.get_running_loop()
        self._links: dict[int, _Link] = {}
        self._next_conn = 0
        self._server: Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._closing = False
        self.refused: dict[str, int] = dict.fromkeys(("path", "token", "busy"), 0)
        self.room = YjsRoom(mem, send=self._send, close=self._close, now=self._loop.time,
                            readonly=readonly)

    @classmethod
    async def start(
        cls,
        mem: Memory,
        address: tuple[str, int],
        *,
        token: str | None = None,
        readonly: bool = False,
        max_message_bytes: int = 1 << 20,
        max_clients: int = 64,
        origins: Sequence[str] | None = None,
        max_outbox_bytes: int = 64 << 20,
    ) -> YjsEndpoint:
        """Listen on ``address`` (``(host, port)``, port 0 = a free one)."""
        if not isinstance(address, tuple) or len(address) != 2:
            raise ConfigError(f"websocket must be a (host, port) tuple, got {address!r}")
        self = cls(mem, host=address[0], port=address[1], token=token, readonly=readonly,
                   max_message_bytes=max_message_bytes, max_clients=max_clients,
                   origins=origins, max_outbox_bytes=max_outbox_bytes)
        try:
            self._server = await serve(
                self._handle, self._host, self._port_wanted,
                process_request=self._process_request,
                origins=None if self._origins is None else [*self._origins, None],
                max_size=self._max_message_bytes,
                max_queue=8,  # frames buffered per connection: at most 8 × max_message_bytes
                ping_interval=20.0,
                ping_timeout=20.0,
                close_timeout=2.0,
                server_header=None,
            )
        except OSError as exc:
            self.room.shutdown()
            raise TransportError(
                f"cannot listen for WebSocket clients on {self._host}:{self._port_wanted}: {exc}"
            ) from None
        self._ticker = asyncio.create_task(self._tick_loop(), name="hybridsync-yjs-tick")
        log.info("%s: y-protocols endpoint on %s/%s", mem.peer, self.url, mem.space)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        sockets = list(self._server.sockets)
        return int(sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """``ws://host:port``; the room of the space is ``<url>/<space>``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"ws://{host}:{self.port}"

    def stats(self) -> dict[str, int]:
        out = dict(self.room.counters)
        out["clients"] = len(self._links)
        out.update({f"refused_{k}": v for k, v in self.refused.items()})
        return out

    async def close(self) -> None:
        """Close every connection (1001) and stop listening. Idempotent."""
        if self._closing:
            return
        self._closing = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self.room.shutdown()
        writers = [link.writer for link in self._links.values() if link.writer is not None]
        if writers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3.0):
                    await asyncio.gather(*writers, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._server.wait_closed()

    # ---- handshake -----------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path, _, query = request.path.partition("?")
        if unquote(path.lstrip("/")) != self.mem.space:
            self.refused["path"] += 1
            return connection.respond(HTTPStatus.NOT_FOUND, "no such room\n")
        if self._token is not None:
            given = parse_qs(query).get("token", [""])[0].encode()
            if not hmac.compare_digest(given, self._token):
                self.refused["token"] += 1
                return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")
        if self._closing or len(self._links) >= self._max_clients:
            self.refused["busy"] += 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many clients\n")
        return None

    # ---- connections ---------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        if self._closing or len(self._links) >= self._max_clients:
            await ws.close(CLOSE["overloaded"], "too many clients")
            return
        self._next_conn += 1
        conn = self._next_conn
        link = self._links[conn] = _Link(conn, ws)
        link.writer = asyncio.create_task(self._write_loop(link), name=f"hybridsync-yjs-{conn}")
        try:
            self.room.connect(conn)
            async for data in ws:
                if link.closed:
                    break
                if isinstance(data, str):
                    self._close(conn, CLOSE["refused"], "text frames are not y-protocols")
                    break
                self.room.receive(conn, data)
        except ConnectionClosed:
            pass
        finally:
            self.room.disconnect(conn)
            if not link.closed:
                link.closed = True
                link.wake.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3.0):
                    await asyncio.gather(link.writer, return_exceptions=True)
            link.writer.cancel()
            self._links.pop(conn, None)

    def _send(self, conn: int, data: bytes) -> None:
        link = self._links.get(conn)
        if link is None or link.closed:
            return
        if link.queued + len(data) > self._max_outbox:
            self._close(conn, CLOSE["overloaded"], "client too slow: it will resync")
            return
        link.outbox.append(data)
        link.queued += len(data)
        link.wake.set()

    def _close(self, conn: int, code: int, reason: str) -> None:
        link = self._links.get(conn)
        if link is None or link.closed:
            return
        link.outbox.append((code, _reason(reason)))
        link.closed = True
        link.wake.set()

    async def _write_loop(self, link: _Link) -> None:
        ws = link.ws
        try:
            while True:
                await link.wake.wait()
                link.wake.clear()
                while link.outbox:
                    item = link.outbox.popleft()
                    if isinstance(item, tuple):
                        await ws.close(item[0], item[1])
                        return
                    link.queued -= len(item)
                    await ws.send(item)
                if link.closed:
                    await ws.close(CLOSE["going-away"], "")
                    return
        except ConnectionClosed:
            return

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(_TICK_S)
            try:
                self.room.tick()
            except Exception:
                log.exception("%s: y-protocols room tick failed", self.mem.peer)

    def __repr__(self) -> str:
        state = "closing" if self._closing else f"{len(self._links)} clients"
        return f"YjsEndpoint({self.mem.space!r}, {state})"
