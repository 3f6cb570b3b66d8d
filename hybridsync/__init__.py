"""hybridsync: coordinator-free sync of AI agents' working memory.

Structured fields live in a Yjs-compatible CRDT map; every commit is a contribution in one
content-addressed causal log; replicas converge by anti-entropy over any lossy channel.

>>> import hybridsync as hs
>>> mem = hs.Memory(space="swarm-1", peer="agent-a", clock=lambda: 0, incarnation=1)
>>> mem.fields["goal"] = "ship v1"
>>> mem.fields.to_dict()
{'goal': 'ship v1'}
"""

from hybridsync.causal import Contribution, VersionVector
from hybridsync.errors import (
    AuthenticationError,
    ConfigError,
    DiscoveryError,
    FieldValueError,
    FrameError,
    GuaranteeViolation,
    HybridSyncError,
    IntegrityError,
    PayloadError,
    ProtocolError,
    RegionNotFound,
    SimulationError,
    StoreError,
    TransactionError,
    TransportError,
    YjsDependencyError,
    YjsMessageError,
    YjsUpdateError,
)
from hybridsync.fields import DELETED, FieldList, FieldMap
from hybridsync.peer import Peer, SessionInfo
from hybridsync.replica import Change, Conflict, Memory, ReplicaStats
from hybridsync.store import MemoryStore, Store

__version__ = "0.1.0"

__all__ = [
    "DELETED",
    "AuthenticationError",
    "Change",
    "ConfigError",
    "Conflict",
    "Contribution",
    "DiscoveryError",
    "FieldList",
    "FieldMap",
    "FieldValueError",
    "FrameError",
    "GuaranteeViolation",
    "HybridSyncError",
    "IntegrityError",
    "Memory",
    "MemoryStore",
    "PayloadError",
    "Peer",
    "ProtocolError",
    "RegionNotFound",
    "ReplicaStats",
    "SessionInfo",
    "SimulationError",
    "Store",
    "StoreError",
    "TransactionError",
    "TransportError",
    "VersionVector",
    "YjsDependencyError",
    "YjsMessageError",
    "YjsUpdateError",
    "__version__",
]
