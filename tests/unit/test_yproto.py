"""The y-protocols codec (``hybridsync.interop._yproto``): exact bytes, and every way a
message can be malformed."""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest

import hybridsync as hs
from hybridsync.errors import YjsMessageError
from hybridsync.interop import (
    AuthDenied,
    AwarenessEntry,
    AwarenessUpdate,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode_message,
    decode_state_vector,
    encode_message,
    encode_state_vector,
)

# Bytes written by hand from the y-protocols and lib0 specifications.
KNOWN = [
    (SyncStep1(b"\x00"), bytes([0, 0, 1, 0])),
    (SyncStep2(b"\x00\x00"), bytes([0, 1, 2, 0, 0])),
    (SyncUpdate(b"\x01\x02\x03"), bytes([0, 2, 3, 1, 2, 3])),
    (QueryAwareness(), bytes([3])),
    (AuthDenied("no"), bytes([2, 0, 2]) + b"no"),
    (
        AwarenessUpdate((AwarenessEntry(300, 2, '{"a":1}'),)),
        # type 1, then a varUint8Array: count 1, client 300 = 0xAC 0x02, clock 2, state
        bytes([1, 12, 1, 0xAC, 0x02, 2, 7]) + b'{"a":1}',
    ),
    (AwarenessUpdate(()), bytes([1, 1, 0])),
]


@pytest.mark.parametrize(("msg", "data"), KNOWN)
def test_known_bytes_both_ways(msg: Any, data: bytes) -> None:
    assert encode_message(msg) == data
    assert decode_message(data) == msg


def test_long_update_lengths_use_multi_byte_varints() -> None:
    update = bytes(range(256)) * 3  # 768 = 0x80 0x06
    data = encode_message(SyncUpdate(update))
    assert data[:4] == bytes([0, 2, 0x80, 0x06])
    assert decode_message(data) == SyncUpdate(update)


def test_awareness_entries_keep_order_and_removal() -> None:
    msg = AwarenessUpdate((AwarenessEntry(1, 5, "null"), AwarenessEntry(2**32 - 1, 0, '"x 😀"')))
    out = decode_message(encode_message(msg))
    assert out == msg
    assert isinstance(out, AwarenessUpdate)
    assert [e.removed for e in out.entries] == [True, False]


MALFORMED = [
    b"",  # no type
    b"\x80",  # truncated varint
    b"\xff" * 12,  # varint longer than 10 bytes
    b"\x04",  # unknown message type
    b"\x00",  # sync without sub-type
    b"\x00\x03\x00",  # unknown sync sub-type
    b"\x00\x02",  # update without its length
    b"\x00\x02\x05\x00\x00",  # update length past the end
    b"\x00\x02\x00\x00",  # trailing byte after an empty update
    b"\x00\x00\x04\x01\x05\x01\x00",  # state vector with a trailing byte inside
    b"\x00\x00\x05\x02\x05\x01\x05\x02",  # client 5 twice in the state vector
    b"\x00\x00\x02\x09\x01",  # state vector length 9 with 1 byte
    b"\x01\x04\x01\x01\x01\x01",  # awareness: state length past the end
    b"\x01\x05\x01\x01\x01\x01{",  # awareness: state not JSON
    b"\x01\x05\x01\x01\x01\x01\xff",  # awareness: state not UTF-8
    b"\x01\x04\x05\x01\x01\x00",  # awareness count beyond the input
    b"\x01\x06\x01\x01\x01\x01\x31\x00",  # awareness: trailing byte inside
    b"\x02\x01\x00",  # unknown auth sub-type
    b"\x02\x00\x02\xc3\x28",  # auth reason not UTF-8
    b"\x03\x00",  # query awareness with a trailing byte
    b"\x00\x00\x01\x01" + b"\x80" * 7 + b"\x10",  # a varuint beyond 2**53 (lib0's limit)
]


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_messages_raise_one_error(data: bytes) -> None:
    with pytest.raises(YjsMessageError) as info:
        decode_message(data)
    assert isinstance(info.value, hs.FrameError | hs.ProtocolError)
    assert "malformed y-protocols message" in str(info.value)


def test_non_bytes_are_refused() -> None:
    with pytest.raises(YjsMessageError):
        decode_message("text")  # type: ignore[arg-type]
    assert decode_message(bytearray(b"\x03")) == QueryAwareness()


def test_state_vectors_match_pycrdt() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=2**31 + 5)
    m = doc.get("fields", type=pycrdt.Map)
    m["a"] = 1
    m["b"] = "xyz"
    other: pycrdt.Doc[Any] = pycrdt.Doc(client_id=7)
    other.apply_update(doc.get_update())
    other.get("fields", type=pycrdt.Map)["c"] = 3
    sv = decode_state_vector(other.get_state())
    assert sv == {2**31 + 5: 2, 7: 1}
    assert decode_state_vector(encode_state_vector(sv)) == sv
    assert other.get_update(encode_state_vector(sv)) == other.get_update(other.get_state())


def test_state_vector_limit_is_lib0s_unless_raised() -> None:
    big = bytes([1]) + _varuint(2**60) + b"\x01"  # what yrs may write for a 64-bit client
    with pytest.raises(YjsMessageError):
        decode_state_vector(big)
    assert decode_state_vector(big, limit=2**64) == {2**60: 1}


def _varuint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def test_encoder_refuses_numbers_lib0_cannot_read() -> None:
    with pytest.raises(ValueError):
        encode_message(AwarenessUpdate((AwarenessEntry(2**53, 0, "null"),)))
