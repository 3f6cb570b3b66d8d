"""``YjsRoom`` without sockets: a real ``Memory``, pycrdt documents as Yjs clients, a manual
clock. What each client is sent, exactly once, and what closes which connection."""

from __future__ import annotations

import json
from typing import Any

import pycrdt
import pytest

import hybridsync as hs
from hybridsync.interop import (
    AuthDenied,
    AwarenessEntry,
    AwarenessUpdate,
    Message,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode_message,
    encode_message,
)
from hybridsync.interop._room import YjsRoom


class Harness:
    """A room over ``mem`` whose output is recorded per connection."""

    def __init__(self, mem: hs.Memory, **options: Any) -> None:
        self.mem = mem
        self.now = 0.0
        self.sent: dict[int, list[Message]] = {}
        self.closed: dict[int, tuple[int, str]] = {}
        self.room = YjsRoom(mem, send=self._send, close=self._close, now=lambda: self.now,
                            **options)

    def _send(self, conn: int, data: bytes) -> None:
        self.sent.setdefault(conn, []).append(decode_message(data))

    def _close(self, conn: int, code: int, reason: str) -> None:
        self.closed[conn] = (code, reason)

    def take(self, conn: int) -> list[Message]:
        out = self.sent.get(conn, [])
        self.sent[conn] = []
        return out


class Client:
    """A Yjs client that answers like y-websocket's provider."""

    def __init__(self, h: Harness, conn: int, client_id: int) -> None:
        self.h = h
        self.conn = conn
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
        self.client_id = client_id
        h.room.connect(conn)
        self.pump()
        h.room.receive(conn, encode_message(SyncStep1(self.doc.get_state())))
        self.pump()

    @property
    def fields(self) -> pycrdt.Map[Any]:
        return self.doc.get("fields", type=pycrdt.Map)

    def pump(self) -> list[Message]:
        """Handle what the room sent; returns it."""
        got = self.h.take(self.conn)
        for msg in got:
            if isinstance(msg, SyncStep1):
                answer = SyncStep2(bytes(self.doc.get_update(msg.state_vector)))
                self.h.room.receive(self.conn, encode_message(answer))
            elif isinstance(msg, SyncStep2 | SyncUpdate):
                self.doc.apply_update(msg.update)
        return got

    def edit(self, key: str, value: Any) -> None:
        sv = self.doc.get_state()
        self.fields[key] = value
        self.h.room.receive(self.conn, encode_message(SyncUpdate(bytes(self.doc.get_update(sv)))))

    def json(self) -> str:
        return json.dumps(self.fields.to_py(), sort_keys=True, default=str)


def memory(name: str = "host") -> hs.Memory:
    return hs.Memory("space", name, clock=lambda: 0, incarnation=1)


def updates(msgs: list[Message]) -> list[Message]:
    return [m for m in msgs if isinstance(m, SyncUpdate | SyncStep2)]


def pair_sync(a: hs.Memory, b: hs.Memory) -> None:
    for _ in range(20):
        fa, fb = a.sync_to(b.peer), b.sync_to(a.peer)
        if not fa and not fb:
            return
        for f in fa:
            b.receive(a.peer, f)
        for f in fb:
            a.receive(b.peer, f)


def test_greeting_and_initial_sync() -> None:
    mem = memory()
    mem.fields["goal"] = "ship"
    h = Harness(mem)
    h.room.connect(1)
    [step1] = h.take(1)
    assert step1 == SyncStep1(mem.doc.get_state())
    h.room.receive(1, encode_message(SyncStep1(b"\x00")))
    [step2] = h.take(1)
    assert isinstance(step2, SyncStep2)
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(step2.update)
    assert doc.get("fields", type=pycrdt.Map).to_py() == {"goal": "ship"}


def test_edits_reach_every_other_client_exactly_once_and_never_echo() -> None:
    mem = memory()
    h = Harness(mem)
    a, b = Client(h, 1, 101), Client(h, 2, 102)
    a.edit("x", 1)
    assert mem.fields.to_dict() == {"x": 1}
    assert mem.history()[-1].note == "yjs:101"  # no awareness yet: the update's client
    assert updates(h.sent.get(1, [])) == []  # no echo to its author
    [to_b] = updates(b.pump())
    assert b.fields.to_py() == {"x": 1.0}
    mem.fields["y"] = "from python"
    assert len(updates(a.pump())) == 1 and len(updates(b.pump())) == 1
    assert a.json() == b.json()
    assert to_b != SyncUpdate(b"\x00\x00")


