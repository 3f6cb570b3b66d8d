"""Dict- and list-like views over the fields document.

``mem.fields`` is a :class:`FieldMap` over the root ``Y.Map`` named ``fields``. Scalars read
as plain Python values (number model in ``_values``); nested dicts and lists read as live
views, so ``mem.fields["tasks"]["t1"]["status"] = "done"`` writes through. Views compare equal
to the plain values they show; ``to_py()`` returns a plain copy.

Every write goes through the plane: outside a transaction each write is one commit (one
contribution); inside ``mem.transaction()`` writes join that commit. A view remembers the key
path it was reached by; if the document is rebuilt (a rolled-back transaction, a rejected
update) the view finds its container again by that path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping, MutableSequence
from typing import TYPE_CHECKING, Any, overload

import pycrdt

from hybridsync.errors import FieldValueError
from hybridsync.fields._values import check_text, from_crdt, plain, to_crdt

if TYPE_CHECKING:
    from hybridsync.fields._plane import FieldsPlane

__all__ = ["FieldList", "FieldMap"]


def _view(plane: FieldsPlane, value: Any, path: str, keys: tuple[str | int, ...]) -> Any:
    if isinstance(value, pycrdt.Map):
        return FieldMap(plane, value, path, keys)
    if isinstance(value, pycrdt.Array):
        return FieldList(plane, value, path, keys)
    return from_crdt(value)


def _join(path: str, key: str) -> str:
    return f"{path}/{key}" if path else key


class FieldMap(MutableMapping[str, Any]):
    """A live, dict-like view of one map of the fields document."""

    __slots__ = ("_gen", "_keys", "_path", "_plane", "_ymap")

    def __init__(
        self, plane: FieldsPlane, ymap: pycrdt.Map[Any], path: str = "",
        keys: tuple[str | int, ...] = (),
    ) -> None:
        self._plane = plane
        self._ymap = ymap
        self._gen = plane.generation
        self._path = path
        self._keys = keys  # keys and list indices from the root map to this map

    @property
    def _map(self) -> pycrdt.Map[Any]:
        if self._gen != self._plane.generation:
            found = self._plane.resolve(self._keys)
            if not isinstance(found, pycrdt.Map):
                raise FieldValueError(f"the map at {self._path!r} no longer exists")
            self._ymap, self._gen = found, self._plane.generation
        return self._ymap

    @staticmethod
    def _check_key(key: object) -> str:
        if not isinstance(key, str):
            raise FieldValueError(f"field keys must be str, got {type(key).__name__} {key!r}")
        return key

    def __getitem__(self, key: str) -> Any:
        self._check_key(key)
        return _view(self._plane, self._map[key], _join(self._path, key), (*self._keys, key))

    def get(self, key: str, default: Any = None) -> Any:
        self._check_key(key)
        if key in self._map:
            return _view(self._plane, self._map[key], _join(self._path, key), (*self._keys, key))
        return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._map

    def __setitem__(self, key: str, value: Any) -> None:
        if type(key) is not str or not key.isascii():
            check_text(self._check_key(key))
        self._plane.set_key(self._map, key, to_crdt(value))

    def __delitem__(self, key: str) -> None:
        self._check_key(key)
        ymap = self._map
        if key not in ymap:
            raise KeyError(key)
        with self._plane.write():
            del ymap[key]

    def update(self, *args: Any, **kwargs: Any) -> None:  # one commit for the whole update
        items = dict(*args, **kwargs)
        converted = {self._check_key(k): to_crdt(v) for k, v in items.items()}
        ymap = self._map
        with self._plane.write():
            for k, v in converted.items():
                ymap[k] = v

    def clear(self) -> None:
        ymap = self._map
        with self._plane.write():
            for k in list(ymap.keys()):
                del ymap[k]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._map.keys()))

    def __len__(self) -> int:
        return len(self._map)

    def to_py(self) -> dict[str, Any]:
        """A plain ``dict`` copy (keys sorted), with the number model applied."""
        return _sorted(plain(self._map.to_py()) or {})

    to_dict = to_py

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FieldMap | Mapping):
            return self.to_py() == (other.to_py() if isinstance(other, FieldMap) else dict(other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FieldMap({self.to_py()!r})"


def _sorted(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _canon(v) for k, v in sorted(d.items())}


def _canon(v: Any) -> Any:
    """Sort dict keys at every depth, so equal states print and serialize identically."""
    if isinstance(v, dict):
        return _sorted(v)
    if isinstance(v, list):
        return [_canon(x) for x in v]
    return v


class FieldList(MutableSequence[Any]):
    """A live, list-like view of one array of the fields document."""

    __slots__ = ("_gen", "_keys", "_path", "_plane", "_yarr")

    def __init__(
        self, plane: FieldsPlane, arr: pycrdt.Array[Any], path: str, keys: tuple[str | int, ...]
    ) -> None:
        self._plane = plane
        self._yarr = arr
        self._gen = plane.generation
        self._path = path
        self._keys = keys

    @property
    def _arr(self) -> pycrdt.Array[Any]:
        if self._gen != self._plane.generation:
            found = self._plane.resolve(self._keys)
            if not isinstance(found, pycrdt.Array):
                raise FieldValueError(f"the list at {self._path!r} no longer exists")
            self._yarr, self._gen = found, self._plane.generation
        return self._yarr

    def _index(self, i: object) -> int:
        if isinstance(i, bool) or not isinstance(i, int):
            raise FieldValueError(f"list indices must be int, got {type(i).__name__}")
        n = len(self._arr)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise IndexError("field list index out of range")
        return j

    @overload
    def __getitem__(self, i: int) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...
    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return self.to_py()[i]
        j = self._index(i)
        return _view(self._plane, self._arr[j], f"{self._path}/[{j}]", (*self._keys, j))

    @overload
    def __setitem__(self, i: int, value: Any) -> None: ...
    @overload
    def __setitem__(self, i: slice, value: Iterable[Any]) -> None: ...
    def __setitem__(self, i: int | slice, value: Any) -> None:
        if isinstance(i, slice):
            raise FieldValueError("slice assignment is not supported; assign a whole list")
        j = self._index(i)
        converted = to_crdt(value)
        arr = self._arr
        with self._plane.write():
            del arr[j]
            arr.insert(j, converted)

    @overload
    def __delitem__(self, i: int) -> None: ...
    @overload
    def __delitem__(self, i: slice) -> None: ...
    def __delitem__(self, i: int | slice) -> None:
        if isinstance(i, slice):
            raise FieldValueError("slice deletion is not supported")
        j = self._index(i)
        arr = self._arr
        with self._plane.write():
            del arr[j]

    def insert(self, i: int, value: Any) -> None:
        if isinstance(i, bool) or not isinstance(i, int):
            raise FieldValueError(f"list indices must be int, got {type(i).__name__}")
        n = len(self._arr)
        j = max(0, min(n, i + n if i < 0 else i))
        converted = to_crdt(value)
        arr = self._arr
        with self._plane.write():
            arr.insert(j, converted)

    def append(self, value: Any) -> None:
        converted = to_crdt(value)
        arr = self._arr
        with self._plane.write():
            arr.append(converted)

    def extend(self, values: Iterable[Any]) -> None:
        converted = [to_crdt(v) for v in values]
        arr = self._arr
        with self._plane.write():
            arr.extend(converted)

    def __len__(self) -> int:
        return len(self._arr)

    def to_py(self) -> list[Any]:
        return [_canon(v) for v in plain(self._arr.to_py()) or []]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FieldList):
            return self.to_py() == other.to_py()
        if isinstance(other, list | tuple):
            return self.to_py() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FieldList({self.to_py()!r})"
