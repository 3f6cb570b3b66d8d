"""Interoperation with stock Yjs clients: the y-protocols codec and endpoint room.

``Peer.start(..., websocket=(host, port))`` serves the space's fields document to
``y-websocket`` providers (``docs/interop.md``). The WebSocket library is imported only by
the server adapter ``_yws``, which ``Peer`` loads when an endpoint is asked for.
"""

from hybridsync.interop._yproto import (
    AuthDenied,
    AwarenessEntry,
    AwarenessUpdate,
    Message,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode_message,
    decode_state_vector,
    encode_message,
    encode_state_vector,
)

__all__ = [
    "AuthDenied",
    "AwarenessEntry",
    "AwarenessUpdate",
    "Message",
    "QueryAwareness",
    "SyncStep1",
    "SyncStep2",
    "SyncUpdate",
    "decode_message",
    "decode_state_vector",
    "encode_message",
    "encode_state_vector",
]
