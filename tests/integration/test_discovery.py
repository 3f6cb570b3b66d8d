"""mDNS discovery on loopback (interfaces=["127.0.0.1"], IPv4 only; never the real network).

Every test uses its own random space tag, so tests running at the same time (and other
processes browsing ``_hybridsync._tcp.local.`` on this host) cannot disturb each other.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from hybridsync.discovery import SERVICE_TYPE, Discovery, MdnsDiscovery
from hybridsync.errors import ConfigError, DiscoveryError

DEADLINE_S = 10.0  # generous bound for anything we wait for; timing is never asserted


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert leaked == [], f"threads left running: {leaked}"


def _run(coro: Coroutine[Any, Any, None]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, timeout=60)
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert pending == [], f"tasks left running: {pending}"

    asyncio.run(bounded())


class Found:
    """Collects on_found calls: ``calls`` in order, ``peers`` as peer_id -> last url."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.peers: dict[str, str] = {}

    def __call__(self, url: str, peer_id: str) -> None:
        asyncio.get_running_loop()  # raises if not called on the event loop
        self.calls.append((url, peer_id))
        self.peers[peer_id] = url


async def _until(cond: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE_S
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"not within {DEADLINE_S} s: {what}")
        await asyncio.sleep(0.02)


def _tag() -> str:
    return secrets.token_hex(8)


def test_two_peers_find_each_other_and_other_tags_stay_apart() -> None:
    async def main() -> None:
        tag, other_tag = _tag(), _tag()
        fa, fb, fc, fd = Found(), Found(), Found(), Found()
        a = MdnsDiscovery(tag, "agent-a", 17001, on_found=fa)
        b = MdnsDiscovery(tag, "agent-b", 17002, on_found=fb)
        c = MdnsDiscovery(other_tag, "agent-c", 17003, on_found=fc)
        d = MdnsDiscovery(tag, "agent-d", 17004, on_found=fd, protocol_version=99)
        assert isinstance(a, Discovery)
        everyone = (a, b, c, d)
        try:
            await asyncio.gather(*(x.start() for x in everyone))
            await _until(lambda: "agent-b" in fa.peers and "agent-a" in fb.peers,
                         "a and b find each other")
            # Give c and d every chance to be (wrongly) reported: a requery asks again.
            await a.requery()
            await _until(lambda: len(fa.calls) >= 2, "a reports b again after requery")
        finally:
            await asyncio.gather(*(x.stop() for x in everyone))
        assert fa.peers == {"agent-b": "tcp://127.0.0.1:17002"}
        assert fb.peers == {"agent-a": "tcp://127.0.0.1:17001"}
        assert set(fa.calls) == {("tcp://127.0.0.1:17002", "agent-b")}
        assert fc.calls == []  # another space: nobody of ours is reported to c
        assert "agent-d" not in fa.peers and "agent-d" not in fb.peers  # other protocol

    _run(main())


def test_requery_finds_a_late_peer_and_reports_known_ones_again() -> None:
    async def main() -> None:
        tag = _tag()
        fa, fb, fl = Found(), Found(), Found()
        a = MdnsDiscovery(tag, "a", 17011, on_found=fa)
        b = MdnsDiscovery(tag, "b", 17012, on_found=fb)
        late = MdnsDiscovery(tag, "late", 17013, on_found=fl)
        try:
            await asyncio.gather(a.start(), b.start())
            await _until(lambda: "b" in fa.peers, "a finds b")
            await late.start()
            await a.requery()
            await _until(lambda: "late" in fa.peers, "a finds the late peer")
            await _until(lambda: {"a", "b"} <= set(fl.peers), "the late peer finds a and b")
            n = len(fa.calls)
            await a.requery()
            await _until(lambda: len(fa.calls) >= n + 2, "a reports both peers again")
        finally:
            await asyncio.gather(a.stop(), b.stop(), late.stop())
        assert set(fa.calls[-2:]) == {("tcp://127.0.0.1:17012", "b"),
                                      ("tcp://127.0.0.1:17013", "late")}

    _run(main())


