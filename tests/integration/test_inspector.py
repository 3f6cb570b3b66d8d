"""The memory inspector (``hybridsync.inspector``, ``hybridsync peer --http``): its JSON API and
event stream over real HTTP on loopback, its limits and bad requests, the page in headless
Chromium (Debian's ``chromium`` driven by Playwright, installed by scripts/setup-browser.sh)
showing a value written by another peer, escaping of user data, and the CLI option.

Every wait is bounded in count and time; nothing asserts on timing. The browser test saves a
screenshot under ``$HYBRIDSYNC_ARTIFACTS`` (default ``tests/artifacts/``) and prints its path.
"""

from __future__ import annotations

import asyncio
import contextlib
import doctest
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from _aio import FAST_PEER, run, wait_until

import hybridsync as hs
import hybridsync.inspector
from hybridsync.inspector import Inspector
from hybridsync.inspector._views import MAX_HISTORY_PAGE, fields_tree
from hybridsync.testing import sync_pair

SECRET = b"inspector test group secret"
SPACE = "space-inspector-tests"
FAST = FAST_PEER
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
XSS_SCRIPT = "<script>window.__xss = 'script'</script>"
XSS_IMG = "<img src=x onerror=\"window.__xss = 'img'\">"


# ---- a raw HTTP client on asyncio streams (so malformed requests can be sent too) ----------
class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


