"""``Peer``: the asyncio driver that keeps one :class:`~hybridsync.Memory` in sync over TCP.

The driver only moves bytes: every SYNC record carries exactly one frame of the replica's
sans-I/O ``sync_to``/``receive``, so the simulator and the network run the same protocol.
Around that it adds what a real network needs: the group handshake and AEAD records
(``hybridsync.security``, G7), heartbeats, reconnection with bounded exponential backoff and
jitter, backpressure, a deterministic tie-break for duplicate connections, and a clean stop.

Time (``loop.time()``) and randomness (``os.urandom``, the backoff jitter) are read here and
nowhere in the core. Bad bytes from the network never raise out of the driver: the session
is closed, the event is logged and counted in :meth:`Peer.stats`, the replica is unchanged,
and every other session keeps going.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgpack

from hybridsync._checks import count as _count
from hybridsync._checks import positive as _positive
from hybridsync.errors import (
    ConfigError,
    FrameError,
    HybridSyncError,
    ProtocolError,
    TransactionError,
    TransportError,
)
from hybridsync.replica import Change, Memory
from hybridsync.security import (
    HANDSHAKE_MAX_BYTES,
    NONCE_BYTES,
    RECORD_OVERHEAD_BYTES,
    Handshake,
    RecordOpener,
    RecordSealer,
    RecordType,
    space_key,
    space_tag,
)
from hybridsync.transport import (
    RecordStream,
    TcpListener,
    format_url,
    open_tcp,
    parse_url,
    serve_tcp,
)
from hybridsync.wire import MAX_FRAME_BYTES

if TYPE_CHECKING:
    from hybridsync.interop._yws import YjsEndpoint

__all__ = ["DiscoveryFactory", "Peer", "SessionInfo"]

log = logging.getLogger("hybridsync.peer")

HELLO_VERSION = 1
_HELLO_MAX_BYTES = 2048
_INSTANCE_BYTES = 8
_MAX_NAME_BYTES = 256
_RECORD_WIRE_BYTES = 4 + RECORD_OVERHEAD_BYTES  # length prefix, type byte, tag
# Frames received while the application holds a transaction open wait in a per-session
# backlog; more than this many (or more than ``max_deferred_bytes``) close the session.
_MAX_DEFERRED_FRAMES = 4096


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A snapshot of one live session (``Peer.sessions[remote_peer]``)."""

    peer: str  # the remote replica's name (learned inside the encrypted HELLO)
    url: str  # the address of this connection's other end
    listen_url: str  # where the remote peer says it listens ("" if it does not)
    initiator: bool  # True when we dialed
    state: str  # "open", or "closing" after a goodbye was queued
    bytes_in: int  # wire bytes, length prefixes, handshake and tags included
    bytes_out: int
    frames_in: int  # sync frames (SYNC records)
    frames_out: int
    records_in: int  # every record after the handshake (HELLO, SYNC, PING, BYE)
    records_out: int
    queued: int  # records waiting to be written (bounded: see Peer docs)
    idle_s: float  # seconds since the last record from the remote
    age_s: float  # seconds since the session opened


class _Discovery(Protocol):
    async def start(self) -> None: ...

    async def requery(self) -> None: ...

    async def stop(self) -> None: ...


class DiscoveryFactory(Protocol):
    """Makes the discovery of one running peer (``hybridsync.discovery.MdnsDiscovery`` is one):
    announce ``peer_id`` (the peer's random instance id) under ``space_tag`` at ``port`` on
    ``interfaces``, and report every other peer found as ``on_found(url, peer_id)``."""

    def __call__(
        self,
        space_tag: str,
        peer_id: str,
        port: int,
        *,
        interfaces: Sequence[str],
        on_found: Callable[[str, str], None],
    ) -> _Discovery: ...


class _Session:
    """One authenticated connection to one remote peer."""

    __slots__ = (
        "closed",
        "conn_key",
        "deferred",
        "deferred_bytes",
        "frames_in",
        "frames_out",
        "initiator",
        "instance",
        "last_seen",
        "last_sent",
        "listen_url",
        "name",
        "opener",
        "outbox",
        "records_in",
        "records_out",
        "sealer",
        "started",
        "state",
        "stream",
        "wake",
        "want_flush",
        "writer",
    )

    def __init__(
        self,
        stream: RecordStream,
        name: str,
        instance: bytes,
        listen_url: str,
        *,
        initiator: bool,
        conn_key: tuple[bool, bytes],
        sealer: RecordSealer,
        opener: RecordOpener,
        now: float,
    ) -> None:
        self.stream = stream
        self.name = name
        self.instance = instance
        self.listen_url = listen_url
        self.initiator = initiator
        self.conn_key = conn_key
        self.sealer = sealer
        self.opener = opener
        self.outbox: deque[tuple[RecordType, bytes]] = deque()
        self.wake = asyncio.Event()
        self.closed = asyncio.Event()
        self.state = "open"
        self.started = self.last_seen = self.last_sent = now
        self.frames_in = self.frames_out = self.records_in = self.records_out = 0
        self.writer: asyncio.Task[None] | None = None
        self.want_flush = False  # a flush found the queue or socket busy: flush once drained
        # SYNC frames that arrived while the application was inside a transaction, in order:
        # fed to the replica once it has ended, before any later frame of this session
        self.deferred: deque[bytes] = deque()
        self.deferred_bytes = 0

    def enqueue(self, kind: RecordType, body: bytes) -> None:
        self.outbox.append((kind, body))
        self.wake.set()

    def info(self, now: float) -> SessionInfo:
        return SessionInfo(
            peer=self.name,
            url=self.stream.remote,
            listen_url=self.listen_url,
            initiator=self.initiator,
            state=self.state,
            bytes_in=self.stream.bytes_in,
            bytes_out=self.stream.bytes_out,
            frames_in=self.frames_in,
            frames_out=self.frames_out,
            records_in=self.records_in,
            records_out=self.records_out,
            queued=len(self.outbox),
            idle_s=max(0.0, now - self.last_seen),
            age_s=max(0.0, now - self.started),
        )


class _Target:
    """An address we keep a session with: static (forever) or discovered (a few tries)."""

    __slots__ = ("failures", "host", "kick", "name", "port", "static", "task", "url", "waiters")

    def __init__(self, url: str, *, static: bool) -> None:
        self.url = url
        self.host, self.port = parse_url(url)
        self.static = static
        self.name: str | None = None
        self.failures = 0
        self.kick = asyncio.Event()
        self.waiters: list[asyncio.Future[str]] = []
        self.task: asyncio.Task[None] | None = None

    def resolve(self, name: str) -> None:
        for w in self.waiters:
            if not w.done():
                w.set_result(name)
        self.waiters.clear()

    def fail(self, exc: BaseException) -> None:
        for w in self.waiters:
            if not w.done():
                w.set_exception(exc)
        self.waiters.clear()


