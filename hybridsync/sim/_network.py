"""The simulated packet network: directed links with delay, loss, duplication, reordering,
clogging and partitions (after TigerBeetle's packet simulator).

Time is ticks. A frame sent during tick ``t`` is delivered during tick ``t + delay`` with
``delay`` drawn per message from ``[1, max_delay_ticks]``; without reordering each directed
link stays FIFO. A partition drops frames on the blocked directed links, at send time and at
delivery time (a cut also kills what is in flight); a clog holds a link's frames until it
clears. Every draw comes from the ``random.Random`` handed in, in a fixed pattern per message.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable
from dataclasses import dataclass

from hybridsync.errors import ConfigError
from hybridsync.sim._options import check_int, check_probability

__all__ = ["Delivery", "Network", "NetworkCounters"]

Link = tuple[str, str]


@dataclass(slots=True)
class NetworkCounters:
    """What the network did, in messages and bytes."""

    sent: int = 0
    bytes_sent: int = 0
    delivered: int = 0
    bytes_delivered: int = 0
    duplicated: int = 0
    dropped_loss: int = 0
    dropped_partition: int = 0
    dropped_down: int = 0
    clogged: int = 0


@dataclass(frozen=True, slots=True)
class Delivery:
    src: str
    dst: str
    frame: bytes


class Network:
    """Per-link queues between named peers. Pure bookkeeping: it never calls a replica."""

    def __init__(
        self,
        rng: random.Random,
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: bool = False,
        max_delay_ticks: int = 3,
    ) -> None:
        self._rng = rng
        self.loss = check_probability(loss, "loss")
        self.duplicate = check_probability(duplicate, "duplicate")
        if not isinstance(reorder, bool):
            raise ConfigError(f"reorder must be a bool, got {reorder!r}")
        self.reorder = reorder
        self.max_delay_ticks = check_int(max_delay_ticks, "max_delay_ticks", 1, 10_000)
        self.counters = NetworkCounters()
        # (due tick, tie-break, sequence, src, dst, frame)
        self._queue: list[tuple[int, float, int, str, str, bytes]] = []
        self._seq = 0
        self._last_due: dict[Link, int] = {}
        self._blocked: set[Link] = set()
        self._clogged: dict[Link, int] = {}  # link -> first tick it flows again

    # ---- faults --------------------------------------------------------------------------
    def block(self, links: Iterable[Link]) -> None:
        self._blocked.update(links)

    def is_blocked(self, src: str, dst: str) -> bool:
        return (src, dst) in self._blocked

    @property
    def blocked(self) -> frozenset[Link]:
        return frozenset(self._blocked)

    def clog(self, src: str, dst: str, until_tick: int) -> None:
        """Hold every frame on ``src -> dst`` until ``until_tick`` (nothing is lost)."""
        self._clogged[(src, dst)] = max(until_tick, self._clogged.get((src, dst), 0))

    def heal(self, now: int) -> None:
        """Drop every partition and clog; clogged frames flow from the next tick."""
        self._blocked.clear()
        self._clogged.clear()

    def drop_to(self, peer: str) -> int:
        """A peer crashed: what is in flight to it is lost. Returns how many frames."""
        kept = [m for m in self._queue if m[4] != peer]
        lost = len(self._queue) - len(kept)
        if lost:
            heapq.heapify(kept)
            self._queue = kept
            self.counters.dropped_down += lost
        return lost

    # ---- traffic -------------------------------------------------------------------------
    def send(self, now: int, src: str, dst: str, frame: bytes) -> None:
        c = self.counters
        c.sent += 1
        c.bytes_sent += len(frame)
        rng = self._rng
        # A fixed pattern of draws per message keeps the stream easy to reason about.
        lost = rng.random() < self.loss
        dup = rng.random() < self.duplicate
        delays = (rng.randint(1, self.max_delay_ticks), rng.randint(1, self.max_delay_ticks))
        tie = rng.random() if self.reorder else 0.0
        if lost:
            c.dropped_loss += 1
            return
        if (src, dst) in self._blocked:
            c.dropped_partition += 1
            return
        self._enqueue(now + delays[0], tie, src, dst, frame)
        if dup:
            c.duplicated += 1
            self._enqueue(now + delays[1], tie / 2, src, dst, frame)

    def _enqueue(self, due: int, tie: float, src: str, dst: str, frame: bytes) -> None:
        if not self.reorder:
            due = max(due, self._last_due.get((src, dst), 0))
            self._last_due[(src, dst)] = due
        self._seq += 1
        heapq.heappush(self._queue, (due, tie, self._seq, src, dst, frame))

    def deliver(self, now: int, is_up: dict[str, bool]) -> list[Delivery]:
        """Frames due at or before ``now``, in delivery order, minus those a fault ate."""
        out: list[Delivery] = []
        held: list[tuple[int, float, int, str, str, bytes]] = []
        c = self.counters
        q = self._queue
        while q and q[0][0] <= now:
            _, tie, seq, src, dst, frame = heapq.heappop(q)
            until = self._clogged.get((src, dst))
            if until is not None and until > now:
                c.clogged += 1
                held.append((until, tie, seq, src, dst, frame))
                continue
            if (src, dst) in self._blocked:
                c.dropped_partition += 1
                continue
            if not is_up.get(dst, False):
                c.dropped_down += 1
                continue
            c.delivered += 1
            c.bytes_delivered += len(frame)
            out.append(Delivery(src, dst, frame))
        for m in held:
            heapq.heappush(q, m)
        return out

    @property
    def in_flight(self) -> int:
        return len(self._queue)
