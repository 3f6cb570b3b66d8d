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
from hybridsync.regions._rope import Rope
from hybridsync.regions._textdiff import encode_patch, make_patch, trim
from hybridsync.regions._textfold import TextFold

if TYPE_CHECKING:
    from hybridsync.regions._plane import RegionsPlane

__all__ = ["TextRegion"]


class _TextState:
    """Working copy, shadow and fold of one text region.

    ``shadow`` is the fold's value (a rope) as of the last refresh. The working copy is the
    ``str`` last handed over with ``set``, or ``None`` while it equals the shadow: a replica
    that only receives never joins the rope into a ``str`` until someone reads the text.
    ``_known`` is a ``str`` equal to the shadow when one is at hand (the text this replica
    handed over and folded exactly, or the rope joined for a read): ``set`` compares the new
    text with it, so the fold's rope can stay compact (UTF-8 chunks) on the writer too.
    """

    __slots__ = ("_known", "_sent", "_trim", "_working", "dirty", "fold", "shadow")

    def __init__(self, hb: HappenedBefore) -> None:
        self.fold = TextFold(hb)
        self.shadow: Rope = self.fold.rope
        self._working: str | None = None
        self._known: str | None = ""  # the fold starts empty
        self.dirty = False
        # set() compared the new text with the shadow already: (shadow, text, prefix, suffix)
        self._trim: tuple[Rope, str, int, int] | None = None
        # the cycle's patch in flight: (the shadow it was made from, the text it makes)
        self._sent: tuple[Rope, str] | None = None

    @property
    def working(self) -> str:
        if self._working is None:
            self._working = self._known = str(self.shadow)
        return self._working

    @working.setter
    def working(self, text: str) -> None:
        self._working = text
        self._trim = None

    def set(self, text: str) -> None:
        """Hand over a whole new text: one comparison with the shadow, and only the part that
        differs is checked for lone surrogates. The comparison is with a ``str`` known to equal
        the shadow when there is one (``_known``); else with the rope, made hot first (``str``
        chunks, compared in place instead of decoded), which it then stays."""
        if self._known is not None:
            p, s = trim(self._known, text)
        else:
            if self.shadow is self.fold.rope and self.shadow.compact:
                self.shadow = self.fold.hot()
            p, s = trim(self.shadow, text)
        middle = text[p : len(text) - s]
        if not middle.isascii():
            try:
                middle.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigError("text must be valid Unicode (no lone surrogates)") from None
        self._working = text
        self._trim = (self.shadow, text, p, s)
        self.dirty = True

    def cycle_part(self, name: str) -> Part | None:
        """The patch from the shadow to the working copy, if the text changed."""
        if not self.dirty:
            return None
        self.dirty = False
        working = self.working
        t, self._trim = self._trim, None
        fresh = t is not None and t[0] is self.shadow and t[1] is working
        trimmed = (t[2], t[3]) if fresh and t is not None else None
        hunks = make_patch(self.shadow, working, trimmed=trimmed)
        if not hunks:
            return None
        self._sent = (self.shadow, working)
        return Part("text", name, encode_patch(hunks))

    def refresh(self) -> None:
        """After the fold changed: the shadow takes its value, and so does the working copy.

        When the fold just appended our own patch, exactly, on the very shadow it was made
        from, its value is the text that patch was made to produce: keep that ``str``.
        """
        rope = self.fold.rope
        sent, self._sent = self._sent, None
        last = self.fold.last_append
        if (
            sent is not None and last is not None and last[0] is sent[0]
            and last[1].hunks is not None and not last[1].issues and len(rope) == len(sent[1])
        ):
            self._working = self._known = sent[1]
        else:
            self._working = self._known = None
        self.shadow = rope
        self.dirty = False
        self._trim = None

    def revert(self) -> None:
        """Drop uncommitted edits: the working copy returns to the shadow."""
        self._working = None
        self._trim = self._sent = None
        self.dirty = False


class TextRegion:
    """A large free text synced by diff/patch cycles. Hand over whole texts with ``set``."""

    __slots__ = ("_epoch", "_gone", "_plane", "name")

    def __init__(self, plane: RegionsPlane, name: str) -> None:
        self._plane = plane
        self.name = name
        # what the handle was taken after: a later deletion makes it stale (ConfigError)
        st = plane.texts.get(name)
        self._gone = st.fold._deleted_by if st is not None else None
        self._epoch = plane.epochs.get(name, 0)

    @property
    def _state(self) -> _TextState:
        st = self._plane.texts.get(self.name)
        if st is None and self._gone is not None and self.name not in self._plane.buffers:
            self._plane.text(self.name)  # taken after the deletion; GC dropped the tombstone
            st = self._plane.texts.get(self.name)
        if st is None:
            raise ConfigError(f"text region {self.name!r} was deleted"
                              + (" (it is a buffer now)" if self.name in self._plane.buffers
                                 else f": mem.text({self.name!r}) re-creates it"))
        self._plane.stale("text", self.name, st, self._epoch, self._gone)
        return st

    @property
    def value(self) -> str:
        return self._state.working

    def set(self, text: str) -> None:
        """Hand over a whole new text; the next cycle commits what changed."""
        if not isinstance(text, str):
            raise ConfigError(f"text regions hold str, got {type(text).__name__}")
        self._state.set(text)

    def insert(self, index: int, text: str) -> None:
        """Insert ``text`` before character ``index`` (past the end: at the end)."""
        _check_position(index, "index")
        _check_str(text)
        v = self.value
        self.set(v[:index] + text + v[index:])

    def delete(self, index: int, length: int) -> None:
        """Delete ``length`` characters from ``index`` (what lies past the end is ignored)."""
        _check_position(index, "index")
        _check_position(length, "length")
        v = self.value
        self.set(v[:index] + v[index + length :])

    def append(self, text: str) -> None:
        _check_str(text)
        self.set(self.value + text)

    def __str__(self) -> str:
        return self.value

    def __len__(self) -> int:
        return len(self.value)

    def __repr__(self) -> str:
        return f"TextRegion({self.name!r}, {len(self.value)} chars)"


def _check_position(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{what} must be a non-negative int (characters), got {value!r}")


def _check_str(text: object) -> None:
    if not isinstance(text, str):
        raise ConfigError(f"text regions hold str, got {type(text).__name__}")
