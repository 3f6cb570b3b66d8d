"""``TcpStream`` record framing, driven byte by byte through a fake asyncio transport:
records split anywhere or packed together come out whole and in order; an oversized length
prefix, a truncated record, a handler that raises and the end of the stream each stop
delivery once, with the right error, and nothing after them is delivered."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from hybridsync.errors import FrameError, HybridSyncError, TransportError
from hybridsync.transport import TcpStream
from hybridsync.transport._tcp import WRITE_BUFFER_BYTES


class FakeTransport(asyncio.Transport):
    """Records what the stream does to its transport; writes go to ``written``."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.paused = False
        self.closing = False
        self.aborted = False
        self.buffered = 0  # what asyncio would still hold (for write_room_bytes)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 4242) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high = high

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(10):
            await test()

    asyncio.run(bounded())


def framed(*records: bytes) -> bytes:
    return b"".join(len(r).to_bytes(4, "big") + r for r in records)


class Sink:
    """A deliver() target that keeps what it was given."""

    def __init__(self, fail_on: bytes | None = None) -> None:
        self.records: list[bytes] = []
        self.ends: list[BaseException] = []
        self.fail_on = fail_on

    def on_record(self, record: bytes) -> None:
        assert isinstance(record, bytes)
        self.records.append(record)
        if record == self.fail_on:
            raise FrameError("the handler rejects this one")

    def on_end(self, exc: BaseException) -> None:
        self.ends.append(exc)


def connected() -> tuple[TcpStream, FakeTransport]:
    stream = TcpStream()
    transport = FakeTransport()
    stream.connection_made(transport)
    return stream, transport


RECORDS = [b"a", b"", b"x" * 300, bytes(range(256)), b"last one"]


def test_records_split_at_every_boundary_or_packed_come_out_whole_and_in_order() -> None:
    wire = framed(*RECORDS)

    async def main() -> None:
        for cuts in [list(range(1, len(wire))), [], [3], [4], [5], [len(wire) - 1]]:
            stream, _ = connected()
            sink = Sink()
            stream.deliver(sink.on_record, sink.on_end, 1024)
            edges = [0, *cuts, len(wire)]
            for a, b in itertools.pairwise(edges):
                stream.data_received(wire[a:b])
            assert sink.records == RECORDS and sink.ends == []
            assert stream.bytes_in == len(wire)
        rng = random.Random(7)
        for _ in range(200):
            stream, _ = connected()
            sink = Sink()
            stream.deliver(sink.on_record, sink.on_end, 1024)
            cuts = sorted(rng.sample(range(1, len(wire)), rng.randint(1, 12)))
            edges = [0, *cuts, len(wire)]
            for a, b in itertools.pairwise(edges):
                stream.data_received(wire[a:b])
            assert sink.records == RECORDS and sink.ends == []

    run(main)


@pytest.mark.parametrize("split", [1, 2, 3, 4])
def test_an_oversized_length_prefix_stops_delivery_before_the_body_is_buffered(split: int) -> None:
    async def main() -> None:
        stream, transport = connected()
        sink = Sink()
        stream.deliver(sink.on_record, sink.on_end, 100)
        head = framed(b"fine") + (0x7FFF_FFFF).to_bytes(4, "big")
        stream.data_received(head[: 8 + split])
        stream.data_received(head[8 + split :])
        assert sink.records == [b"fine"]
        assert len(sink.ends) == 1 and isinstance(sink.ends[0], FrameError)
        assert "exceeds the limit of 100" in str(sink.ends[0])
        assert transport.paused  # it stops reading
        stream.data_received(b"\x00" * 10_000 + framed(b"after"))  # dropped, not buffered
        assert sink.records == [b"fine"] and len(sink.ends) == 1
        assert len(stream._buf) == 0

    run(main)


def test_a_record_exactly_at_the_limit_passes_and_one_byte_more_does_not() -> None:
    async def main() -> None:
        stream, _ = connected()
        sink = Sink()
        stream.deliver(sink.on_record, sink.on_end, 64)
        stream.data_received(framed(b"y" * 64, b"z" * 65))
        assert sink.records == [b"y" * 64]
        assert isinstance(sink.ends[0], FrameError)

    run(main)


