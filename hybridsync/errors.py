"""The exception tree of hybridsync. Every error we raise derives from :class:`HybridSyncError`.

::

    HybridSyncError
    ├── ConfigError            bad arguments or options at the API boundary (also a ValueError)
    │   └── RegionNotFound     ``delete_region`` of a name with no region (also a KeyError)
    ├── FieldValueError        a value the fields plane cannot store (also a TypeError)
    ├── TransactionError       misuse of ``Memory.transaction()`` (nesting, sync inside one)
    ├── ProtocolError          anything wrong with bytes that came from a peer
    │   ├── FrameError         malformed, truncated, oversized or mistyped frame
    │   │   └── YjsMessageError  a malformed y-protocols message from a Yjs client
    │   ├── IntegrityError     a contribution whose id does not match its content, or a bad DAG
    │   ├── PayloadError       a contribution payload the plane cannot decode (e.g. a Yjs update)
    │   │   └── YjsUpdateError   an outside Yjs client's update refused (malformed, unsupported)
    │   │       └── YjsDependencyError  it needs items this replica does not hold
    │   └── AuthenticationError  a peer failed the group handshake, or a record failed its AEAD
    ├── StoreError             the persistent store cannot be opened or is inconsistent
    ├── DiscoveryError         mDNS discovery cannot start (sockets, registration)
    ├── TransportError         a connection could not be opened, or closed under us
    └── SimulationError        the simulator was misconfigured, or a checker found a violation
        └── GuaranteeViolation a checker (G1–G4) failed; carries the replay command

Built-in exceptions are used only where Python expects them: ``KeyError`` from
``__getitem__``/``__delitem__``, ``IndexError`` from sequence access.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "DiscoveryError",
    "FieldValueError",
    "FrameError",
    "GuaranteeViolation",
    "HybridSyncError",
    "IntegrityError",
    "PayloadError",
    "ProtocolError",
    "RegionNotFound",
    "SimulationError",
    "StoreError",
    "TransactionError",
    "TransportError",
    "YjsDependencyError",
    "YjsMessageError",
    "YjsUpdateError",
]


class HybridSyncError(Exception):
    """Root of every error raised by hybridsync."""


class ConfigError(HybridSyncError, ValueError):
    """An argument or option is invalid (wrong type, out of range, unknown name)."""


class RegionNotFound(ConfigError, KeyError):
    """``Memory.delete_region`` named no text or buffer region of this replica (nothing is
    recorded). Also a ``KeyError``, which it was before it had a class of its own."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


class FieldValueError(HybridSyncError, TypeError):
    """A value cannot be stored in the fields plane (unsupported type, non-str key, huge int)."""


class TransactionError(HybridSyncError):
    """A transaction was misused (for example, used after it ended)."""


class ProtocolError(HybridSyncError):
    """Bytes received from a peer were rejected; the replica is unchanged."""


class FrameError(ProtocolError):
    """A frame is malformed, truncated, oversized, of an unknown version or of the wrong shape."""


class IntegrityError(ProtocolError):
    """A contribution's id does not match its content, or its causal metadata is inconsistent."""


class PayloadError(ProtocolError):
    """A contribution's payload could not be decoded or applied by its plane."""


class AuthenticationError(ProtocolError):
    """A peer did not prove knowledge of the group secret, or a record failed authentication
    (tampered, replayed, reordered or truncated); the session is closed."""


class YjsMessageError(FrameError):
    """A y-protocols message from a Yjs client is malformed, truncated or of an unknown type;
    that connection is closed, the replica is unchanged (``docs/interop.md``)."""


class YjsUpdateError(PayloadError):
    """A Yjs update from a client outside the log was refused, the replica unchanged: it is
    malformed, or holds what the fields model cannot (another root type, ``Y.Text``, XML,
    sub-documents, nesting deeper than 64 levels; ``docs/interop.md``)."""


class YjsDependencyError(YjsUpdateError):
    """A Yjs update from an outside client names items this replica does not hold (Yjs would
    buffer it silently, DESIGN.md §5); a full sync from the client repairs that."""


class TransportError(HybridSyncError):
    """A connection could not be opened, timed out, or was closed by the other end."""


class StoreError(HybridSyncError):
    """The store cannot be opened, belongs to another space, or is corrupted."""


class DiscoveryError(HybridSyncError):
    """Discovery could not start: the multicast sockets or the service registration failed."""


class SimulationError(HybridSyncError):
    """The simulator was configured wrongly."""


class GuaranteeViolation(SimulationError):
    """A checker found a violated guarantee. ``replay`` is the command that reproduces it."""

    def __init__(self, message: str, *, replay: str = "") -> None:
        super().__init__(f"{message}\nreplay with: {replay}" if replay else message)
        self.replay = replay
