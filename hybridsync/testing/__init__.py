"""Fakes, pumps and conformance suites for testing code built on hybridsync.

Like ``trio.testing``: nothing here opens a socket or reads the real clock.

- :func:`sync_pair` / :func:`sync_all`: exchange frames until replicas are quiet, with a
  bounded number of rounds.
- :class:`LossyChannel`: a seeded channel that loses, duplicates and reorders frames.
- :class:`ManualClock`: a clock for ``Memory(clock=...)`` that moves only when told to.
- :func:`snapshot` / :func:`assert_converged`: compare what replicas show.
- :class:`StoreConformance`: the checks every :class:`~hybridsync.Store` must pass.
"""

from hybridsync.testing._checks import ReplicaSnapshot, assert_converged, snapshot
from hybridsync.testing._store import StoreConformance
from hybridsync.testing._sync import ChannelStats, LossyChannel, ManualClock, sync_all, sync_pair

__all__ = [
    "ChannelStats",
    "LossyChannel",
    "ManualClock",
    "ReplicaSnapshot",
    "StoreConformance",
    "assert_converged",
    "snapshot",
    "sync_all",
    "sync_pair",
]
