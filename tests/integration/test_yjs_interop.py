"""Stock Yjs clients against a running peer: ``yjs`` + ``y-websocket``'s ``WebsocketProvider``
in Node (``tests/js``, pinned by its lockfile, installed by ``scripts/setup-node.sh``), driven
line by line through ``tests/js/yclient.mjs``; raw y-protocols bytes from Python's
``websockets`` for what a stock client never sends.

Covered: edits both ways with nested maps, ints, floats and emoji (DESIGN.md §5), a second
hybridsync peer over TCP, concurrent conflicting edits, reconnect after the peer restarts on
its SQLite file, tokens, read-only mode, garbage / truncated / oversized messages, limits and
awareness. Loopback only; every wait is bounded (the client's own ``timeout_ms`` or
``wait_until``); no assertion is about timing. Skipped only when ``node`` is absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from _aio import run, wait_until
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import hybridsync as hs
from hybridsync.interop import (
    AwarenessEntry,
    AwarenessUpdate,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode_message,
    encode_message,
)

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "tests" / "js"
NODE = shutil.which("node")
SECRET = b"yjs interop test group secret"
SPACE = "interop-space"
WAIT_MS = 20_000
FAST: dict[str, Any] = {
    "heartbeat_s": 0.3,
    "sync_interval_s": 0.05,
    "reconnect_min_s": 0.05,
    "reconnect_max_s": 0.5,
}

pytestmark = pytest.mark.skipif(
    NODE is None,
    reason="node is not installed: the Yjs interop tests run yjs and y-websocket in Node.js",
)


@pytest.fixture(scope="session", autouse=True)
def node_modules() -> None:
    """``npm ci`` into tests/js/node_modules unless it is current (idempotent, locked)."""
    if NODE is None:
        return
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup-node.sh")],
        capture_output=True, text=True, timeout=600, check=False,
    )
    if proc.returncode != 0 or not (JS / "node_modules" / "y-websocket").is_dir():
        pytest.fail(f"scripts/setup-node.sh failed:\n{proc.stdout}\n{proc.stderr}")


class JsClient:
    """One Node process running ``yclient.mjs``: a Y.Doc with a WebsocketProvider."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.client_id = 0
        self._next = 0
        self._stderr: list[bytes] = []
        self._drain = asyncio.create_task(self._read_stderr())

    @classmethod
    async def start(cls, url: str, *, room: str = SPACE, token: str | None = None,
                    awareness: Any = None) -> JsClient:
        assert NODE is not None
        proc = await asyncio.create_subprocess_exec(
            NODE, str(JS / "yclient.mjs"), cwd=str(JS),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        client = cls(proc)
        got = await client.cmd("connect", url=url, room=room, token=token, awareness=awareness)
        client.client_id = int(got["client_id"])
        return client

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self._stderr.append(line)

    async def cmd(self, cmd: str, *, check: bool = True, **args: Any) -> dict[str, Any]:
        """Send one command, return its reply (AssertionError with the client's stderr if
        it failed and ``check``)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._next += 1
        ident = self._next
        self.proc.stdin.write((json.dumps({"id": ident, "cmd": cmd, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        limit_s = args.get("timeout_ms", 0) / 1000 + 15
        async with asyncio.timeout(limit_s):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise AssertionError(f"node exited during {cmd}: {self.stderr}")
                reply: dict[str, Any] = json.loads(line)
                if reply.get("id") == ident:
                    break
        if check and not reply["ok"]:
            raise AssertionError(f"{cmd} failed: {reply.get('error')}\nstderr: {self.stderr}")
        return reply

    @property
    def stderr(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")

    async def set(self, path: list[str], value: Any) -> None:
        await self.cmd("set", path=path, value=value)

    async def get(self, path: list[str]) -> dict[str, Any]:
        return await self.cmd("get", path=path)

    async def wait(self, path: list[str], equals: Any) -> Any:
        return (await self.cmd("wait", path=path, equals=equals, timeout_ms=WAIT_MS))["value"]

    async def synced(self) -> None:
        await self.cmd("wait_synced", timeout_ms=WAIT_MS)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self.cmd("quit")
        await self.kill()

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        async with asyncio.timeout(10):
            await self.proc.wait()
        self._drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._drain


async def start_peer(mem: hs.Memory, **options: Any) -> hs.Peer:
    options.setdefault("websocket", ("127.0.0.1", 0))
    return await hs.Peer.start(mem, secret=SECRET, **{**FAST, **options})


def memory(name: str, **options: Any) -> hs.Memory:
    return hs.Memory(SPACE, name, **options)


def snapshot(mem: hs.Memory) -> tuple[str, tuple[str, ...], int]:
    return mem.fields_json(), mem.heads, len(mem.history())


def room_url(peer: hs.Peer, query: str = "") -> str:
    assert peer.websocket_url is not None
    return f"{peer.websocket_url}/{SPACE}{query}"


async def raw_client(peer: hs.Peer, query: str = "", **kw: Any) -> ClientConnection:
    """A hand-driven y-protocols client, past the server's greeting (step 1)."""
    ws = await connect(room_url(peer, query), open_timeout=10, **kw)
    first = decode_message(await asyncio.wait_for(ws.recv(), 10))
    assert isinstance(first, SyncStep1)
    return ws


async def closed_with(ws: ClientConnection) -> int | None:
    """Read until the server closes; the close code."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(10):
            while True:
                await ws.recv()
    return ws.close_code


# ---- edits both ways, numbers and text ------------------------------------------------------
def test_edits_both_ways_with_nested_maps_numbers_and_emoji() -> None:
    async def body() -> None:
        mem = memory("host")
        peer = await start_peer(mem)
        js = await JsClient.start(peer.websocket_url or "")
        try:
            await js.synced()
            # Python → JS
            mem.fields["py"] = {
                "int": 3, "neg": -7, "safe": 2**53, "big": 2**60, "float": 2.5,
                "text": "héllo 👋🏽 世界", "🔑": "emoji key", "bytes": b"\x00\xff",
                "nested": {"deep": {"list": [1, 2.5, "x"]}},
            }
            got = await js.wait(["py", "text"], "héllo 👋🏽 世界")
            assert got == "héllo 👋🏽 世界"
            for key, value in (("int", 3), ("neg", -7), ("safe", 2**53)):
                r = await js.get(["py", key])
                assert r["value"] == value and r["type"] == "number" and r["integer"], r
            assert (await js.get(["py", "float"]))["value"] == 2.5
            assert (await js.get(["py", "big"]))["value"] == {"$bigint": str(2**60)}
            assert (await js.get(["py", "🔑"]))["value"] == "emoji key"
            assert (await js.get(["py", "bytes"]))["value"] == {"$bytes": "00ff"}
            nested = await js.get(["py", "nested"])
            assert nested["ctor"] == "YMap"
            assert nested["value"] == {"deep": {"list": [1, 2.5, "x"]}}
            # JS → Python
            await js.set(["js"], {"$ymap": {
                "int": 7, "i40": 2**40, "neg": -123456, "float": 0.1, "tiny": 1e-300,
                "text": "naïve 🚀 ∑ 𝄞", "😀": {"$ymap": {"k": "v"}},
                "obj": {"a": [1, 2.5, "z"]}, "bytes": {"$bytes": "0102"},
                "tagged": {"$bigint": str(-(2**70))},
            }})
            await wait_until(lambda: "js" in mem.fields and "tagged" in mem.fields["js"],
                             "the JS edit in Python")
            js_value = mem.fields["js"].to_py()
            assert js_value == {
                "int": 7, "i40": 2**40, "neg": -123456, "float": 0.1, "tiny": 1e-300,
                "text": "naïve 🚀 ∑ 𝄞", "😀": {"k": "v"}, "obj": {"a": [1, 2.5, "z"]},
                "bytes": b"\x01\x02", "tagged": -(2**70),
            }
            for key in ("int", "i40", "neg"):
                assert type(js_value[key]) is int, key
            assert type(js_value["float"]) is float
            # a JS integer read in Python and written back reads as the same JS integer
            mem.fields["echo"] = mem.fields["js"]["int"] * 6
            r = await js.wait(["echo"], 42)
            assert r == 42 and (await js.get(["echo"]))["integer"]
            # the JS edit is a contribution of the host, noted with the Yjs client's id
            notes = [c.note for c in mem.history() if c.note.startswith("yjs:")]
            assert notes == [f"yjs:{js.client_id}"]
            assert all(c.author == "host" for c in mem.history())
            # deletes both ways
            await js.cmd("delete", path=["py", "neg"])
            await wait_until(lambda: "neg" not in mem.fields["py"], "the JS delete")
            del mem.fields["js"]["😀"]
            await js.cmd("wait", path=["js", "😀"], absent=True, timeout_ms=WAIT_MS)
            # and the Python replica and the JS document agree on everything
            whole = await js.get([])
            assert whole["value"]["py"]["nested"] == {"deep": {"list": [1, 2.5, "x"]}}
            assert "neg" not in whole["value"]["py"]
        finally:
            await js.close()
            await peer.stop()
            mem.close()

    run(body())


def test_a_second_peer_over_tcp_sees_yjs_edits_and_its_edits_reach_yjs() -> None:
    async def body() -> None:
        a, b = memory("a"), memory("b")
        pa = await start_peer(a)
        pb = await hs.Peer.start(b, secret=SECRET, peers=[pa.url], **FAST)
        js = await JsClient.start(pa.websocket_url or "")
        try:
            await js.synced()
            await js.set(["from_js"], {"$ymap": {"n": 1, "s": "🦀"}})
            await wait_until(lambda: b.fields.get("from_js") == {"n": 1, "s": "🦀"},
                             "the JS edit on the second peer")
            b.fields["from_b"] = {"list": [1, 2], "pi": 3.14159}
            await js.wait(["from_b"], {"list": [1, 2], "pi": 3.14159})
            b.fields["from_js"]["n"] = 2  # a remote peer edits inside the JS-made map
            await js.wait(["from_js", "n"], 2)
            await wait_until(lambda: a.state_digest() == b.state_digest(), "a and b converge")
            # the JS document equals the replicas' fields
            assert (await js.get([]))["value"] == {
                "from_js": {"n": 2, "s": "🦀"}, "from_b": {"list": [1, 2], "pi": 3.14159},
            }
            history_b = b.history()
            assert [c.author for c in history_b if c.note.startswith("yjs:")] == ["a"]
        finally:
            await js.close()
            await pb.stop()
            await pa.stop()

    run(body())


def test_concurrent_conflicting_edits_converge_and_are_reported() -> None:
    async def body() -> None:
        a, b = memory("a"), memory("b")
        pa = await start_peer(a)
        pb = await hs.Peer.start(b, secret=SECRET, **FAST)  # not connected yet
        js = await JsClient.start(pa.websocket_url or "")
        try:
            await js.synced()
            await js.set(["task"], {"$ymap": {"status": "js-open", "owner": "js"}})
            await wait_until(lambda: "task" in a.fields, "the JS edit on a")
            b.fields["task"] = {"status": "b-done", "owner": "b"}
            await pb.connect(pa.url)
            await wait_until(lambda: a.state_digest() == b.state_digest() and a.heads == b.heads,
                             "a and b converge")
            final = a.fields["task"].to_py()
            assert final in ({"status": "js-open", "owner": "js"},
                             {"status": "b-done", "owner": "b"})
            await js.wait(["task"], final)  # the Yjs client converges too
            for mem in (a, b):
                conflicts = [c for c in mem.conflicts() if c.location.startswith("task")]
                assert conflicts, mem.peer
                assert {c.authors for c in conflicts} == {("a", "b")} or {
                    c.authors for c in conflicts} == {("b", "a")}
            assert a.conflicts() == b.conflicts()
        finally:
            await js.close()
            await pb.stop()
            await pa.stop()

    run(body())


def test_a_yjs_client_stays_equal_while_the_replicas_compact_their_fields() -> None:
    """GC drops overwritten map items on the peers; the Yjs client keeps its full chains and
    must neither lose a write nor, through its next sync step 2, delete one everywhere."""

    async def body() -> None:
        a, b = memory("a", gc_min_entries=4), memory("b", gc_min_entries=4)
        pa = await start_peer(a)
        pb = await hs.Peer.start(b, secret=SECRET, peers=[pa.url], **FAST)
        js = await JsClient.start(pa.websocket_url or "")
        try:
            await js.synced()
            for i in range(30):
                await js.set([f"js{i % 5}"], i)
                b.fields[f"b{i % 5}"] = i
                if i % 10 == 9:
                    await wait_until(lambda: a.state_digest() == b.state_digest(), "a round")
            expected = {**{f"js{k}": 25 + k for k in range(5)},
                        **{f"b{k}": 25 + k for k in range(5)}}
            await wait_until(lambda: a.fields.to_dict() == expected == b.fields.to_dict(),
                             "a and b hold every last write")
            assert a.stats().compacted > 0 and b.stats().compacted > 0
            await js.wait(["b4"], 29)
            assert (await js.get([]))["value"] == expected
            # a second client joins a compacted replica; one more edit each way
            late = await JsClient.start(pa.websocket_url or "")
            try:
                await late.synced()
                assert (await late.get([]))["value"] == expected
                b.fields["b0"] = "after"
                await late.set(["js0"], "late")
                expected.update(b0="after", js0="late")
                for client in (js, late):
                    await client.wait([], expected)
                await wait_until(lambda: a.fields.to_dict() == expected == b.fields.to_dict(),
                                 "the last edits everywhere")
            finally:
                await late.close()
        finally:
            await js.close()
            await pb.stop()
            await pa.stop()

    run(body())


# ---- restart ---------------------------------------------------------------------------------
def test_provider_reconnects_and_resyncs_after_the_peer_restarts(tmp_path: Path) -> None:
    async def body() -> None:
        path = str(tmp_path / "host.db")
        mem = memory("host", path=path)
        peer = await start_peer(mem)
        assert peer.websocket_url is not None
        ws_port = int(peer.websocket_url.rsplit(":", 1)[1])
        js = await JsClient.start(peer.websocket_url)
        try:
            await js.synced()
            mem.fields["before"] = "restart"
            await js.set(["js_before"], 1)
            await js.wait(["before"], "restart")
            await wait_until(lambda: mem.fields.get("js_before") == 1, "the JS edit")
            await peer.stop()
            mem.close()
            await js.cmd("wait_event", type="close", timeout_ms=WAIT_MS)
            await js.set(["offline"], "written while the peer was down ✈️")
            # the same replica, a new process incarnation, the same WebSocket port
            mem = memory("host", path=path)
            assert mem.fields.get("before") == "restart" and mem.fields.get("js_before") == 1
            peer = await start_peer(mem, websocket=("127.0.0.1", ws_port))
            await wait_until(lambda: mem.fields.get("offline") == "written while the peer was "
                             "down ✈️", "the offline JS edit after the restart")
            mem.fields["after"] = {"n": 42}
            await js.wait(["after"], {"n": 42})
            assert (await js.get([]))["value"] == json.loads(mem.fields_json())
        finally:
            await js.close()
            await peer.stop()
            mem.close()

    run(body())


# ---- access control ---------------------------------------------------------------------------
def test_tokens_rooms_and_client_limit() -> None:
    async def body() -> None:
        mem = memory("host")
        peer = await start_peer(mem, websocket_token="s3cret", websocket_max_clients=2)
        mem.fields["secret"] = "only for token holders"
        before = snapshot(mem)
        try:
            for query in ("", "?token=wrong", "?token=s3cre", "?token=s3cret2"):
                with pytest.raises(InvalidStatus) as info:
                    await connect(room_url(peer, query), open_timeout=10)
                assert info.value.response.status_code == 401, query
            with pytest.raises(InvalidStatus) as info:
                await connect(f"{peer.websocket_url}/other-room?token=s3cret", open_timeout=10)
            assert info.value.response.status_code == 404
            # a stock provider with a wrong token never syncs: each attempt is refused
            bad = await JsClient.start(peer.websocket_url or "", token="wrong")
            try:
                got = await bad.cmd("wait_event", type="close", count=2, timeout_ms=WAIT_MS)
                assert not any(e["type"] == "sync" and e["synced"] for e in got["events"])
                assert (await bad.get(["secret"]))["present"] is False
            finally:
                await bad.close()
            # the right token works; a third client is one too many
            good = await JsClient.start(peer.websocket_url or "", token="s3cret")
            try:
                await good.synced()
                assert (await good.get(["secret"]))["value"] == "only for token holders"
                extra = await raw_client(peer, "?token=s3cret")
                with pytest.raises(InvalidStatus) as info:
                    await connect(room_url(peer, "?token=s3cret"), open_timeout=10)
                assert info.value.response.status_code == 503
                await extra.close()
            finally:
                await good.close()
            assert snapshot(mem) == before
            stats = peer.stats()
            assert stats["websocket_refused_token"] >= 6
            assert stats["websocket_refused_path"] == 1
            assert stats["websocket_refused_busy"] == 1
        finally:
            await peer.stop()

    run(body())


def test_read_only_endpoint_serves_but_refuses_edits() -> None:
    async def body() -> None:
        mem = memory("host")
        mem.fields["shown"] = {"to": "readers 📖"}
        peer = await start_peer(mem, websocket_readonly=True)
        js = await JsClient.start(peer.websocket_url or "")
        try:
            await js.synced()  # its (empty) sync step 2 is accepted
            assert (await js.get(["shown"]))["value"] == {"to": "readers 📖"}
            mem.fields["live"] = 1  # later changes still reach readers
            await js.wait(["live"], 1)
            before = snapshot(mem)
            await js.set(["shown", "to"], "vandal")
            got = await js.cmd("wait_event", type="close", timeout_ms=WAIT_MS)
            closes = [e for e in got["events"] if e["type"] == "close"]
            assert closes[0]["code"] == 1008, closes
            await js.cmd("wait_event", type="warn", timeout_ms=WAIT_MS)
            warns = [e["text"] for e in (await js.cmd("events"))["events"]
                     if e["type"] == "warn"]
            assert any("Permission denied" in w and "read-only" in w for w in warns), warns
            assert snapshot(mem) == before
            assert mem.fields["shown"] == {"to": "readers 📖"}
            assert peer.stats()["websocket_readonly_refused"] >= 1
        finally:
            await js.close()
            await peer.stop()

    run(body())


# ---- bad input ---------------------------------------------------------------------------------
def _update_with(build: Any, base: bytes = b"") -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=4242)
    if base:
        doc.apply_update(base)
    sv = doc.get_state()
    build(doc)
    return bytes(doc.get_update(sv))


def test_malformed_messages_close_only_that_connection() -> None:
    async def body() -> None:
        mem = memory("host")
        peer = await start_peer(mem, websocket_max_message_bytes=4096)
        js = await JsClient.start(peer.websocket_url or "")  # a bystander that must not notice
        try:
            await js.synced()
            mem.fields["kept"] = {"value": 1}
            await js.wait(["kept"], {"value": 1})
            before = snapshot(mem)
            base = bytes(mem.doc.get_update())
            ytext = _update_with(lambda d: d.get("fields", type=pycrdt.Map).__setitem__(
                "t", pycrdt.Text("no")), base)
            other_root = _update_with(lambda d: d.get("other", type=pycrdt.Map).__setitem__(
                "k", 1), base)
            cases: list[tuple[str, bytes | str, int]] = [
                ("garbage", b"\xff\xff\xff\xff", 1002),
                ("unknown type", b"\x09", 1002),
                ("unknown sync type", b"\x00\x07\x00", 1002),
                ("truncated update", b"\x00\x02\x0a\x01\x02", 1002),
                ("truncated varint", b"\x00\x80", 1002),
                ("trailing bytes", encode_message(SyncStep1(b"\x00")) + b"\x00", 1002),
                ("bad state vector", b"\x00\x00\x02\x05\x01", 1002),
                ("awareness not JSON", encode_message(AwarenessUpdate(
                    (AwarenessEntry(1, 1, "{"),))), 1002),
                ("not a Yjs update", encode_message(SyncUpdate(b"\x05\x01\x02\x03")), 1003),
                ("Y.Text", encode_message(SyncUpdate(ytext)), 1003),
                ("another root", encode_message(SyncStep2(other_root)), 1003),
                ("text frame", "hello", 1003),
                ("oversized", encode_message(SyncUpdate(b"\x00" * 8192)), 1009),
            ]
            for name, payload, code in cases:
                ws = await raw_client(peer)
                await ws.send(payload)
                assert await closed_with(ws) == code, name
                assert snapshot(mem) == before, name
            # the bystander still syncs both ways, the peer is healthy
            await js.set(["after"], "still here")
            await wait_until(lambda: mem.fields.get("after") == "still here", "bystander edit")
            mem.fields["kept"]["value"] = 2
            await js.wait(["kept", "value"], 2)
            stats = peer.stats()
            assert stats["websocket_malformed"] >= 8
            assert stats["websocket_updates_refused"] >= 3
        finally:
            await js.close()
            await peer.stop()

    run(body())


def test_update_with_missing_dependencies_is_refused_and_repaired_by_a_full_sync() -> None:
    async def body() -> None:
        mem = memory("host")
        peer = await start_peer(mem)
        try:
            ws = await raw_client(peer)
            doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=777)
            f = doc.get("fields", type=pycrdt.Map)
            f["first"] = 1
            sv = doc.get_state()
            f["second"] = 2
            later = bytes(doc.get_update(sv))  # needs "first", which the peer never got
            before = snapshot(mem)
            await ws.send(encode_message(SyncUpdate(later)))
            ask = decode_message(await asyncio.wait_for(ws.recv(), 10))
            assert isinstance(ask, SyncStep1)  # the peer asks for everything it lacks
            assert snapshot(mem) == before
            await ws.send(encode_message(SyncStep2(bytes(doc.get_update(ask.state_vector)))))
            await wait_until(lambda: mem.fields.to_dict() == {"first": 1, "second": 2},
                             "the full answer applied")
            await ws.close()
        finally:
            await peer.stop()

    run(body())


# ---- awareness -----------------------------------------------------------------------------------
def test_awareness_is_relayed_between_yjs_clients_and_dropped_when_one_leaves() -> None:
    async def body() -> None:
        mem = memory("host")
        peer = await start_peer(mem)
        alice = await JsClient.start(peer.websocket_url or "", awareness={"user": "alice 🐇"})
        bob = await JsClient.start(peer.websocket_url or "", awareness={"user": "bob"})
        try:
            await alice.synced()
            await bob.synced()
            await alice.cmd("awareness_set", state={"user": "alice 🐇", "cursor": 3})
            got = await bob.cmd("wait_awareness", client=alice.client_id,
                                equals={"user": "alice 🐇", "cursor": 3}, timeout_ms=WAIT_MS)
            assert got["state"] == {"user": "alice 🐇", "cursor": 3}
            await bob.cmd("awareness_set", state={"user": "bob", "cursor": 9})
            await alice.cmd("wait_awareness", client=bob.client_id,
                            equals={"user": "bob", "cursor": 9}, timeout_ms=WAIT_MS)
            # query-awareness from a raw client: every live state
            ws = await raw_client(peer)
            await ws.send(encode_message(QueryAwareness()))
            states: dict[int, Any] = {}
            async with asyncio.timeout(10):
                while len(states) < 2:
                    msg = decode_message(await ws.recv())
                    if isinstance(msg, AwarenessUpdate):
                        states.update({e.client_id: json.loads(e.state) for e in msg.entries})
            assert states[alice.client_id] == {"user": "alice 🐇", "cursor": 3}
            await ws.close()
            # alice's process dies: her state goes for everyone
            await alice.kill()
            await bob.cmd("wait_awareness", client=alice.client_id, present=False,
                          timeout_ms=WAIT_MS)
        finally:
            await alice.close()
            await bob.close()
            await peer.stop()

    run(body())


def test_websocket_options_are_validated() -> None:
    async def body() -> None:
        mem = memory("host")
        for bad in ({"websocket": ("127.0.0.1", 70000)}, {"websocket": "ws://x"},
                    {"websocket_token": ""}, {"websocket_max_clients": 0},
                    {"websocket_max_message_bytes": 10}, {"websocket_readonly": "yes"}):
            options = {"websocket": ("127.0.0.1", 0), **bad}
            with pytest.raises(hs.ConfigError):
                await hs.Peer.start(mem, secret=SECRET, **options)
        peer = await hs.Peer.start(mem, secret=SECRET)
        assert peer.websocket_url is None
        await peer.stop()

    run(body())


# ---- the command line -------------------------------------------------------------------------
def test_cli_peer_serves_yjs_clients_with_a_token(tmp_path: Path) -> None:
    """``hybridsync peer --websocket H:P --websocket-token-file F``: a stock client with the
    token edits the stored replica; the edit survives the peer's exit."""
    import re
    import sys

    key, token = tmp_path / "group.key", tmp_path / "yjs.token"
    key.write_text("cli group secret for yjs\n")
    token.write_text("s3cret-token\n")
    db = str(tmp_path / "host.db")

    async def body() -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hybridsync.cli", "peer", "--space", SPACE, "--secret-file",
            str(key), "--path", db, "--name", "host", "--websocket", "127.0.0.1:0",
            "--websocket-token-file", str(token),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(30):
                await proc.stdout.readline()
                line = (await proc.stdout.readline()).decode()
            m = re.fullmatch(r"yjs: connect a WebsocketProvider to (ws://127\.0\.0\.1:\d+) "
                             r"room '([^']+)'\n", line)
            assert m and m.group(2) == SPACE, line
            js = await JsClient.start(m.group(1), token="s3cret-token")
            other = await JsClient.start(m.group(1), token="s3cret-token")
            try:
                await js.synced()
                await js.set(["from_js"], {"n": 7, "s": "ok ✅"})
                # a second client sees it only through the host: the host has committed it
                await other.wait(["from_js"], {"n": 7, "s": "ok ✅"})
            finally:
                await js.close()
                await other.close()
            proc.terminate()
            async with asyncio.timeout(60):
                out, _ = await proc.communicate()
            assert proc.returncode == 0 and b"stopped:" in out
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    def stored() -> Any:
        mem = memory("host", path=db)
        try:
            return mem.fields.get("from_js")
        finally:
            mem.close()

    run(body())
    assert stored() == {"n": 7, "s": "ok ✅"}
