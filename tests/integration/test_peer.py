"""``hs.Peer`` on real loopback sockets: sync both ways, relays, restart from SQLite,
heartbeats, reconnection, duplicate connections, backpressure, a clean stop.

Every wait is bounded (``wait_until`` polls a condition under a deadline); no assertion is
about timing.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _aio import FAST_PEER, converged, run, wait_until
from _member import member_client as _member_client

import hybridsync as hs
from hybridsync.security import (
    RecordOpener,
    RecordSealer,
    RecordType,
)
from hybridsync.transport import TcpStream

SECRET = b"integration test group secret"
SPACE = "space-peer-tests"
FAST = FAST_PEER


async def start(mem: hs.Memory, **options: Any) -> hs.Peer:
    merged = {**FAST, **options}
    return await hs.Peer.start(mem, secret=SECRET, **merged)


async def member_client(
    port: int, name: str, *, secret: bytes = SECRET, rcvbuf: int | None = None
) -> tuple[TcpStream, RecordSealer, RecordOpener]:
    """A hand-driven member of this file's space (``_member.member_client``)."""
    return await _member_client(port, name, secret=secret, space=SPACE, rcvbuf=rcvbuf)


# ---- sync ----------------------------------------------------------------------------------


def test_two_peers_sync_fields_texts_and_buffers_both_ways() -> None:
    async def main() -> None:
        a, b = hs.Memory(SPACE, "a"), hs.Memory(SPACE, "b")
        pa = await start(a)
        pb = await start(b, peers=[pa.url])
        try:
            assert pa.url == f"tcp://127.0.0.1:{pa.port}"
            a.fields["goal"] = "ship v1"
            a.fields["tasks"] = {"t1": {"status": "open"}}
            b.text("scratchpad").set("hello from b\n" * 50)
            kv = b.buffer("kv/b", shape=(64, 16), dtype="float16")
            kv.array[3] = 0.5
            b.commit()
            await wait_until(lambda: converged(a, b) and "kv/b" in a.regions()
                             and "goal" in b.fields.to_dict(), "first sync")
            assert b.fields["tasks"]["t1"]["status"] == "open"
            assert a.text("scratchpad").value == "hello from b\n" * 50
            assert float(a.buffer("kv/b", shape=(64, 16), dtype="float16").array[3, 0]) == 0.5
            # and back again, concurrently from both sides
            a.text("scratchpad").set("hello from a\n" + "hello from b\n" * 49)
            a.commit()
            b.fields["tasks"]["t1"]["status"] = "done"
            await wait_until(lambda: converged(a, b)
                             and a.fields["tasks"]["t1"]["status"] == "done"
                             and b.text("scratchpad").value.startswith("hello from a"),
                             "second sync")
            sa, sb = pa.sessions["b"], pb.sessions["a"]
            assert sa.peer == "b" and sb.peer == "a" and sb.initiator and not sa.initiator
            assert sa.state == "open" and sa.frames_in > 0 and sa.frames_out > 0
            assert sa.bytes_in > 0 and sb.bytes_out > 0 and sb.listen_url == pa.url
            assert pa.stats()["protocol_errors"] == 0 and pa.stats()["sessions"] == 1
        finally:
            await pb.stop()
            await pa.stop()

    run(main())


def test_three_peers_in_a_chain_relay_to_each_other() -> None:
    async def main() -> None:
        a, b, c = (hs.Memory(SPACE, n) for n in "abc")
        pa = await start(a)
        pb = await start(b, peers=[pa.url])
        pc = await start(c, peers=[pb.url])  # c never talks to a directly
        try:
            a.fields["from_a"] = 1
            c.fields["from_c"] = 3
            c.text("notes").set("written on c")
            b.buffer("blob", shape=(1000,), dtype="uint8").array[:] = 7
            b.commit()
            await wait_until(lambda: converged(a, b, c) and "from_c" in a.fields.to_dict()
                             and "from_a" in c.fields.to_dict() and "notes" in a.regions()
                             and "blob" in c.regions(), "three-way convergence")
            assert a.text("notes").value == "written on c"
            assert set(pa.sessions) == {"b"} and set(pc.sessions) == {"b"}
            assert set(pb.sessions) == {"a", "c"}
        finally:
            for p in (pc, pb, pa):
                await p.stop()

    run(main())


