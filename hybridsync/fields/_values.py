"""The number and value model of the fields plane (DESIGN.md §5, pycrdt traps).

What can be stored: ``None``, ``bool``, ``int`` (|n| < 2**256), ``float``, ``str``, ``bytes``,
and ``dict`` (str keys) / ``list`` / ``tuple`` of those, nested up to 64 levels.

Numbers follow the JSON/JavaScript model that every Yjs client shares: a number is a number.
pycrdt stores Python ints up to 2**53 as float64, so on read an *integral* number within
±2**53 comes back as ``int``, any other float as ``float``. Larger ints do not survive a pycrdt
update round trip (2**60 arrives as a float), so we store them as a tagged JSON object
``{"$bigint": "<decimal digits>"}`` (a plain Yjs ``Any`` object, never a nested ``Y.Map``,
which is what user dicts become) and read them back as ``int``.
Consequences, documented in ``docs/fields.md``: ``3`` reads as ``3``; ``2.5`` as ``2.5``;
``2.0`` reads as ``2`` (equal in Python, and indistinguishable in JSON or JS); ``-0.0`` as ``0``.
Tuples are stored as lists; ``bytearray``/``memoryview`` as ``bytes``.
"""

from __future__ import annotations

from typing import Any

import pycrdt

from hybridsync.errors import FieldValueError

__all__ = ["MAX_DEPTH", "from_crdt", "plain", "to_crdt"]

MAX_DEPTH = 64
MAX_VALUE_BYTES = 8 << 20  # one write must fit in one frame, with room to spare
_INT_LIMIT = 1 << 256
_SAFE = 1 << 53
BIGINT_TAG = "$bigint"


def to_crdt(value: object, depth: int = 0, budget: list[int] | None = None) -> Any:
    """Convert a plain Python value into what pycrdt stores (prelim Map/Array for containers).

    Raises :class:`FieldValueError` for unsupported types, non-str keys, ints beyond 64 bits,
    nesting deeper than ``MAX_DEPTH`` or more than ``MAX_VALUE_BYTES`` of strings and bytes.
    """
    if budget is None:
        budget = [MAX_VALUE_BYTES]
    if depth > MAX_DEPTH:
        raise FieldValueError(f"values nest at most {MAX_DEPTH} levels deep")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        check_text(value)
        n = len(value)
        _spend(budget, n if value.isascii() or n * 4 <= budget[0] else len(value.encode()))
        return value
    if isinstance(value, int):
        if not -_INT_LIMIT < value < _INT_LIMIT:
            raise FieldValueError("ints in fields must satisfy |n| < 2**256")
        if -_SAFE <= value <= _SAFE:
            return int(value)
        return {BIGINT_TAG: str(int(value))}
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        _spend(budget, len(data))
        return data
    if isinstance(value, dict):
        if len(value) == 1 and BIGINT_TAG in value:
            raise FieldValueError(
                f"a dict whose only key is {BIGINT_TAG!r} is reserved for big ints"
            )
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise FieldValueError(f"field keys must be str, got {type(k).__name__} {k!r}")
            _spend(budget, len(k))
            out[check_text(k)] = to_crdt(v, depth + 1, budget)
        return pycrdt.Map(out)
    if isinstance(value, list | tuple):
        return pycrdt.Array([to_crdt(v, depth + 1, budget) for v in value])
    raise FieldValueError(
        f"cannot store a {type(value).__name__} in fields: use None, bool, int, float, str, "
        "bytes, or dicts/lists of those"
    )


def check_text(s: str) -> str:
    """Reject strings that are not valid Unicode text (lone surrogates cannot be UTF-8)."""
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise FieldValueError(
                "strings must be valid Unicode (no lone surrogates)"
            ) from None
    return s


def _spend(budget: list[int], n: int) -> None:
    budget[0] -= n
    if budget[0] < 0:
        raise FieldValueError(
            f"value too large: one write carries at most {MAX_VALUE_BYTES} bytes of text and "
            "bytes (use a text or buffer region for large content)"
        )


def plain(value: Any) -> Any:
    """Apply the number model to a value read from pycrdt (already plain Python)."""
    if isinstance(value, float):
        if value.is_integer() and -_SAFE <= value <= _SAFE:
            return int(value)
        return value
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, dict):
        if len(value) == 1:
            tagged = value.get(BIGINT_TAG)
            if isinstance(tagged, str) and 0 < len(tagged) <= 80:
                try:
                    return int(tagged)
                except ValueError:
                    pass
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def from_crdt(value: Any) -> Any:
    """A plain Python value for whatever pycrdt returned (shared types become dict/list)."""
    if isinstance(value, pycrdt.Map | pycrdt.Array):
        return plain(value.to_py())
    if isinstance(value, pycrdt.Text):
        return str(value)
    return plain(value)


def canonical_json_default(value: Any) -> Any:
    """``json.dumps`` hook for the canonical fields JSON (bytes as tagged hex, floats exact)."""
    if isinstance(value, bytes | bytearray):
        return {"$bytes": bytes(value).hex()}
    raise TypeError(type(value).__name__)
