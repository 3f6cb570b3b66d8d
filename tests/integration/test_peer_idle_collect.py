"""``hs.Peer`` runs garbage collection in its idle time, and holds back (never drops) the
frames that arrive while the application is inside a transaction.

- While a peer runs, ``receive`` never compacts (``mem.auto_collect`` is off, restored by
  ``stop``); the peer compacts after a quiet spell, and under load that never pauses after
  at most ``collect_max_delay_s`` (the tick): every compaction of the replica is one the
  peer counted.
- Sessions are reliable (``sync_to(reliable=True)``): a frame that meets an open transaction
  waits in its session's backlog, in order, and lands once the transaction has ended; a
  backlog over its bound closes the session and the reconnection resends what it held.

Loopback only; every wait is bounded (``wait_until``) and no assertion is about timing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from _aio import FAST_PEER, converged, run, wait_until

import hybridsync as hs

SECRET = b"idle collect test group secret"
SPACE = "space-peer-idle-collect"
FAST = FAST_PEER


async def start(mem: hs.Memory, **options: Any) -> hs.Peer:
    return await hs.Peer.start(mem, secret=SECRET, **{**FAST, **options})


@contextlib.asynccontextmanager
async def two_peers(
    memory: Mapping[str, Any] | None = None,
    *,
    connect: bool = False,
    b_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> AsyncIterator[tuple[hs.Memory, hs.Memory, hs.Peer, hs.Peer]]:
    """Replicas ``a`` and ``b`` (``memory``: Memory options of both) and their peers: ``a``'s
    listens, ``b``'s dials it; both get ``options``, ``b``'s also ``b_options``. With
    ``connect`` the session is up before the body runs. Afterwards, also when the body
    fails, both peers stop (``b``'s first; ``stop`` is idempotent, so a body may stop them
    itself to look at the replicas after) and both replicas close."""
    a = hs.Memory(SPACE, "a", **(memory or {}))
    b = hs.Memory(SPACE, "b", **(memory or {}))
    try:
        pa = await start(a, **options)
        try:
            pb = await start(b, peers=[pa.url], **{**options, **(b_options or {})})
            try:
                if connect:
                    await pb.connect(pa.url)
                yield a, b, pa, pb
            finally:
                await pb.stop()
        finally:
            await pa.stop()
    finally:
        a.close()
        b.close()


# ---- garbage collection in idle time -------------------------------------------------------


@pytest.mark.parametrize("before", [True, False])
def test_peer_turns_auto_collect_off_while_running_and_restores_it(before: bool) -> None:
    async def main() -> None:
        mem = hs.Memory(SPACE, "a")
        mem.auto_collect = before
        peer = await start(mem)
        try:
            assert mem.auto_collect is False
        finally:
            await peer.stop()
        assert mem.auto_collect is before
        await peer.stop()  # idempotent: still restored, not flipped again
        assert mem.auto_collect is before
        mem.close()

    run(main())


def test_idle_peers_compact_and_only_the_peer_compacts() -> None:
    async def main() -> None:
        async with two_peers({"gc_min_entries": 8}) as (a, b, pa, pb):
            for i in range(60):
                (a if i % 2 else b).fields[f"k{i:03d}"] = i
                await asyncio.sleep(0.002)
            await wait_until(lambda: converged(a, b) and len(a.fields.to_dict()) == 60,
                             "both replicas hold the 60 writes")
            await wait_until(
                lambda: pa.stats()["compactions"] >= 1 and pb.stats()["compactions"] >= 1,
                "a compaction on each side",
            )
            await wait_until(lambda: not a.collect_due and not b.collect_due,
                             "nothing left due once both are quiet")
            for mem, peer in ((a, pa), (b, pb)):
                st = peer.stats()
                # receive() never compacted: every compacted contribution is the peer's
                assert mem.stats().compacted == st["compacted_entries"] >= 8
                assert mem.stats().log_length < 60
            assert converged(a, b)
            assert {k: a.fields[k] for k in a.fields.to_dict()} == {
                f"k{i:03d}": i for i in range(60)
            }

    run(main())


def test_receive_does_not_compact_while_the_peer_waits_for_a_quiet_spell() -> None:
    async def main() -> None:
        slow = {"collect_idle_s": 600.0, "collect_max_delay_s": 600.0}
        async with two_peers({"gc_min_entries": 4}, **slow) as (a, b, pa, pb):
            for i in range(20):
                (a if i % 2 else b).fields[f"k{i:03d}"] = i
                await asyncio.sleep(0.002)
            await wait_until(lambda: converged(a, b) and a.collect_due and b.collect_due,
                             "a compaction due on both sides")
            # due, frames keep arriving (acks, heartbeats), and still nothing compacted
            await asyncio.sleep(0.3)
            assert a.stats().compacted == 0 and b.stats().compacted == 0
            assert pa.stats()["compactions"] == pb.stats()["compactions"] == 0
            await pb.stop()
            await pa.stop()
            # auto_collect is back on: the next receive compacts by itself
            assert a.auto_collect and b.auto_collect
            a.collect()
            assert a.stats().compacted > 0

    run(main())


def test_a_peer_that_is_never_idle_still_compacts() -> None:
    """The quiet spell never comes (``collect_idle_s`` far longer than the test), the writes
    never pause: the tick compacts anyway, and the log stays short of what was written."""

    async def main() -> None:
        busy = {"collect_idle_s": 600.0, "collect_max_delay_s": 0.1}
        async with two_peers({"gc_min_entries": 8}, connect=True, **busy) as (a, b, pa, pb):
            written = 0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60.0
            while written < 4000 and loop.time() < deadline:
                a.fields[f"k{written % 50:02d}"] = written
                written += 1
                await asyncio.sleep(0.001)
                if pa.stats()["compactions"] >= 2 and pb.stats()["compactions"] >= 2:
                    break
            sa, sb = pa.stats(), pb.stats()
            assert sa["compactions"] >= 2 and sb["compactions"] >= 2, (written, sa, sb)
            # all of them by the tick (no quiet spell of 600 s happened)
            assert sa["compactions_forced"] == sa["compactions"]
            assert sb["compactions_forced"] == sb["compactions"]
            assert a.stats().log_length < written
            await wait_until(lambda: converged(a, b), "convergence after the writes")
            assert b.fields[f"k{(written - 1) % 50:02d}"] == written - 1

    run(main())


# ---- frames that arrive during a transaction -----------------------------------------------


def test_frames_arriving_during_a_transaction_land_after_it() -> None:
    async def main() -> None:
        async with two_peers(connect=True) as (a, b, pa, pb):
            with b.transaction():
                b.fields["inside"] = "b's transaction"
                for i in range(10):
                    a.fields[f"a{i}"] = i
                    await asyncio.sleep(0.01)
                await wait_until(lambda: pb.stats()["frames_deferred"] >= 3,
                                 "frames held back during the transaction")
                # not applied inside the transaction
                assert "a0" not in b.fields.to_dict()
            await wait_until(lambda: converged(a, b) and "inside" in a.fields.to_dict(),
                             "convergence after the transaction")
            assert {f"a{i}" for i in range(10)} <= set(b.fields.to_dict())
            assert a.fields["inside"] == "b's transaction"
            # nothing was recovered by a reconnection: the backlog delivered them
            for st in (pa.stats(), pb.stats()):
                assert st["sessions_opened"] == 1 and st["sessions_closed"] == 0, st
                assert st["deferred_overflows"] == 0 and st["frames_rejected"] == 0

    run(main())


def test_a_frame_arriving_after_the_transaction_waits_behind_the_held_back_ones() -> None:
    """Frames held back keep their order with what comes after the transaction ended: a
    later overwrite of the same key wins on the receiver, as it did on the sender."""

    async def main() -> None:
        # no tick in the test's time: the held-back frames land when the next frame comes
        quiet = {"sync_interval_s": 30.0, "heartbeat_s": 20.0}
        async with two_peers(connect=True, **quiet) as (a, b, _pa, pb):
            seen: list[str] = []
            b.observe(lambda _c: seen.append(str(b.fields.to_dict().get("key"))), paths=False)
            with b.transaction():
                for i in range(5):
                    a.fields["key"] = f"v{i}"
                    await asyncio.sleep(0.01)
                await wait_until(lambda: pb.stats()["frames_deferred"] >= 2, "held back")
            a.fields["key"] = "last"
            await wait_until(lambda: b.fields.to_dict().get("key") == "last", "the last write")
            await wait_until(lambda: converged(a, b), "convergence")
            assert pb.stats()["sessions_closed"] == 0
            # b saw the values in the order a wrote them, ending with the last
            order = ["v0", "v1", "v2", "v3", "v4", "last"]
            assert seen and seen[-1] == "last"
            assert [order.index(v) for v in seen] == sorted(order.index(v) for v in seen)

    run(main())


def test_a_backlog_over_its_bound_closes_the_session_and_nothing_is_lost() -> None:
    async def main() -> None:
        bound = {"max_deferred_bytes": 3000}
        async with two_peers(connect=True, b_options=bound) as (a, b, pa, pb):
            with b.transaction():
                b.fields["inside"] = 1
                for i in range(40):
                    a.fields[f"big{i:02d}"] = "x" * 1000
                    await asyncio.sleep(0.01)
                    if pb.stats()["deferred_overflows"]:
                        break
                await wait_until(lambda: pb.stats()["deferred_overflows"] >= 1,
                                 "the backlog over its bound")
                assert pb.stats()["sessions_closed"] >= 1
                assert not any(k.startswith("big") for k in b.fields.to_dict())
            # the session is redialed and a resends everything b never acknowledged
            await wait_until(lambda: converged(a, b) and "inside" in a.fields.to_dict(),
                             "convergence after the reconnection")
            assert {k for k in b.fields.to_dict() if k.startswith("big")} == {
                k for k in a.fields.to_dict() if k.startswith("big")
            }
            assert pb.stats()["sessions_opened"] >= 2
            assert pb.stats()["frames_rejected"] == 0 and pa.stats()["protocol_errors"] == 0

    run(main())


def test_max_deferred_bytes_is_validated() -> None:
    async def main() -> None:
        mem = hs.Memory(SPACE, "a")
        for bad in (0, -1, 1.5, True, "1"):
            with pytest.raises(hs.ConfigError):
                await start(mem, max_deferred_bytes=bad)
        for option in ("collect_idle_s", "collect_max_delay_s"):
            with pytest.raises(hs.ConfigError):
                await start(mem, **{option: 0})
        assert mem.auto_collect is True  # a refused start leaves it alone
        mem.close()

    run(main())


def test_a_held_back_frame_the_replica_rejects_closes_the_session_when_fed() -> None:
    """A member sends a frame that is not a frame while the application is inside a
    transaction: it waits, and when the transaction ends it is rejected like any other — the
    session is closed, counted, and the replica keeps only what the application wrote."""

    async def main() -> None:
        from _member import member_client

        from hybridsync.security import RecordType

        b = hs.Memory(SPACE, "b")
        pb = await start(b)
        try:
            stream, sealer, _opener = await member_client(
                pb.port, "m", secret=SECRET, space=SPACE
            )
            await wait_until(lambda: "m" in pb.sessions, "the member's session")
            with b.transaction():
                b.fields["mine"] = 1
                stream.write((sealer.seal(RecordType.SYNC, b"\x93not a frame"),))
                await wait_until(lambda: pb.stats()["frames_deferred"] == 1, "held back")
                assert pb.stats()["frames_rejected"] == 0 and "m" in pb.sessions
            await wait_until(lambda: pb.stats()["frames_rejected"] == 1, "fed and rejected")
            await wait_until(lambda: "m" not in pb.sessions, "the session closed")
            st = pb.stats()
            assert st["protocol_errors"] == 1 and st["sessions_closed"] == 1
            assert b.fields.to_dict() == {"mine": 1}
            assert [c.author for c in b.history()] == ["b"]
            stream.abort()
            await stream.wait_closed()
        finally:
            await pb.stop()
        b.close()

    run(main())
