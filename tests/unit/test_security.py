"""hybridsync.security (sans-I/O): key schedule, handshake, record layer; and peer URLs."""

from __future__ import annotations

import random

import pytest

from hybridsync.errors import AuthenticationError, ConfigError, FrameError
from hybridsync.security import (
    RECORD_OVERHEAD_BYTES,
    Handshake,
    RecordOpener,
    RecordSealer,
    RecordType,
    space_key,
    space_tag,
)
from hybridsync.transport import format_url, parse_url

SECRET = b"correct horse battery staple"


def _nonces(seed: int) -> tuple[bytes, bytes]:
    rnd = random.Random(seed)
    return rnd.randbytes(32), rnd.randbytes(32)


def _run(key_i: bytes, key_r: bytes, seed: int = 1) -> tuple[Handshake, Handshake]:
    """Run all three messages; raises where a side rejects."""
    ni, nr = _nonces(seed)
    i = Handshake(key_i, initiator=True, nonce=ni)
    r = Handshake(key_r, initiator=False, nonce=nr)
    m2 = r.receive(i.start())
    assert m2 is not None
    m3 = i.receive(m2)
    assert m3 is not None
    assert r.receive(m3) is None
    return i, r


# ---- key schedule --------------------------------------------------------------------------


def test_space_key_depends_on_secret_and_space() -> None:
    k = space_key(SECRET, "s1")
    assert len(k) == 32
    assert k == space_key(SECRET, "s1")
    assert k != space_key(SECRET, "s2")
    assert k != space_key(SECRET + b"!", "s1")


def test_space_tag_is_stable_keyed_and_does_not_contain_the_name() -> None:
    tag = space_tag(SECRET, "swarm-1")
    assert tag == space_tag(SECRET, "swarm-1")
    assert len(tag) == 32 and int(tag, 16) >= 0
    assert tag != space_tag(SECRET, "swarm-2")
    assert tag != space_tag(b"another group secret", "swarm-1")
    assert "swarm" not in tag
    assert tag not in space_key(SECRET, "swarm-1").hex()  # not a prefix of the handshake key


@pytest.mark.parametrize("secret", [b"short", "a str secret", b"x" * 5000, None])
def test_bad_secrets_are_config_errors(secret: object) -> None:
    with pytest.raises(ConfigError):
        space_key(secret, "s")  # type: ignore[arg-type]


def test_empty_space_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        space_tag(SECRET, "")


# ---- handshake -----------------------------------------------------------------------------


def test_handshake_agrees_on_keys_and_message_sizes() -> None:
    key = space_key(SECRET, "s")
    ni, nr = _nonces(3)
    i = Handshake(key, initiator=True, nonce=ni)
    r = Handshake(key, initiator=False, nonce=nr)
    m1 = i.start()
    m2 = r.receive(m1)
    assert m2 is not None
    m3 = i.receive(m2)
    assert m3 is not None
    assert not r.done
    r.receive(m3)
    assert (len(m1), len(m2), len(m3)) == (37, 69, 32)
    assert i.done and r.done and i.keys == r.keys
    send_i, recv_i = i.keys.for_role(initiator=True)
    send_r, recv_r = r.keys.for_role(initiator=False)
    assert send_i == recv_r and send_r == recv_i and send_i != send_r
    assert i.initiator_nonce == r.initiator_nonce == ni
    assert "hidden" in repr(i.keys) and send_i.hex() not in repr(i.keys)


def test_fresh_nonces_give_fresh_session_keys() -> None:
    key = space_key(SECRET, "s")
    a, _ = _run(key, key, seed=1)
    b, _ = _run(key, key, seed=2)
    assert a.keys != b.keys


def test_handshake_messages_carry_no_secret_space_or_key_material() -> None:
    key = space_key(SECRET, "my-space")
    ni, nr = _nonces(5)
    i = Handshake(key, initiator=True, nonce=ni)
    r = Handshake(key, initiator=False, nonce=nr)
    m1 = i.start()
    m2 = r.receive(m1)
    assert m2 is not None
    m3 = i.receive(m2)
    assert m3 is not None
    wire = m1 + m2 + m3
    for needle in (SECRET, b"my-space", key, *i.keys.for_role(initiator=True)):
        assert needle not in wire