def test_stop_unregisters_so_others_forget_us() -> None:
    async def main() -> None:
        tag = _tag()
        fa, fb = Found(), Found()
        a = MdnsDiscovery(tag, "a", 17021, on_found=fa)
        b = MdnsDiscovery(tag, "b", 17022, on_found=fb)
        try:
            await asyncio.gather(a.start(), b.start())
            await _until(lambda: "b" in a.known(), "a finds b")
            await b.stop()
            assert not b.running
            await _until(lambda: "b" not in a.known(), "a sees b's goodbye")
            await b.stop()  # idempotent
            with pytest.raises(DiscoveryError):
                await b.start()  # a stopped discovery cannot be restarted
        finally:
            await asyncio.gather(a.stop(), b.stop())

    _run(main())


def test_a_restart_of_ourselves_under_another_name_is_not_reported() -> None:
    async def main() -> None:
        tag = _tag()
        f1, f2 = Found(), Found()
        first = MdnsDiscovery(tag, "agent-a", 17031, on_found=f1)
        again = MdnsDiscovery(tag, "agent-a", 17032, on_found=f2)  # same id: renamed on probe
        witness_found = Found()
        witness = MdnsDiscovery(tag, "w", 17033, on_found=witness_found)
        try:
            await asyncio.gather(first.start(), witness.start())
            await again.start()
            await _until(lambda: len(witness_found.calls) >= 2, "the witness sees both")
            await first.requery()
            await _until(lambda: "w" in f1.peers and "w" in f2.peers, "both find the witness")
        finally:
            await asyncio.gather(first.stop(), again.stop(), witness.stop())
        assert again.service_name == first.service_name  # asked for the same name
        assert set(f1.peers) == {"w"} and set(f2.peers) == {"w"}

    _run(main())


def test_a_raising_callback_is_logged_not_propagated(caplog: pytest.LogCaptureFixture) -> None:
    def boom(url: str, peer_id: str) -> None:
        raise RuntimeError("callback failed")

    async def main() -> None:
        tag = _tag()
        fb = Found()
        a = MdnsDiscovery(tag, "a", 17041, on_found=boom)
        b = MdnsDiscovery(tag, "b", 17042, on_found=fb)
        try:
            await asyncio.gather(a.start(), b.start())
            await _until(lambda: a.found_count >= 1 and "a" in fb.peers, "both found")
        finally:
            await asyncio.gather(a.stop(), b.stop())

    with caplog.at_level(logging.ERROR, logger="hybridsync.discovery"):
        _run(main())
    assert any("on_found" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"interfaces": ["0.0.0.0"]}, "host address"),
        ({"interfaces": ["all"]}, "IPv4"),
        ({"interfaces": ["::1"]}, "IPv4"),
        ({"interfaces": []}, "non-empty"),
        ({"interfaces": "127.0.0.1"}, "sequence"),
        ({"interfaces": ["224.0.0.251"]}, "host address"),
        ({"port": 0}, "port"),
        ({"port": True}, "port"),
        ({"space_tag": "has space"}, "space_tag"),
        ({"space_tag": ""}, "space_tag"),
        ({"peer_id": ""}, "peer_id"),
        ({"on_found": None}, "on_found"),
        ({"resolve_timeout_ms": 0}, "resolve_timeout_ms"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"space_tag": "t", "peer_id": "p", "port": 1,
                            "on_found": lambda url, peer: None}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        MdnsDiscovery(args.pop("space_tag"), args.pop("peer_id"), args.pop("port"), **args)


def test_requery_and_stop_before_start_do_nothing() -> None:
    async def main() -> None:
        d = MdnsDiscovery("t", "p", 1, on_found=lambda url, peer: None)
        await d.requery()
        await d.stop()
        assert not d.running and d.known() == {}

    _run(main())


def test_service_type_is_the_documented_one() -> None:
    assert SERVICE_TYPE == "_hybridsync._tcp.local."
    d = MdnsDiscovery("t", "Agent A/ü" * 10, 1, on_found=lambda url, peer: None)
    label = d.service_name.removesuffix("." + SERVICE_TYPE)
    assert len(label.encode()) <= 63 and label.replace("-", "").isalnum()

