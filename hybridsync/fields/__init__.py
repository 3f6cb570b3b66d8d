"""The fields plane: a Yjs-compatible CRDT map (pycrdt) with our value model and conflicts."""

from hybridsync.fields._conflicts import (
    DELETED,
    FieldsConflictIndex,
    FieldWrite,
    choose_conflicts,
)
from hybridsync.fields._plane import ROOT_NAME, FieldsPlane
from hybridsync.fields._values import from_crdt, plain, to_crdt
from hybridsync.fields._views import FieldList, FieldMap

__all__ = [
    "DELETED",
    "ROOT_NAME",
    "FieldList",
    "FieldMap",
    "FieldWrite",
    "FieldsConflictIndex",
    "FieldsPlane",
    "choose_conflicts",
    "from_crdt",
    "plain",
    "to_crdt",
]