def test_wrong_key_responder_is_rejected_by_the_initiator() -> None:
    with pytest.raises(AuthenticationError, match="responder"):
        _run(space_key(SECRET, "s"), space_key(b"wrong secret!", "s"))


def test_wrong_key_initiator_is_rejected_by_the_responder() -> None:
    good, bad = space_key(SECRET, "s"), space_key(b"wrong secret!", "s")
    ni, nr = _nonces(7)
    i = Handshake(bad, initiator=True, nonce=ni)
    r = Handshake(good, initiator=False, nonce=nr)
    m2 = r.receive(i.start())
    assert m2 is not None
    # The initiator cannot verify the responder, so it cannot make M3 either: an attacker
    # without the key can only send something else.
    with pytest.raises(AuthenticationError):
        i.receive(m2)
    with pytest.raises(AuthenticationError, match="initiator"):
        r.receive(b"\x00" * 32)
    assert not r.done
    with pytest.raises(AuthenticationError):
        r.receive(b"\x00" * 32)  # dead after a failure


def test_other_space_same_secret_fails() -> None:
    with pytest.raises(AuthenticationError):
        _run(space_key(SECRET, "s1"), space_key(SECRET, "s2"))


def test_reflected_responder_proof_is_not_an_initiator_proof() -> None:
    key = space_key(SECRET, "s")
    ni, nr = _nonces(9)
    r = Handshake(key, initiator=False, nonce=nr)
    m2 = r.receive(Handshake(key, initiator=True, nonce=ni).start())
    assert m2 is not None
    with pytest.raises(AuthenticationError):
        r.receive(m2[-32:])  # the responder's own proof sent back


def test_replayed_m3_from_an_old_session_is_rejected() -> None:
    key = space_key(SECRET, "s")
    ni, nr = _nonces(11)
    i = Handshake(key, initiator=True, nonce=ni)
    r = Handshake(key, initiator=False, nonce=nr)
    m1 = i.start()
    m2 = r.receive(m1)
    assert m2 is not None
    old_m3 = i.receive(m2)
    assert old_m3 is not None
    # Same M1 replayed to a new responder (fresh nonce): the old M3 no longer fits.
    r2 = Handshake(key, initiator=False, nonce=_nonces(12)[1])
    r2.receive(m1)
    with pytest.raises(AuthenticationError):
        r2.receive(old_m3)


@pytest.mark.parametrize(
    "m1",
    [b"", b"HSYN", b"HSYN\x02" + b"n" * 32, b"XXXX\x01" + b"n" * 32, b"HSYN\x01" + b"n" * 33,
     b"GET / HTTP/1.1\r\n\r\n"],
)
def test_malformed_hello_is_an_authentication_error(m1: bytes) -> None:
    r = Handshake(space_key(SECRET, "s"), initiator=False, nonce=b"r" * 32)
    with pytest.raises(AuthenticationError):
        r.receive(m1)


def test_malformed_m2_is_an_authentication_error() -> None:
    i = Handshake(space_key(SECRET, "s"), initiator=True, nonce=b"i" * 32)
    i.start()
    with pytest.raises(AuthenticationError):
        i.receive(b"HSYN\x01" + b"x" * 10)


def test_handshake_misuse() -> None:
    key = space_key(SECRET, "s")
    with pytest.raises(ConfigError):
        Handshake(key[:16], initiator=True, nonce=b"n" * 32)
    with pytest.raises(ConfigError):
        Handshake(key, initiator=True, nonce=b"short")
    r = Handshake(key, initiator=False, nonce=b"n" * 32)
    with pytest.raises(ConfigError):
        r.start()
    with pytest.raises(AuthenticationError):
        _ = r.keys
    i, _ = _run(key, key)
    with pytest.raises(AuthenticationError):
        i.receive(b"anything")