def test_remote_contributions_are_forwarded_once() -> None:
    mem, other = memory("host"), memory("other")
    h = Harness(mem)
    a = Client(h, 1, 101)
    other.fields["r"] = {"deep": [1, 2]}
    other.fields["s"] = "second"
    pair_sync(mem, other)
    got = updates(a.pump())
    assert len(got) == 2
    assert a.fields.to_py() == {"r": {"deep": [1.0, 2.0]}, "s": "second"}


def test_an_aborted_transaction_is_never_sent_and_clients_resync() -> None:
    mem = memory()
    h = Harness(mem)
    a = Client(h, 1, 101)
    mem.fields["kept"] = 1
    a.pump()
    with pytest.raises(RuntimeError), mem.transaction():
        mem.fields["aborted"] = "never"
        raise RuntimeError("abort")
    assert updates(h.sent.get(1, [])) == []
    h.room.tick()  # the document was rebuilt: full state again, and a step 1
    got = a.pump()
    assert any(isinstance(m, SyncStep1) for m in got)
    assert a.fields.to_py() == {"kept": 1.0}
    mem.fields["later"] = 2  # forwarding goes on from the new document
    a.pump()
    assert a.fields.to_py() == {"kept": 1.0, "later": 2.0}
    assert h.room.counters["resyncs"] == 1


def test_messages_wait_while_a_transaction_is_open() -> None:
    mem = memory()
    h = Harness(mem)
    a = Client(h, 1, 101)
    with mem.transaction():
        mem.fields["inside"] = 1
        a.edit("js", 2)
        h.room.receive(1, encode_message(SyncStep1(b"\x00")))
        h.room.tick()
        assert "js" not in mem.fields and h.sent.get(1) == []
    h.room.tick()
    assert mem.fields.to_dict() == {"inside": 1, "js": 2}
    got = a.pump()
    assert isinstance(got[-1], SyncStep2)  # the step 1 asked inside was answered after


def test_read_only_accepts_a_sync_with_nothing_new_and_refuses_edits() -> None:
    mem = memory()
    mem.fields["shown"] = 1
    mem.fields["gone"] = 2
    del mem.fields["gone"]
    h = Harness(mem, readonly=True)
    a = Client(h, 1, 101)  # its step 2 after syncing holds our whole delete set: a no-op
    assert 1 not in h.closed
    assert a.fields.to_py() == {"shown": 1.0}
    before = (mem.fields_json(), mem.heads)
    a.edit("vandal", 1)
    assert (mem.fields_json(), mem.heads) == before
    assert h.closed[1][0] == 1008
    assert AuthDenied("read-only: this endpoint does not accept edits") in h.take(1)


def test_a_dependency_gap_asks_for_a_full_sync_once() -> None:
    mem = memory()
    h = Harness(mem)
    h.room.connect(1)
    h.take(1)
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=5)
    doc.get("fields", type=pycrdt.Map)["a"] = 1
    sv = doc.get_state()
    doc.get("fields", type=pycrdt.Map)["b"] = 2
    gap = bytes(doc.get_update(sv))
    h.room.receive(1, encode_message(SyncUpdate(gap)))
    assert h.take(1) == [SyncStep1(mem.doc.get_state())] and 1 not in h.closed
    h.room.receive(1, encode_message(SyncUpdate(gap)))  # asked already: refused
    assert h.closed[1][0] == 1003
    assert mem.fields.to_dict() == {}


def test_malformed_and_refused_input_closes_only_that_connection() -> None:
    mem = memory()
    mem.fields["k"] = 1
    h = Harness(mem)
    good = Client(h, 1, 101)
    ytext: pycrdt.Doc[Any] = pycrdt.Doc(client_id=9)
    ytext.get("fields", type=pycrdt.Map)["t"] = pycrdt.Text("x")
    cases = [
        (b"\xff\xff", 1002),
        (encode_message(SyncStep1(b"\x00")) + b"\x00", 1002),
        (encode_message(SyncUpdate(b"\x07\x07")), 1003),
        (encode_message(SyncUpdate(bytes(ytext.get_update()))), 1003),
    ]
    before = (mem.fields_json(), mem.heads)
    for conn, (data, code) in enumerate(cases, start=10):
        h.room.connect(conn)
        h.room.receive(conn, data)
        assert h.closed[conn][0] == code
        h.room.receive(conn, encode_message(SyncUpdate(b"\x00\x00")))  # ignored once closing
        h.room.disconnect(conn)
    assert (mem.fields_json(), mem.heads) == before
    good.edit("still", "fine")
    assert mem.fields["still"] == "fine" and 1 not in h.closed


