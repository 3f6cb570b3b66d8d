"""Comparable snapshots of replicas, for "unchanged" and "converged" assertions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hybridsync.errors import ConfigError, GuaranteeViolation
from hybridsync.replica import Conflict, Memory

__all__ = ["ReplicaSnapshot", "assert_converged", "snapshot"]


@dataclass(frozen=True, slots=True)
class ReplicaSnapshot:
    """Everything two converged replicas must agree on (G1), plus the log length."""

    fields_json: str
    digest: str  # Memory.state_digest(): fields and every region's bytes
    heads: tuple[str, ...]
    history: tuple[str, ...]  # hex ids in the deterministic order
    log_length: int
    conflicts: tuple[Conflict, ...]


def snapshot(mem: Memory) -> ReplicaSnapshot:
    """What ``mem`` shows now; equal snapshots mean equal visible state.

    >>> a = Memory("doc", "a", clock=lambda: 0, incarnation=1)
    >>> before = snapshot(a)
    >>> a.fields["x"] = 1
    >>> snapshot(a) == before
    False
    """
    return ReplicaSnapshot(
        fields_json=mem.fields_json(),
        digest=mem.state_digest(),
        heads=mem.heads,
        history=tuple(c.hex_id for c in mem.history()),
        log_length=mem.stats().log_length,
        conflicts=tuple(mem.conflicts()),
    )


def assert_converged(memories: Iterable[Memory]) -> ReplicaSnapshot:
    """Raise :class:`~hybridsync.GuaranteeViolation` unless every replica has the same
    snapshot; return that snapshot."""
    mems = list(memories)
    if not mems:
        raise ConfigError("assert_converged() needs at least one replica")
    first = snapshot(mems[0])
    for m in mems[1:]:
        other = snapshot(m)
        if other != first:
            diff = [
                f"{name}: {mems[0].peer}={getattr(first, name)!r} {m.peer}={getattr(other, name)!r}"
                for name in ReplicaSnapshot.__slots__
                if getattr(first, name) != getattr(other, name)
            ]
            raise GuaranteeViolation(
                "replicas did not converge (G1):\n  " + "\n  ".join(d[:2000] for d in diff)
            )
    return first