# ---- record layer ---------------------------------------------------------------------------


def _pair() -> tuple[RecordSealer, RecordOpener]:
    key = bytes(range(32))
    return RecordSealer(key), RecordOpener(key)


def test_records_round_trip_in_order_and_hide_the_plaintext() -> None:
    s, o = _pair()
    bodies = [b"frame one", b"", b"x" * 10_000, b"agent-a wrote secret"]
    records = [s.seal(RecordType.SYNC, b) for b in bodies]
    sizes = [len(r) - len(b) for r, b in zip(records, bodies, strict=True)]
    assert sizes == [RECORD_OVERHEAD_BYTES] * len(bodies)
    assert all(b"secret" not in r and b"agent-a" not in r for r in records)
    assert records[0] != s.seal(RecordType.SYNC, bodies[0])  # same body, new counter
    assert [o.open(r) for r in records] == [(RecordType.SYNC, b) for b in bodies]
    assert o.counter == 4


@pytest.mark.parametrize("where", [0, 1, 10, -1, -16])
def test_tampered_record_is_rejected(where: int) -> None:
    s, o = _pair()
    rec = bytearray(s.seal(RecordType.SYNC, b"payload of sixteen+"))
    rec[where] ^= 0x01
    with pytest.raises(AuthenticationError):
        o.open(bytes(rec))


def test_replayed_record_is_rejected_and_the_stream_stays_dead() -> None:
    s, o = _pair()
    r0 = s.seal(RecordType.SYNC, b"a")
    r1 = s.seal(RecordType.SYNC, b"b")
    o.open(r0)
    with pytest.raises(AuthenticationError):
        o.open(r0)
    with pytest.raises(AuthenticationError):
        o.open(r1)  # even the right record: the session must be closed


def test_reordered_and_dropped_records_are_rejected() -> None:
    s, o = _pair()
    r0, r1 = s.seal(RecordType.SYNC, b"a"), s.seal(RecordType.SYNC, b"b")
    with pytest.raises(AuthenticationError):
        o.open(r1)
    s2, o2 = _pair()
    s2.seal(RecordType.PING, b"")  # lost
    with pytest.raises(AuthenticationError):
        o2.open(s2.seal(RecordType.SYNC, b"next"))
    del r0


def test_truncated_records_are_rejected() -> None:
    s, o = _pair()
    rec = s.seal(RecordType.SYNC, b"some frame bytes")
    with pytest.raises(AuthenticationError):
        o.open(rec[:-1])
    _, o2 = _pair()
    with pytest.raises(FrameError):
        o2.open(rec[:5])


def test_wrong_direction_key_is_rejected() -> None:
    s = RecordSealer(b"a" * 32)
    with pytest.raises(AuthenticationError):
        RecordOpener(b"b" * 32).open(s.seal(RecordType.PING, b""))


def test_record_keys_must_be_32_bytes() -> None:
    with pytest.raises(ConfigError):
        RecordSealer(b"short")


def test_every_record_type_round_trips() -> None:
    s, o = _pair()
    for kind in RecordType:
        assert o.open(s.seal(kind, b"x")) == (kind, b"x")


# ---- URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "parsed"),
    [("tcp://127.0.0.1:7001", ("127.0.0.1", 7001)), ("tcp://[::1]:80", ("::1", 80)),
     ("tcp://host.lan:65535/", ("host.lan", 65535))],
)
def test_parse_url(url: str, parsed: tuple[str, int]) -> None:
    assert parse_url(url) == parsed
    assert parse_url(format_url(*parsed)) == parsed


@pytest.mark.parametrize(
    "url", ["127.0.0.1:7001", "tcp://127.0.0.1", "tcp://:80", "tcp://h:0", "tcp://h:99999",
            "http://h:80", "tcp://h:x", 7001],
)
def test_bad_urls_are_config_errors(url: object) -> None:
    with pytest.raises(ConfigError):
        parse_url(url)
