"""Stores: in-memory and SQLite (the embedded durable default)."""

from hybridsync.store._base import MemoryStore, Store

__all__ = ["MemoryStore", "Store"]
