"""Text regions: the working copy an agent edits, its shadow, and the cycle's patch.

The *shadow* is the fold value as of this replica's last cycle or remote apply; the cycle diffs
the working copy against it (``_textdiff.make_patch``, bounded) and hands the patch to the
replica as one part of a contribution. The value itself is owned by ``TextFold``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hybridsync.errors import ConfigError
from hybridsync.regions._folds import HappenedBefore
from hybridsync.regions._parts import Part
from hybridsync.regions._textdiff import encode_patch, make_patch
from hybridsync.regions._textfold import TextFold

if TYPE_CHECKING:
    from hybridsync.regions._plane import RegionsPlane

__all__ = ["TextRegion"]


class _TextState:
    __slots__ = ("dirty", "fold", "shadow", "working")

    def __init__(self, hb: HappenedBefore) -> None:
        self.fold = TextFold(hb)
        self.working = ""
        self.shadow = ""
        self.dirty = False

    def cycle_part(self, name: str) -> Part | None:
        """The patch from the shadow to the working copy, if the text changed."""
        if not self.dirty:
            return None
        self.dirty = False
        hunks = make_patch(self.shadow, self.working)
        return Part("text", name, encode_patch(hunks)) if hunks else None



class TextRegion:
    """A large free text synced by diff/patch cycles. Hand over whole texts with ``set``."""

    __slots__ = ("_plane", "name")

    def __init__(self, plane: RegionsPlane, name: str) -> None:
        self._plane = plane
        self.name = name

    @property
    def _state(self) -> _TextState:
        st = self._plane.texts.get(self.name)
        if st is None:
            raise ConfigError(f"text region {self.name!r} was deleted")
        return st

    @property
    def value(self) -> str:
        return self._state.working

    def set(self, text: str) -> None:
        if not isinstance(text, str):
            raise ConfigError(f"text regions hold str, got {type(text).__name__}")
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigError("text must be valid Unicode (no lone surrogates)") from None
        st = self._state
        st.working = text
        st.dirty = True

    def insert(self, index: int, text: str) -> None:
        v = self.value
        self.set(v[:index] + text + v[index:])

    def delete(self, index: int, length: int) -> None:
        v = self.value
        self.set(v[:index] + v[index + length :])

    def append(self, text: str) -> None:
        self.set(self.value + text)

    def __str__(self) -> str:
        return self.value

    def __len__(self) -> int:
        return len(self.value)

    def __repr__(self) -> str:
        return f"TextRegion({self.name!r}, {len(self.value)} chars)"