async def exchange(port: int, raw: bytes, timeout_s: float = 15.0) -> Reply:
    """Send ``raw``, read the response to EOF (the inspector closes every connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        with contextlib.suppress(ConnectionError):  # refused mid-send (a head too large):
            await writer.drain()  # the answer is still there to read
        async with asyncio.timeout(timeout_s):
            data = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.1 (\d{3}) ", lines[0])
    assert m, f"not an HTTP response: {data[:200]!r}"
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return Reply(int(m.group(1)), headers, body)


async def get(ins: Inspector, path: str, *, host: str | None = None) -> Reply:
    host = host if host is not None else f"127.0.0.1:{ins.port}"
    return await exchange(ins.port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())


async def get_json(ins: Inspector, path: str) -> Any:
    reply = await get(ins, path)
    assert reply.status == 200, (path, reply.status, reply.body[:300])
    assert reply.headers["content-type"].startswith("application/json")
    return reply.json()


def with_inspector(body: Callable[[Inspector], Awaitable[None]], mem: hs.Memory,
                   **options: Any) -> None:
    async def main() -> None:
        ins = await Inspector.start(mem, **options)
        try:
            await body(ins)
        finally:
            await ins.stop()

    run(main(), timeout_s=60)


def _two_replicas_with_everything(make_memory: Callable[..., hs.Memory]) -> tuple[
        hs.Memory, hs.Memory]:
    a, b = make_memory("a"), make_memory("b")
    a.fields["goal"] = "ship v1"
    a.fields["big"] = 2**60 + 1  # beyond 2**53: must arrive exactly, as a string
    sync_pair(a, b)
    a.fields["goal"] = "ship v2"  # concurrent with b's write: a conflict on both
    b.fields["goal"] = "ship v3"
    with b.transaction(note="notes and a buffer"):
        b.text("scratchpad").set("first line\nsecond line\n")
        b.buffer("kv/b", shape=(4, 4), dtype="float32").array[1] = 2.0
    sync_pair(a, b)
    return a, b


# ---- the JSON API ------------------------------------------------------------------------
def test_state_shows_fields_regions_history_and_conflicts(make_memory: Any) -> None:
    a, _ = _two_replicas_with_everything(make_memory)

    async def body(ins: Inspector) -> None:
        assert ins.url == f"http://127.0.0.1:{ins.port}/"
        doc = await get_json(ins, "/api/state")
        assert doc["identity"]["peer"] == "a" and doc["identity"]["space"] == "space"
        assert doc["identity"]["digest"] == a.state_digest()
        assert doc["identity"]["heads"] == list(a.heads)
        # fields: plain JSON (big int tagged) and the typed tree (exact text)
        assert doc["fields"]["goal"] == a.fields["goal"]
        assert doc["fields"]["big"] == {"$bigint": str(2**60 + 1)}
        entries = dict(doc["tree"]["entries"])
        assert entries["big"] == {"type": "int", "text": str(2**60 + 1)}
        assert entries["goal"]["type"] == "str"
        # regions: kind, size, last change (author, note)
        regions = {r["name"]: r for r in doc["regions"]}
        assert regions["scratchpad"]["kind"] == "text" and regions["scratchpad"]["bytes"] == 23
        assert regions["scratchpad"]["lines"] == 2
        assert regions["kv/b"]["kind"] == "buffer" and regions["kv/b"]["bytes"] == 64
        for r in regions.values():
            assert r["last_change"]["author"] == "b"
            assert r["last_change"]["note"] == "notes and a buffer"
        # history: who, what, when, from which parents, note
        hist = doc["history"]
        assert hist["total"] == len(a.history()) == 5  # a: goal, big, goal; b: goal, tx
        assert [e["id"] for e in hist["entries"]] == [c.id.hex() for c in a.history()]
        by_note = {e["note"]: e for e in hist["entries"]}
        tx = by_note["notes and a buffer"]
        assert tx["author"] == "b" and set(tx["changes"]) == {"text: scratchpad", "buffer: kv/b"}
        first, second = hist["entries"][:2]
        assert first["parents"] == [] and first["author"] == "a"
        assert first["changes"] == ['fields: goal = "ship v1"']
        assert second["changes"] == [f"fields: big = {2**60 + 1}"]
        assert [p["dot"] for p in second["parents"]] == ["a#1"]
        assert {p["dot"] for p in tx["parents"]} == {"b#1"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["hlc"]["iso"])
        assert int(first["hlc"]["raw"]) == a.history()[0].hlc
        # conflicts
        assert doc["conflicts"]["total"] == 1
        conflict = doc["conflicts"]["conflicts"][0]
        assert conflict["location"] == "goal" and sorted(conflict["authors"]) == ["a", "b"]
        assert conflict["contributions"][1] in {e["id"] for e in hist["entries"]}
        assert {"ship v2", "ship v3"} == set(conflict["values"])
        assert doc["build_ms"] >= 0  # what the page paces its refreshes by
        assert doc["stats"]["log_length"] == 5 and doc["stats"]["conflicts"] == 1
        # the separate endpoints agree with the state document
        assert (await get_json(ins, "/api/fields"))["fields"] == doc["fields"]
        assert (await get_json(ins, "/api/regions"))["regions"] == doc["regions"]
        assert (await get_json(ins, "/api/conflicts?limit=1")) == doc["conflicts"]

    with_inspector(body, a)


def test_history_says_what_each_contribution_wrote(make_memory: Any) -> None:
    a = make_memory("a")

    async def body(ins: Inspector) -> None:
        a.fields["tasks"] = {"t1": {"status": "open"}}
        a.fields["tasks"]["t1"]["status"] = "done"
        with a.transaction(note="delete"):
            del a.fields["tasks"]
        hist = (await get_json(ins, "/api/history?tail=1&limit=3"))["entries"]
        assert [e["changes"] for e in hist] == [
            ["fields: tasks = {…}"], ['fields: tasks/t1/status = "done"'],
            ["fields: tasks deleted"]]
        assert hist[2]["note"] == "delete"
        # a write that loses to a concurrent one (nothing changes visibly here) is still
        # named, and so is an overwrite (its item names the key only through its origin)
        b = make_memory("b")
        a.fields["goal"] = "x"
        b.fields["goal"] = "y"
        with b.transaction():
            b.fields["goal"] = "z"
            b.fields["other"] = 1
        sync_pair(a, b)
        hist = (await get_json(ins, "/api/history?tail=1&limit=10"))["entries"]
        by_dot = {f"{e['author']}#{e['seq']}": e["changes"] for e in hist}
        assert by_dot["b#1"] == ['fields: goal = "y"']
        assert by_dot["b#2"] == ['fields: goal = "z"', "fields: other = 1"]

    with_inspector(body, a)


def test_history_pages_by_cursor_and_rejects_bad_parameters(make_memory: Any) -> None:
    a = make_memory("a")
    for i in range(23):
        a.fields[f"k{i}"] = i

    async def body(ins: Inspector) -> None:
        ids: list[str] = []
        after = ""
        for _ in range(10):  # bounded: 3 pages expected
            page = await get_json(ins, f"/api/history?limit=10&after={after}")
            ids += [e["id"] for e in page["entries"]]
            if page["next"] is None:
                break
            after = page["next"]
        assert ids == [c.id.hex() for c in a.history()]
        tail = await get_json(ins, "/api/history?tail=1&limit=5")
        assert [e["id"] for e in tail["entries"]] == ids[-5:] and tail["next"] is None
        assert tail["start"] == 18 and tail["total"] == 23
        for query, message in [
            ("limit=0", "limit must be"),
            (f"limit={MAX_HISTORY_PAGE + 1}", "limit must be"),
            ("limit=ten", "limit must be"),
            ("after=zz", "cursor"),
            ("after=" + "1-" + "0" * 63, "cursor"),
            ("tail=2", "tail must be"),
            (f"tail=1&after={ids[0][:0]}1-{'a' * 64}", "either after= or tail="),
            ("limit=1&limit=2", "given twice"),
            ("colour=red", "unknown query parameter"),
        ]:
            reply = await get(ins, f"/api/history?{query}")
            assert reply.status == 400, (query, reply.body)
            assert message in reply.json()["error"], (query, reply.body)

    with_inspector(body, a)


def test_sessions_report_what_each_replica_is_known_to_lack(make_memory: Any) -> None:
    a, b, c = make_memory("a"), make_memory("b", batch_size=1), make_memory("c")
    a.fields["x"] = 1
    sync_pair(a, b)
    sync_pair(a, c)
    a.fields["y"] = 2  # b and c have not heard of y and z
    a.fields["z"] = 3
    c.fields["w"] = 4
    for frame in c.sync_to("a"):  # a gets w (b lacks it too)
        a.receive("c", frame)
    b.fields["u"] = 5  # b writes two; a gets only the second (it waits for its parent)
    b.fields["v"] = 6
    frames = b.sync_to("a")
    assert len(frames) == 2  # batch_size=1: one contribution per frame
    a.receive("b", frames[1])
    assert a.stats().pending == 1

    def rows() -> dict[str, dict[str, Any]]:
        doc = views.sessions()
        assert doc["network"] is False and doc["counters"] == {}
        assert doc["version_vector"] == a.version_vector.to_dict()
        return {r["peer"]: r for r in doc["sessions"]}

    views = hybridsync.inspector.MemoryViews(a)
    first = rows()
    assert set(first) == {"b", "c"} and not first["b"]["connected"]
    assert (first["b"]["lacks"], first["b"]["ahead"]) == (3, 2)  # y, z, w; and u, v
    assert (first["c"]["lacks"], first["c"]["ahead"]) == (2, 0)  # y, z
    assert first["b"]["known"] == {"a": 1, "b": 2}
    sync_pair(a, c)  # c catches up and says so
    assert (rows()["c"]["lacks"], rows()["c"]["ahead"]) == (0, 0)

    async def body(ins: Inspector) -> None:  # the same over HTTP
        doc = await get_json(ins, "/api/sessions")
        assert {r["peer"]: (r["lacks"], r["ahead"]) for r in doc["sessions"]} == {
            "b": (3, 2), "c": (0, 0)}

    with_inspector(body, a)


def test_static_page_and_security_headers(make_memory: Any) -> None:
    a = make_memory("a")

    async def body(ins: Inspector) -> None:
        page = await get(ins, "/")
        assert page.status == 200 and page.headers["content-type"].startswith("text/html")
        assert b'<script src="app.js"' in page.body
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["connection"] == "close"
        js = await get(ins, "/app.js")
        assert js.status == 200 and b"EventSource" in js.body
        assert b"innerHTML" not in js.body.replace(b"never innerHTML", b"")
        css = await get(ins, "/app.css")
        assert css.status == 200 and css.headers["content-type"].startswith("text/css")
        head = await exchange(ins.port, f"HEAD / HTTP/1.1\r\nHost: 127.0.0.1:{ins.port}\r\n\r\n"
                              .encode())
        assert head.status == 200 and head.body == b""
        assert int(head.headers["content-length"]) == len(page.body)

    with_inspector(body, a)


def test_bad_requests_get_4xx_and_the_server_keeps_serving(make_memory: Any) -> None:
    a = make_memory("a")
    a.fields["k"] = "v"

    async def body(ins: Inspector) -> None:
        host = f"Host: 127.0.0.1:{ins.port}\r\n"
        cases: list[tuple[bytes, int]] = [
            (f"GET /nope HTTP/1.1\r\n{host}\r\n".encode(), 404),
            (f"GET /../../etc/passwd HTTP/1.1\r\n{host}\r\n".encode(), 404),
            (f"GET /api/../app.js HTTP/1.1\r\n{host}\r\n".encode(), 404),
            (f"POST /api/state HTTP/1.1\r\n{host}Content-Length: 0\r\n\r\n".encode(), 405),
            (f"GET /api/state HTTP/1.1\r\n{host}Content-Length: 5\r\n\r\nhello".encode(), 413),
            (b"GARBAGE\r\n\r\n", 400),
            (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400),  # a TLS hello
            (f"GET /api/state HTTP/2.0\r\n{host}\r\n".encode(), 400),
            ("GET /caf\u00e9 HTTP/1.1\r\n".encode() + host.encode() + b"\r\n", 400),
            (f"GET /%ff%fe HTTP/1.1\r\n{host}\r\n".encode(), 400),
            (f"GET /api/state?history=0 HTTP/1.1\r\n{host}\r\n".encode(), 400),
            (f"GET /api/state?x HTTP/1.1\r\n{host}\r\n".encode(), 400),
            (f"GET /?a=1 HTTP/1.1\r\n{host}\r\n".encode(), 400),
            (f"GET /api/state HTTP/1.1\r\nBad Header\r\n{host}\r\n".encode(), 400),
            (b"GET /api/state HTTP/1.1\r\n\r\n", 400),  # no Host
            (b"GET /api/state HTTP/1.1\r\nHost: evil.example:80\r\n\r\n", 403),  # rebinding
            (f"GET /{'a' * 3000} HTTP/1.1\r\n{host}\r\n".encode(), 414),
            (f"GET / HTTP/1.1\r\n{host}X-Big: {'b' * 20000}\r\n\r\n".encode(), 431),
            (f"GET / HTTP/1.1\r\n{host}".encode() + b"X: y\r\n" * 100 + b"\r\n", 431),
        ]
        for raw, status in cases:
            reply = await exchange(ins.port, raw)
            assert reply.status == status, (raw[:80], reply.status, reply.body[:200])
            if status != 405:
                assert reply.json()["status"] == status
        assert (await get_json(ins, "/api/fields"))["fields"] == {"k": "v"}
        for host_ok in (f"localhost:{ins.port}", f"LOCALHOST:{ins.port}", f"[::1]:{ins.port}"):
            assert (await get(ins, "/api/sessions", host=host_ok)).status == 200
        assert ins.counters["bad_requests"] >= len(cases) - 3
        assert ins.counters["errors"] == 0

    with_inspector(body, a)


def test_connections_are_bounded_and_idle_ones_time_out(make_memory: Any) -> None:
    a = make_memory("a")

    async def body(ins: Inspector) -> None:
        idle = [await asyncio.open_connection("127.0.0.1", ins.port) for _ in range(2)]
        await wait_until(lambda: ins.clients == 2, "two idle connections held")
        busy = await get(ins, "/api/state")
        assert busy.status == 503 and "too many clients" in busy.json()["error"]
        for reader, writer in idle:  # they get 408 after request_timeout_s, then close
            async with asyncio.timeout(15):
                data = await reader.read()
            assert data.startswith(b"HTTP/1.1 408 ")
            writer.close()
        await wait_until(lambda: ins.clients == 0, "connections released")
        assert (await get(ins, "/api/state")).status == 200
        assert ins.counters["rejected_busy"] == 1

    with_inspector(body, a, max_clients=2, request_timeout_s=0.5)


async def read_event(reader: asyncio.StreamReader, timeout_s: float = 15.0) -> tuple[str, Any]:
    """The next Server-Sent Event (comments and ``retry:`` skipped)."""
    async with asyncio.timeout(timeout_s):
        while True:
            block = (await reader.readuntil(b"\n\n")).decode()
            fields = dict(line.split(": ", 1) for line in block.strip().split("\n")
                          if not line.startswith(":") and ": " in line)
            if "event" in fields:
                return fields["event"], json.loads(fields["data"])


def test_event_stream_pushes_changes_and_ticks(make_memory: Any) -> None:
    a = make_memory("a")

    async def body(ins: Inspector) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", ins.port)
        writer.write(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{ins.port}\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
        assert head.startswith(b"HTTP/1.1 200 ") and b"text/event-stream" in head
        event, hello = await read_event(reader)
        assert event == "hello" and hello["peer"] == "a" and hello["heads"] == []
        a.fields["answer"] = {"value": 42}
        seen: dict[str, Any] = {}
        for _ in range(20):  # a change, then ticks; bounded
            event, data = await read_event(reader)
            seen.setdefault(event, data)
            if {"change", "tick"} <= seen.keys():
                break
        change = seen["change"]
        assert change["author"] == "a" and change["local"] is True
        assert change["paths"] == ["answer"] and change["kind"] == "fields"
        assert seen["tick"]["heads"] == list(a.heads)
        # a second stream over the limit is refused; the first keeps going
        second = await get(ins, "/api/events")
        assert second.status == 503
        writer.close()
        await wait_until(lambda: ins.clients == 0, "the stream ends when the client leaves")

    with_inspector(body, a, max_streams=1, tick_interval_s=0.1)


def test_stop_ends_open_event_streams_and_binds_only_the_given_address(
        make_memory: Any) -> None:
    a = make_memory("a")

    async def main() -> None:
        ins = await Inspector.start(a, host="127.0.0.1")
        try:
            with pytest.raises(OSError):  # another loopback address: nothing listens there
                _, w = await asyncio.open_connection("127.0.0.2", ins.port)
                w.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", ins.port)
            writer.write(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{ins.port}\r\n\r\n"
                         .encode())
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
            assert (await read_event(reader))[0] == "hello"
            assert ins.clients == 1
        finally:
            await ins.stop()
        async with asyncio.timeout(15):
            rest = await reader.read()  # the stream ends: EOF, no hang
        assert b"event:" not in rest and ins.clients == 0
        writer.close()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", ins.port)

    run(main(), timeout_s=60)


def test_a_slow_event_reader_is_told_to_resync(make_memory: Any) -> None:
    a = make_memory("a")

    async def body(ins: Inspector) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", ins.port)
        writer.write(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{ins.port}\r\n\r\n".encode())
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
        assert (await read_event(reader))[0] == "hello"
        for i in range(50):  # no await in between: the queue (4) overflows
            a.fields[f"k{i}"] = i
        events = []
        for _ in range(10):
            events.append(await read_event(reader))
            if events[-1][0] == "change" and events[-1][1]["paths"] == ["k49"]:
                break
        assert events[0][0] == "resync"
        assert [e for e, _ in events[1:]] == ["change"] * (len(events) - 1)
        writer.close()

    with_inspector(body, a, max_queued_events=4, tick_interval_s=30)


def test_an_internal_error_is_a_500_and_the_server_keeps_serving(
        make_memory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    a = make_memory("a")
    a.fields["k"] = 1

    def broken() -> list[hs.Conflict]:
        raise RuntimeError("a bug in a view")

    async def body(ins: Inspector) -> None:
        assert (await get(ins, "/api/state")).status == 200
        monkeypatch.setattr(a, "conflicts", broken)
        reply = await get(ins, "/api/conflicts")
        assert reply.status == 500 and reply.json()["error"] == "internal error: RuntimeError"
        assert (await get(ins, "/api/fields")).status == 200
        assert ins.counters["errors"] == 1

    with_inspector(body, a)


def test_start_validates_its_options(make_memory: Any) -> None:
    a = make_memory("a")

    async def main() -> None:
        for kwargs in ({"port": -1}, {"port": 70000}, {"max_clients": 0},
                       {"tick_interval_s": 0}, {"host": 7}):
            with pytest.raises(hs.ConfigError):
                await Inspector.start(a, **kwargs)
        with pytest.raises(hs.ConfigError):
            await Inspector.start("not a memory")  # type: ignore[arg-type]
        ins = await Inspector.start(a)
        try:
            with pytest.raises(hs.TransportError, match="cannot listen"):
                await Inspector.start(a, port=ins.port)
        finally:
            await ins.stop()
        await ins.stop()  # idempotent

    run(main(), timeout_s=30)


def test_fields_tree_is_bounded_and_exact() -> None:
    value = {"big": 2**200, "nan": float("nan"), "b": b"\x00" * 100, "s": "x" * 1000,
             "list": list(range(10)), "deep": {"a": {"b": {"c": None}}}}
    tree = fields_tree(value, max_nodes=8)
    assert tree["truncated"] and tree["nodes"] == 8
    entries = dict(tree["entries"])
    assert list(entries) == sorted(value)  # breadth first: every top-level key first
    assert entries["big"] == {"type": "int", "text": str(2**200)}
    assert entries["nan"]["text"] == "nan" and entries["b"]["size"] == 100
    assert entries["s"]["clipped"] == 1000 and len(entries["s"]["text"]) == 400
    # the 2 nodes left go, breadth first in key order, to deep's first level and list[0]
    assert len(entries["deep"]["entries"]) == 1 and "more" not in entries["deep"]
    assert entries["list"]["more"] == 9 and len(entries["list"]["items"]) == 1
    full = fields_tree(value)
    assert not full["truncated"] and full["nodes"] == 6 + 10 + 3


def test_module_doctest() -> None:
    result = doctest.testmod(hybridsync.inspector, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ---- the page in headless Chromium ---------------------------------------------------------
def _artifacts() -> Path:
    folder = Path(os.environ.get("HYBRIDSYNC_ARTIFACTS")
                  or Path(__file__).resolve().parents[1] / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _need_browser() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not installed: run scripts/setup-browser.sh as root "
                    "(Debian package chromium)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        pytest.skip("the Python package playwright is missing: pip install -e '.[test]'")


async def _browser(profile: Path) -> tuple[Any, Any]:
    """Playwright driving Debian's chromium with a fresh profile: (playwright, context)."""
    from playwright.async_api import async_playwright

    pw = await async_playwright().start()
    try:
        ctx = await pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
    except BaseException:
        await pw.stop()
        raise
    return pw, ctx


