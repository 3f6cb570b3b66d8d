"""G7 on real loopback sockets: only members get in, and nothing a non-member (or a man in
the middle) sends changes a replica.

Each attack must end with: a rejection counted by the peer, the attacked connection closed,
the replica exactly as before (``state_digest`` and ``history``), and honest sessions still
served. Every wait is bounded; no assertion is about timing.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from _aio import FAST_PEER, converged, run, wait_until

import hybridsync as hs
from hybridsync.security import Handshake, space_key

SECRET = b"g7 test group secret, 32 bytes.."
SPACE = "g7-space-name"
FAST: dict[str, Any] = {**FAST_PEER, "handshake_timeout_s": 2.0}
PING_RECORD_BYTES = 17  # type byte + Poly1305 tag: larger records carry a frame


def snapshot(mem: hs.Memory) -> tuple[str, list[bytes]]:
    return mem.state_digest(), [c.id for c in mem.history()]


async def start(mem: hs.Memory, **options: Any) -> hs.Peer:
    merged = {"secret": SECRET, **FAST, **options}
    return await hs.Peer.start(mem, **merged)


async def read_until_eof(reader: asyncio.StreamReader, limit: int = 1 << 20) -> bytes:
    """Everything the other end sends until it closes (bounded by the test's timeout)."""
    data = bytearray()
    while len(data) < limit:
        chunk = await reader.read(65536)
        if not chunk:
            return bytes(data)
        data += chunk
    raise AssertionError("the peer kept sending")


class Mitm:
    """A man in the middle between a dialer and a listener that knows only the record
    framing (4-byte length + body). Armed with ``mode``, it attacks the next dialer →
    listener record that carries a frame, then refuses new connections until told."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.mode: str | None = None
        self.accepting = True
        self.fired = 0
        self.captured = bytearray()
        self.first_data: bytes | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _accept(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._relay(r, w))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        uw = None
        try:
            if not self.accepting:
                return
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            pumps = [asyncio.create_task(self._pump(r, uw, attack=True)),
                     asyncio.create_task(self._pump(ur, w, attack=False))]
            _, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for p in pending:
                p.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            for writer in (w, uw):
                if writer is not None:
                    writer.transport.abort()

    async def _pump(
        self, r: asyncio.StreamReader, w: asyncio.StreamWriter, *, attack: bool
    ) -> None:
        index = 0
        held: bytes | None = None
        try:
            while True:
                head = await r.readexactly(4)
                body = await r.readexactly(int.from_bytes(head, "big"))
                self.captured += head + body
                record = head + body
                carries_frame = attack and index >= 3 and len(body) > PING_RECORD_BYTES
                if carries_frame and self.first_data is None:
                    self.first_data = record
                index += 1
                if held is not None:  # reorder: the later record goes first
                    w.write(record + held)
                    await w.drain()
                    held = None
                    continue
                if not (carries_frame and self.mode):
                    w.write(record)
                    await w.drain()
                    continue
                mode, self.mode = self.mode, None
                self.fired += 1
                self.accepting = False
                if mode == "tamper":
                    flipped = bytearray(body)
                    flipped[len(flipped) // 2] ^= 0x20
                    w.write(head + bytes(flipped))
                elif mode == "replay":  # an old, once valid record instead of this one
                    assert self.first_data is not None and self.first_data != record
                    w.write(self.first_data)
                elif mode == "reorder":
                    held = record
                elif mode == "truncate":  # the length says more than ever arrives
                    w.write(head + body[: len(body) // 2])
                    await w.drain()
                    return
                elif mode == "shorten":  # a consistent length prefix over a cut record
                    cut = body[:-5]
                    w.write(len(cut).to_bytes(4, "big") + cut)
                elif mode == "oversize":
                    w.write((0x7FFF_FFFF).to_bytes(4, "big") + b"\x00" * 64)
                else:
                    raise AssertionError(mode)
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return


# ---- a man in the middle ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["tamper", "replay", "reorder", "truncate", "shorten",
                                  "oversize"])
def test_attacked_records_close_the_session_and_change_nothing(mode: str) -> None:
    async def main() -> None:
        a, b, c = (hs.Memory(SPACE, n) for n in ("a", "b", "c"))
        pa = await start(a)
        mitm = Mitm(pa.port)
        await mitm.start()
        pb = await start(b, peers=[mitm.url])
        pc = await start(c, peers=[pa.url])  # an honest member, connected directly
        try:
            b.fields["honest"] = 1
            await wait_until(lambda: converged(a, b, c) and "honest" in c.fields.to_dict(),
                             "honest sync through the middle")
            assert mitm.first_data is not None
            before, errors = snapshot(a), pa.stats()["protocol_errors"]
            opened_c = pc.stats()["sessions_opened"]
            mitm.mode = mode
            b.fields["late"] = "sent while attacked"
            await wait_until(lambda: mitm.fired == 1, "the attack")
            await wait_until(lambda: pa.stats()["protocol_errors"] > errors
                             and "b" not in pa.sessions, "rejection and close")
            assert snapshot(a) == before  # the replica is unchanged
            assert "late" not in a.fields.to_dict()
            # the honest member was never disturbed and is still served
            assert "c" in pa.sessions and pc.stats()["sessions_opened"] == opened_c
            a.fields["after_attack"] = True
            await wait_until(lambda: c.fields.to_dict().get("after_attack") is True, "a → c")
            # and b gets through again once the middle stops attacking
            mitm.accepting = True
            await wait_until(lambda: converged(a, b, c) and "late" in a.fields.to_dict(),
                             "recovery")
        finally:
            for p in (pb, pc, pa):
                await p.stop()
            await mitm.stop()

    run(main())


def test_nothing_travels_in_clear() -> None:
    async def main() -> None:
        a, b = hs.Memory(SPACE, "agent-alpha"), hs.Memory(SPACE, "agent-beta")
        pa = await start(a)
        mitm = Mitm(pa.port)
        await mitm.start()
        pb = await start(b, peers=[mitm.url])
        try:
            a.fields["plan"] = "launch-codes-1234"
            b.text("diary").set("dear diary, the password is swordfish")
            await wait_until(lambda: converged(a, b) and "diary" in a.regions(), "sync")
            wire = bytes(mitm.captured)
            assert len(wire) > 200
            for needle in (SPACE, "agent-alpha", "agent-beta", "launch-codes", "swordfish",
                           "plan", "diary"):
                assert needle.encode() not in wire, needle
            assert SECRET not in wire
        finally:
            await pb.stop()
            await pa.stop()
            await mitm.stop()

    run(main())


# ---- non-members ---------------------------------------------------------------------------


def test_wrong_secret_gets_no_session_either_way_and_changes_nothing() -> None:
    async def main() -> None:
        a, w = hs.Memory(SPACE, "a"), hs.Memory(SPACE, "intruder")
        a.fields["private"] = "members only"
        w.fields["poison"] = "x"
        before_a, before_w = snapshot(a), snapshot(w)
        pa = await start(a)
        pw = await start(w, secret=b"not the group secret", peers=[pa.url])
        try:
            with pytest.raises(hs.AuthenticationError):
                await pa.connect(pw.url, timeout_s=10)  # a dials the intruder: rejected too
            await wait_until(lambda: pa.stats()["handshake_failures"] >= 2
                             and pw.stats()["handshake_failures"] >= 2, "failed handshakes")
            assert pa.sessions == {} and pw.sessions == {}
            assert snapshot(a) == before_a and snapshot(w) == before_w
            assert "private" not in w.fields.to_dict()
        finally:
            await pw.stop()
            await pa.stop()

    run(main())


def test_a_wrong_key_initiator_learns_only_the_responder_challenge() -> None:
    async def main() -> None:
        a = hs.Memory(SPACE, "a")
        a.fields["private"] = "members only"
        before = snapshot(a)
        pa = await start(a)
        try:
            r, w = await asyncio.open_connection("127.0.0.1", pa.port)
            hs_ = Handshake(space_key(b"a guessed secret", SPACE), initiator=True,
                            nonce=os.urandom(32))
            m1 = hs_.start()
            w.write(len(m1).to_bytes(4, "big") + m1)
            head = await r.readexactly(4)
            m2 = await r.readexactly(int.from_bytes(head, "big"))
            with pytest.raises(hs.AuthenticationError):
                hs_.receive(m2)  # cannot verify the responder, so it cannot prove itself
            w.write((32).to_bytes(4, "big") + os.urandom(32))
            rest = await read_until_eof(r)
            w.close()
            assert len(m2) == 69 and rest == b""  # then the connection closed, nothing more
            for needle in (SPACE.encode(), b"private", b"members"):
                assert needle not in m2
            await wait_until(lambda: pa.stats()["handshake_failures"] >= 1, "rejection")
            assert snapshot(a) == before and pa.sessions == {}
        finally:
            await pa.stop()

    run(main())


def test_a_member_dialing_an_impostor_sends_only_its_challenge() -> None:
    async def main() -> None:
        received = bytearray()
        closed = asyncio.Event()

        async def impostor(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            head = await r.readexactly(4)
            m1 = await r.readexactly(int.from_bytes(head, "big"))
            received.extend(head + m1)
            fake = Handshake(space_key(b"impostor secret!", SPACE), initiator=False,
                             nonce=os.urandom(32))
            m2 = fake.receive(m1)
            assert m2 is not None
            w.write(len(m2).to_bytes(4, "big") + m2)
            received.extend(await read_until_eof(r))
            w.close()
            closed.set()

        server = await asyncio.start_server(impostor, "127.0.0.1", 0)
        url = f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        a = hs.Memory(SPACE, "a")
        a.fields["private"] = "members only"
        before = snapshot(a)
        pa = await start(a)
        try:
            with pytest.raises(hs.AuthenticationError):
                await pa.connect(url, timeout_s=10)
            await asyncio.wait_for(closed.wait(), 10)
            assert len(received) == 4 + 37  # M1 only: the proof check failed, a hung up
            assert snapshot(a) == before and pa.sessions == {}
        finally:
            await pa.stop()
            server.close()
            await server.wait_closed()

    run(main())


@pytest.mark.parametrize(
    "garbage",
    [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\xff\xff\xff\xff" + b"A" * 100,
     b"\x00\x00\x00\x25HSYN\x01" + b"n" * 20, bytes(range(256)) * 16, b"\x00\x00\x00\x00"],
    ids=["http", "oversized-prefix", "short-hello", "random", "empty-record"],
)
def test_garbage_on_the_port_is_rejected_and_honest_peers_are_served(garbage: bytes) -> None:
    async def main() -> None:
        a, b = hs.Memory(SPACE, "a"), hs.Memory(SPACE, "b")
        a.fields["x"] = 1
        pa = await start(a)
        pb = await start(b, peers=[pa.url])
        try:
            await wait_until(lambda: converged(a, b), "honest sync")
            before = snapshot(a)
            failures = pa.stats()["handshake_failures"] + pa.stats()["handshake_timeouts"]
            r, w = await asyncio.open_connection("127.0.0.1", pa.port)
            w.write(garbage)
            # "short-hello" leaves a record half sent: closed by the handshake timeout
            reply = await read_until_eof(r)
            w.close()
            assert reply == b""  # not even a challenge for malformed input
            await wait_until(lambda: pa.stats()["handshake_failures"]
                             + pa.stats()["handshake_timeouts"] > failures, "rejection")
            assert snapshot(a) == before
            b.fields["y"] = 2
            await wait_until(lambda: a.fields.to_dict().get("y") == 2, "still serving b")
            assert "b" in pa.sessions
        finally:
            await pb.stop()
            await pa.stop()

    run(main())


def test_a_silent_connection_is_dropped() -> None:
    async def main() -> None:
        a = hs.Memory(SPACE, "a")
        before = snapshot(a)
        pa = await start(a, handshake_timeout_s=0.5)
        try:
            r, w = await asyncio.open_connection("127.0.0.1", pa.port)
            assert await read_until_eof(r) == b""  # a says nothing and hangs up
            w.close()
            await wait_until(lambda: pa.stats()["handshake_timeouts"] == 1, "timeout counted")
            assert pa.stats()["pending_handshakes"] == 0 and snapshot(a) == before
        finally:
            await pa.stop()

    run(main())


def test_a_flood_of_connections_is_bounded_and_members_still_get_in() -> None:
    async def main() -> None:
        a, b = hs.Memory(SPACE, "a"), hs.Memory(SPACE, "b")
        a.fields["x"] = 1
        before = snapshot(a)
        pa = await start(a, handshake_timeout_s=1.0, max_pending_handshakes=8)
        flood: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        pb = None
        try:
            for _ in range(64):
                flood.append(await asyncio.open_connection("127.0.0.1", pa.port))
            peak = 0

            def every_attempt_seen() -> bool:
                nonlocal peak
                stats = pa.stats()
                peak = max(peak, stats["pending_handshakes"])
                return stats["accepted"] + stats["rejected_busy"] >= 64

            await wait_until(every_attempt_seen, "every attempt seen")
            assert 0 < peak <= 8
            assert pa.stats()["rejected_busy"] >= 64 - 8 - 8  # a few may finish timing out
            # every flooding connection is closed by a, by refusal or by the timeout
            eofs = await asyncio.gather(*(read_until_eof(r) for r, _ in flood))
            assert eofs == [b""] * len(flood)
            pb = await start(b, peers=[pa.url])
            await wait_until(lambda: converged(a, b) and "x" in b.fields.to_dict(),
                             "a member gets in after the flood")
            assert pa.stats()["pending_handshakes"] == 0
            assert [c.id for c in a.history()] == before[1]
        finally:
            for _, w in flood:
                w.close()
            if pb is not None:
                await pb.stop()
            await pa.stop()

    run(main())