def test_restart_from_sqlite_and_rejoin(tmp_path: Path) -> None:
    db = str(tmp_path / "a.db")

    async def main() -> None:
        a = hs.Memory(SPACE, "a", path=db)
        b = hs.Memory(SPACE, "b")
        pa = await start(a)
        pb = await start(b, peers=[pa.url])
        a.fields["before"] = "a"
        b.fields["from_b"] = "b"
        await wait_until(lambda: converged(a, b) and "from_b" in a.fields.to_dict(), "sync")
        await pa.stop()
        a.close()
        b.fields["while_a_was_down"] = True
        b.text("log").set("b kept writing")
        b.commit()
        a2 = hs.Memory(SPACE, "a", path=db)
        assert a2.fields.to_dict() == {"before": "a", "from_b": "b"}  # durable, nothing lost
        pa2 = await start(a2, peers=[pb.url])
        try:
            await wait_until(lambda: converged(a2, b)
                             and "while_a_was_down" in a2.fields.to_dict(), "rejoin")
            assert a2.text("log").value == "b kept writing"
            a2.fields["after"] = 2
            await wait_until(lambda: b.fields.to_dict().get("after") == 2, "a2 → b")
        finally:
            await pa2.stop()
            await pb.stop()
            a2.close()

    run(main())


# ---- liveness --------------------------------------------------------------------------------


def test_heartbeat_closes_a_member_that_goes_silent() -> None:
    async def main() -> None:
        a = hs.Memory(SPACE, "a")
        pa = await start(a, heartbeat_s=0.2)
        try:
            stream, _, opener = await member_client(pa.port, "mute")
            await wait_until(lambda: "mute" in pa.sessions, "the member's session")
            # we stay silent; the peer keeps pinging, then gives up on us
            await wait_until(lambda: pa.stats()["heartbeat_timeouts"] >= 1, "heartbeat timeout")
            assert "mute" not in pa.sessions
            pings = 0
            with pytest.raises(hs.TransportError):
                for _ in range(1000):
                    kind, _ = opener.open(await asyncio.wait_for(stream.recv(1 << 20), 10))
                    pings += kind is RecordType.PING
            assert pings >= 1  # it did send heartbeats before closing
            stream.close()
            await stream.wait_closed()
        finally:
            await pa.stop()

    run(main())


def test_reconnects_with_backoff_when_the_listener_comes_back() -> None:
    async def main() -> None:
        a, b = hs.Memory(SPACE, "a"), hs.Memory(SPACE, "b")
        pa = await start(a)
        port, url = pa.port, pa.url
        await pa.stop()  # nobody listens there now
        pb = await start(b, peers=[url], reconnect_min_s=0.02, reconnect_max_s=0.3)
        pa2 = None
        try:
            await wait_until(lambda: pb.stats()["dial_failures"] >= 4, "failed dials")
            assert pb.sessions == {}
            b.fields["queued"] = "while a was away"
            pa2 = await start(a, port=port)
            await wait_until(lambda: "b" in pa2.sessions and converged(a, b)
                             and "queued" in a.fields.to_dict(), "reconnect and sync")
            # a session that drops is redialed too
            await pa2.stop()
            pa2 = await start(a, port=port)
            a.fields["second"] = 2
            await wait_until(lambda: b.fields.to_dict().get("second") == 2, "second reconnect")
            assert pb.stats()["sessions_opened"] >= 2
        finally:
            await pb.stop()
            if pa2 is not None:
                await pa2.stop()

    run(main())


def test_backoff_grows_exponentially_with_jitter_and_is_bounded() -> None:
    import random

    async def main() -> None:
        pa = await hs.Peer.start(hs.Memory(SPACE, "a"), secret=SECRET, reconnect_min_s=0.1,
                                 reconnect_max_s=2.0, rng=random.Random(4))
        try:
            for failures, base in [(0, 0.1), (1, 0.2), (3, 0.8), (4, 1.6), (5, 2.0), (60, 2.0)]:
                delays = [pa._backoff_s(failures) for _ in range(200)]
                assert all(base / 2 <= d <= base for d in delays), failures
                assert len(set(delays)) > 150  # jittered, not one fixed value
        finally:
            await pa.stop()

    run(main())


def test_connect_to_a_closed_port_raises_and_keeps_serving() -> None:
    async def main() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = f"tcp://127.0.0.1:{s.getsockname()[1]}"
        a, b = hs.Memory(SPACE, "a"), hs.Memory(SPACE, "b")
        pa, pb = await start(a), await start(b)
        try:
            with pytest.raises(hs.TransportError):
                await pa.connect(dead, timeout_s=5)
            assert await pa.connect(pb.url, timeout_s=10) == "b"
            assert await pa.connect(pb.url) == "b"  # already connected: returns at once
            with pytest.raises(hs.ConfigError):
                await pa.connect("127.0.0.1:80")
        finally:
            await pa.stop()
            await pb.stop()

    run(main())


