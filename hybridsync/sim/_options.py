"""Options of one simulated run, drawn from the seed or given, and the command that replays it.

One seed drives everything (TigerBeetle VOPR, FoundationDB simulation): when an option is not
given it is drawn from ``random.Random(f"{seed}-options")``, and the run prints the seed and
every option first. :meth:`SimOptions.replay_command` spells every option out, so a replay does
not depend on how options are drawn.
"""

from __future__ import annotations

import dataclasses
import random
import shlex
from dataclasses import dataclass
from typing import Any

from hybridsync.errors import ConfigError

__all__ = ["FILL_MODES", "MODES", "ROUTINGS", "SCALES", "SimOptions", "check_probability"]

ROUTINGS = ("mesh", "star", "gossip")
MODES = ("interleaved", "epochs")
SCALES = ("small", "default", "large")
MAX_PEERS = 64
MAX_TICKS = 1_000_000
FILL_MODES = ("count", "bytes")
# Memory's own default frame limit: the simulator passes max_frame_bytes only below it
DEFAULT_MAX_FRAME_BYTES = 1 << 20


def check_probability(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{what} must be a probability in [0, 1], got {value!r}")
    return float(value)


def check_int(value: object, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{what} must be an int in [{lo}, {hi}], got {value!r}")
    return value


def check_choice(value: object, what: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{what} must be one of {', '.join(choices)}; got {value!r}")
    assert isinstance(value, str)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class SimOptions:
    """Everything that shapes one run besides the code under test.

    ``ticks`` is the safety phase (faults on; in ``epochs`` mode, per epoch);
    ``liveness_ticks`` bounds the liveness phase (faults healed, convergence demanded).
    ``rollbacks`` lets the workload run transactions that raise and roll back;
    ``region_rate`` is the rate of text and buffer edits (their own stream of the seed).
    Loss, duplication and reordering stay on in the liveness phase: anti-entropy must win
    over a lossy network; partitions, clogs and crashes stop. The default liveness budget
    (1000 ticks, 10 s simulated) leaves room for the replica's capped retransmit backoff and
    a few lost resends: the slowest of 300 default seeds converged in 164 ticks.

    ``group_commit`` builds every replica with ``Memory(group_commit=True)`` (docs/fields.md):
    small autocommitted field writes wait in a batch until a cycle commits them, and a crash
    loses the batch (those writes were never committed; the checkers credit a write only
    once a cycle commits it). ``flush_probability`` is the chance that a live peer runs its
    sync round (its flush, the cycle that commits the batch) in a safety-phase tick of
    ``interleaved`` mode; below 1, batches span ticks and meet crashes, checkpoints and
    remote writes. The liveness phase and ``epochs`` mode flush every tick (in epochs mode
    every burst then commits at the same tick under every policy, which G4 needs).

    Coverage options (drawn from their own stream ``f"{seed}-coverage"``, so the options
    above draw as they always did):

    ``commit_interval_ms`` > 0 builds every replica with that ``commit_interval_ms`` and
    calls ``Memory.poll()`` on every live peer in every tick, before its sync round (the
    driver's timer); in ``interleaved`` mode the workload's text and buffer edits then wait
    for a cycle (a poll, a sync round or a transaction) instead of committing at once.
    0 (the default) never polls.

    ``fill_batches`` (group commit only) runs that many fill bursts in the safety phase (in
    ``epochs`` mode, in as many bursts): one peer writes small sets until its pending batch
    passes its limit (8,192 writes, or 2 MiB with ``fill_mode="bytes"``) and the replica
    commits the full batch by itself; the writes on both sides of that commit are credited
    to their own batches.

    ``max_frame_bytes`` below Memory's default builds every replica with it (``sync_to``
    then splits its contributions over several frames by size as well as by
    ``batch_size``); ``large_value_rate`` is the rate of writes (per tick, their own stream)
    of a value sized around ``max_frame_bytes`` (a half to twice it), so single
    contributions near and above the frame limit travel too.

    ``rich_region_rate`` is the rate (per tick, drawn from its own stream
    ``f"{seed}-rich-regions-option"`` on about 40 % of the seeds) of the richer text and buffer
    workload (``Workload``, its own stream of operations): marked inserts, word-span deletes,
    whole rewrites with ``set()``, texts grown past the rope's 2,048-character chunks, several
    peers editing the same paragraph or buffer block in one tick, block writes, and
    ``delete_region``; its writes are checked for G2 (``check_region_writes``).
    """

    seed: int
    peers: int = 4
    ticks: int = 100
    liveness_ticks: int = 1000
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: bool = True
    max_delay_ticks: int = 3
    routing: str = "mesh"
    gossip_fanout: int = 2
    batch_size: int = 512
    partitions: bool = True
    crashes: bool = True
    write_rate: float = 0.3
    rollbacks: bool = True
    region_rate: float = 0.0
    mode: str = "interleaved"
    epochs: int = 3
    burst_ops: int = 12
    tick_ms: int = 10
    group_commit: bool = False
    flush_probability: float = 1.0
    commit_interval_ms: int = 0
    fill_batches: int = 0
    fill_mode: str = "count"
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    large_value_rate: float = 0.0
    rich_region_rate: float = 0.0

    def __post_init__(self) -> None:
        check_int(self.seed, "seed", 0, (1 << 63) - 1)
        check_int(self.peers, "peers", 1, MAX_PEERS)
        check_int(self.ticks, "ticks", 0, MAX_TICKS)
        check_int(self.liveness_ticks, "liveness_ticks", 1, MAX_TICKS)
        check_probability(self.loss, "loss")
        check_probability(self.duplicate, "duplicate")
        if self.loss >= 0.95:
            raise ConfigError("loss must stay below 0.95, or nothing can converge")
        if not isinstance(self.reorder, bool):
            raise ConfigError(f"reorder must be a bool, got {self.reorder!r}")
        check_int(self.max_delay_ticks, "max_delay_ticks", 1, 10_000)
        check_choice(self.routing, "routing", ROUTINGS)
        check_int(self.gossip_fanout, "gossip_fanout", 1, MAX_PEERS)
        check_int(self.batch_size, "batch_size", 1, 65_536)
        for name in ("partitions", "crashes", "rollbacks", "group_commit"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be a bool")
        if (
            isinstance(self.write_rate, bool)
            or not isinstance(self.write_rate, int | float)
            or not 0.0 <= self.write_rate <= 16.0
        ):
            raise ConfigError(f"write_rate must be a number of ops per tick in [0, 16], "
                              f"got {self.write_rate!r}")
        if (
            isinstance(self.region_rate, bool)
            or not isinstance(self.region_rate, int | float)
            or not 0.0 <= self.region_rate <= 16.0
        ):
            raise ConfigError(f"region_rate must be a number of ops per tick in [0, 16], "
                              f"got {self.region_rate!r}")
        check_choice(self.mode, "mode", MODES)
        check_int(self.epochs, "epochs", 1, 10_000)
        check_int(self.burst_ops, "burst_ops", 0, 100_000)
        check_int(self.tick_ms, "tick_ms", 1, 60_000)
        if check_probability(self.flush_probability, "flush_probability") < 0.05:
            raise ConfigError("flush_probability must be at least 0.05, or peers barely sync")
        check_int(self.commit_interval_ms, "commit_interval_ms", 0, 3_600_000)
        check_int(self.fill_batches, "fill_batches", 0, 16)
        check_choice(self.fill_mode, "fill_mode", FILL_MODES)
        if self.fill_batches and not self.group_commit:
            raise ConfigError("fill_batches needs group_commit: only a group-commit replica "
                              "has a pending batch to fill")
        check_int(self.max_frame_bytes, "max_frame_bytes", 1024, 16 << 20)
        if (
            isinstance(self.large_value_rate, bool)
            or not isinstance(self.large_value_rate, int | float)
            or not 0.0 <= self.large_value_rate <= 4.0
        ):
            raise ConfigError(f"large_value_rate must be a number of writes per tick in "
                              f"[0, 4], got {self.large_value_rate!r}")
        if (
            isinstance(self.rich_region_rate, bool)
            or not isinstance(self.rich_region_rate, int | float)
            or not 0.0 <= self.rich_region_rate <= 16.0
        ):
            raise ConfigError(f"rich_region_rate must be a number of ops per tick in "
                              f"[0, 16], got {self.rich_region_rate!r}")

    # ---- drawing from the seed ------------------------------------------------------------
    @classmethod
    def draw(cls, seed: int, *, scale: str = "default", **overrides: Any) -> SimOptions:
        """Options drawn from ``seed`` (``random.Random(f"{seed}-options")``), then overridden.

        ``scale`` picks the size of what is drawn: ``small`` for the default test sweep,
        ``large`` for soak runs. Overrides whose value is ``None`` are ignored.
        """
        check_int(seed, "seed", 0, (1 << 63) - 1)
        check_choice(scale, "scale", SCALES)
        rng = random.Random(f"{seed}-options")
        max_peers, lo_ticks, hi_ticks = {"small": (4, 20, 60), "default": (6, 40, 150),
                                          "large": (8, 80, 400)}[scale]
        drawn: dict[str, Any] = {
            "peers": rng.randint(2, max_peers),
            "ticks": rng.randint(lo_ticks, hi_ticks),
            "loss": rng.choice((0.0, 0.0, 0.05, 0.15, 0.3)),
            "duplicate": rng.choice((0.0, 0.0, 0.05, 0.2)),
            "reorder": rng.random() < 0.7,
            "max_delay_ticks": rng.randint(1, 5),
            "routing": rng.choice(ROUTINGS),
            "gossip_fanout": rng.randint(1, 3),
            "batch_size": rng.choice((1, 2, 8, 512)),
            "partitions": rng.random() < 0.85,
            "crashes": rng.random() < 0.6,
            "write_rate": rng.choice((0.1, 0.3, 0.6, 1.0)),
            # Drawn last, so the options drawn before it are what they always were.
            "region_rate": rng.choice((0.0, 0.1, 0.3)),
        }
        # Group commit on a quarter of the seeds; the draws below are made for every seed
        # (the stream stays the same) but only change the options when it is on: the seeds
        # without it run exactly as before it existed.
        group_commit = rng.random() < 0.25
        flush = rng.choice((1.0, 0.5, 0.25))
        # (large runs write less: conflicts grow with the square of concurrent writes, and
        # beyond max_conflicts replicas report different conflicts(), an open core bug)
        group_write_rate = rng.choice((0.6, 1.0, 1.0, 2.0) if scale != "large"
                                      else (0.3, 0.6, 0.3, 0.6))
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(sorted(unknown))}")
        if overrides.get("group_commit") is not None:
            group_commit = overrides["group_commit"]
        if group_commit is True:
            # batches of several writes between two flushes, and flushes that skip ticks
            drawn.update(group_commit=True, flush_probability=flush,
                         write_rate=group_write_rate)
        drawn.update(cls._draw_coverage(seed, group_commit=group_commit is True))
        drawn.update(cls._draw_rich_regions(seed))
        drawn.update({k: v for k, v in overrides.items() if v is not None})
        drawn.pop("seed", None)
        return cls(seed=seed, **drawn)

    @staticmethod
    def _draw_coverage(seed: int, *, group_commit: bool) -> dict[str, Any]:
        """The coverage options, from their own stream ``f"{seed}-coverage"`` (every draw is
        made for every seed, so the stream does not depend on what is on)."""
        rng = random.Random(f"{seed}-coverage")
        drawn: dict[str, Any] = {}
        # the poll timer on 30 % of the seeds. A sync round is a cycle too (and with texts
        # or buffers every round is one), so at most one tick (10 ms) polls every tick,
        # before the round; longer intervals commit only across rounds a peer skips
        # (group commit with flush_probability < 1) or a crash ends early.
        poll = rng.random() < 0.3
        interval = rng.choice((5, 10, 30, 100))
        # small frames on 25 %: contributions split over frames, some alone above the limit
        small_frames = rng.random() < 0.25
        frame_bytes = rng.choice((1024, 1536, 4096))
        large_rate = rng.choice((0.05, 0.1, 0.2))
        # fill bursts (one or two) on 20 % of the group-commit seeds
        fill = rng.random() < 0.2
        fills = rng.randint(1, 2)
        fill_mode = rng.choice(FILL_MODES)
        if poll:
            drawn["commit_interval_ms"] = interval
        if small_frames:
            drawn.update(max_frame_bytes=frame_bytes, large_value_rate=large_rate)
        if fill and group_commit:
            drawn.update(fill_batches=fills, fill_mode=fill_mode)
        return drawn

    @staticmethod
    def _draw_rich_regions(seed: int) -> dict[str, Any]:
        """The richer text and buffer workload on about 40 % of the seeds, from its own
        stream ``f"{seed}-rich-regions-option"`` (both draws are made for every seed)."""
        rng = random.Random(f"{seed}-rich-regions-option")
        on = rng.random() < 0.4
        rate = rng.choice((0.3, 0.6, 1.0))
        return {"rich_region_rate": rate} if on else {}

    def replace(self, **changes: Any) -> SimOptions:
        return dataclasses.replace(self, **changes)

    # ---- printing and replaying -----------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def describe(self) -> str:
        """``seed=7 peers=4 ticks=100 ...``: what a run prints first."""
        return " ".join(f"{k}={v}" for k, v in self.as_dict().items())

    def to_argv(self) -> list[str]:
        """Arguments of ``python -m hybridsync.sim`` that replay exactly this run."""
        argv: list[str] = []
        for k, v in self.as_dict().items():
            flag = "--" + k.replace("_", "-")
            if isinstance(v, bool):
                argv.append(flag if v else "--no-" + k.replace("_", "-"))
            else:
                argv += [flag, str(v)]
        return argv

    def replay_command(self) -> str:
        return "python -m hybridsync.sim " + shlex.join(self.to_argv())