async def _poll_page(page: Any, script: str, what: str, timeout_s: float = 30.0) -> Any:
    """Evaluate ``script`` until it returns something truthy (bounded: ~300 tries)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    for _ in range(int(timeout_s / 0.1) + 1):
        value = await page.evaluate(script)
        if value:
            return value
        if loop.time() > deadline:
            break
        await asyncio.sleep(0.1)
    raise AssertionError(f"the page did not show {what} within {timeout_s} s")


def test_the_page_shows_a_value_written_by_another_peer(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _need_browser()
    shot = _artifacts() / "inspector.png"

    async def main() -> None:
        a, b = hs.Memory(SPACE, "agent-a"), hs.Memory(SPACE, "agent-b")
        a.fields["goal"] = "ship v1"
        a.fields["tasks"] = {"t1": {"status": "open", "owner": "agent-a"}, "t2": {"status": "open"}}
        a.text("scratchpad").set("plan:\n1. sync\n2. inspect\n")
        a.commit()
        with b.transaction(note="b's own start"):  # before they meet: concurrent with a's
            b.fields["goal"] = "ship v1 today"
            b.buffer("kv/agent-b", shape=(256, 64), dtype="float16").array[3] = 0.5
        pa = await hs.Peer.start(a, secret=SECRET, **FAST)
        pb = await hs.Peer.start(b, secret=SECRET, peers=[pa.url], **FAST)
        ins = await Inspector.start(a, pa, tick_interval_s=0.2)
        pw, ctx = await _browser(tmp_path / "profile")
        try:
            await wait_until(lambda: "agent-b" in pa.sessions and b.heads == a.heads, "sync")
            page = await ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(ins.url)
            await _poll_page(page, "document.getElementById('conflicts').textContent"
                             ".includes('goal')", "the conflict on goal")
            await _poll_page(page, "document.getElementById('fields').textContent"
                             ".includes('tasks')", "the initial fields")
            await _poll_page(page, "document.getElementById('live').classList.contains('on')",
                             "the live event stream")
            # agent-b writes: the page of agent-a shows it, without a reload
            with b.transaction(note="b claims t2"):
                b.fields["tasks"]["t2"]["owner"] = "agent-b"
                b.fields["greeting"] = "hello from agent-b"
            await _poll_page(page, "document.getElementById('fields').textContent"
                             ".includes('hello from agent-b')", "agent-b's value")
            await _poll_page(page, "document.getElementById('history').textContent"
                             ".includes('b claims t2')", "agent-b's contribution in the history")
            sessions = await _poll_page(
                page, "(() => { const t = document.querySelector('#sessions tbody')"
                ".textContent; return t.includes('agent-b') && t; })()", "the session")
            assert "open" in sessions
            regions = await page.text_content("#regions")
            assert "scratchpad" in regions and "kv/agent-b" in regions and "buffer" in regions
            assert errors == []
            await page.screenshot(path=str(shot), full_page=True)
        finally:
            await ctx.close()
            await pw.stop()
            await ins.stop()
            await pb.stop()
            await pa.stop()

    run(main(), timeout_s=120)
    assert shot.stat().st_size > 10_000
    with capsys.disabled():
        print(f"\ninspector screenshot: {shot}")


def test_user_data_is_shown_as_text_never_run(tmp_path: Path) -> None:
    _need_browser()
    payload = f"{XSS_SCRIPT} and {XSS_IMG}"

    async def main() -> None:
        a = hs.Memory(SPACE, "a")
        with a.transaction(note=f"note {payload}"):
            a.fields["evil"] = payload
            a.fields[XSS_IMG] = {"nested": XSS_SCRIPT}
            a.text(f"region {XSS_IMG}").set(f"text {payload}\n")
        ins = await Inspector.start(a)
        pw, ctx = await _browser(tmp_path / "profile")
        try:
            page = await ctx.new_page()
            await page.goto(ins.url)
            await _poll_page(page, "document.getElementById('history').textContent"
                             ".includes('note <script>')", "the note")
            text = await page.text_content("body")
            assert text is not None
            assert f'"{payload}"' in text  # the field value, verbatim, as text
            assert XSS_IMG in text and f"region {XSS_IMG}" in text and f"text {payload}" in text
            assert await page.evaluate("typeof window.__xss") == "undefined"
            assert await page.evaluate("document.querySelectorAll('img').length") == 0
            scripts = await page.evaluate(
                "[...document.scripts].map(s => s.getAttribute('src'))")
            assert scripts == ["app.js"]
        finally:
            await ctx.close()
            await pw.stop()
            await ins.stop()
            a.close()

    run(main(), timeout_s=90)


# ---- the CLI -------------------------------------------------------------------------------
ENV = {**os.environ, "PYTHONWARNINGS": "error", "PYTHONUNBUFFERED": "1"}
CLI = [sys.executable, "-m", "hybridsync.cli"]


def _http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:  # loopback only
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_cli_peer_http_serves_the_inspector(tmp_path: Path) -> None:
    key = tmp_path / "group.key"
    key.write_text("3c4b9d2e0f1a6b7c8d9e0f1a2b3c4d5e\n")
    db = tmp_path / "a.db"
    mem = hs.Memory("cli-space", "a", path=str(db))
    mem.fields["from-the-store"] = "yes"
    mem.close()
    err = (tmp_path / "a.err").open("w")
    proc = subprocess.Popen(
        [*CLI, "peer", "--space", "cli-space", "--secret-file", str(key), "--path", str(db),
         "--name", "a", "--http", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=err, text=True, env=ENV,
    )
    try:
        assert proc.stdout is not None
        first, second = proc.stdout.readline(), proc.stdout.readline()
        assert "listening on tcp://127.0.0.1:" in first, first
        m = re.fullmatch(r"inspector: open (http://127\.0\.0\.1:\d+/) in a browser\n", second)
        assert m, (second, (tmp_path / "a.err").read_text())
        url = m.group(1)
        status, page = _http_get(url)
        assert status == 200 and b"hybridsync inspector" in page
        status, body = _http_get(url + "api/state")
        doc = json.loads(body)
        assert status == 200 and doc["identity"]["peer"] == "a"
        assert doc["fields"] == {"from-the-store": "yes"}
        assert doc["network"]["network"] is True
        assert _http_get(url + "api/nope")[0] == 404
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and out.startswith("stopped:"), out
        assert f"inspector on {url}" in (tmp_path / "a.err").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
        err.close()


def test_cli_http_usage_errors_exit_2_before_the_store_opens(tmp_path: Path) -> None:
    key = tmp_path / "group.key"
    key.write_text("3c4b9d2e0f1a6b7c8d9e0f1a2b3c4d5e\n")
    proc = subprocess.run(
        [*CLI, "peer", "--space", "s", "--secret-file", str(key), "--path",
         str(tmp_path / "a.db"), "--http", "nowhere"],
        capture_output=True, text=True, env=ENV, timeout=60, check=False,
    )
    assert proc.returncode == 2 and "--http must look like HOST:PORT" in proc.stderr
    assert not (tmp_path / "a.db").exists()


def test_cli_http_port_in_use_is_exit_1(tmp_path: Path) -> None:
    import socket

    key = tmp_path / "group.key"
    key.write_text("3c4b9d2e0f1a6b7c8d9e0f1a2b3c4d5e\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run(
            [*CLI, "peer", "--space", "s", "--secret-file", str(key), "--path",
             str(tmp_path / "a.db"), "--http", f"127.0.0.1:{port}"],
            capture_output=True, text=True, env=ENV, timeout=60, check=False,
        )
    assert proc.returncode == 1, proc.stderr
    assert "inspector cannot listen" in proc.stderr and "Traceback" not in proc.stderr


def test_artifacts_folder_is_ignored_by_git() -> None:
    root = Path(__file__).resolve().parents[2]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    proc = subprocess.run(["git", "check-ignore", "-q", "tests/artifacts/inspector.png"],
                          cwd=root, capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0
