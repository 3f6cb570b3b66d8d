"""The store seam: where a replica keeps what it committed and received."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

from hybridsync.causal import Contribution

__all__ = ["MemoryStore", "Store"]


@runtime_checkable
class Store(Protocol):
    """Append-only contributions (in application order, always causal) and a small meta map.

    ``append`` returns only once the contributions are as durable as the store promises:
    a commit that returned must survive a crash of the process (G6) for durable stores.
    """

    def append(self, contributions: Iterable[Contribution]) -> None: ...
    def contributions(self) -> Iterator[Contribution]: ...
    def compact(self, drop: Iterable[bytes], checkpoint: bytes,
                add: Iterable[Contribution] = ()) -> None:
        """Atomically remove the contributions ``drop``, store ``checkpoint`` (meta key
        ``checkpoint``) and append ``add`` after what is left: a crash leaves all or
        nothing (a replica that adopts a checkpoint or rolls back replaces its log)."""
    def get_meta(self, key: str) -> bytes | None: ...
    def set_meta(self, key: str, value: bytes) -> None: ...
    def close(self) -> None: ...


class MemoryStore:
    """An in-process store. A replica rebuilt from it ("restarted") keeps every commit."""

    def __init__(self) -> None:
        self._log: list[Contribution] = []
        self._meta: dict[str, bytes] = {}

    def append(self, contributions: Iterable[Contribution]) -> None:
        self._log.extend(contributions)

    def contributions(self) -> Iterator[Contribution]:
        return iter(list(self._log))

    def compact(self, drop: Iterable[bytes], checkpoint: bytes,
                add: Iterable[Contribution] = ()) -> None:
        gone = set(drop)
        log = [c for c in self._log if c.id not in gone]
        held = {c.id for c in log}
        log.extend(c for c in add if c.id not in held)
        self._log = log
        self._meta["checkpoint"] = bytes(checkpoint)

    def get_meta(self, key: str) -> bytes | None:
        return self._meta.get(key)

    def set_meta(self, key: str, value: bytes) -> None:
        self._meta[key] = bytes(value)

    def close(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self._log)