def _awareness(h: Harness, conn: int, *entries: tuple[int, int, Any]) -> None:
    msg = AwarenessUpdate(tuple(AwarenessEntry(c, k, json.dumps(s)) for c, k, s in entries))
    h.room.receive(conn, encode_message(msg))


def _entries(msgs: list[Message]) -> list[tuple[int, int, Any]]:
    return [(e.client_id, e.clock, json.loads(e.state))
            for m in msgs if isinstance(m, AwarenessUpdate) for e in m.entries]


def test_awareness_is_relayed_to_everyone_and_follows_the_clock_rules() -> None:
    mem = memory()
    h = Harness(mem)
    Client(h, 1, 101)
    Client(h, 2, 102)
    _awareness(h, 1, (101, 1, {"user": "a"}))
    assert _entries(h.take(1)) == [(101, 1, {"user": "a"})]  # the sender too (keepalive)
    assert _entries(h.take(2)) == [(101, 1, {"user": "a"})]
    _awareness(h, 1, (101, 1, {"user": "stale"}))  # same clock, not a removal: ignored
    _awareness(h, 2, (101, 0, {"user": "older"}))
    assert _entries(h.take(2)) == []
    _awareness(h, 1, (101, 2, {"user": "a2"}))
    assert _entries(h.take(2)) == [(101, 2, {"user": "a2"})]
    # a late joiner gets every live state after its step 1; query-awareness answers too
    h.room.connect(3)
    assert _entries(h.take(3)) == [(101, 2, {"user": "a2"})]
    h.room.receive(3, encode_message(QueryAwareness()))
    assert _entries(h.take(3)) == [(101, 2, {"user": "a2"})]
    # the connection that introduced 101 leaves: its state is removed for the others
    h.room.disconnect(1)
    assert _entries(h.take(2)) == [(101, 3, None)]
    assert h.room.awareness_states() == {}
    # the note of a client known by awareness is its id
    _awareness(h, 2, (102, 1, {"user": "b"}))
    client = pycrdt.Doc(client_id=102)
    client.get("fields", type=pycrdt.Map)["x"] = 1
    h.room.receive(2, encode_message(SyncUpdate(bytes(client.get_update()))))
    assert mem.history()[-1].note == "yjs:102"


def test_awareness_expires_and_keepalives_flow() -> None:
    mem = memory()
    h = Harness(mem, awareness_timeout_s=30.0, keepalive_s=10.0)
    Client(h, 1, 101)
    Client(h, 2, 102)
    _awareness(h, 1, (101, 1, {"u": 1}))
    h.take(1)
    h.take(2)
    h.now = 11.0
    h.room.tick()
    assert h.take(1) == [AwarenessUpdate(())] and h.take(2) == [AwarenessUpdate(())]
    h.now = 31.0
    h.room.tick()
    assert _entries(h.take(2)) == [(101, 2, None)]
    assert h.room.awareness_states() == {}


def test_awareness_abuse_is_bounded() -> None:
    mem = memory()
    h = Harness(mem, max_states_per_connection=2)
    h.room.connect(1)
    _awareness(h, 1, (1, 1, {}), (2, 1, {}), (3, 1, {}))
    assert h.closed[1][0] == 1008


def test_shutdown_closes_everyone_and_stops_forwarding() -> None:
    mem = memory()
    h = Harness(mem)
    Client(h, 1, 101)
    Client(h, 2, 102)
    h.room.shutdown()
    assert h.closed == {1: (1001, "the peer is stopping"), 2: (1001, "the peer is stopping")}
    h.take(1)
    mem.fields["after"] = 1
    assert h.take(1) == [] and h.take(2) == []