class _Rejected(HybridSyncError):
    """Internal: an authenticated connection we do not keep (duplicate, self, too many)."""


class _Goodbye(HybridSyncError):
    """Internal: the remote said goodbye (a BYE record); ends the session gracefully."""


def _encode_hello(name: str, instance: bytes, listen_url: str) -> bytes:
    return bytes(msgpack.packb(
        {"v": HELLO_VERSION, "peer": name, "instance": instance, "listen": listen_url},
        use_bin_type=True,
    ))


def _decode_hello(body: bytes) -> tuple[str, bytes, str]:
    try:
        hello = msgpack.unpackb(body, raw=False, strict_map_key=True, max_bin_len=64,
                                max_str_len=1024, max_array_len=0, max_map_len=16)
    except Exception as exc:  # msgpack raises several unrelated types
        raise FrameError(f"undecodable HELLO: {exc!r}") from None
    if not isinstance(hello, dict) or hello.get("v") != HELLO_VERSION:
        raise FrameError("HELLO of an unknown version or shape")
    name, instance, listen = hello.get("peer"), hello.get("instance"), hello.get("listen", "")
    if not isinstance(name, str) or not 0 < len(name.encode()) <= _MAX_NAME_BYTES:
        raise FrameError("HELLO carries no valid peer name")
    if not isinstance(instance, bytes) or len(instance) != _INSTANCE_BYTES:
        raise FrameError("HELLO carries no valid instance id")
    if not isinstance(listen, str):
        raise FrameError("HELLO carries an invalid listen URL")
    return name, instance, listen