def test_simultaneous_dials_end_with_one_session() -> None:
    async def main() -> None:
        a, b = hs.Memory(SPACE, "a"), hs.Memory(SPACE, "b")
        pa, pb = await start(a), await start(b)
        try:
            names = await asyncio.gather(pa.connect(pb.url), pb.connect(pa.url))
            assert names == ["b", "a"]

            def one_session() -> bool:
                sa, sb = pa.sessions.get("b"), pb.sessions.get("a")
                return (
                    sa is not None and sb is not None and sa.initiator and not sb.initiator
                    and pa.stats()["sessions_opened"] - pa.stats()["sessions_closed"] == 1
                    and pb.stats()["sessions_opened"] - pb.stats()["sessions_closed"] == 1
                )

            # the connection dialed by the smaller name ("a") wins on both sides
            await wait_until(one_session, "exactly one session")
            a.fields["x"] = 1
            b.fields["y"] = 2
            await wait_until(lambda: converged(a, b) and len(a.fields.to_dict()) == 2, "sync")
            assert one_session()
        finally:
            await pa.stop()
            await pb.stop()

    run(main())


def test_backpressure_bounds_what_a_reader_that_does_not_read_costs() -> None:
    async def main() -> None:
        a, b = hs.Memory(SPACE, "a"), hs.Memory(SPACE, "b")
        pa = await start(a, heartbeat_s=1.0, write_timeout_s=1.5)
        pb = await start(b, peers=[pa.url])
        stream, sealer, _ = await member_client(pa.port, "slow", rcvbuf=4096)
        try:
            await wait_until(lambda: "slow" in pa.sessions and "b" in pa.sessions, "sessions")
            rng = np.random.default_rng(1)
            buf = a.buffer("big", shape=(1024, 256), dtype="float32")  # 1 MiB
            written = max_queued = max_bytes_out = 0
            alive = True
            for _ in range(16):
                buf.array[:] = rng.random((1024, 256), dtype=np.float32)
                a.commit()
                written += buf.array.nbytes
                for _ in range(10):  # the slow member keeps its session alive, never reads
                    if alive:
                        try:
                            await stream.send(sealer.seal(RecordType.PING, b""))
                        except hs.TransportError:
                            alive = False  # closed by the write timeout (checked below)
                    await asyncio.sleep(0.01)
                    info = pa.sessions.get("slow")
                    if info is not None:
                        max_queued = max(max_queued, info.queued)
                        max_bytes_out = max(max_bytes_out, info.bytes_out)
            # Only what the kernel and the transport hold went out, not everything written,
            # and the queue never held more than one sync_to batch (16 frames at most).
            assert 0 < max_queued <= 16
            assert 0 < max_bytes_out < written // 2
            # The stuck session is closed by the write timeout; the honest peer got it all.
            await wait_until(lambda: pa.stats()["write_timeouts"] >= 1, "write timeout")
            await wait_until(lambda: converged(a, b), "the honest peer converges")
        finally:
            stream.abort()
            await pb.stop()
            await pa.stop()

    run(main(), timeout_s=120)


# ---- stop ----------------------------------------------------------------------------------


def test_stop_flushes_says_goodbye_and_leaves_no_tasks_or_threads() -> None:
    threads_before = set(threading.enumerate())

    async def main() -> None:
        a, b = hs.Memory(SPACE, "a"), hs.Memory(SPACE, "b")
        # a long sync interval: only the flush in stop() can deliver the last text edit
        pa = await start(a, sync_interval_s=30.0, heartbeat_s=30.0)
        pb = await start(b, peers=[pa.url])
        await wait_until(lambda: "b" in pa.sessions, "session")
        a.text("last").set("committed by stop()")  # a region edit waits for the next cycle
        await pa.stop()
        await pa.stop()  # idempotent
        await wait_until(lambda: "last" in b.regions(), "the flushed edit")
        assert b.text("last").value == "committed by stop()"
        await wait_until(lambda: pb.stats()["goodbyes"] == 1 and pb.sessions == {}, "goodbye")
        await pb.stop()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert others == []

    run(main())
    assert set(threading.enumerate()) == threads_before


@pytest.mark.parametrize(
    "options",
    [{"secret": "str"}, {"secret": b"short"}, {"port": -1}, {"heartbeat_s": 0},
     {"heartbeat_s": 1.0, "dead_after_s": 0.5}, {"discovery": "dns"}, {"peers": "tcp://h:1"},
     {"peers": ["h:1"]}, {"max_pending_handshakes": 0}, {"reconnect_min_s": 2.0,
     "reconnect_max_s": 1.0}, {"max_record_bytes": 10}],
)
def test_bad_options_are_config_errors(options: dict[str, Any]) -> None:
    async def main() -> None:
        merged: dict[str, Any] = {"secret": SECRET, **options}
        with pytest.raises(hs.ConfigError):
            await hs.Peer.start(hs.Memory(SPACE, "a"), **merged)
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []

    run(main())
