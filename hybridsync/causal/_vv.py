"""Version vectors: per author, the highest contiguous sequence number held."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

__all__ = ["VersionVector"]


class VersionVector(Mapping[str, int]):
    """An immutable map ``author -> highest contiguous seq``; missing authors read as 0.

    >>> a = VersionVector({"x": 2}); b = VersionVector({"x": 1, "y": 4})
    >>> a.merge(b) == VersionVector({"x": 2, "y": 4}), a.dominates(b)
    (True, False)
    """

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[str, int] | None = None) -> None:
        self._entries: dict[str, int] = {k: v for k, v in (entries or {}).items() if v > 0}

    def __getitem__(self, author: str) -> int:
        return self._entries[author]

    def get(self, author: str, default: int = 0) -> int:  # type: ignore[override]
        return self._entries.get(author, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._entries == {k: v for k, v in other.items() if v > 0}
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._entries.items()))

    def dominates(self, other: Mapping[str, int]) -> bool:
        """True when every entry of ``other`` is ≤ the same entry here."""
        return all(self._entries.get(a, 0) >= s for a, s in other.items())

    def merge(self, other: Mapping[str, int]) -> VersionVector:
        """The pointwise maximum."""
        out = dict(self._entries)
        for a, s in other.items():
            if s > out.get(a, 0):
                out[a] = s
        return VersionVector(out)

    def meet(self, other: Mapping[str, int]) -> VersionVector:
        """The pointwise minimum (the stable frontier of two replicas)."""
        return VersionVector(
            {a: min(s, other.get(a, 0)) for a, s in self._entries.items()}
        )

    def to_dict(self) -> dict[str, int]:
        return dict(sorted(self._entries.items()))

    def __repr__(self) -> str:
        return f"VersionVector({self.to_dict()!r})"
