"""The transport seam: a bidirectional stream of length-delimited records, and peer URLs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from hybridsync.errors import ConfigError

__all__ = ["RecordStream", "format_url", "parse_url"]


class RecordStream(Protocol):
    """What a session needs from a transport: ordered, reliable records with backpressure.

    Reading, two ways. ``recv`` (pull; the handshake uses it) returns the next record,
    raises :class:`~hybridsync.errors.FrameError` for a record longer than ``max_bytes``
    (checked before anything is allocated for it) or cut short, and
    :class:`~hybridsync.errors.TransportError` when the stream ended. ``deliver`` (push; a
    session uses it after the handshake) hands every complete record to ``on_record`` on the
    event loop as soon as it arrived, without a task switch (the records ``recv`` had not
    taken yet first, during the call); if ``on_record`` raises, or the stream ends or breaks
    (the same errors as ``recv``), delivery stops for good and ``on_end`` gets the exception,
    once. ``recv`` may not be called after ``deliver``.

    Writing, two ways. ``write`` hands records to the OS now, in order, in one write, and
    never waits (:class:`~hybridsync.errors.TransportError` when the stream is closed);
    ``write_room_bytes`` is how much more the transport takes before it is over its buffer
    limit (``<= 0``: ``await drain()`` first). ``send`` is ``write`` of one record and
    ``drain``.
    """

    @property
    def remote(self) -> str: ...

    @property
    def bytes_in(self) -> int: ...

    @property
    def bytes_out(self) -> int: ...

    @property
    def write_room_bytes(self) -> int: ...

    def write(self, records: Sequence[bytes]) -> None: ...

    async def drain(self) -> None: ...

    async def send(self, record: bytes) -> None: ...

    async def recv(self, max_bytes: int) -> bytes: ...

    def deliver(
        self,
        on_record: Callable[[bytes], None],
        on_end: Callable[[BaseException], None],
        max_bytes: int,
    ) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    async def wait_closed(self) -> None: ...


def parse_url(url: object) -> tuple[str, int]:
    """``"tcp://host:port"`` → ``(host, port)``; IPv6 hosts in brackets.

    >>> parse_url("tcp://127.0.0.1:7001"), parse_url("tcp://[::1]:80")
    (('127.0.0.1', 7001), ('::1', 80))
    """
    if not isinstance(url, str) or not url.startswith("tcp://"):
        raise ConfigError(f"peer URL must look like tcp://host:port, got {url!r}")
    rest = url[len("tcp://") :].rstrip("/")
    if rest.startswith("["):
        host, sep, port_text = rest[1:].partition("]:")
    else:
        host, sep, port_text = rest.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"peer URL must look like tcp://host:port, got {url!r}")
    return host, int(port_text)


def format_url(host: str, port: int) -> str:
    """The inverse of :func:`parse_url`."""
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
