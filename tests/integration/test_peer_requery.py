"""``hs.Peer`` asks discovery again after a session drops (DESIGN.md §5: zeroconf stops asking
~14 s after it starts and keeps a silently cut peer for ~20 min, so finding a peer again
after a drop or a heal is the peer's business).

The first tests drive the discovery seam (``Peer.start(discovery=factory)``) with
:class:`FakeNet`, an in-process stand-in for mDNS that answers only when asked, so every
answer after the start is the consequence of a ``requery()``; the session is cut silently
by :class:`~_proxy.PartitionProxy`. The last test does the same with real mDNS on
127.0.0.1. Every wait is bounded; no assertion is about timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from _aio import FAST_PEER, converged, run, wait_until
from _proxy import PartitionProxy

import hybridsync as hs
from hybridsync.discovery import MdnsDiscovery
from hybridsync.peer import DiscoveryFactory

SECRET = b"integration test group secret"
SPACE = "space-requery-tests"


class FakeDiscovery:
    """One peer's view of a :class:`FakeNet`: ``start`` lists it and reports the others,
    ``requery`` reports them again; nothing is reported unless asked."""

    def __init__(self, net: FakeNet, peer_id: str, url: str,
                 on_found: Callable[[str, str], None]) -> None:
        self.net = net
        self.peer_id = peer_id
        self.url = url
        self.on_found = on_found
        self.requeries = 0
        self.running = False

    def _report(self) -> None:
        for peer_id, url in list(self.net.listed.items()):
            if peer_id != self.peer_id:
                self.on_found(url, peer_id)

    async def start(self) -> None:
        self.running = True
        self.net.listed[self.peer_id] = self.url
        self._report()

    async def requery(self) -> None:
        assert self.running, "requery after stop"
        self.requeries += 1
        self._report()

    async def stop(self) -> None:
        self.running = False
        self.net.listed.pop(self.peer_id, None)


class FakeNet:
    """Which peer announces which URL; ``factory()`` makes discoveries on it."""

    def __init__(self) -> None:
        self.listed: dict[str, str] = {}
        self.made: list[FakeDiscovery] = []

    def factory(self, announce: Callable[[int], str] | None = None) -> DiscoveryFactory:
        """A discovery factory whose peer announces ``announce(port)`` (default its own
        port on 127.0.0.1)."""

        def make(space_tag: str, peer_id: str, port: int, *, interfaces: Sequence[str],
                 on_found: Callable[[str, str], None]) -> FakeDiscovery:
            url = announce(port) if announce is not None else f"tcp://127.0.0.1:{port}"
            d = FakeDiscovery(self, peer_id, url, on_found)
            self.made.append(d)
            return d

        return make


@pytest.fixture
def proxies() -> Iterator[list[PartitionProxy]]:
    made: list[PartitionProxy] = []
    yield made
    for p in made:
        p.close()


def _via_proxy(proxies: list[PartitionProxy]) -> Callable[[int], str]:
    """Announce a peer at a partitionable proxy in front of its port."""

    def announce(port: int) -> str:
        proxy = PartitionProxy(port)
        proxies.append(proxy)
        return f"tcp://127.0.0.1:{proxy.port}"

    return announce


async def _start(mem: hs.Memory, **options: Any) -> hs.Peer:
    return await hs.Peer.start(mem, secret=SECRET, **{**FAST_PEER, **options})


def test_a_heartbeat_timeout_asks_discovery_again_at_once(
        proxies: list[PartitionProxy]) -> None:
    """The question comes from the drop itself: the timer would not ask for 1,000 s."""

    async def main() -> None:
        net = FakeNet()
        a, b = hs.Memory(SPACE, "a"), hs.Memory(SPACE, "b")
        pb = await _start(b, discovery=net.factory(_via_proxy(proxies)))
        pa = await _start(a, discovery=net.factory(), requery_interval_s=1000.0)
        fa = net.made[1]
        try:
            await wait_until(lambda: "b" in pa.sessions, "a finds b and dials it")
            assert fa.requeries == 0 and pa.stats()["requeries"] == 0  # nothing dropped yet
            proxies[0].partition()
            await wait_until(lambda: pa.stats()["heartbeat_timeouts"] >= 1, "a's heartbeat")
            await wait_until(lambda: fa.requeries >= 1, "a asks discovery again")
            assert pa.stats()["requeries"] == fa.requeries
            assert "b" not in pa.sessions or pa.stats()["sessions_opened"] >= 2
            proxies[0].heal()
            a.fields["after"] = "the heal"
            await wait_until(lambda: "b" in pa.sessions and converged(a, b), "reconnected")
        finally:
            await pa.stop()
            await pb.stop()

    run(main())


def test_requeries_repeat_through_the_window_then_stop(proxies: list[PartitionProxy]) -> None:
    async def main() -> None:
        net = FakeNet()
        a, b = hs.Memory(SPACE, "a"), hs.Memory(SPACE, "b")
        pb = await _start(b, discovery=net.factory(_via_proxy(proxies)))
        pa = await _start(a, discovery=net.factory(), requery_window_s=1.5,
                          requery_interval_s=0.1)
        fa = net.made[1]
        loop = asyncio.get_running_loop()
        try:
            await wait_until(lambda: "b" in pa.sessions, "a finds b and dials it")
            proxies[0].partition()
            await wait_until(lambda: pa.stats()["heartbeat_timeouts"] >= 1, "a's heartbeat")
            # within the window the tick keeps asking: more questions than drops
            await wait_until(lambda: fa.requeries >= pa.stats()["sessions_closed"] + 2,
                             "repeated requeries within the window")
            proxies[0].heal()
            await wait_until(lambda: "b" in pa.sessions and converged(a, b), "reconnected")
            # Once no session has closed for longer than the window, the questions stop:
            # wait (bounded) for a quiet spell of window + 1 s with no requery and no close.
            quiet_s = 1.5 + 1.0
            deadline = loop.time() + 30.0
            mark = (fa.requeries, pa.stats()["sessions_closed"], loop.time())
            while loop.time() - mark[2] < quiet_s:
                assert loop.time() < deadline, (
                    f"requeries never stopped: {fa.requeries} so far, "
                    f"{pa.stats()['sessions_closed']} sessions closed")
                await asyncio.sleep(0.05)
                now = (fa.requeries, pa.stats()["sessions_closed"])
                if now != mark[:2]:
                    mark = (*now, loop.time())
            assert pa.stats()["requeries"] == fa.requeries
        finally:
            await pa.stop()
            await pb.stop()

    run(main())


def test_a_clean_goodbye_asks_too_and_a_stopping_peer_does_not() -> None:
    async def main() -> None:
        net = FakeNet()
        a, b = hs.Memory(SPACE, "a"), hs.Memory(SPACE, "b")
        pb = await _start(b, discovery=net.factory())
        pa = await _start(a, discovery=net.factory(), requery_interval_s=1000.0)
        fa, fb = net.made[1], net.made[0]
        try:
            await wait_until(lambda: "b" in pa.sessions and "a" in pb.sessions, "a session")
            await pb.stop()  # b says goodbye: a asks again (b may be back elsewhere)
            await wait_until(lambda: fa.requeries >= 1, "a asks discovery again")
            assert fb.requeries == 0  # the peer that stops does not ask
            assert pa.stats()["goodbyes"] == 1
        finally:
            await pa.stop()
            await pb.stop()

    run(main())


@pytest.mark.parametrize(
    "options",
    [{"discovery": 42}, {"discovery": "dns"}, {"requery_window_s": 0},
     {"requery_interval_s": -1.0}, {"discovery": lambda *a, **k: object()}],
)
def test_bad_discovery_options_are_config_errors(options: dict[str, Any]) -> None:
    async def main() -> None:
        with pytest.raises(hs.ConfigError):
            await hs.Peer.start(hs.Memory(SPACE, "a"), secret=SECRET, **options)
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []

    run(main())


def test_mdns_finds_a_cut_peer_again_only_by_asking(proxies: list[PartitionProxy]) -> None:
    """Real mDNS on 127.0.0.1. b announces a proxy in front of its port and never dials (its
    discovery reports nothing to it), so every session is a's dial through the proxy. The cut
    outlasts a's dial (one attempt per discovered address, then the address is dropped), and
    zeroconf reports a service once: only a requery after the drop makes a dial b again."""

    def b_discovery(space_tag: str, peer_id: str, port: int, *, interfaces: Sequence[str],
                    on_found: Callable[[str, str], None]) -> MdnsDiscovery:
        proxy = PartitionProxy(port)
        proxies.append(proxy)
        return MdnsDiscovery(space_tag, peer_id, proxy.port, interfaces=interfaces,
                             on_found=lambda url, peer: None)

    async def main() -> None:
        a, b = hs.Memory(SPACE, "a"), hs.Memory(SPACE, "b")
        pb = await _start(b, discovery=b_discovery, interfaces=["127.0.0.1"])
        pa = await _start(a, discovery="mdns", interfaces=["127.0.0.1"],
                          discovered_attempts=1, handshake_timeout_s=0.5,
                          requery_window_s=60.0, requery_interval_s=0.5)
        try:
            a.fields["before"] = 1
            await wait_until(lambda: "b" in pa.sessions and converged(a, b),
                             "a finds b by mDNS, through the proxy")
            assert pa.sessions["b"].url.endswith(f":{proxies[0].port}")
            proxies[0].partition()
            await wait_until(lambda: pa.stats()["heartbeat_timeouts"] >= 1
                             and pb.stats()["heartbeat_timeouts"] >= 1,
                             "both heartbeats notice the silent cut")
            # a's dial into the cut failed: the address it had is dropped
            await wait_until(lambda: pa.stats()["dial_failures"] >= 1, "a's dial fails")
            a.fields["cut"] = "a wrote during the cut"
            b.fields["cut_b"] = "b wrote during the cut"
            b.text("notes").set("b's notes, written apart\n")
            proxies[0].heal()
            await wait_until(lambda: "b" in pa.sessions and converged(a, b)
                             and "cut_b" in a.fields.to_dict() and "notes" in a.regions(),
                             "a finds b again and they converge", timeout_s=60.0)
            assert pa.stats()["requeries"] >= 1
            assert a.text("notes").value == "b's notes, written apart\n"
        finally:
            await pa.stop()
            await pb.stop()

    run(main())
