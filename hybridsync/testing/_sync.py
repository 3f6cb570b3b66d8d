"""Pumps and fakes for tests: drive replicas' sans-I/O sync without sockets or real time."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hybridsync.errors import ConfigError, GuaranteeViolation
from hybridsync.replica import Memory

__all__ = ["ChannelStats", "LossyChannel", "ManualClock", "sync_all", "sync_pair"]


class ManualClock:
    """A millisecond clock for ``Memory(clock=...)`` that moves only when told to.

    >>> clock = ManualClock(1_000)
    >>> clock(), clock.advance(5), clock()
    (1000, None, 1005)
    """

    __slots__ = ("now_ms",)

    def __init__(self, start_ms: int = 0) -> None:
        self.now_ms = _check_ms(start_ms)

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, delta_ms: int) -> None:
        """Move by ``delta_ms`` (negative values move backwards, as real clocks sometimes do)."""
        self.set(self.now_ms + _check_ms(delta_ms, allow_negative=True))

    def set(self, now_ms: int) -> None:
        self.now_ms = _check_ms(now_ms)


def _check_ms(value: object, *, allow_negative: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"milliseconds must be an int, got {value!r}")
    if value < 0 and not allow_negative:
        raise ConfigError(f"milliseconds must be >= 0, got {value}")
    return value


def _check_rounds(max_rounds: object) -> int:
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
        raise ConfigError(f"max_rounds must be a positive int, got {max_rounds!r}")
    return max_rounds


def sync_pair(a: Memory, b: Memory, *, max_rounds: int = 1_000) -> int:
    """Exchange frames directly between two replicas until neither has anything to send.

    Returns the number of rounds used. Raises :class:`~hybridsync.GuaranteeViolation` if the
    pair has not settled after ``max_rounds`` (see :func:`sync_all`).

    >>> a = Memory("doc", "a", clock=lambda: 0, incarnation=1)
    >>> b = Memory("doc", "b", clock=lambda: 0, incarnation=2)
    >>> a.fields["x"] = 1
    >>> sync_pair(a, b) > 0 and b.fields["x"] == 1
    True
    """
    return sync_all((a, b), max_rounds=max_rounds)


def sync_all(
    memories: Iterable[Memory],
    *,
    channel: LossyChannel | None = None,
    max_rounds: int = 1_000,
) -> int:
    """Run full-mesh anti-entropy rounds until the replicas have settled.

    In each round every replica calls ``sync_to`` for every other one (in a fixed order) and
    the frames are delivered directly, or through ``channel`` (which may lose, duplicate and
    reorder them). Settled means: a round sent nothing, nothing is in flight, and every
    replica has the same version vector (silent rounds still count: retransmission timers
    tick on ``sync_to`` calls). Returns the number of rounds before the settled one; raises
    :class:`~hybridsync.GuaranteeViolation` when not settled after ``max_rounds``.
    """
    mems = _by_peer(memories)
    limit = _check_rounds(max_rounds)
    names = sorted(mems)
    for busy in range(limit):
        sent = 0
        for src in names:
            for dst in names:
                if src == dst:
                    continue
                for frame in mems[src].sync_to(dst):
                    sent += 1
                    if channel is None:
                        mems[dst].receive(src, frame)
                    else:
                        channel.send(src, dst, frame)
        if channel is not None:
            channel.deliver(mems)
        if sent == 0 and (channel is None or channel.in_flight == 0):
            # Silence alone is not the end: a sender may be waiting for its retransmission
            # timeout (counted in sync_to calls) after a receiver dropped what it could not
            # buffer yet. Keep calling until the version vectors agree too.
            vv = mems[names[0]].version_vector
            if all(mems[n].version_vector == vv for n in names[1:]):
                return busy
    raise GuaranteeViolation(
        f"replicas {names} did not settle after {limit} rounds: still exchanging frames, "
        "or silent with different version vectors"
    )


def _by_peer(memories: Iterable[Memory]) -> dict[str, Memory]:
    out: dict[str, Memory] = {}
    for m in memories:
        if not isinstance(m, Memory):
            raise ConfigError(f"expected Memory replicas, got {type(m).__name__}")
        if m.peer in out:
            raise ConfigError(f"two replicas are named {m.peer!r}")
        out[m.peer] = m
    if len(out) < 2:
        raise ConfigError("syncing needs at least two replicas")
    return out


@dataclass(slots=True)
class ChannelStats:
    """What a :class:`LossyChannel` did to the frames it was given."""

    sent: int = 0
    dropped: int = 0
    duplicated: int = 0
    delivered: int = 0


class LossyChannel:
    """A seeded fake network: loses, duplicates and reorders frames between replicas.

    ``send`` queues a frame (or drops it with ``loss_probability``, or queues it twice with
    ``duplicate_probability``); ``deliver`` hands every queued frame to its destination's
    ``receive``, in a shuffled order when ``reorder`` is true. The same seed and the same
    calls give the same run. Set ``loss_probability = 0`` to heal the channel.
    """

    def __init__(
        self,
        *,
        seed: int,
        loss_probability: float = 0.0,
        duplicate_probability: float = 0.0,
        reorder: bool = True,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self.loss_probability = _check_probability(loss_probability, "loss_probability")
        self.duplicate_probability = _check_probability(
            duplicate_probability, "duplicate_probability"
        )
        self.reorder = bool(reorder)
        self.stats = ChannelStats()
        self._rng = random.Random(seed)
        self._queue: list[tuple[str, str, bytes]] = []

    @property
    def in_flight(self) -> int:
        return len(self._queue)

    def send(self, src: str, dst: str, frame: bytes) -> None:
        self.stats.sent += 1
        if self._rng.random() < self.loss_probability:
            self.stats.dropped += 1
            return
        self._queue.append((src, dst, frame))
        if self._rng.random() < self.duplicate_probability:
            self.stats.duplicated += 1
            self._queue.append((src, dst, frame))

    def deliver(self, memories: Mapping[str, Memory] | Sequence[Memory]) -> int:
        """Deliver everything in flight now; returns how many frames were received."""
        mems = (
            dict(memories) if isinstance(memories, Mapping)
            else {m.peer: m for m in memories}
        )
        batch, self._queue = self._queue, []
        if self.reorder:
            self._rng.shuffle(batch)
        for src, dst, frame in batch:
            mems[dst].receive(src, frame)
            self.stats.delivered += 1
        return len(batch)


def _check_probability(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(f"{what} must be a number in [0, 1], got {value!r}")
    return float(value)
