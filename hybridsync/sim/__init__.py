"""Deterministic simulation of hybridsync replicas, with checkers for the guarantees.

One seed drives everything (the TigerBeetle VOPR / FoundationDB way): the options when they are
not given, the workload, the fault plan and every network draw, each from its own stream of
the seed. Time is simulated (ticks), the network is a per-link packet simulator with delay,
loss, duplication, reordering, clogging and partitions, and peers crash and restart from their
stores. A run has a safety phase with faults, then a liveness phase that heals and demands
convergence; checkers (separate from the code under test) verify G1–G4 (for fields, texts and
buffers) and a failure prints
the command that replays it::

    python -m hybridsync.sim --seed 42            # options drawn from the seed
    python -m hybridsync.sim --seed 42 --routing star --loss 0.2
    python -m hybridsync.sim --seed 42 --group-commit --flush-probability 0.25

>>> from hybridsync.sim import Simulation
>>> sim = Simulation(peers=3, seed=7, loss=0.1, duplicate=0.05, reorder=True)
>>> sim.memory("p0").fields["x"] = 1
>>> sim.run(ticks=10); sim.run_until_converged(max_ticks=500) >= 0
True
>>> sim.converged()
True
"""

from __future__ import annotations

from hybridsync.sim._checkers import (
    OpRecord,
    PendingBatch,
    Recorder,
    RegionEdit,
    RegionStats,
    RunFingerprint,
    WriteRecord,
    check_causal_order,
    check_convergence,
    check_policy_independence,
    check_region_writes,
    check_writes,
    fingerprint,
)
from hybridsync.sim._network import Network, NetworkCounters
from hybridsync.sim._options import MODES, ROUTINGS, SimOptions
from hybridsync.sim._runner import (
    FAULT_PHASES,
    POLICIES,
    Fault,
    RunResult,
    check_policies,
    plan_faults,
    run,
)
from hybridsync.sim._simulation import MemoryFactory, PeerStats, SimStats, Simulation, TickSample
from hybridsync.sim._workload import Workload

__all__ = [
    "FAULT_PHASES",
    "MODES",
    "POLICIES",
    "ROUTINGS",
    "Fault",
    "MemoryFactory",
    "Network",
    "NetworkCounters",
    "OpRecord",
    "PeerStats",
    "PendingBatch",
    "Recorder",
    "RegionEdit",
    "RegionStats",
    "RunFingerprint",
    "RunResult",
    "SimOptions",
    "SimStats",
    "Simulation",
    "TickSample",
    "Workload",
    "WriteRecord",
    "check_causal_order",
    "check_convergence",
    "check_policies",
    "check_policy_independence",
    "check_region_writes",
    "check_writes",
    "fingerprint",
    "plan_faults",
    "run",
]
