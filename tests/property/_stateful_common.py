"""What the stateful machines share (``test_stateful.py``, ``test_stateful_gc.py``): the
strategies of keys, values, text pieces and buffer blocks, and the local-edit rules.

Hypothesis collects a machine's rules by name (``inspect.getmembers``), so rules defined on
this base run exactly as they did when they were defined on the machine itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

import hybridsync as hs
from hybridsync.testing import ManualClock

KEYS = st.sampled_from(["a", "b", "c", "d"])
SUBKEYS = st.sampled_from(["x", "y"])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.integers(2**53, 2**60),
    st.floats(allow_nan=False, width=32), st.text(max_size=4), st.binary(max_size=3),
)
_NESTED = st.lists(SCALARS, max_size=3) | st.dictionaries(SUBKEYS, SCALARS, max_size=2)
VALUES = st.one_of(
    SCALARS,
    _NESTED,
    st.lists(SCALARS | _NESTED, max_size=2),
    st.dictionaries(SUBKEYS, SCALARS | _NESTED, max_size=2),
)
INDEX = st.integers(0, 4)
TEXTS = st.sampled_from(["notes", "plan"])
PIECES = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
BUFFER_SHAPE = (2048,)  # float32: two 4 KiB blocks


class Rollback(Exception):
    pass


class LocalEdits(RuleBasedStateMachine):
    """Rules that edit one replica locally: field writes, deletes and nested writes,
    transactions (some rolled back), text inserts, deletes and rewrites, buffer block writes,
    region deletions and commits. A subclass fills ``mems`` in an ``@initialize`` rule."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(1_700_000_000_000)
        self.mems: list[hs.Memory] = []

    def _mem(self, i: int) -> hs.Memory:
        return self.mems[i % len(self.mems)]

    # ---- fields ------------------------------------------------------------------------
    @rule(i=INDEX, key=KEYS, value=VALUES)
    def write(self, i: int, key: str, value: Any) -> None:
        self.clock.advance(1)
        self._mem(i).fields[key] = value

    @rule(i=INDEX, key=KEYS)
    def delete(self, i: int, key: str) -> None:
        mem = self._mem(i)
        if key in mem.fields:
            del mem.fields[key]

    @rule(i=INDEX, key=KEYS, sub=SUBKEYS, value=VALUES)
    def nested_write(self, i: int, key: str, sub: str, value: Any) -> None:
        mem = self._mem(i)
        current = mem.fields.get(key)
        if isinstance(current, hs.FieldMap):
            current[sub] = value
        elif isinstance(current, hs.FieldList):
            current.append(value)
        else:
            mem.fields[key] = {sub: value}

    @rule(
        i=INDEX,
        writes=st.lists(st.tuples(KEYS, st.one_of(st.none(), VALUES)), min_size=1, max_size=4),
        fail=st.booleans(),
    )
    def transaction(self, i: int, writes: list[tuple[str, Any]], fail: bool) -> None:
        mem = self._mem(i)
        before = mem.fields_json()
        try:
            with mem.transaction(note="rule"):
                for key, value in writes:
                    if value is None and key in mem.fields:
                        del mem.fields[key]
                    else:
                        mem.fields[key] = value
                if fail:
                    raise Rollback
        except Rollback:
            assert mem.fields_json() == before, "a failed transaction left visible changes"

    # ---- texts and buffers ---------------------------------------------------------------
    @rule(i=INDEX, name=TEXTS, at=st.integers(0, 64), piece=PIECES)
    def text_insert(self, i: int, name: str, at: int, piece: str) -> None:
        self._mem(i).text(name).insert(at, piece)

    @rule(i=INDEX, name=TEXTS, at=st.integers(0, 64), length=st.integers(1, 16))
    def text_delete(self, i: int, name: str, at: int, length: int) -> None:
        self._mem(i).text(name).delete(at, length)

    @rule(i=INDEX, name=TEXTS, pieces=st.lists(PIECES, max_size=4))
    def text_rewrite(self, i: int, name: str, pieces: list[str]) -> None:
        """A whole new text: some of the old one's words kept, new pieces between them."""
        text = self._mem(i).text(name)
        words = text.value.split(" ")
        text.set(" ".join(w for k, w in enumerate(words) if k % 2 == 0) + "".join(pieces))

    @rule(i=INDEX, block=st.integers(0, 1), start=st.integers(0, 1023),
          values=st.lists(st.integers(-64, 64), min_size=1, max_size=1024))
    def buffer_write(self, i: int, block: int, start: int, values: list[int]) -> None:
        at = block * 1024 + start
        data = np.array(values[: BUFFER_SHAPE[0] - at], dtype=np.float32) / 4
        self._mem(i).buffer("kv", shape=BUFFER_SHAPE).write(at, data)

    @rule(i=INDEX, name=st.sampled_from(["notes", "plan", "kv"]))
    def delete_region(self, i: int, name: str) -> None:
        mem = self._mem(i)
        if name in mem.regions():
            mem.delete_region(name)
            mem.commit()  # (a handle asked for while the deletion is pending is refused)

    @rule(i=INDEX)
    def commit(self, i: int) -> None:
        self._mem(i).commit()
