"""A deliberately small HTTP/1.1 server side: parse one GET request head, build one response.

Only what the inspector needs (RFC 9112 subset): ``GET``/``HEAD``, no request bodies, no
keep-alive (every response closes its connection), a bounded head. Parsing is a pure
function over bytes; :class:`HttpError` carries the status to answer with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from hybridsync.errors import HybridSyncError

__all__ = [
    "MAX_HEAD_BYTES",
    "HttpError",
    "Request",
    "json_response",
    "parse_request",
    "response",
]

MAX_HEAD_BYTES = 16 << 10
MAX_HEADERS = 64
MAX_QUERY_FIELDS = 16
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

REASONS = {
    200: "OK", 204: "No Content", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
    414: "URI Too Long", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 503: "Service Unavailable",
}

# The page loads its own script and style only; nothing inline, nothing from elsewhere, so
# even a value that slipped through unescaped could not run (defence in depth).
SECURITY_HEADERS = (
    ("Content-Security-Policy",
     "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


class HttpError(HybridSyncError):
    """A request the inspector answers with ``status`` and a short JSON error."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # percent-decoded
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; a repeated header keeps its first value


def parse_request(head: bytes) -> Request:
    """Parse a request head (request line and headers, up to and including the blank line).

    Raises :class:`HttpError` (400, 405, 413, 414, 431) for anything the inspector does not
    serve; never another exception."""
    if len(head) > MAX_HEAD_BYTES:
        raise HttpError(431, "request head too large")
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "request head is not ASCII") from None
    lines = text.split("\r\n")
    request_line, header_lines = lines[0], [ln for ln in lines[1:] if ln]
    parts = request_line.split(" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if not method or any(b not in _TOKEN for b in method.encode()):
        raise HttpError(400, "malformed method")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(400, "unsupported HTTP version")
    if len(target) > 2048:
        raise HttpError(414, "request target too long")
    if not target.startswith("/"):
        raise HttpError(400, "request target must be a path")
    if len(header_lines) > MAX_HEADERS:
        raise HttpError(431, "too many headers")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep or not name or any(b not in _TOKEN for b in name.encode()):
            raise HttpError(400, "malformed header")
        headers.setdefault(name.lower(), value.strip(" \t"))
    if "transfer-encoding" in headers or headers.get("content-length", "0") != "0":
        raise HttpError(413, "request bodies are not accepted")
    if method not in ("GET", "HEAD"):
        raise HttpError(405, f"method {method} not allowed", (("Allow", "GET, HEAD"),))
    split = urlsplit(target)
    try:
        path = unquote(split.path, errors="strict") if "%" in split.path else split.path
        pairs = parse_qsl(split.query, keep_blank_values=True, strict_parsing=bool(split.query),
                          max_num_fields=MAX_QUERY_FIELDS, errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "malformed query string") from None
    query: dict[str, str] = {}
    for k, v in pairs:
        if k in query:
            raise HttpError(400, f"query parameter {k!r} given twice")
        query[k] = v
    return Request(method, path, query, headers)


def response(status: int, body: bytes, content_type: str, *,
             extra: tuple[tuple[str, str], ...] = (), head_only: bool = False) -> bytes:
    """A complete response that closes the connection."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}",
             f"Content-Type: {content_type}", f"Content-Length: {len(body)}",
             "Connection: close", *(f"{k}: {v}" for k, v in SECURITY_HEADERS),
             *(f"{k}: {v}" for k, v in extra)]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return head if head_only else head + body


def json_response(status: int, doc: Any, *, head_only: bool = False,
                  extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """``doc`` as strict JSON (``allow_nan=False``: values are made JSON-safe beforehand)."""
    body = json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    return response(status, body, "application/json; charset=utf-8", head_only=head_only,
                    extra=extra)


def error_response(exc: HttpError, *, head_only: bool = False) -> bytes:
    return json_response(exc.status, {"error": exc.message, "status": exc.status},
                         head_only=head_only, extra=exc.headers)


def sse_head() -> bytes:
    lines = ["HTTP/1.1 200 OK", "Content-Type: text/event-stream; charset=utf-8",
             "Connection: close", *(f"{k}: {v}" for k, v in SECURITY_HEADERS)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def sse_event(event: str, data: Any) -> bytes:
    """One Server-Sent Event (WHATWG HTML §9.2): JSON on one ``data:`` line."""
    payload = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()
