"""The causal layer: contributions, version vectors, the hybrid logical clock and the log."""

from hybridsync.causal._contribution import ID_BYTES, KINDS, Contribution, compute_id
from hybridsync.causal._hlc import HybridLogicalClock, hlc_split
from hybridsync.causal._log import ID_PREFIX_BYTES, CausalLog, Dot, Draft
from hybridsync.causal._vv import VersionVector

__all__ = [
    "ID_BYTES",
    "ID_PREFIX_BYTES",
    "KINDS",
    "CausalLog",
    "Contribution",
    "Dot",
    "Draft",
    "HybridLogicalClock",
    "VersionVector",
    "compute_id",
    "hlc_split",
]
