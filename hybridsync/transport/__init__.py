"""Transports: move records between peers. The seam is :class:`RecordStream`; TCP is the one
implementation today (length-prefixed records, parsed by an asyncio ``Protocol``)."""

from hybridsync.transport._base import RecordStream, format_url, parse_url
from hybridsync.transport._tcp import TcpListener, TcpStream, open_tcp, serve_tcp

__all__ = [
    "RecordStream",
    "TcpListener",
    "TcpStream",
    "format_url",
    "open_tcp",
    "parse_url",
    "serve_tcp",
]
