"""``TcpStream`` on real loopback sockets: several records per write, delivery as they
arrive, backpressure; and a peer session fed records in odd TCP segments (one byte at a
time, an oversized length prefix split across two segments) by a member that knows the key.
No assertion is about timing; every wait is bounded."""

from __future__ import annotations

import asyncio
import os
import socket

from _aio import run, wait_until

import hybridsync as hs
from hybridsync.peer import _encode_hello
from hybridsync.security import Handshake, RecordOpener, RecordSealer, RecordType, space_key
from hybridsync.transport import TcpStream, open_tcp, serve_tcp

SECRET = b"transport test group secret 32 b"
SPACE = "space-transport"


def test_records_written_together_arrive_in_order_and_backpressure_holds() -> None:
    async def main() -> None:
        accepted: asyncio.Queue[TcpStream] = asyncio.Queue()
        listener = await serve_tcp("127.0.0.1", 0, accepted.put_nowait)
        client = await open_tcp("127.0.0.1", listener.port, timeout_s=10)
        server = await asyncio.wait_for(accepted.get(), 10)
        try:
            records = [os.urandom(n) for n in range(0, 3000, 7)]
            client.write(records)  # one transport write
            got: list[bytes] = []
            ends: list[BaseException] = []
            assert await server.recv(4096) == records[0]  # pull first, then push
            server.deliver(got.append, ends.append, 4096)
            await wait_until(lambda: len(got) == len(records) - 1, "every record")
            assert got == records[1:] and ends == []
            assert server.bytes_in == client.bytes_out == sum(4 + len(r) for r in records)

            # The reader stops reading (the handler keeps nothing): the writer's room runs
            # out, and drain() returns once the reader reads again.
            blob = os.urandom(60_000)
            stalled = TcpStream()
            loop = asyncio.get_running_loop()
            a, b = await _pair(loop, listener.port, accepted, stalled)
            writes = 0
            while a.write_room_bytes > 0 and writes < 10_000:
                a.write([blob])
                writes += 1
            assert a.write_room_bytes <= 0 and writes < 10_000
            arrived: list[int] = []
            b.deliver(lambda r: arrived.append(len(r)), ends.append, 1 << 20)
            await asyncio.wait_for(a.drain(), 30)
            await wait_until(lambda: len(arrived) == writes, "the backlog")
            assert set(arrived) == {len(blob)}
            a.close()
            await a.wait_closed()
            await wait_until(lambda: len(ends) == 1, "the end")
            assert isinstance(ends[0], hs.TransportError)
            b.close()
        finally:
            client.close()
            server.close()
            await listener.close()

    run(main())


def test_every_stream_sends_without_nagle_delay() -> None:
    """TCP_NODELAY on both ends, however the stream was made: a small record (a write's one
    frame) goes out at once, not when the previous one is acknowledged. asyncio sets it
    only for sockets whose proto is IPPROTO_TCP; a plain ``socket.socket()`` (proto 0)
    handed to ``TcpStream.wrap`` relies on the stream."""

    def no_delay(stream: TcpStream) -> int:
        sock = stream._transport.get_extra_info("socket")  # type: ignore[union-attr]
        return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    async def main() -> None:
        accepted: asyncio.Queue[TcpStream] = asyncio.Queue()
        listener = await serve_tcp("127.0.0.1", 0, accepted.put_nowait)
        streams: list[TcpStream] = []
        try:
            streams.append(await open_tcp("127.0.0.1", listener.port, timeout_s=10))
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", listener.port))
            assert sock.proto == 0
            streams.append(await TcpStream.wrap(sock))
            for _ in range(2):
                streams.append(await asyncio.wait_for(accepted.get(), 10))
            assert [no_delay(s) for s in streams] == [1, 1, 1, 1]
        finally:
            for s in streams:
                s.abort()
            await listener.close()

    run(main())


async def _pair(
    loop: asyncio.AbstractEventLoop, port: int, accepted: asyncio.Queue[TcpStream],
    client: TcpStream,
) -> tuple[TcpStream, TcpStream]:
    await loop.create_connection(lambda: client, "127.0.0.1", port)
    server = await asyncio.wait_for(accepted.get(), 10)  # reads nothing until deliver()
    return client, server


async def _raw_member(port: int, name: str) -> tuple[
    asyncio.StreamReader, asyncio.StreamWriter, RecordSealer, RecordOpener
]:
    """A member that speaks the wire by hand (plain asyncio streams), past its HELLO."""
    r, w = await asyncio.open_connection("127.0.0.1", port)

    async def read_record() -> bytes:
        head = await r.readexactly(4)
        return await r.readexactly(int.from_bytes(head, "big"))

    hs_ = Handshake(space_key(SECRET, SPACE), initiator=True, nonce=os.urandom(32))
    m1 = hs_.start()
    w.write(len(m1).to_bytes(4, "big") + m1)
    m3 = hs_.receive(await read_record())
    assert m3 is not None
    send_key, recv_key = hs_.keys.for_role(initiator=True)
    sealer, opener = RecordSealer(send_key), RecordOpener(recv_key)
    hello = sealer.seal(RecordType.HELLO, _encode_hello(name, os.urandom(8), ""))
    w.write(len(m3).to_bytes(4, "big") + m3 + len(hello).to_bytes(4, "big") + hello)
    kind, _ = opener.open(await read_record())
    assert kind is RecordType.HELLO
    return r, w, sealer, opener


def test_records_in_one_byte_segments_are_accepted_and_a_split_oversized_prefix_closes() -> None:
    async def main() -> None:
        a = hs.Memory(SPACE, "a")
        pa = await hs.Peer.start(a, secret=SECRET, heartbeat_s=5.0)
        m = hs.Memory(SPACE, "m")
        m.fields["dribbled"] = "one byte per segment"
        m.fields["second"] = 2
        w = None
        try:
            _, w, sealer, _ = await _raw_member(pa.port, "m")
            await wait_until(lambda: "m" in pa.sessions, "the session")
            wire = b"".join(
                len(rec).to_bytes(4, "big") + rec
                for rec in (sealer.seal(RecordType.SYNC, f) for f in m.sync_to("a"))
            )
            for i in range(len(wire)):  # every byte its own segment (TCP_NODELAY)
                w.write(wire[i : i + 1])
                await w.drain()
                await asyncio.sleep(0)
            await wait_until(lambda: a.fields.to_dict().get("second") == 2, "the dribbled frames")
            assert a.fields["dribbled"] == "one byte per segment"
            before = (a.state_digest(), [c.id for c in a.history()])
            errors = pa.stats()["protocol_errors"]
            w.write((0x7FFF_FFFF).to_bytes(4, "big")[:2])
            await w.drain()
            await asyncio.sleep(0.05)  # (lets the two halves arrive apart; not asserted)
            w.write((0x7FFF_FFFF).to_bytes(4, "big")[2:] + b"\x00" * 4096)
            await w.drain()
            await wait_until(lambda: pa.stats()["protocol_errors"] == errors + 1
                             and "m" not in pa.sessions, "rejection and close")
            assert (a.state_digest(), [c.id for c in a.history()]) == before
        finally:
            if w is not None:
                w.transport.abort()
            await pa.stop()

    run(main())