def _plain(value: Any) -> Any:
    """pycrdt reads JS-style numbers as floats: compare in the fields number model."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def test_clients_stay_equal_to_a_replica_that_compacts_its_fields() -> None:
    """GC drops overwritten map items and rebuilds the document (same Yjs client id). A
    client holds the uncompacted chains: it must be sent what uncompacted replicas take,
    or the items land before the old ones there, are deleted, and the client's next step 2
    deletes them everywhere."""
    now = [0]
    a = hs.Memory("space", "a", clock=lambda: now[0], incarnation=1, gc_min_entries=4)
    b = hs.Memory("space", "b", clock=lambda: now[0], incarnation=2, gc_min_entries=4)
    h = Harness(a)
    first = Client(h, 1, 101)
    for i in range(30):
        first.edit(f"js{i % 5}", i)
        b.fields[f"b{i % 5}"] = i
        now[0] += 10
        if i % 3 == 0:
            pair_sync(a, b)
            first.pump()
    for _ in range(3):
        pair_sync(a, b)
        h.room.tick()
        first.pump()
    assert a.stats().compacted > 0
    expected = {**{f"js{k}": 25 + k for k in range(5)}, **{f"b{k}": 25 + k for k in range(5)}}
    assert a.fields.to_dict() == expected == b.fields.to_dict()
    assert _plain(first.fields.to_py()) == expected
    # a client that joins after the compaction, and one more round of edits both ways
    late = Client(h, 2, 102)
    assert _plain(late.fields.to_py()) == expected
    b.fields["b0"] = "after"
    late.edit("js0", "late")
    pair_sync(a, b)
    first.pump()
    late.pump()
    expected.update(b0="after", js0="late")
    for doc in (first, late):
        assert _plain(doc.fields.to_py()) == expected
    assert a.fields.to_dict() == expected == b.fields.to_dict()
    assert h.room.counters["resyncs"] == 0


def test_writes_on_a_document_compacted_unnoticed_still_reach_the_clients() -> None:
    """A compaction can rebuild the document with no change to report (``collect()``, or a
    frame that only acknowledges). Writes that land on it before the room notices — a local
    one, or a client's — must still reach every client."""
    now = [0]
    a = hs.Memory("space", "a", clock=lambda: now[0], incarnation=1)
    b = hs.Memory("space", "b", clock=lambda: now[0], incarnation=2)
    h = Harness(a)
    first, second = Client(h, 1, 101), Client(h, 2, 102)
    unnoticed = 0
    for i in range(12):
        # (big overwritten values: the fields checkpoint is compacted, and the document
        # rebuilt, only once its state has doubled)
        b.fields[f"b{i % 3}"] = f"{i}" * 600
        first.edit(f"js{i % 2}", i)
        now[0] += 10
        pair_sync(a, b)
        second.pump()
        if a.collect() and a.doc is not h.room._doc:  # rebuilt, nothing reported
            unnoticed += 1
            if i % 2:
                a.fields["py"] = i
            else:
                first.edit("js", i)
        first.pump()
        second.pump()
    assert unnoticed > 0
    pair_sync(a, b)
    h.room.tick()
    first.pump()
    second.pump()
    assert _plain(first.fields.to_py()) == a.fields.to_dict() == _plain(second.fields.to_py())
    assert a.fields.to_dict() == b.fields.to_dict()
    assert h.room.counters["resyncs"] == 0


def test_only_the_clients_own_update_is_kept_from_it() -> None:
    """While a client's update is applied other commits happen too: a pending group-commit
    batch is committed first, an observer may write in reaction. The client must get those;
    only its own items are not echoed."""
    mem = hs.Memory("space", "host", clock=lambda: 0, incarnation=1, group_commit=True)
    h = Harness(mem)
    a, b = Client(h, 1, 101), Client(h, 2, 102)
    mem.fields["x"] = 1  # pending in the open batch
    mem.fields["y"] = 2

    def react(change: hs.Change) -> None:
        if change.note.startswith("yjs:") and "seen" not in mem.fields:
            mem.fields["seen"] = change.note

    mem.observe(react)
    a.edit("js", 3)
    mem.commit()
    got = updates(a.pump())
    b.pump()
    expected = {"x": 1, "y": 2, "js": 3, "seen": "yjs:101"}
    assert mem.fields.to_dict() == expected
    assert _plain(a.fields.to_py()) == expected == _plain(b.fields.to_py())
    assert len(got) == 2  # the batch and the observer's write; not its own edit
