"""``hs.Peer`` send path on loopback: coalesced flushes (at most one per ``coalesce_s``),
group commit driven by ``on_pending``, order kept, nothing lost under backpressure.

The remote end is a hand-driven member (``Member``): it completes the handshake, records
every SYNC frame it receives, feeds them to its own replica and answers with that replica's
frames, reading as slowly as a test asks. The bounds asserted are the coalescing contract
(at most one flush per window and per tick, measured against the loop's own clock for the
span the writes took), never how fast anything ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from _aio import run, wait_until
from _member import member_client

import hybridsync as hs
from hybridsync.security import (
    RecordOpener,
    RecordSealer,
    RecordType,
)
from hybridsync.transport import TcpStream
from hybridsync.wire import decode_frame

SECRET = b"peer batching test group secret"
SPACE = "space-peer-batching"
OPTIONS: dict[str, Any] = {"heartbeat_s": 5.0, "handshake_timeout_s": 5.0,
                           "reconnect_min_s": 0.05, "reconnect_max_s": 0.5}


class Member:
    """A remote member driven by the test: a replica of its own behind a real session."""

    def __init__(self, mem: hs.Memory, read_delay_s: float = 0.0) -> None:
        self.mem = mem
        self.read_delay_s = read_delay_s
        self.frames: list[list[tuple[str, int]]] = []  # dots carried by each SYNC frame
        self.task: asyncio.Task[None] | None = None
        self.stream: TcpStream | None = None

    async def connect(self, port: int, rcvbuf: int | None = None) -> None:
        stream, sealer, opener = await member_client(
            port, self.mem.peer, secret=SECRET, space=SPACE, rcvbuf=rcvbuf
        )
        self.stream = stream
        self.task = asyncio.create_task(self._serve(stream, sealer, opener))

    async def _serve(self, stream: TcpStream, sealer: RecordSealer, opener: RecordOpener) -> None:
        while True:
            if self.read_delay_s:
                await asyncio.sleep(self.read_delay_s)
            try:
                record = await stream.recv(1 << 25)
            except hs.TransportError:
                return
            kind, body = opener.open(record)
            if kind is not RecordType.SYNC:
                continue
            self.frames.append([(d.author, d.seq) for d in decode_frame(body).drafts])
            self.mem.receive("writer", body)
            for frame in self.mem.sync_to("writer"):
                await stream.send(sealer.seal(RecordType.SYNC, frame))

    def carrying(self) -> list[list[tuple[str, int]]]:
        """The frames that carried contributions."""
        return [f for f in self.frames if f]

    def first_seen_order(self) -> list[int]:
        """The writer's seqs in the order they first arrived (retransmissions skipped)."""
        seen: set[int] = set()
        order = []
        for frame in self.frames:
            for author, seq in frame:
                if author == "writer" and seq not in seen:
                    seen.add(seq)
                    order.append(seq)
        return order

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.stream is not None:
            self.stream.abort()


def _commits(mem: hs.Memory) -> int:
    """How many contributions ``mem`` made (history() may be compacted)."""
    return mem.version_vector.to_dict().get(mem.peer, 0)


def _bound(span_s: float, coalesce_s: float, sync_interval_s: float) -> int:
    """Flushes that may run in ``span_s``: one at once, one per coalescing window, one per
    tick (the timer flushes too), and the one that ends the last window."""
    return 2 + math.ceil(span_s / coalesce_s) + math.ceil(span_s / sync_interval_s)


@pytest.mark.parametrize("group", [False, True])
def test_a_burst_of_writes_shares_frames(group: bool) -> None:
    coalesce_s, interval_s, n = 0.2, 1.0, 300

    async def main() -> None:
        w = hs.Memory(SPACE, "writer", group_commit=group)
        pw = await hs.Peer.start(w, secret=SECRET, coalesce_s=coalesce_s,
                                 sync_interval_s=interval_s, **OPTIONS)
        member = Member(hs.Memory(SPACE, "member"))
        try:
            await member.connect(pw.port)
            await wait_until(lambda: "member" in pw.sessions, "session")
            await asyncio.sleep(coalesce_s)  # the session's first flush is behind us
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for i in range(n):
                w.fields[f"k{i:04d}"] = i
                await asyncio.sleep(0)  # an agent that yields between writes
            span = loop.time() - t0
            await wait_until(lambda: len(member.mem.fields) == n, "every write")
            assert member.mem.fields.to_dict() == w.fields.to_dict()
            carrying = member.carrying()
            assert len(carrying) <= _bound(span, coalesce_s, interval_s) < n // 10
            if group:  # one contribution per flush, not one per write
                assert _commits(w) <= _bound(span, coalesce_s, interval_s)
            else:
                assert _commits(w) == n
            assert member.first_seen_order() == list(range(1, _commits(w) + 1))
        finally:
            await member.close()
            await pw.stop()

    run(main())


@contextlib.asynccontextmanager
async def _quiet_session(w: hs.Memory) -> AsyncIterator[tuple[hs.Peer, Member]]:
    """``w`` served by a peer with a 0.3 s coalescing window and a 30 s tick, one member
    connected, after the first exchange and a second of quiet (several windows)."""
    pw = await hs.Peer.start(w, secret=SECRET, coalesce_s=0.3, sync_interval_s=30.0,
                             **OPTIONS)
    member = Member(hs.Memory(SPACE, "member"))
    try:
        await member.connect(pw.port)
        await wait_until(lambda: "member" in pw.sessions, "session")
        await wait_until(lambda: len(member.frames) >= 1, "the first exchange")
        await asyncio.sleep(1.0)  # several windows without a change
        yield pw, member
    finally:
        await member.close()
        await pw.stop()