@pytest.mark.parametrize(
    ("tail", "error", "text"),
    [(b"", TransportError, "closed the connection"),
     (b"\x00\x00", FrameError, "length prefix"),
     (b"\x00\x00\x00\x09abc", FrameError, "truncated record: 3 of 9")],
    ids=["clean", "inside-prefix", "inside-body"],
)
def test_the_end_of_the_stream_ends_delivery_once(
    tail: bytes, error: type[HybridSyncError], text: str
) -> None:
    async def main() -> None:
        for ending in ("eof", "lost"):
            stream, _ = connected()
            sink = Sink()
            stream.deliver(sink.on_record, sink.on_end, 1024)
            stream.data_received(framed(b"one") + tail)
            if ending == "eof":
                assert stream.eof_received() is False  # asyncio closes the transport
            stream.connection_lost(None)
            assert sink.records == [b"one"]
            assert len(sink.ends) == 1 and isinstance(sink.ends[0], error)
            assert text in str(sink.ends[0])
            await stream.wait_closed()

    run(main)


def test_a_connection_reset_is_a_transport_error_even_inside_a_record() -> None:
    async def main() -> None:
        stream, _ = connected()
        sink = Sink()
        stream.deliver(sink.on_record, sink.on_end, 1024)
        stream.data_received(framed(b"one") + b"\x00\x00\x00\x09ab")
        stream.connection_lost(ConnectionResetError("reset by peer"))
        assert sink.records == [b"one"]
        assert isinstance(sink.ends[0], TransportError) and "reset" in str(sink.ends[0])

    run(main)


def test_a_handler_that_raises_ends_delivery_and_nothing_after_it_is_delivered() -> None:
    async def main() -> None:
        stream, transport = connected()
        sink = Sink(fail_on=b"bad")
        stream.deliver(sink.on_record, sink.on_end, 1024)
        stream.data_received(framed(b"ok", b"bad", b"never", b"nor this"))
        stream.data_received(framed(b"nor later"))
        stream.connection_lost(None)
        assert sink.records == [b"ok", b"bad"]
        assert len(sink.ends) == 1 and "rejects" in str(sink.ends[0])
        assert transport.paused

    run(main)


def test_a_handler_that_closes_the_stream_gets_nothing_more() -> None:
    async def main() -> None:
        stream, _ = connected()
        got: list[bytes] = []

        def on_record(record: bytes) -> None:
            got.append(record)
            stream.abort()

        stream.deliver(on_record, lambda _exc: None, 1024)
        stream.data_received(framed(b"first", b"second"))
        assert got == [b"first"]

    run(main)


def test_records_that_arrived_before_deliver_are_delivered_by_it_and_recv_ends() -> None:
    async def main() -> None:
        stream, _ = connected()
        later = framed(b"early too")
        stream.data_received(framed(b"handshake", b"early") + later[:6])
        assert await stream.recv(128) == b"handshake"
        sink = Sink()
        stream.deliver(sink.on_record, sink.on_end, 1024)
        assert sink.records == [b"early"]  # during the call; the partial one waits
        stream.data_received(later[6:])
        assert sink.records == [b"early", b"early too"] and sink.ends == []
        with pytest.raises(TransportError):
            await stream.recv(128)
        with pytest.raises(TransportError):
            stream.deliver(sink.on_record, sink.on_end, 1024)

    run(main)


def test_recv_checks_the_limit_before_the_body_and_reports_truncation() -> None:
    async def main() -> None:
        stream, _ = connected()
        stream.data_received((5000).to_bytes(4, "big"))
        with pytest.raises(FrameError, match="exceeds the limit of 128"):
            await stream.recv(128)
        stream2, _ = connected()
        stream2.data_received(b"\x00\x00\x00\x10half")
        stream2.eof_received()
        with pytest.raises(FrameError, match="truncated record: 4 of 16"):
            await stream2.recv(128)

    run(main)


def test_recv_waits_for_the_rest_and_pauses_reading_when_its_buffer_is_full() -> None:
    async def main() -> None:
        stream = TcpStream(read_buffer_bytes=16)
        transport = FakeTransport()
        stream.connection_made(transport)
        big = b"r" * 40
        wire = framed(big, b"next")
        stream.data_received(wire[:30])
        assert transport.paused  # more than 16 bytes buffered and not taken
        task = asyncio.create_task(stream.recv(128))
        await asyncio.sleep(0)
        assert not transport.paused and not task.done()  # recv needs more: reading resumes
        stream.data_received(wire[30:])
        assert await task == big
        assert await stream.recv(128) == b"next"

    run(main)


def test_write_puts_every_record_in_one_transport_write() -> None:
    async def main() -> None:
        stream, transport = connected()
        stream.write([b"one", b"", b"three"])
        stream.write([b"alone"])
        stream.write([])
        assert transport.written == [framed(b"one", b"", b"three"), framed(b"alone")]
        assert stream.bytes_out == sum(map(len, transport.written))
        await stream.send(b"sent")
        assert transport.written[-1] == framed(b"sent")

    run(main)


