"""One y-protocols room: the space's fields document served to stock Yjs clients (sans-I/O).

The room is fed bytes and a clock and answers through two callbacks, ``send(conn, data)``
and ``close(conn, code, reason)``; the WebSocket adapter (``_yws.py``) only moves bytes.
What it does, in the terms of y-protocols (``_yproto.py``):

* on connect: sync step 1 with the document's state vector, then every awareness state;
* sync step 1 from a client: sync step 2 with what it lacks (``doc.get_update(sv)``);
* sync step 2 / update from a client: ``Memory.apply_yjs_update`` — a contribution of the
  hosting peer noted ``yjs:<client id>``; refused updates close that connection only;
* every committed change of the replica (local writes, other peers' contributions, other
  Yjs clients) goes to each client as one update message, exactly once: the document's own
  update events are collected and sent when the replica reports the commit
  (``Memory.observe``), so an aborted transaction is never sent; when the document is
  rebuilt with a new Yjs client id (an abort, a refused update, a checkpoint) every client
  gets the full state again; a rebuild that keeps the client id (fields compaction,
  ``docs/gc.md``) keeps every committed item, so nothing is resent;
* what a client is sent is in the form replicas that never compacted take
  (``fields._compact.export_update``): a Yjs client holds the uncompacted chains, and an
  item written on the compacted document without its origin would land before them there
  and be lost (and the client's next sync step 2 would delete it everywhere);
* awareness: states are kept per Yjs client id and relayed to every connection (the sender
  included, as y-websocket does: its own echo keeps the client's 30 s idle timer fed); a
  connection's states are removed when it leaves, states not renewed for
  ``awareness_timeout_s`` expire, query-awareness is answered with every state;
* keepalive: a connection sent nothing for ``keepalive_s`` gets an empty awareness update.

Close codes: 1002 malformed message, 1003 refused update or text frame, 1008 read-only or
awareness abuse, 1009 too big (the adapter), 1011 internal error, 1013 overloaded, 1001 the
peer stops.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from hybridsync.errors import (
    FieldValueError,
    HybridSyncError,
    TransactionError,
    YjsDependencyError,
    YjsMessageError,
    YjsUpdateError,
)
from hybridsync.fields._compact import export_needed, export_update
from hybridsync.fields._yupdate import decode_update
from hybridsync.interop._apply import is_noop_update
from hybridsync.interop._yproto import (
    AuthDenied,
    AwarenessEntry,
    AwarenessUpdate,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode_message,
    encode_message,
)
from hybridsync.replica import Change, Memory

__all__ = ["CLOSE", "YjsRoom"]

log = logging.getLogger("hybridsync.interop")

CLOSE: Final = {
    "going-away": 1001,
    "malformed": 1002,
    "refused": 1003,
    "policy": 1008,
    "too-big": 1009,
    "internal": 1011,
    "overloaded": 1013,
}
_KEEPALIVE: Final = encode_message(AwarenessUpdate(()))


@dataclass(slots=True)
class _Conn:
    id: int
    label: str = ""  # "yjs:<client id>" once known
    controlled: set[int] = field(default_factory=set)  # awareness ids it introduced
    last_sent: float = 0.0
    closing: bool = False
    asked_full: bool = False  # we sent it sync step 1 after a dependency error
    backlog: deque[bytes] = field(default_factory=deque)
    # keeps the replica's anchors of deleted keys while connected: this client's document
    # holds the chains as they were when it synced (docs/gc.md)
    release: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class _Ranges:
    """The item ids and deleted ranges of one update, per client (half-open, merged)."""

    items: dict[int, list[tuple[int, int]]]
    deletes: dict[int, list[tuple[int, int]]]

    @classmethod
    def of(cls, update: bytes) -> _Ranges:
        decoded = decode_update(update)
        items: dict[int, list[tuple[int, int]]] = {}
        for it in decoded.items:
            if it.kind != "skip":
                items.setdefault(it.client, []).append((it.clock, it.clock + it.length))
        deletes: dict[int, list[tuple[int, int]]] = {}
        for client, clock, length in decoded.deletes:
            deletes.setdefault(client, []).append((clock, clock + length))
        return cls({c: _merged(r) for c, r in items.items()},
                   {c: _merged(r) for c, r in deletes.items()})

    def covers(self, update: bytes) -> bool:
        """Whether every item and deletion of ``update`` is one of these."""
        other = _Ranges.of(update)
        return all(
            _inside(mine.get(c, []), a, b)
            for theirs, mine in ((other.items, self.items), (other.deletes, self.deletes))
            for c, ranges in theirs.items() for a, b in ranges
        )


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    ranges.sort()
    out: list[tuple[int, int]] = []
    for a, b in ranges:
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out


def _inside(ranges: list[tuple[int, int]], a: int, b: int) -> bool:
    return any(x <= a and b <= y for x, y in ranges)


@dataclass(slots=True)
class _Awareness:
    clock: int
    state: str | None  # JSON text; None once removed
    updated: float
    owner: int | None


class YjsRoom:
    """The y-protocols room of one :class:`~hybridsync.Memory` (module docstring)."""

    def __init__(
        self,
        mem: Memory,
        *,
        send: Callable[[int, bytes], None],
        close: Callable[[int, int, str], None],
        now: Callable[[], float],
        readonly: bool = False,
        awareness_timeout_s: float = 30.0,
        keepalive_s: float = 10.0,
        max_awareness_states: int = 4096,
        max_states_per_connection: int = 16,
        max_backlog: int = 1024,
    ) -> None:
        self.mem = mem
        self.readonly = readonly
        self._send_cb = send
        self._close_cb = close
        self._now = now
        self._awareness_timeout_s = awareness_timeout_s
        self._keepalive_s = keepalive_s
        self._max_states = max_awareness_states
        self._max_per_conn = max_states_per_connection
        self._max_backlog = max_backlog
        self._conns: dict[int, _Conn] = {}
        self._awareness: dict[int, _Awareness] = {}
        self._pending: list[tuple[bytes, int | None]] = []  # doc updates not yet committed
        # the connection whose update is being applied, and the ids that update carries
        self._applying: tuple[int, _Ranges] | None = None
        self._busy_conns: deque[int] = deque()  # connections with a backlog, in order
        self.counters: dict[str, int] = dict.fromkeys(
            ("connections", "messages_in", "messages_out", "bytes_in", "bytes_out",
             "contributions", "updates_refused", "malformed", "readonly_refused",
             "resyncs", "awareness_updates"),
            0,
        )
        self._doc: Any = None
        self._doc_sub: Any = None
        self._watch_doc()
        self._unobserve: Callable[[], None] | None = mem.observe(self._on_change)

    # ---- the adapter's calls -------------------------------------------------------------
    @property
    def connections(self) -> int:
        return len(self._conns)

    def connect(self, conn: int) -> None:
        """A client joined: sync step 1, then the awareness states."""
        if conn in self._conns:
            raise ValueError(f"connection {conn} is already in the room")
        c = self._conns[conn] = _Conn(conn, last_sent=self._now())
        c.release = self.mem._pin_anchors()
        self.counters["connections"] += 1
        if self._busy():
            c.backlog.append(b"")  # b"" = "greet when the transaction ends"
            self._busy_conns.append(conn)
            return
        self._greet(c)

    def receive(self, conn: int, data: bytes) -> None:
        """One binary message from a client. Never raises for what the client sent."""
        c = self._conns.get(conn)
        if c is None or c.closing:
            return
        self.counters["messages_in"] += 1
        self.counters["bytes_in"] += len(data)
        if self._busy_conns and not self._busy():
            self._drain_backlogs()
        if c.backlog or self._busy():
            if len(c.backlog) >= self._max_backlog:
                self._close(c, "overloaded", "too many messages while the replica is busy")
                return
            if not c.backlog:
                self._busy_conns.append(conn)
            c.backlog.append(bytes(data))
            return
        self._handle(c, bytes(data))

    def disconnect(self, conn: int) -> None:
        """The connection is gone: its awareness states are removed for everyone else."""
        c = self._conns.pop(conn, None)
        if c is None:
            return
        if c.release is not None:
            c.release()
        removed = []
        now = self._now()
        for cid in sorted(c.controlled):
            a = self._awareness.get(cid)
            if a is not None and a.state is not None:
                a.clock += 1
                a.state = None
                a.updated = now
                removed.append(AwarenessEntry(cid, a.clock, "null"))
        if removed:
            self._broadcast(encode_message(AwarenessUpdate(tuple(removed))))

    def tick(self) -> None:
        """Run by the adapter about once a second: backlogs, a replaced document,
        awareness expiry, keepalives."""
        if self._busy():
            return
        self._drain_backlogs()
        if self.mem.doc is not self._doc:
            self._doc_replaced()
        now = self._now()
        expired = []
        for cid, a in self._awareness.items():
            if a.state is not None and now - a.updated >= self._awareness_timeout_s:
                a.clock += 1
                a.state = None
                a.updated = now
                owner = self._conns.get(a.owner) if a.owner is not None else None
                if owner is not None:
                    owner.controlled.discard(cid)
                expired.append(AwarenessEntry(cid, a.clock, "null"))
        if expired:
            self._broadcast(encode_message(AwarenessUpdate(tuple(expired))))
        self._prune_awareness(now)
        for c in list(self._conns.values()):
            if not c.closing and now - c.last_sent >= self._keepalive_s:
                self._send(c, _KEEPALIVE)

    def shutdown(self) -> None:
        """Stop observing the replica and close every connection (1001)."""
        if self._unobserve is not None:
            self._unobserve()
            self._unobserve = None
        if self._doc_sub is not None:
            try:
                self._doc.unobserve(self._doc_sub)
            except Exception:  # the document may already be gone
                log.debug("unobserve failed", exc_info=True)
            self._doc_sub = None
        for c in list(self._conns.values()):
            self._close(c, "going-away", "the peer is stopping")
            if c.release is not None:
                c.release()

    def awareness_states(self) -> dict[int, str]:
        """Live awareness states, ``client id -> JSON text``."""
        return {cid: a.state for cid, a in self._awareness.items() if a.state is not None}

    # ---- message handling ----------------------------------------------------------------
    def _busy(self) -> bool:
        # An open transaction holds uncommitted items in the document: nothing may be read
        # from it for a client, nor written into it, until it ends.
        return bool(self.mem._fields.in_transaction)

    def _drain_backlogs(self) -> None:
        for _ in range(len(self._busy_conns)):
            conn = self._busy_conns.popleft()
            c = self._conns.get(conn)
            while c is not None and c.backlog and not c.closing:
                if self._busy():
                    self._busy_conns.appendleft(conn)
                    return
                data = c.backlog.popleft()
                if data:
                    self._handle(c, data)
                else:
                    self._greet(c)

    def _greet(self, c: _Conn) -> None:
        self._send(c, encode_message(SyncStep1(self.mem.doc.get_state())))
        states = self._live_entries()
        if states:
            self._send(c, encode_message(AwarenessUpdate(states)))

    def _handle(self, c: _Conn, data: bytes) -> None:
        if self.mem.doc is not self._doc:
            self._doc_replaced()  # before this client's update lands on the new document
        try:
            msg = decode_message(data)
        except YjsMessageError as exc:
            self.counters["malformed"] += 1
            self._close(c, "malformed", str(exc))
            return
        try:
            if isinstance(msg, SyncStep1):
                self._answer_step1(c, msg.state_vector)
            elif isinstance(msg, SyncStep2 | SyncUpdate):
                self._apply(c, msg.update, full=isinstance(msg, SyncStep2))
            elif isinstance(msg, AwarenessUpdate):
                self._apply_awareness(c, msg.entries)
            elif isinstance(msg, QueryAwareness):
                self._send(c, encode_message(AwarenessUpdate(self._live_entries())))
            # AuthDenied from a client means nothing to a server: ignored.
        except Exception:
            log.exception("y-protocols room: handling a message failed")
            self._close(c, "internal", "internal error")

    def _answer_step1(self, c: _Conn, state_vector: bytes) -> None:
        try:
            update = self.mem.doc.get_update(state_vector)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # pycrdt's PanicException derives from BaseException
            self.counters["malformed"] += 1
            self._close(c, "malformed", f"unusable state vector: {exc}")
            return
        self._send(c, encode_message(SyncStep2(self._export(bytes(update)))))

    def _export(self, update: bytes) -> bytes:
        """``update`` of the (maybe compacted) document as an uncompacted replica takes it."""
        dropped = self.mem._dropped  # the replica's compaction state (docs/gc.md)
        return export_update(update, dropped) if export_needed(update, dropped) else update

    def _apply(self, c: _Conn, update: bytes, *, full: bool) -> None:
        if self.readonly:
            try:
                noop = is_noop_update(self.mem.doc, update)
            except YjsUpdateError as exc:
                self.counters["malformed"] += 1
                self._close(c, "malformed", str(exc))
                return
            if not noop:
                self.counters["readonly_refused"] += 1
                self._send(c, encode_message(AuthDenied("read-only: this endpoint does not "
                                                        "accept edits")))
                self._close(c, "policy", "read-only endpoint")
            return
        origin = c.label or self._label_from(update)
        try:
            self._applying = (c.id, _Ranges.of(update))
        except HybridSyncError:
            self._applying = None  # malformed: apply_yjs_update refuses it below
        try:
            contribution = self.mem.apply_yjs_update(update, origin=origin)
        except YjsDependencyError as exc:
            if full or c.asked_full:
                self.counters["updates_refused"] += 1
                self._close(c, "refused", str(exc))
            else:  # ask once for everything we lack; its sync step 2 must be complete
                c.asked_full = True
                self._send(c, encode_message(SyncStep1(self.mem.doc.get_state())))
            return
        except YjsUpdateError as exc:
            self.counters["updates_refused"] += 1
            self._close(c, "refused", str(exc))
            return
        except FieldValueError as exc:  # larger than one contribution may be
            self.counters["updates_refused"] += 1
            self._close(c, "too-big", str(exc))
            return
        except TransactionError:  # a transaction opened meanwhile: retry when it ends
            c.backlog.appendleft(encode_message(SyncStep2(update) if full else SyncUpdate(update)))
            self._busy_conns.append(c.id)
            return
        except HybridSyncError as exc:
            self.counters["updates_refused"] += 1
            self._close(c, "internal", str(exc))
            return
        finally:
            self._applying = None
        if contribution is not None:
            self.counters["contributions"] += 1

    def _label_from(self, update: bytes) -> str:
        try:
            clients = sorted({it.client for it in decode_update(update).items})
        except HybridSyncError:
            clients = []
        if clients:
            return "yjs:" + ",".join(str(x) for x in clients[:4])
        return "yjs:anonymous"

    # ---- awareness -----------------------------------------------------------------------
    def _live_entries(self) -> tuple[AwarenessEntry, ...]:
        return tuple(
            AwarenessEntry(cid, a.clock, a.state)
            for cid, a in sorted(self._awareness.items()) if a.state is not None
        )

    def _apply_awareness(self, c: _Conn, entries: tuple[AwarenessEntry, ...]) -> None:
        """y-protocols ``applyAwarenessUpdate``: a newer clock wins; at an equal clock only a
        removal of a live state does."""
        now = self._now()
        changed = []
        for e in entries:
            cur = self._awareness.get(e.client_id)
            cur_clock = 0 if cur is None else cur.clock
            live = cur is not None and cur.state is not None
            if not (cur_clock < e.clock or (cur_clock == e.clock and e.removed and live)):
                continue
            if e.removed:
                c.controlled.discard(e.client_id)
                state = None
            else:
                state = e.state
                if cur is None:
                    if len(c.controlled) >= self._max_per_conn:
                        self._close(c, "policy", "too many awareness states on one connection")
                        return
                    if len(self._awareness) >= self._max_states:
                        self._prune_awareness(now, force=True)
                        if len(self._awareness) >= self._max_states:
                            self._close(c, "overloaded", "too many awareness states")
                            return
                    c.controlled.add(e.client_id)
                    if not c.label:
                        c.label = f"yjs:{e.client_id}"
            owner = c.id if cur is None else cur.owner
            self._awareness[e.client_id] = _Awareness(e.clock, state, now, owner)
            changed.append(AwarenessEntry(e.client_id, e.clock, e.state))
        if changed:
            self.counters["awareness_updates"] += 1
            self._broadcast(encode_message(AwarenessUpdate(tuple(changed))))

    def _prune_awareness(self, now: float, *, force: bool = False) -> None:
        """Forget removed states (kept a while so a stale update cannot bring one back)."""
        horizon = 0.0 if force else 10 * self._awareness_timeout_s
        gone = [cid for cid, a in self._awareness.items()
                if a.state is None and now - a.updated >= horizon]
        for cid in gone:
            del self._awareness[cid]

    # ---- the replica's changes to the clients --------------------------------------------
    def _watch_doc(self, *, keep_pending: bool = False) -> None:
        doc = self.mem.doc
        if self._doc_sub is not None:
            try:
                self._doc.unobserve(self._doc_sub)
            except Exception:
                log.debug("unobserve failed", exc_info=True)
        self._doc = doc
        self._doc_sub = doc.observe(self._on_doc_update)
        if not keep_pending:
            self._pending.clear()

    def _doc_replaced(self) -> None:
        old, new = self._doc, self.mem.doc
        if old is not None and new.client_id == old.client_id:
            # Compaction: the same committed items (the dropped ones were invisible), so what
            # is pending is still to be sent. Writes may have reached the new document before
            # we noticed it (a compaction after a frame that applied nothing): send what it
            # holds beyond the old one (its whole delete set rides along: small after GC).
            missed = bytes(new.get_update(old.get_state()))
            self._watch_doc(keep_pending=True)
            if self._conns and len(missed) > 2:
                self._pending.append((self._export(missed), None))
        else:
            self._resync_all()

    def _on_doc_update(self, event: Any) -> None:
        # Must not raise (pycrdt would surface it after the commit): only record. During
        # ``apply_yjs_update`` other commits happen too (a pending group-commit batch first,
        # observers' writes after): only an event made of the client's own ids is its echo.
        origin: int | None = None
        if self._applying is not None and self._conns:
            try:
                if self._applying[1].covers(bytes(event.update)):
                    origin = self._applying[0]
            except Exception:  # pragma: no cover - defensive: then it is simply sent
                origin = None
        if not self._conns:
            return  # nobody to send to; a client that joins gets the state in its step 2
        try:
            # exported now: the compaction state is the one this update was integrated with
            self._pending.append((self._export(bytes(event.update)), origin))
        except Exception:  # pragma: no cover - defensive: resend everything instead
            log.exception("y-protocols room: reading a document update failed")
            self._pending.append((b"", None))

    def _on_change(self, _change: Change) -> None:
        """A commit (local or remote) was applied: what the document gained since the last
        one is committed, send it."""
        if self.mem.doc is not self._doc:
            self._doc_replaced()
            if self.mem.doc is not self._doc:  # pragma: no cover - the replica rebuilt again
                return
        pending, self._pending = self._pending, []
        for update, origin in pending:
            if not update:  # an update we could not read: resend the whole state
                self._resync_all()
                return
            if len(update) <= 2:  # b"\x00\x00": an empty transaction
                continue
            msg = encode_message(SyncUpdate(update))
            for c in list(self._conns.values()):
                if c.id != origin:  # the client an update came from has it already
                    self._send(c, msg)

    def _resync_all(self) -> None:
        """The document was replaced (rebuilt from the log or a checkpoint): every client
        gets its full state and is asked for what the new document lacks."""
        self._watch_doc()
        if not self._conns:
            return
        self.counters["resyncs"] += 1
        doc = self.mem.doc
        full = encode_message(SyncUpdate(self._export(bytes(doc.get_update()))))
        step1 = encode_message(SyncStep1(doc.get_state()))
        for c in list(self._conns.values()):
            if not c.closing:
                self._send(c, step1)
                self._send(c, full)

    # ---- output --------------------------------------------------------------------------
    def _send(self, c: _Conn, data: bytes) -> None:
        if c.closing:
            return
        c.last_sent = self._now()
        self.counters["messages_out"] += 1
        self.counters["bytes_out"] += len(data)
        self._send_cb(c.id, data)

    def _broadcast(self, data: bytes) -> None:
        for c in list(self._conns.values()):
            self._send(c, data)

    def _close(self, c: _Conn, why: str, reason: str) -> None:
        if c.closing:
            return
        c.closing = True
        c.backlog.clear()
        log.info("y-protocols room: closing connection %d (%s): %s", c.id, why, reason)
        self._close_cb(c.id, CLOSE[why], reason)
