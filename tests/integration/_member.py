"""A hand-driven member for the peer tests: a real authenticated session on loopback that
the test then drives record by record (stays silent, never reads, reads slowly, ...)."""

from __future__ import annotations

import asyncio
import os
import socket

from hybridsync.peer import _encode_hello
from hybridsync.security import (
    Handshake,
    RecordOpener,
    RecordSealer,
    RecordType,
    space_key,
)
from hybridsync.transport import TcpStream


async def member_client(
    port: int, name: str, *, secret: bytes, space: str, rcvbuf: int | None = None
) -> tuple[TcpStream, RecordSealer, RecordOpener]:
    """Dial ``127.0.0.1:port``, complete the handshake as ``name`` and exchange HELLO;
    ``rcvbuf`` shrinks the socket's receive buffer (to provoke backpressure)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    stream = await TcpStream.wrap(sock, read_buffer_bytes=8192)  # reads slowly when asked
    hs_ = Handshake(space_key(secret, space), initiator=True, nonce=os.urandom(32))
    await stream.send(hs_.start())
    m3 = hs_.receive(await stream.recv(128))
    assert m3 is not None
    await stream.send(m3)
    send_key, recv_key = hs_.keys.for_role(initiator=True)
    sealer, opener = RecordSealer(send_key), RecordOpener(recv_key)
    await stream.send(sealer.seal(RecordType.HELLO, _encode_hello(name, os.urandom(8), "")))
    kind, _ = opener.open(await stream.recv(4096))
    assert kind is RecordType.HELLO
    return stream, sealer, opener