def test_write_room_and_drain_follow_the_transport_and_fail_once_closed() -> None:
    async def main() -> None:
        stream, transport = connected()
        assert stream.write_room_bytes == WRITE_BUFFER_BYTES + 1
        transport.buffered = 1000
        assert stream.write_room_bytes == WRITE_BUFFER_BYTES + 1 - 1000
        stream.pause_writing()
        assert stream.write_room_bytes == 0
        waiter = asyncio.create_task(stream.drain())
        await asyncio.sleep(0)
        assert not waiter.done()
        stream.resume_writing()
        await waiter  # drained
        stream.pause_writing()
        waiter = asyncio.create_task(stream.drain())
        await asyncio.sleep(0)
        transport.abort()
        stream.connection_lost(None)
        with pytest.raises(TransportError):
            await waiter
        assert stream.write_room_bytes == 0
        with pytest.raises(TransportError):
            stream.write([b"late"])
        with pytest.raises(TransportError):
            await stream.drain()

    run(main)


def read_into(stream: TcpStream, data: bytes) -> None:
    """What asyncio does for a ``BufferedProtocol``: fill ``get_buffer()``, then say how much
    (in as many reads as ``data`` needs)."""
    while data:
        buf = stream.get_buffer(-1)
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        data = data[n:]
        stream.buffer_updated(n)


def test_buffered_reads_reuse_one_buffer_and_records_come_out_whole() -> None:
    async def main() -> None:
        big = bytes(random.Random(7).randbytes(150_000))  # spans several reads of the buffer
        records = [b"head", big, b"", b"tail" * 10]
        wire = framed(*records)
        stream, _ = connected()
        sink = Sink()
        stream.deliver(sink.on_record, sink.on_end, 1 << 20)
        first = stream.get_buffer(-1)
        for a, b in itertools.pairwise([0, 3, 5, 70_000, 150_011, len(wire)]):
            read_into(stream, wire[a:b])
            assert stream.get_buffer(-1) is first  # one buffer for every read
        assert sink.records == records and not sink.ends
        assert stream.bytes_in == len(wire)
        # a record is a copy: later reads into the buffer do not change what was delivered
        read_into(stream, framed(b"\xff" * 64))
        assert sink.records[0] == b"head" and sink.records[-1] == b"\xff" * 64

    run(main)


def test_buffered_reads_before_deliver_serve_recv() -> None:
    async def main() -> None:
        stream, _ = connected()
        read_into(stream, framed(b"handshake") + framed(b"next")[:5])
        assert await stream.recv(100) == b"handshake"
        read_into(stream, framed(b"next")[5:])
        assert await stream.recv(100) == b"next"

    run(main)


def test_a_real_socket_is_read_through_the_stream_buffer() -> None:
    async def main() -> None:
        from hybridsync.transport import open_tcp, serve_tcp

        accepted: asyncio.Future[TcpStream] = asyncio.get_running_loop().create_future()
        listener = await serve_tcp("127.0.0.1", 0, accepted.set_result)
        client = await open_tcp("127.0.0.1", listener.port, timeout_s=5)
        server = await accepted
        records = [bytes([i % 251]) * (i * 997 % 70_000) for i in range(40)]
        got: list[bytes] = []
        done = asyncio.get_running_loop().create_future()

        def on_record(r: bytes) -> None:
            got.append(r)
            if len(got) == len(records) and not done.done():
                done.set_result(None)

        server.deliver(on_record, lambda _e: None, 1 << 20)
        client.write(records)
        await client.drain()
        await asyncio.wait_for(done, 5)
        assert got == records
        assert server.get_buffer(-1) is server.get_buffer(-1)
        client.close()
        await listener.close()
        await client.wait_closed()
        server.close()
        await server.wait_closed()

    run(main)


def test_a_read_of_exactly_one_record_is_checked_like_any_other() -> None:
    async def main() -> None:
        stream, transport = connected()
        sink = Sink(fail_on=b"bad")
        stream.deliver(sink.on_record, sink.on_end, 64)
        read_into(stream, framed(b"solo"))  # one read, one whole record
        read_into(stream, framed(b""))
        assert sink.records == [b"solo", b""] and not sink.ends
        read_into(stream, framed(b"bad"))  # the handler raises: delivery ends once
        read_into(stream, framed(b"after"))
        assert sink.records == [b"solo", b"", b"bad"]
        assert len(sink.ends) == 1 and isinstance(sink.ends[0], FrameError)
        assert transport.paused

        stream2, _ = connected()
        sink2 = Sink()
        stream2.deliver(sink2.on_record, sink2.on_end, 64)
        read_into(stream2, framed(b"y" * 65))  # exactly one record, over the limit
        assert sink2.records == [] and len(sink2.ends) == 1
        assert "exceeds the limit" in str(sink2.ends[0])

    run(main)