class Peer:
    """Keeps ``mem`` in sync with every peer it can reach; start with :meth:`Peer.start`.

    Sync is driven after local changes (``mem.observe``, and ``mem.on_pending`` for the
    pending writes of ``group_commit``), after every frame received, and on a timer
    (``sync_interval_s``, which also calls ``mem.poll()`` and drives the replica's
    retransmissions). Flushes are coalesced: at most one per ``coalesce_s`` (default 1 ms),
    the first after a quiet spell at once (for a local commit, in the observer's step: an
    autocommitted write returns with its frame on the socket), so a burst of writes shares
    contributions (group commit), frames, AEAD records and acknowledgements; a frame the
    replica produced is never held back (the flush seals and writes its records in the same
    step, in one socket write). Received records are handled in the loop step that read
    them. Each session sends a PING when it has been quiet for ``heartbeat_s`` and is closed
    when nothing arrived for ``dead_after_s``. Static and discovered addresses
    are redialed with exponential backoff from ``reconnect_min_s`` to ``reconnect_max_s``
    with jitter in [50 %, 100 %]. Backpressure: the replica is asked for frames for a
    session only when that session's queue is empty and its socket buffer below its limit;
    what does not fit waits in the queue while the session's writer drains the socket (at
    most ``write_timeout_s``, then the session is closed), so a slow reader holds at most
    one ``sync_to`` batch plus the transport's buffer.

    Sessions are reliable (TCP delivers in order or ends the session): frames are asked for
    with ``sync_to(peer, reliable=True)``, so a slow reader is never sent everything again,
    and ``mem.resend(peer)`` runs whenever a session to ``peer`` opens (what was in flight on
    an earlier one may be lost). A frame that arrives while the application holds a
    transaction open waits in its session's backlog, in order (later frames of that session
    queue behind it), and is fed to the replica once the transaction has ended (at the next
    flush or tick); more than ``max_deferred_bytes`` (or 4,096 frames) waiting closes the
    session, and the reconnection resends them.

    Garbage collection runs in idle time: while it runs, the peer turns the replica's
    ``auto_collect`` off (restored by :meth:`stop`), so ``receive`` never compacts, and calls
    ``mem.collect()`` when ``mem.collect_due`` says so after ``collect_idle_s`` without a
    flush or a received record. Under load that never pauses that long, the tick checks
    once every ``collect_max_delay_s`` of it (so the log grows by at most what arrives in
    that time between compactions). ``stats()`` counts the compactions (``compactions``,
    ``compactions_forced`` for the tick's, ``compacted_entries``).
    """

    def __init__(
        self,
        mem: Memory,
        *,
        host: str,
        port: int,
        secret: bytes,
        discovery: str | DiscoveryFactory | None,
        peers: Iterable[str],
        interfaces: Sequence[str],
        heartbeat_s: float,
        dead_after_s: float | None,
        handshake_timeout_s: float,
        sync_interval_s: float,
        reconnect_min_s: float,
        reconnect_max_s: float,
        write_timeout_s: float,
        stop_timeout_s: float,
        max_pending_handshakes: int,
        max_sessions: int,
        max_record_bytes: int,
        discovered_attempts: int,
        rng: random.Random | None,
        coalesce_s: float = 0.001,
        collect_idle_s: float = 0.002,
        collect_max_delay_s: float = 1.0,
        max_deferred_bytes: int = MAX_FRAME_BYTES + RECORD_OVERHEAD_BYTES,
        requery_window_s: float = 60.0,
        requery_interval_s: float | None = None,
    ) -> None:
        if not isinstance(mem, Memory):
            raise ConfigError(f"Peer needs a hybridsync.Memory, got {type(mem).__name__}")
        if not isinstance(host, str) or not host:
            raise ConfigError("host must be a non-empty str")
        self.mem = mem
        self._host = host
        self._port_wanted = _count(port, "port", 0, 65535)
        self._key = space_key(secret, mem.space)
        self._space_tag = space_tag(secret, mem.space)
        if discovery is not None and discovery != "mdns" and (
            isinstance(discovery, str) or not callable(discovery)
        ):
            raise ConfigError(f"discovery must be None, 'mdns' or a discovery factory, got "
                              f"{discovery!r}")
        self._discovery_kind = discovery
        if isinstance(peers, str):
            raise ConfigError("peers must be a list of URLs, not one str")
        self._static = [str(u) for u in peers]
        for u in self._static:
            parse_url(u)
        if isinstance(interfaces, str):
            raise ConfigError("interfaces must be a sequence of addresses, not one str")
        self._interfaces = tuple(interfaces)
        self._heartbeat_s = _positive(heartbeat_s, "heartbeat_s")
        self._dead_after_s = (
            4 * self._heartbeat_s if dead_after_s is None
            else _positive(dead_after_s, "dead_after_s")
        )
        if self._dead_after_s <= self._heartbeat_s:
            raise ConfigError("dead_after_s must be longer than heartbeat_s")
        self._handshake_timeout_s = _positive(handshake_timeout_s, "handshake_timeout_s")
        self._sync_interval_s = _positive(sync_interval_s, "sync_interval_s")
        self._reconnect_min_s = _positive(reconnect_min_s, "reconnect_min_s")
        self._reconnect_max_s = _positive(reconnect_max_s, "reconnect_max_s")
        if self._reconnect_max_s < self._reconnect_min_s:
            raise ConfigError("reconnect_max_s must be at least reconnect_min_s")
        self._write_timeout_s = _positive(write_timeout_s, "write_timeout_s")
        self._stop_timeout_s = _positive(stop_timeout_s, "stop_timeout_s")
        self._max_pending = _count(max_pending_handshakes, "max_pending_handshakes", 1, 65536)
        self._max_sessions = _count(max_sessions, "max_sessions", 1, 65536)
        self._max_record_bytes = _count(
            max_record_bytes, "max_record_bytes", 1024, MAX_FRAME_BYTES + RECORD_OVERHEAD_BYTES
        )
        self._discovered_attempts = _count(discovered_attempts, "discovered_attempts", 1, 1000)
        if isinstance(coalesce_s, bool) or not isinstance(coalesce_s, int | float) or not (
            0 <= coalesce_s <= 1
        ):
            raise ConfigError(f"coalesce_s must be a number of seconds in [0, 1], got "
                              f"{coalesce_s!r}")
        self._coalesce_s = float(coalesce_s)
        self._collect_idle_s = _positive(collect_idle_s, "collect_idle_s")
        self._collect_max_delay_s = _positive(collect_max_delay_s, "collect_max_delay_s")
        self._requery_window_s = _positive(requery_window_s, "requery_window_s")
        self._requery_interval_s = (
            max(2.0, 2 * self._heartbeat_s) if requery_interval_s is None
            else _positive(requery_interval_s, "requery_interval_s")
        )
        self._max_deferred_bytes = _count(max_deferred_bytes, "max_deferred_bytes", 1, 1 << 40)
        self._rng = rng if rng is not None else random.Random(os.urandom(16))
        self._instance = os.urandom(_INSTANCE_BYTES)
        self._loop = asyncio.get_running_loop()
        self._listener: TcpListener | None = None
        self._discovery: _Discovery | None = None
        self._sessions: dict[str, _Session] = {}
        self._targets: dict[str, _Target] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._pending_handshakes = 0
        self._flush_scheduled = False
        self._in_flush = False  # _run_flush is running (a change it makes flushes after it)
        self._receiving = False  # mem.receive is running (its changes flush after it)
        self._flush_again = False
        self._flush_timer: asyncio.TimerHandle | None = None
        self._last_flush = float("-inf")  # loop time of the last flush a change asked for
        self._last_activity = float("-inf")  # of the last flush or received record
        self._collect_timer: asyncio.TimerHandle | None = None  # idle compaction check
        self._busy_since: float | None = None  # start of the activity since the last pause
        self._auto_collect_before: bool | None = None  # mem.auto_collect before start
        self._unpending: Callable[[], None] | None = None
        self._stopping = False
        self._stopped = asyncio.Event()
        self._unobserve: Callable[[], None] | None = None
        self._yjs: YjsEndpoint | None = None  # the y-protocols endpoint (docs/interop.md)
        self._requery_until = 0.0  # loop time until which the tick asks discovery again
        self._last_requery = float("-inf")
        self._requery_task: asyncio.Task[None] | None = None
        self._counters: dict[str, int] = dict.fromkeys(
            (
                "accepted", "dialed", "dial_failures", "sessions_opened", "sessions_closed",
                "handshake_failures", "handshake_timeouts", "rejected_busy", "duplicates",
                "protocol_errors", "frames_rejected", "heartbeat_timeouts", "write_timeouts",
                "goodbyes", "frames_deferred", "deferred_overflows", "compactions",
                "compactions_forced", "compacted_entries", "requeries",
            ),
            0,
        )

    # ---- lifecycle -----------------------------------------------------------------------
    @classmethod
    async def start(
        cls,
        mem: Memory,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        secret: bytes,
        discovery: str | DiscoveryFactory | None = None,
        peers: Iterable[str] = (),
        interfaces: Sequence[str] = ("127.0.0.1",),
        heartbeat_s: float = 1.0,
        dead_after_s: float | None = None,
        handshake_timeout_s: float = 5.0,
        sync_interval_s: float = 0.1,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 10.0,
        write_timeout_s: float = 30.0,
        stop_timeout_s: float = 5.0,
        max_pending_handshakes: int = 64,
        max_sessions: int = 256,
        max_record_bytes: int = MAX_FRAME_BYTES + RECORD_OVERHEAD_BYTES,
        discovered_attempts: int = 5,
        rng: random.Random | None = None,
        coalesce_s: float = 0.001,
        collect_idle_s: float = 0.002,
        collect_max_delay_s: float = 1.0,
        max_deferred_bytes: int = MAX_FRAME_BYTES + RECORD_OVERHEAD_BYTES,
        requery_window_s: float = 60.0,
        requery_interval_s: float | None = None,
        websocket: tuple[str, int] | None = None,
        websocket_token: str | None = None,
        websocket_readonly: bool = False,
        websocket_max_message_bytes: int = 1 << 20,
        websocket_max_clients: int = 64,
        websocket_origins: Sequence[str] | None = None,
    ) -> Peer:
        """Listen on ``host:port`` (0 = a free port), dial ``peers`` (``tcp://host:port``),
        and with ``discovery="mdns"`` announce and browse on ``interfaces``.

        ``secret`` is the group secret (8–4096 bytes; use 32 random bytes): only peers of the
        same space holding it get a session. ``dead_after_s`` defaults to 4 × ``heartbeat_s``.

        ``discovery`` is None, ``"mdns"`` (:class:`~hybridsync.discovery.MdnsDiscovery`) or a
        :class:`DiscoveryFactory` (any callable with ``MdnsDiscovery``'s constructor
        arguments returning an object with ``start``, ``requery`` and ``stop``). Each
        address it reports is dialed (``discovered_attempts`` tries, then dropped until it
        is reported again). When a session closes (a goodbye, a lost connection, a
        heartbeat timeout) the peer asks discovery again at once, then every
        ``requery_interval_s`` (default the larger of 2 s and 2 × ``heartbeat_s``) for
        ``requery_window_s`` (default 60 s), so a peer that restarted elsewhere, or whose
        partition healed, is found again; ``stats()["requeries"]`` counts the questions.
        ``coalesce_s`` (0–1 s, default 0.001): flushes after local changes and received
        frames run at most once per this interval (0: after every change, on the next loop
        iteration); the first after a quiet spell runs at once.

        ``collect_idle_s`` (default 2 ms): a due garbage collection runs after this long
        without a flush or a received record; ``collect_max_delay_s`` (default 1 s): under
        load that never pauses, it runs after at most this long anyway. ``max_deferred_bytes``
        (default one maximal record): the frames a session may hold back while the
        application is inside a transaction; beyond it the session is closed (and redialed).

        ``websocket=(host, port)`` also serves the fields document to stock Yjs clients
        (y-protocols over WebSocket, room ``/<space>``, see ``websocket_url`` and
        ``docs/interop.md``): when ``websocket_token`` is set, clients must send it as the URL
        query ``?token=``; ``websocket_readonly`` refuses their edits; the size, client-count
        and ``Origin`` options bound who may connect and what they may send.
        """
        self = cls(
            mem, host=host, port=port, secret=secret, discovery=discovery, peers=peers,
            interfaces=interfaces, heartbeat_s=heartbeat_s, dead_after_s=dead_after_s,
            handshake_timeout_s=handshake_timeout_s, sync_interval_s=sync_interval_s,
            reconnect_min_s=reconnect_min_s, reconnect_max_s=reconnect_max_s,
            write_timeout_s=write_timeout_s, stop_timeout_s=stop_timeout_s,
            max_pending_handshakes=max_pending_handshakes, max_sessions=max_sessions,
            max_record_bytes=max_record_bytes, discovered_attempts=discovered_attempts, rng=rng,
            coalesce_s=coalesce_s, collect_idle_s=collect_idle_s,
            collect_max_delay_s=collect_max_delay_s, max_deferred_bytes=max_deferred_bytes,
            requery_window_s=requery_window_s, requery_interval_s=requery_interval_s,
        )
        self._listener = await serve_tcp(self._host, self._port_wanted, self._on_accept)
        if websocket is not None:
            from hybridsync.interop._yws import YjsEndpoint

            try:
                self._yjs = await YjsEndpoint.start(
                    mem, websocket, token=websocket_token, readonly=websocket_readonly,
                    max_message_bytes=websocket_max_message_bytes,
                    max_clients=websocket_max_clients, origins=websocket_origins,
                )
            except BaseException:
                await self.stop()
                raise
        self._unobserve = mem.observe(self._on_change, paths=False)
        self._unpending = mem.on_pending(self._schedule_flush)
        # compactions run in our idle time, not inside receive (restored by stop)
        self._auto_collect_before = mem.auto_collect
        mem.auto_collect = False
        self._ticker = asyncio.create_task(self._tick_loop(), name=f"hybridsync-tick-{mem.peer}")
        for url in self._static:
            self._add_target(url, static=True)
        if self._discovery_kind is not None:
            try:
                factory: DiscoveryFactory
                if self._discovery_kind == "mdns":
                    from hybridsync.discovery import MdnsDiscovery

                    factory = MdnsDiscovery
                else:
                    assert not isinstance(self._discovery_kind, str)
                    factory = self._discovery_kind
                found = factory(self._space_tag, self.instance, self.port,
                                interfaces=self._interfaces, on_found=self._on_found)
                if not all(callable(getattr(found, m, None))
                           for m in ("start", "requery", "stop")):
                    raise ConfigError(f"the discovery factory returned {found!r}, which has "
                                      "no start(), requery() and stop()")
                self._discovery = found
                await found.start()
                # it has just asked the network: the next question waits for a drop or heal
                self._last_requery = self._loop.time()
            except BaseException:
                self._discovery = None
                await self.stop()
                raise
        log.info("%s listening on %s", mem.peer, self.url)
        return self

    async def stop(self) -> None:
        """Flush, say goodbye to every session, close everything; no task is left behind.
        Idempotent. The memory stays open (close it yourself)."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        try:
            if self._yjs is not None:
                await self._yjs.close()
            if self._unobserve is not None:
                self._unobserve()
            if self._unpending is not None:
                self._unpending()
            if self._flush_timer is not None:
                self._flush_timer.cancel()
                self._flush_timer = None
            if self._collect_timer is not None:
                self._collect_timer.cancel()
                self._collect_timer = None
            if self._discovery is not None:
                try:
                    await self._discovery.stop()
                except Exception:
                    log.exception("%s: discovery did not stop cleanly", self.mem.peer)
            if self._listener is not None:
                await self._listener.close()
            background = [t.task for t in self._targets.values() if t.task is not None]
            if self._ticker is not None:
                background.append(self._ticker)
            for t in background:
                t.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            for target in self._targets.values():
                target.fail(TransportError("the peer is stopping"))
            # Flush what the replica has for each session, then goodbye.
            with contextlib.suppress(TransactionError):
                self.mem.commit()
            for s in list(self._sessions.values()):
                if s.state == "open":
                    with contextlib.suppress(TransactionError):
                        for frame in self.mem.sync_to(s.name, reliable=True):
                            s.enqueue(RecordType.SYNC, frame)
                    s.state = "closing"
                    s.enqueue(RecordType.BYE, b"stop")
            closing = [s.closed.wait() for s in self._sessions.values()]
            if closing:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._stop_timeout_s):
                        await asyncio.gather(*closing)
            for s in list(self._sessions.values()):
                self._close(s, "stop timeout", graceful=False)
            while self._tasks:
                tasks = list(self._tasks)
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self._tasks.difference_update(tasks)
        finally:
            if self._auto_collect_before is not None:
                self.mem.auto_collect = self._auto_collect_before
                self._auto_collect_before = None
            self._stopped.set()
        log.info("%s stopped", self.mem.peer)

    async def __aenter__(self) -> Peer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- public views --------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._listener is not None
        return self._listener.port

    @property
    def url(self) -> str:
        """``tcp://host:port`` where this peer accepts sessions."""
        return format_url(self._host, self.port)

    @property
    def instance(self) -> str:
        """A random id of this running peer (hex): what discovery advertises instead of the
        peer's name, so the name never travels in clear."""
        return self._instance.hex()

    @property
    def websocket_url(self) -> str | None:
        """``ws://host:port`` of the y-protocols endpoint, or None without one. Yjs clients
        join the space's room: ``new WebsocketProvider(url, space, doc, {params: {token}})``."""
        return None if self._yjs is None else self._yjs.url

    @property
    def space_tag(self) -> str:
        """The keyed tag of the space (``hybridsync.security.space_tag``)."""
        return self._space_tag

    @property
    def sessions(self) -> Mapping[str, SessionInfo]:
        """Live sessions, by remote peer name (a snapshot)."""
        now = self._loop.time()
        return {name: s.info(now) for name, s in self._sessions.items()}

    def stats(self) -> dict[str, int]:
        """Counters since start: connections, handshakes, rejections, timeouts, sessions."""
        out = dict(self._counters)
        out["pending_handshakes"] = self._pending_handshakes
        out["sessions"] = len(self._sessions)
        out["targets"] = len(self._targets)
        if self._yjs is not None:
            out.update({f"websocket_{k}": v for k, v in self._yjs.stats().items()})
        return out

    async def connect(self, url: str, *, timeout_s: float = 10.0) -> str:
        """Keep a session with ``url`` (redialed with backoff until :meth:`stop`) and wait
        for it. Returns the remote peer's name; raises the first attempt's error
        (:class:`~hybridsync.errors.TransportError`, :class:`AuthenticationError`, ...) or a
        ``TransportError`` after ``timeout_s`` — the peer keeps retrying either way."""
        parse_url(url)
        timeout = _positive(timeout_s, "timeout_s")
        if self._stopping:
            raise TransportError("the peer is stopped")
        target = self._targets.get(url)
        if target is None:
            target = self._add_target(url, static=True)
        target.static = True
        if target.name is not None and target.name in self._sessions:
            return target.name
        waiter: asyncio.Future[str] = self._loop.create_future()
        target.waiters.append(waiter)
        target.failures = 0
        target.kick.set()
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            raise TransportError(
                f"no session with {url} after {timeout} s (still retrying)"
            ) from None

    # ---- sync driving --------------------------------------------------------------------
    def _on_change(self, change: Change) -> None:
        # (also for our own group commit's change: the flush running sends it, and the one
        # this schedules a window later finds nothing to send — measured, dropping it made
        # the latency tail worse on a shared VM, docs/benchmarks.md; it is scheduled once
        # the running flush has written its records, not before)
        if self._in_flush:
            self._flush_again = True
        elif change.local and self._flush_now_ok():
            # A local commit after a quiet spell (an autocommitted write, a transaction, a
            # cycle): the replica is consistent here (observers may write to it), so flush
            # in this step instead of one loop iteration later. The write returns after its
            # frame is on the socket; the burst behind it is coalesced as before.
            self._last_flush = self._loop.time()
            self._run_flush()
        else:
            self._schedule_flush()

    def _flush_now_ok(self) -> bool:
        """A flush may run inside the current call: none is pending or running, the last
        ran ``coalesce_s`` ago or more, and no session holds frames back (feeding them to
        the replica from inside an observer is left to the scheduled flush)."""
        if self._flush_scheduled or self._stopping or self._receiving:
            return False
        if self._last_flush + self._coalesce_s > self._loop.time():
            return False
        return not any(s.deferred for s in self._sessions.values())

    def _schedule_flush(self) -> None:
        """Flush on the next loop iteration, or, if the last flush ran less than
        ``coalesce_s`` ago, when that much time has passed since it: a burst of changes
        shares contributions (group commit), frames, records and acknowledgements, while a
        change after a quiet spell goes out at once. May run inside a write (``on_pending``):
        it only schedules, and never touches the replica."""
        if self._flush_scheduled or self._stopping:
            return
        self._flush_scheduled = True
        due = self._last_flush + self._coalesce_s
        now = self._loop.time()
        if due <= now:
            self._last_flush = now
            self._loop.call_soon(self._run_flush)
        else:
            self._flush_timer = self._loop.call_at(due, self._start_flush)

    def _start_flush(self) -> None:
        self._flush_timer = None
        self._last_flush = self._loop.time()
        self._loop.call_soon(self._run_flush)

    def _run_flush(self) -> None:
        """The flush itself, one loop iteration after the change that asked for it: commit
        the pending writes of group commit, then ask the replica for each session's frames
        and write them, sealed, in one ``write`` per session — in this same step, no task
        switch (a session whose queue or socket buffer is busy is flushed by its writer task
        once it drained)."""
        self._flush_scheduled = False
        if self._stopping:
            return
        self._flush_guarded()
        self._note_activity(self._last_flush)

    def _flush_guarded(self) -> None:
        """:meth:`_flush_all`, with the changes it makes (our group commit's) flushed after
        it, on schedule, and never inside it."""
        self._in_flush = True
        try:
            self._flush_all()
        finally:
            self._in_flush = False
        if self._flush_again:
            self._flush_again = False
            self._schedule_flush()

    def _commit_pending(self) -> None:
        # group commit: the pending writes become one contribution now, whether or not a
        # session is ready to take it (durable with SQLite once this returns)
        if not self.mem.pending_writes or self._stopping:
            return
        try:
            self.mem.commit()
        except TransactionError:
            pass  # the application is inside a transaction: it commits them
        except HybridSyncError:
            log.exception("%s: commit failed", self.mem.peer)

    def _flush_all(self) -> None:
        sessions = list(self._sessions.values())
        for s in sessions:
            if s.deferred:
                self._feed_deferred(s)
        self._commit_pending()
        for s in sessions:
            self._flush(s)  # (returns at once for a session closed meanwhile)

    def _feed_deferred(self, s: _Session) -> None:
        """Feed the frames ``s`` held back during a transaction to the replica, in order,
        until the first that still meets one (it stays at the head)."""
        deferred = s.deferred
        received = False
        while deferred and s.state == "open":
            frame = deferred[0]
            try:
                self.mem.receive(s.name, frame)
            except TransactionError:
                break
            except HybridSyncError as exc:
                self._counters["frames_rejected"] += 1
                self._counters["protocol_errors"] += 1
                log.warning("%s: session with %s (%s) rejected input, closing: frame rejected "
                            "by the replica: %s", self.mem.peer, s.name, s.stream.remote, exc)
                self._close(s, f"frame rejected by the replica: {exc}", graceful=False)
                return
            deferred.popleft()
            s.deferred_bytes -= len(frame)
            received = True
        if received:
            self._schedule_flush()  # acknowledge them

    def _flush(self, s: _Session) -> None:
        """Ask the replica for this session's frames and write them now, only when its queue
        is empty and its transport below its buffer limit (else its writer task does, once
        it drained)."""
        if s.state != "open":
            return
        if s.outbox or s.stream.write_room_bytes <= 0:
            s.want_flush = True
            s.wake.set()
            return
        s.want_flush = False
        try:
            frames = self.mem.sync_to(s.name, reliable=True)
        except TransactionError:
            return  # the application is inside a transaction: the next tick retries
        except HybridSyncError:
            log.exception("%s: sync_to(%s) failed", self.mem.peer, s.name)
            return
        if not frames:
            return
        sync = RecordType.SYNC
        try:
            if len(frames) == 1:  # the usual case: sealed and written, no queue
                s.stream.write((s.sealer.seal(sync, frames[0]),))
                s.frames_out += 1
                s.records_out += 1
                s.last_sent = self._loop.time()
            else:
                s.outbox.extend((sync, frame) for frame in frames)
                self._pump(s)
        except HybridSyncError as exc:  # TransportError (closed under us), counter exhausted
            log.info("%s: writing to %s failed: %r", self.mem.peer, s.name, exc)
            self._close(s, repr(exc), graceful=False)
            return
        if s.outbox or s.stream.write_room_bytes <= 0:
            s.wake.set()  # the writer task drains the socket (bounded) and sends the rest

    def _pump(self, s: _Session) -> bool:
        """Seal the head of the queue and write it in one ``write``: as many records as the
        transport takes below its buffer limit, at least one. True when a BYE went out."""
        outbox = s.outbox
        room = s.stream.write_room_bytes
        records: list[bytes] = []
        size = 0
        bye = False
        while outbox:
            kind, body = outbox[0]
            if records and size + len(body) + _RECORD_WIRE_BYTES > room:
                break
            outbox.popleft()
            if kind is RecordType.PING and outbox:
                continue  # a heartbeat behind which other records wait is redundant
            records.append(s.sealer.seal(kind, body))
            size += len(body) + _RECORD_WIRE_BYTES
            if kind is RecordType.SYNC:
                s.frames_out += 1
            elif kind is RecordType.BYE:
                bye = True
                break
        if records:
            s.stream.write(records)
            s.records_out += len(records)
            s.last_sent = self._loop.time()
        return bye

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self._sync_interval_s)
            now = self._loop.time()
            try:
                self.mem.poll()
            except HybridSyncError:
                log.exception("%s: poll failed", self.mem.peer)
            for s in list(self._sessions.values()):
                if now - s.last_seen > self._dead_after_s:
                    self._counters["heartbeat_timeouts"] += 1
                    log.warning("%s: session with %s silent for %.1f s: closing",
                                self.mem.peer, s.name, now - s.last_seen)
                    self._close(s, "heartbeat timeout", graceful=False)
                elif not s.outbox and now - s.last_sent >= self._heartbeat_s:
                    s.enqueue(RecordType.PING, b"")
            self._flush_guarded()
            busy_since = self._busy_since
            if busy_since is not None and now - busy_since >= self._collect_max_delay_s:
                self._busy_since = now  # (the next one no sooner than the same delay)
                self._collect_if_due(forced=True)  # busy all along: do not wait for a pause
            if (
                self._discovery is not None and now < self._requery_until
                and now - self._last_requery >= self._requery_interval_s
            ):
                self._requery()

    # ---- garbage collection in idle time ------------------------------------------------
    def _note_activity(self, now: float) -> None:
        """A flush ran or a record arrived at ``now``: a compaction waits for the next quiet
        spell of ``collect_idle_s`` (one timer per spell, pushed back when it fires early)."""
        self._last_activity = now
        if self._collect_timer is None and not self._stopping:
            self._collect_timer = self._loop.call_at(now + self._collect_idle_s,
                                                     self._on_collect_timer)
            if self._busy_since is None:
                self._busy_since = now

    def _on_collect_timer(self) -> None:
        self._collect_timer = None
        if self._stopping:
            return
        quiet_at = self._last_activity + self._collect_idle_s
        if quiet_at > self._loop.time():
            self._collect_timer = self._loop.call_at(quiet_at, self._on_collect_timer)
        elif not self._flush_scheduled:  # (a flush due re-arms it when it runs)
            self._busy_since = None
            self._collect_if_due(forced=False)

    def _collect_if_due(self, *, forced: bool) -> None:
        """``mem.collect()`` when ``mem.collect_due``; counted in :meth:`stats`."""
        try:
            if not self.mem.collect_due:
                return
            n = self.mem.collect()
        except TransactionError:
            return  # the application is inside a transaction: after it, or at a later tick
        except HybridSyncError:
            log.exception("%s: garbage collection failed", self.mem.peer)
            n = 0
        if n:
            self._counters["compactions"] += 1
            self._counters["compacted_entries"] += n
            if forced:
                self._counters["compactions_forced"] += 1

    def _requery(self) -> None:
        """Ask discovery again (once at a time): zeroconf stops asking ~14 s after it starts
        and keeps a silently cut peer for ~20 min (DESIGN.md §5), so after a session drops
        the peer asks at once and then every ``requery_interval_s`` for ``requery_window_s``
        (a partition that heals within the window is found again without waiting for an
        announcement)."""
        if self._discovery is None or self._stopping:
            return
        self._last_requery = self._loop.time()
        if self._requery_task is not None and not self._requery_task.done():
            return  # the question in flight reports every peer again anyway
        self._counters["requeries"] += 1
        self._requery_task = self._spawn(self._discovery.requery(), "requery")

    # ---- connections ---------------------------------------------------------------------
    def _spawn(self, coro: Any, what: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.create_task(coro, name=f"hybridsync-{what}")
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("%s: task %s failed", self.mem.peer, what, exc_info=t.exception())

        task.add_done_callback(done)
        return task

    def _on_accept(self, stream: RecordStream) -> None:
        if self._stopping or self._pending_handshakes >= self._max_pending:
            self._counters["rejected_busy"] += 1
            stream.abort()
            return
        self._counters["accepted"] += 1
        self._pending_handshakes += 1
        self._spawn(self._connection(stream, initiator=False, ready=None), "inbound")

    async def _authenticate(
        self, stream: RecordStream, initiator: bool
    ) -> tuple[RecordSealer, RecordOpener, tuple[bool, bytes], tuple[str, bytes, str]]:
        hs = Handshake(self._key, initiator=initiator, nonce=os.urandom(NONCE_BYTES))
        if initiator:
            await stream.send(hs.start())
            m3 = hs.receive(await stream.recv(HANDSHAKE_MAX_BYTES))
            assert m3 is not None
            await stream.send(m3)
        else:
            m2 = hs.receive(await stream.recv(HANDSHAKE_MAX_BYTES))
            assert m2 is not None
            await stream.send(m2)
            hs.receive(await stream.recv(HANDSHAKE_MAX_BYTES))
        send_key, recv_key = hs.keys.for_role(initiator=initiator)
        sealer, opener = RecordSealer(send_key), RecordOpener(recv_key)
        listen = self.url if self._listener is not None else ""
        await stream.send(sealer.seal(
            RecordType.HELLO, _encode_hello(self.mem.peer, self._instance, listen)
        ))
        kind, body = opener.open(await stream.recv(_HELLO_MAX_BYTES + RECORD_OVERHEAD_BYTES))
        if kind is not RecordType.HELLO:
            raise FrameError(f"expected HELLO, got {kind.name}")
        hello = _decode_hello(body)
        # A connection id both ends agree on: (dialed by the smaller name?, initiator nonce).
        dialer = self.mem.peer if initiator else hello[0]
        other = hello[0] if initiator else self.mem.peer
        return sealer, opener, (dialer < other, hs.initiator_nonce), hello

    async def _connection(
        self, stream: RecordStream, *, initiator: bool, ready: asyncio.Future[str] | None
    ) -> None:
        """Own one connection from handshake to close."""
        session: _Session | None = None
        reason = "closed"
        graceful = False
        try:
            try:
                async with asyncio.timeout(self._handshake_timeout_s):
                    sealer, opener, conn_key, hello = await self._authenticate(stream, initiator)
            finally:
                if not initiator:
                    self._pending_handshakes -= 1
            name = hello[0]
            try:
                session = self._admit(stream, hello, initiator, conn_key, sealer, opener)
            except _Rejected as exc:
                # Tell the other end why (it is a member), then close.
                with contextlib.suppress(HybridSyncError, TimeoutError):
                    async with asyncio.timeout(1.0):
                        await stream.send(sealer.seal(RecordType.BYE, str(exc).encode()))
                if ready is not None and not ready.done():
                    ready.set_result(name)
                reason, graceful = str(exc), True
                return
            if ready is not None and not ready.done():
                ready.set_result(name)
            reason, graceful = await self._read_loop(session)
        except TimeoutError:
            self._counters["handshake_timeouts"] += 1
            reason = "handshake timeout"
            log.warning("%s: %s from %s", self.mem.peer, reason, stream.remote)
            self._fail(ready, TransportError(f"handshake with {stream.remote} timed out"))
        except (ProtocolError, TransportError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if session is None:
                self._counters["handshake_failures"] += 1
                level = logging.INFO if isinstance(exc, TransportError) else logging.WARNING
                log.log(level, "%s: handshake with %s failed: %s",
                        self.mem.peer, stream.remote, reason)
            else:
                self._counters["protocol_errors"] += 1
                log.warning("%s: session with %s (%s) rejected input, closing: %s",
                            self.mem.peer, session.name, stream.remote, reason)
            self._fail(ready, exc)
        except Exception as exc:  # a bug, never a peer's input: log it, keep serving others
            reason = f"internal error: {exc!r}"
            log.exception("%s: connection with %s failed", self.mem.peer, stream.remote)
            self._fail(ready, TransportError(reason))
        finally:
            if session is not None:
                self._close(session, reason, graceful=graceful)
                if session.writer is not None:
                    session.writer.cancel()
                    with contextlib.suppress(BaseException):
                        await session.writer
            elif graceful:
                stream.close()
            else:
                stream.abort()
            self._fail(ready, TransportError(f"connection closed: {reason}"))
            await stream.wait_closed()

    @staticmethod
    def _fail(ready: asyncio.Future[str] | None, exc: BaseException) -> None:
        if ready is not None and not ready.done():
            ready.set_exception(exc)
            ready.exception()  # retrieved: no "never retrieved" noise if nobody waits

    def _admit(
        self,
        stream: RecordStream,
        hello: tuple[str, bytes, str],
        initiator: bool,
        conn_key: tuple[bool, bytes],
        sealer: RecordSealer,
        opener: RecordOpener,
    ) -> _Session:
        name, instance, listen = hello
        if self._stopping:
            raise _Rejected("stopping")
        if name == self.mem.peer:
            if instance != self._instance:
                log.error("%s: another running peer uses our name %r (%s)",
                          self.mem.peer, name, stream.remote)
            raise _Rejected("self")
        existing = self._sessions.get(name)
        if existing is not None:
            if existing.instance == instance and existing.conn_key >= conn_key:
                self._counters["duplicates"] += 1
                raise _Rejected("duplicate")
            # The new connection wins: it is newer incarnation of the remote, or both ends
            # prefer it (dialed by the smaller name, then the larger initiator nonce).
            if existing.instance == instance:
                self._counters["duplicates"] += 1
            self._close(existing, "replaced", graceful=True, bye=True)
        if len(self._sessions) >= self._max_sessions:
            raise _Rejected("too many sessions")
        now = self._loop.time()
        s = _Session(stream, name, instance, listen, initiator=initiator, conn_key=conn_key,
                     sealer=sealer, opener=opener, now=now)
        s.records_in = 1  # the HELLO
        s.records_out = 1
        # frames sent on an earlier session and not acknowledged may be lost with it
        self.mem.resend(name)
        self._sessions[name] = s
        s.writer = self._spawn(self._write_loop(s), f"writer-{name}")
        self._counters["sessions_opened"] += 1
        log.info("%s: session with %s (%s, %s)", self.mem.peer, name, stream.remote,
                 "dialed" if initiator else "accepted")
        self._schedule_flush()
        return s

    async def _read_loop(self, s: _Session) -> tuple[str, bool]:
        """Have the stream hand each record to :meth:`_on_record` as it arrives (in the loop
        step that read it) until the session ends; returns ``(reason, graceful)`` or raises
        what ended it (a :class:`ProtocolError` from the record or the replica)."""
        ended: asyncio.Future[BaseException] = self._loop.create_future()

        def on_end(exc: BaseException) -> None:
            if not ended.done():
                ended.set_result(exc)

        s.stream.deliver(functools.partial(self._on_record, s), on_end, self._max_record_bytes)
        exc = await ended
        if isinstance(exc, _Goodbye):
            return str(exc), True
        if isinstance(exc, TransportError):
            return (f"connection lost: {exc}", False) if s.state == "open" else ("closed", True)
        raise exc

    def _on_record(self, s: _Session, record: bytes) -> None:
        """One record of ``s``: open it and act on it. Raises to end the session."""
        kind, body = s.opener.open(record)
        s.records_in += 1
        if kind is RecordType.SYNC:
            s.frames_in += 1
            if s.deferred:  # earlier frames wait for a transaction: they go first
                self._feed_deferred(s)
                if s.state != "open":
                    return
            received = not s.deferred and self._receive(s, body)
            # the replica (and the application's observers) had the frame first
            s.last_seen = now = self._loop.time()
            self._note_activity(now)
            if received:
                self._schedule_flush()  # acknowledge it
            else:
                self._defer(s, body)
            return
        s.last_seen = self._loop.time()
        if kind is RecordType.BYE:
            self._counters["goodbyes"] += 1
            raise _Goodbye(f"goodbye from {s.name}: {body[:200].decode(errors='replace')}")
        elif kind is RecordType.HELLO:
            raise FrameError("a second HELLO")

    def _receive(self, s: _Session, body: bytes) -> bool:
        """``mem.receive`` one frame of ``s``: False when the application is inside a
        transaction (the caller holds it back); a frame the replica rejects ends the
        session."""
        self._receiving = True
        try:
            self.mem.receive(s.name, body)
        except TransactionError:
            return False
        except HybridSyncError as exc:
            self._counters["frames_rejected"] += 1
            raise ProtocolError(f"frame rejected by the replica: {exc}") from None
        finally:
            self._receiving = False
        return True

    def _defer(self, s: _Session, body: bytes) -> None:
        """Hold a frame back until the application's transaction has ended (the session is
        reliable: nobody sends it again). Over the bound, close the session instead: the
        reconnection resends everything not acknowledged."""
        if (
            len(s.deferred) >= _MAX_DEFERRED_FRAMES
            or s.deferred_bytes + len(body) > self._max_deferred_bytes
        ):
            self._counters["deferred_overflows"] += 1
            log.warning("%s: %d frames of %s held back during a transaction; closing the "
                        "session (it resends them)", self.mem.peer, len(s.deferred) + 1, s.name)
            self._close(s, "too many frames held back during a transaction", graceful=False)
            return
        s.deferred.append(bytes(body))
        s.deferred_bytes += len(body)
        self._counters["frames_deferred"] += 1
        self._schedule_flush()  # retried at the flush (and at every tick)

    async def _write_loop(self, s: _Session) -> None:
        """Sends what :meth:`_flush` could not write at once: the queue's rest once the
        socket drained (waiting at most ``write_timeout_s``), heartbeats, goodbyes, and the
        flushes asked for while it was busy."""
        try:
            while True:
                if s.stream.write_room_bytes <= 0:
                    async with asyncio.timeout(self._write_timeout_s):
                        await s.stream.drain()  # raises once the stream is closing
                elif s.outbox:
                    if self._pump(s):
                        return  # the goodbye is out
                elif s.want_flush and s.state == "open":
                    self._flush(s)
                else:
                    s.wake.clear()
                    await s.wake.wait()
        except Exception as exc:  # TransportError, TimeoutError (a reader that does not read)
            reason = "write timed out" if isinstance(exc, TimeoutError) else repr(exc)
            if isinstance(exc, TimeoutError):
                self._counters["write_timeouts"] += 1
            log.info("%s: writing to %s failed: %s", self.mem.peer, s.name, reason)
            self._close(s, reason, graceful=False)

    def _close(self, s: _Session, reason: str, *, graceful: bool, bye: bool = False) -> None:
        """End a session (idempotent). ``bye`` queues a goodbye first and lets the writer
        finish it; otherwise the stream closes now."""
        if s.closed.is_set():
            return
        if self._sessions.get(s.name) is s:
            del self._sessions[s.name]
        s.deferred.clear()  # never acknowledged: the next session resends them
        s.deferred_bytes = 0
        if bye and s.writer is not None and not s.writer.done():
            s.state = "closing"
            s.outbox.clear()
            s.enqueue(RecordType.BYE, reason.encode())
            s.writer.add_done_callback(lambda _t: s.stream.close())
        elif graceful:
            s.stream.close()
        else:
            s.stream.abort()
        s.state = "closed"
        s.closed.set()
        self._counters["sessions_closed"] += 1
        log.info("%s: session with %s closed (%s)", self.mem.peer, s.name, reason)
        if not self._stopping:
            # a drop (or the heal after it) may need discovery's help to find the peer again
            self._requery_until = self._loop.time() + self._requery_window_s
            self._requery()

    # ---- dialing -------------------------------------------------------------------------
    def _on_found(self, url: str, peer_id: str) -> None:
        """Discovery callback (event loop): a member may listen at ``url``."""
        if self._stopping or peer_id == self.instance:
            return
        try:
            parse_url(url)
        except ConfigError:
            log.warning("%s: discovery reported a bad URL %r", self.mem.peer, url)
            return
        target = self._targets.get(url)
        if target is None:
            target = self._add_target(url, static=False)
        for s in self._sessions.values():
            if s.instance.hex() == peer_id:
                target.name = s.name
        target.failures = 0
        target.kick.set()

    def _add_target(self, url: str, *, static: bool) -> _Target:
        target = _Target(url, static=static)
        self._targets[url] = target
        target.task = asyncio.create_task(self._maintain(target), name=f"hybridsync-dial-{url}")
        return target

    def _backoff_s(self, failures: int) -> float:
        base = min(self._reconnect_max_s, self._reconnect_min_s * (2.0 ** min(failures, 30)))
        return base * (0.5 + 0.5 * self._rng.random())

    async def _maintain(self, target: _Target) -> None:
        """Keep one session with ``target``: dial, wait while it lives, back off, redial."""
        try:
            while not self._stopping:
                s = self._sessions.get(target.name) if target.name is not None else None
                if s is not None:
                    target.resolve(s.name)
                    await s.closed.wait()
                    delay = self._backoff_s(0)
                else:
                    try:
                        name = await self._dial(target)
                    except HybridSyncError as exc:
                        target.failures += 1
                        self._counters["dial_failures"] += 1
                        target.fail(exc)
                        if not target.static and target.failures >= self._discovered_attempts:
                            log.info("%s: giving up on discovered %s", self.mem.peer, target.url)
                            return
                        delay = self._backoff_s(target.failures)
                    else:
                        if name == self.mem.peer:
                            log.warning("%s: %s is ourselves; not dialing it again",
                                        self.mem.peer, target.url)
                            return
                        target.name = name
                        target.failures = 0
                        if name in self._sessions:
                            continue
                        delay = self._backoff_s(0)
                target.kick.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await target.kick.wait()
        finally:
            if self._targets.get(target.url) is target and not self._stopping:
                del self._targets[target.url]

    async def _dial(self, target: _Target) -> str:
        self._counters["dialed"] += 1
        stream = await open_tcp(target.host, target.port, timeout_s=self._handshake_timeout_s)
        ready: asyncio.Future[str] = self._loop.create_future()
        self._spawn(self._connection(stream, initiator=True, ready=ready), "outbound")
        return await ready

    def __repr__(self) -> str:
        where = self.url if self._listener is not None else "not listening"
        return f"<Peer {self.mem.peer!r} {where} sessions={sorted(self._sessions)}>"
