"""``Inspector``: an asyncio HTTP server showing one live replica in a browser.

It runs on the event loop that owns the :class:`~hybridsync.Memory` (a pycrdt document wants
one owner) and only reads it. Live updates are Server-Sent Events: one ``change`` event per
applied contribution (``Memory.observe``) and a ``tick`` with the sessions and heads every
``tick_interval_s``. Bounded everywhere: connections, event streams, the request head, the
time to send it, each client's queue of events, history and conflict pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from hybridsync._checks import count as _count
from hybridsync._checks import positive as _positive
from hybridsync.errors import ConfigError, HybridSyncError, TransactionError, TransportError
from hybridsync.inspector._http import (
    MAX_HEAD_BYTES,
    HttpError,
    Request,
    error_response,
    json_response,
    parse_request,
    response,
    sse_event,
    sse_head,
)
from hybridsync.inspector._views import (
    DEFAULT_HISTORY_PAGE,
    MAX_CONFLICTS_PAGE,
    MAX_HISTORY_PAGE,
    MemoryViews,
    change_json,
)
from hybridsync.replica import Change, Memory

if TYPE_CHECKING:
    from hybridsync.peer import Peer

__all__ = ["Inspector"]

log = logging.getLogger("hybridsync.inspector")

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}
# route -> allowed query parameters
_API = {
    "/api/state": ("history", "conflicts"),
    "/api/fields": (),
    "/api/regions": (),
    "/api/history": ("after", "limit", "tail"),
    "/api/conflicts": ("limit",),
    "/api/sessions": (),
    "/api/events": (),
}
_WILDCARDS = ("", "0.0.0.0", "::")
_KEEPALIVE_S = 15.0


class _Stream:
    """One event-stream client: a bounded queue of encoded events. On overflow the queue is
    dropped and the client told to ``resync`` (fetch the whole state again)."""

    __slots__ = ("overflow", "queue", "wake")

    def __init__(self, max_queued: int) -> None:
        self.queue: deque[bytes] = deque(maxlen=max_queued)
        self.wake = asyncio.Event()
        self.overflow = False

    def push(self, data: bytes) -> None:
        if len(self.queue) == self.queue.maxlen:
            self.queue.clear()
            self.overflow = True
        self.queue.append(data)
        self.wake.set()

    def take(self) -> bytes:
        out = []
        if self.overflow:
            self.overflow = False
            out.append(sse_event("resync", {"reason": "events dropped: slow reader"}))
        out.extend(self.queue)
        self.queue.clear()
        self.wake.clear()
        return b"".join(out)


def _int_param(query: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 7 or not lo <= int(raw) <= hi:
        raise HttpError(400, f"{name} must be an integer in [{lo}, {hi}]")
    return int(raw)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _load_static() -> dict[str, bytes]:
    base = resources.files("hybridsync.inspector").joinpath("static")
    out = {}
    for name in {f for f, _ in _STATIC.values()}:
        try:
            out[name] = base.joinpath(name).read_bytes()
        except OSError:
            raise ConfigError(
                f"the inspector's page file {name} is missing from this installation "
                "(package data of hybridsync.inspector)"
            ) from None
    return out


class Inspector:
    """Serves the inspector page and its JSON API for ``mem`` (and ``peer``'s sessions).

    Start with :meth:`Inspector.start`; ``url`` is where to point a browser; :meth:`stop`
    closes every connection. There is no authentication: it binds only to ``host``
    (loopback by default) and refuses requests whose ``Host`` header names another server
    (a DNS-rebinding guard), unless bound to a wildcard address.
    """

    def __init__(
        self,
        mem: Memory,
        peer: Peer | None,
        *,
        host: str,
        port: int,
        max_clients: int,
        max_streams: int,
        max_queued_events: int,
        tick_interval_s: float,
        request_timeout_s: float,
        write_timeout_s: float,
    ) -> None:
        if not isinstance(mem, Memory):
            raise ConfigError(f"Inspector needs a hybridsync.Memory, got {type(mem).__name__}")
        from hybridsync.peer import Peer

        if peer is not None and not isinstance(peer, Peer):
            raise ConfigError(f"peer must be a hybridsync.Peer or None, got {type(peer).__name__}")
        if peer is not None and peer.mem is not mem:
            raise ConfigError("peer must be the Peer driving this same Memory")
        if not isinstance(host, str):
            raise ConfigError("host must be a str")
        self.mem = mem
        self.peer = peer
        self.host = host
        self._port_wanted = _count(port, "port", 0, 65535)
        self._max_clients = _count(max_clients, "max_clients", 1, 4096)
        self._max_streams = _count(max_streams, "max_streams", 1, 1024)
        self._max_queued = _count(max_queued_events, "max_queued_events", 1, 1 << 20)
        self._tick_s = _positive(tick_interval_s, "tick_interval_s")
        self._request_timeout_s = _positive(request_timeout_s, "request_timeout_s")
        self._write_timeout_s = _positive(write_timeout_s, "write_timeout_s")
        self._static = _load_static()
        self._views = MemoryViews(mem, peer)
        self._server: asyncio.Server | None = None
        self._port = 0
        self._conns: set[asyncio.Task[Any]] = set()
        self._streams: set[_Stream] = set()
        self._refused: set[asyncio.StreamWriter] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._unobserve: Callable[[], None] | None = None
        self._allowed_hosts: frozenset[str] | None = None
        self._stopping = False
        self.counters: dict[str, int] = dict.fromkeys(
            ("requests", "rejected_busy", "bad_requests", "not_found", "errors", "streams"), 0
        )

    # ---- lifecycle -----------------------------------------------------------------------
    @classmethod
    async def start(
        cls,
        mem: Memory,
        peer: Peer | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_clients: int = 32,
        max_streams: int = 8,
        max_queued_events: int = 256,
        tick_interval_s: float = 1.0,
        request_timeout_s: float = 10.0,
        write_timeout_s: float = 10.0,
    ) -> Inspector:
        """Listen on ``host:port`` (0 = a free port) and serve the page for ``mem``.

        ``peer`` (the :class:`~hybridsync.Peer` driving ``mem``) adds its sessions and sync
        lag. At most ``max_clients`` connections at once (more get 503), of which at most
        ``max_streams`` live event streams. Raises
        :class:`~hybridsync.errors.TransportError` when the address cannot be bound."""
        self = cls(mem, peer, host=host, port=port, max_clients=max_clients,
                   max_streams=max_streams, max_queued_events=max_queued_events,
                   tick_interval_s=tick_interval_s, request_timeout_s=request_timeout_s,
                   write_timeout_s=write_timeout_s)
        try:
            self._server = await asyncio.start_server(
                self._on_connect, host or None, self._port_wanted, limit=MAX_HEAD_BYTES
            )
        except OSError as exc:
            raise TransportError(f"the inspector cannot listen on {host}:{port}: {exc}") from None
        self._port = int(self._server.sockets[0].getsockname()[1])
        if host in _WILDCARDS:
            log.warning("inspector on %s: every address of this machine, no authentication",
                        self.url)
        else:
            names = {host, f"[{host}]"} if ":" in host else {host}
            if _is_loopback(host):
                names |= {"localhost", "127.0.0.1", "[::1]"}
            self._allowed_hosts = frozenset(f"{n}:{self._port}" for n in names)
            if not _is_loopback(host):
                log.warning("inspector on %s: not loopback, and there is no authentication",
                            self.url)
        self._unobserve = mem.observe(self._on_change)
        self._ticker = asyncio.create_task(self._tick_loop(), name="hybridsync-inspector-tick")
        log.info("%s: inspector on %s", mem.peer, self.url)
        return self

    async def stop(self) -> None:
        """Close the listener and every connection (event streams included). Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        if self._unobserve is not None:
            self._unobserve()
        if self._server is not None:
            self._server.close()
        for w in self._refused:
            w.close()
        self._refused.clear()
        tasks = [*self._conns, *([self._ticker] if self._ticker is not None else [])]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._server.wait_closed()
        log.info("%s: inspector stopped", self.mem.peer)

    async def __aenter__(self) -> Inspector:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port/``: open it in a browser."""
        host = f"[{self.host}]" if ":" in self.host else (self.host or "0.0.0.0")
        return f"http://{host}:{self._port}/"

    @property
    def clients(self) -> int:
        """Open connections (event streams included)."""
        return len(self._conns)

    # ---- live events ---------------------------------------------------------------------
    def _on_change(self, ch: Change) -> None:
        """``Memory.observe`` callback: cheap, never raises into the sync path."""
        try:
            if self._streams:
                data = sse_event("change", change_json(ch))
                for s in self._streams:
                    s.push(data)
        except Exception:
            log.exception("inspector: could not publish a change")

    def _tick(self) -> dict[str, Any]:
        return {"heads": list(self.mem.heads), "network": self._views.sessions()}

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            if not self._streams:
                continue
            try:
                data = sse_event("tick", self._tick())
            except TransactionError:
                continue  # the application is inside a transaction: next tick
            except Exception:
                log.exception("inspector: tick failed")
                continue
            for s in self._streams:
                s.push(data)

    # ---- connections ---------------------------------------------------------------------
    async def _on_connect(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._stopping or len(self._conns) >= self._max_clients:
            self.counters["rejected_busy"] += 1
            self._refuse(writer)
            return
        self._conns.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            pass  # stop(): end quietly (3.11's stream callback logs a cancelled task)
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    def _refuse(self, writer: asyncio.StreamWriter) -> None:
        """Answer 503 without reading the request (no task, no buffer). Half-close now and
        close a little later: closing with the request unread would reset the connection
        before the client reads the answer."""
        try:
            writer.write(error_response(HttpError(503, "too many clients")))
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, RuntimeError):
            writer.close()
            return
        self._refused.add(writer)

        def close() -> None:
            self._refused.discard(writer)
            writer.close()

        asyncio.get_running_loop().call_later(1.0, close)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head_only = False
        try:
            try:
                async with asyncio.timeout(self._request_timeout_s):
                    head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                raise HttpError(431, "request head too large") from None
            except TimeoutError:
                raise HttpError(408, "request head not received in time") from None
            req = parse_request(head)
            head_only = req.method == "HEAD"
            self.counters["requests"] += 1
            self._check_host(req)
            if req.path == "/api/events":
                self._check_params(req)
                await self._stream(reader, writer, head_only=head_only)
                return
            out = self._route(req, head_only=head_only)
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the client went away
        except HttpError as exc:
            self.counters["not_found" if exc.status == 404 else "bad_requests"] += 1
            out = error_response(exc, head_only=head_only)
        except TransactionError:
            out = error_response(HttpError(503, "the replica is inside a transaction; retry"),
                                 head_only=head_only)
        except Exception as exc:  # a bug or a closed replica: answer, keep serving others
            self.counters["errors"] += 1
            if not isinstance(exc, HybridSyncError):
                log.exception("inspector: request failed")
            out = error_response(HttpError(500, f"internal error: {type(exc).__name__}"),
                                 head_only=head_only)
        with contextlib.suppress(ConnectionError, TimeoutError):
            writer.write(out)
            async with asyncio.timeout(self._write_timeout_s):
                await writer.drain()

    def _check_host(self, req: Request) -> None:
        if self._allowed_hosts is None:
            return
        host = req.headers.get("host")
        if host is None:
            raise HttpError(400, "a Host header is required")
        if host.lower() not in self._allowed_hosts:
            raise HttpError(403, "unexpected Host header (the inspector answers only to the "
                            "address it listens on)")

    @staticmethod
    def _check_params(req: Request) -> None:
        allowed = _API.get(req.path, ())
        for name in req.query:
            if name not in allowed:
                raise HttpError(400, f"unknown query parameter {name!r} for {req.path}")

    def _route(self, req: Request, *, head_only: bool) -> bytes:
        static = _STATIC.get(req.path)
        if static is not None:
            if req.query:
                raise HttpError(400, "the page takes no query parameters")
            name, ctype = static
            return response(200, self._static[name], ctype, head_only=head_only)
        if req.path not in _API:
            raise HttpError(404, f"no such page: {req.path[:200]}")
        self._check_params(req)
        q, views = req.query, self._views
        doc: Any
        if req.path == "/api/state":
            started = time.perf_counter()
            doc = views.state(
                history=_int_param(q, "history", 50, 1, MAX_HISTORY_PAGE),
                conflicts=_int_param(q, "conflicts", 100, 1, MAX_CONFLICTS_PAGE),
            )
            # the page paces its refreshes by this: a big replica is not re-read back to back
            doc["build_ms"] = round(1000 * (time.perf_counter() - started), 1)
        elif req.path == "/api/fields":
            doc = views.fields()
        elif req.path == "/api/regions":
            doc = {"regions": views.regions()}
        elif req.path == "/api/history":
            tail = q.get("tail")
            if tail not in (None, "0", "1"):
                raise HttpError(400, "tail must be 0 or 1")
            try:
                doc = views.history(
                    after=q.get("after") or None,
                    limit=_int_param(q, "limit", DEFAULT_HISTORY_PAGE, 1, MAX_HISTORY_PAGE),
                    tail=tail == "1",
                )
            except ConfigError as exc:
                raise HttpError(400, str(exc)) from None
        elif req.path == "/api/conflicts":
            doc = views.conflicts(limit=_int_param(q, "limit", 100, 1, MAX_CONFLICTS_PAGE))
        else:  # /api/sessions
            doc = views.sessions()
        return json_response(200, doc, head_only=head_only)

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                      head_only: bool) -> None:
        """Serve one Server-Sent Events stream until the client leaves or we stop."""
        if len(self._streams) >= self._max_streams:
            raise HttpError(503, "too many event streams")
        if head_only:
            writer.write(sse_head())
            return
        client = _Stream(self._max_queued)
        self._streams.add(client)
        self.counters["streams"] += 1
        hangup = asyncio.ensure_future(reader.read(1))  # b"" (or anything) ends the stream
        hangup.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved
        try:
            hello = sse_event("hello", {"peer": self.mem.peer, **self._tick()})
            writer.write(sse_head() + b"retry: 2000\n\n" + hello)
            async with asyncio.timeout(self._write_timeout_s):
                await writer.drain()
            while not hangup.done():
                wake = asyncio.ensure_future(client.wake.wait())
                try:
                    await asyncio.wait({wake, hangup}, timeout=_KEEPALIVE_S,
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    wake.cancel()
                if hangup.done():
                    break
                data = client.take() or b": keepalive\n\n"
                writer.write(data)
                async with asyncio.timeout(self._write_timeout_s):
                    await writer.drain()
        except (ConnectionError, TimeoutError):
            pass  # gone, or a reader that does not read: drop it
        finally:
            self._streams.discard(client)
            hangup.cancel()