def test_a_write_after_a_quiet_spell_goes_out_at_once() -> None:
    """The window only delays a flush that follows another within it: after a quiet spell,
    a write is committed and sent within a few loop iterations (``on_pending`` -> flush),
    not at the end of a 1 s window, the 30 s tick or the 1 s poll interval."""

    async def main() -> None:
        w = hs.Memory(SPACE, "writer", group_commit=True)
        async with _quiet_session(w) as (pw, member):
            before = pw.sessions["member"].frames_out
            w.fields["lone"] = "write"
            assert w.pending_writes == 1
            for _ in range(10):  # a few loop iterations, far less than a window
                await asyncio.sleep(0)
            assert w.pending_writes == 0 and _commits(w) == 1
            assert pw.sessions["member"].frames_out == before + 1
            await wait_until(lambda: member.mem.fields.get("lone") == "write", "the lone write")

    run(main())


def test_an_autocommitted_write_after_a_quiet_spell_is_written_before_it_returns() -> None:
    """Without group commit the write is a commit, and the peer's observer flushes it in
    the same step: its frame is on the socket when the assignment returns. A second write
    inside the window is not flushed in its step (coalesced), and arrives all the same."""

    async def main() -> None:
        w = hs.Memory(SPACE, "writer")
        async with _quiet_session(w) as (pw, member):
            before = pw.sessions["member"].frames_out
            w.fields["first"] = 1
            assert pw.sessions["member"].frames_out == before + 1  # no await in between
            w.fields["second"] = 2
            assert pw.sessions["member"].frames_out == before + 1  # inside the window
            await wait_until(lambda: member.mem.fields.get("second") == 2, "the second write")
            assert member.first_seen_order() == [1, 2]

    run(main())


def test_without_any_session_a_pending_write_is_still_committed_soon(tmp_path: Any) -> None:
    """Durability does not wait for a peer: the flush a write asks for commits its batch
    (with SQLite: durable) within a few loop iterations, not at the next tick or poll."""

    async def main() -> None:
        w = hs.Memory(SPACE, "writer", group_commit=True, path=str(tmp_path / "w.db"))
        pw = await hs.Peer.start(w, secret=SECRET, sync_interval_s=30.0, **OPTIONS)
        try:
            await asyncio.sleep(0.05)
            w.fields["alone"] = 1
            w.fields["together"] = 2
            assert w.pending_writes == 2
            for _ in range(10):
                await asyncio.sleep(0)
            assert w.pending_writes == 0 and _commits(w) == 1
        finally:
            await pw.stop()
            w.close()

    run(main())


def test_a_slow_reader_gets_everything_in_order_and_the_queue_stays_bounded() -> None:
    n = 400

    async def main() -> None:
        w = hs.Memory(SPACE, "writer", group_commit=True)
        pw = await hs.Peer.start(w, secret=SECRET, coalesce_s=0.001, sync_interval_s=0.05,
                                 write_timeout_s=30.0, **OPTIONS)
        member = Member(hs.Memory(SPACE, "member"), read_delay_s=0.005)
        try:
            await member.connect(pw.port, rcvbuf=4096)
            await wait_until(lambda: "member" in pw.sessions, "session")
            max_queued = 0
            payload = "x" * 3000  # small values (batched), 1.2 MB in all
            for i in range(n):
                w.fields[f"k{i:04d}"] = f"{i}:{payload}"
                await asyncio.sleep(0)
                info = pw.sessions.get("member")
                if info is not None:
                    max_queued = max(max_queued, info.queued)
            await wait_until(lambda: len(member.mem.fields) == n, "every write", timeout_s=60)
            assert member.mem.fields.to_dict() == w.fields.to_dict()
            # nothing lost, in order: every contribution arrived, first arrivals by seq
            assert member.first_seen_order() == list(range(1, _commits(w) + 1))
            # while the socket was busy, writes piled up in the batch, not in the queue:
            # the queue held at most one sync_to batch (and a heartbeat)
            assert max_queued <= 3
            assert _commits(w) < n
            assert pw.stats()["write_timeouts"] == 0 and pw.stats()["protocol_errors"] == 0
        finally:
            await member.close()
            await pw.stop()

    run(main(), timeout_s=120)


def test_two_peers_converge_with_group_commit_both_ways() -> None:
    async def main() -> None:
        a = hs.Memory(SPACE, "a", group_commit=True)
        b = hs.Memory(SPACE, "b", group_commit=True)
        pa = await hs.Peer.start(a, secret=SECRET, **OPTIONS)
        pb = await hs.Peer.start(b, secret=SECRET, peers=[pa.url], **OPTIONS)
        try:
            await wait_until(lambda: "b" in pa.sessions and "a" in pb.sessions, "session")
            for i in range(200):
                a.fields[f"a{i % 50}"] = i
                b.fields[f"b{i % 50}"] = i
                if i % 20 == 0:
                    a.fields["shared"] = f"a{i}"
                    b.fields["shared"] = f"b{i}"
                await asyncio.sleep(0)

            def settled() -> bool:
                return (a.pending_writes == b.pending_writes == 0
                        and a.state_digest() == b.state_digest() and a.heads == b.heads)

            await wait_until(settled, "convergence")
            assert a.fields["a49"] == 199 and a.fields["b49"] == 199
            assert [c.location for c in a.conflicts()] == [c.location for c in b.conflicts()]
        finally:
            await pb.stop()
            await pa.stop()

    run(main())
