"""``Simulation``: replicas of one space over the simulated network, in simulated time.

The replicas are the production :class:`~hybridsync.Memory` objects, fed a simulated clock
(``tick * tick_ms``) and incarnations drawn from the seed. Each tick: deliver the frames that
are due, then let every live peer run one sync round towards its routing targets.

>>> sim = Simulation(peers=3, seed=7, loss=0.1, reorder=True)
>>> sim.memory("p0").fields["x"] = 1
>>> sim.partition([["p0"], ["p1", "p2"]]); sim.run(ticks=20); sim.heal()
>>> sim.run_until_converged(max_ticks=500) > 0 and sim.converged()
True
>>> sim.memory("p2").fields["x"]
1
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TextIO

from hybridsync.errors import ConfigError, GuaranteeViolation, ProtocolError, SimulationError
from hybridsync.replica import Memory
from hybridsync.sim._checkers import Recorder
from hybridsync.sim._network import Network, NetworkCounters
from hybridsync.sim._options import (
    DEFAULT_MAX_FRAME_BYTES,
    ROUTINGS,
    SimOptions,
    check_choice,
    check_int,
    check_probability,
)
from hybridsync.store import MemoryStore

__all__ = ["MemoryFactory", "PeerStats", "SimStats", "Simulation", "TickSample"]

_INCARNATION_BITS = 62


class MemoryFactory(Protocol):
    """Builds one replica; ``hybridsync.Memory`` itself, or a subclass under test."""

    def __call__(
        self,
        space: str,
        peer: str,
        *,
        store: MemoryStore,
        clock: Callable[[], int],
        incarnation: int,
        batch_size: int,
        retransmit_rounds: int,
    ) -> Memory:
        """(With ``Simulation(group_commit=True)`` it is also called with
        ``group_commit=True``, so a factory for such runs takes ``**kwargs`` or that name.)"""
        ...


@dataclass(frozen=True, slots=True)
class PeerStats:
    up: bool
    incarnation: int
    log_length: int
    content_bytes: int
    metadata_bytes: int
    conflicts: int
    frames_sent: int
    bytes_sent: int


@dataclass(frozen=True, slots=True)
class SimStats:
    """Traffic and replica sizes so far (``Simulation.stats``)."""

    ticks: int
    rounds: int
    messages: int
    bytes: int
    delivered: int
    bytes_delivered: int
    duplicated: int
    dropped_loss: int
    dropped_partition: int
    dropped_down: int
    clogged: int
    in_flight: int
    crashes: int
    restarts: int
    rejected_frames: int
    peers: dict[str, PeerStats] = field(default_factory=dict)
    # the poll timer (``commit_interval_ms``): polls that ran a cycle, and those whose cycle
    # made a contribution (a text/buffer edit or a group-commit batch committed by time)
    poll_cycles: int = 0
    poll_commits: int = 0
    # frames: sync rounds (one ``sync_to``) that returned more than one frame, the largest
    # frame sent, and frames above ``max_frame_bytes`` (one contribution larger than it)
    split_rounds: int = 0
    largest_frame: int = 0
    oversize_frames: int = 0

    @property
    def metadata_bytes(self) -> dict[str, int]:
        """Per-peer metadata size (log and CRDT bookkeeping beyond the content)."""
        return {p: s.metadata_bytes for p, s in self.peers.items()}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TickSample:
    """One row of the per-tick series (``Simulation(sample=True)``)."""

    tick: int
    time_ms: int
    messages: int
    bytes: int
    distinct_states: int
    max_divergence: int
    partitioned: bool
    down: int


class Simulation:
    """A seeded, deterministic network of replicas: no real time, randomness or sockets.

    ``peers`` is a count (names ``p0``, ``p1``, …) or a sequence of names. ``seed`` drives
    everything through separate streams (network draws, random partitions, incarnations),
    so the same seed replays the same run. Routing: ``mesh`` (everyone syncs to everyone),
    ``star`` (the first peer is the hub; leaves only talk to it), ``gossip`` (each peer syncs
    to ``gossip_fanout`` random peers per tick). Peers do not know the partitions: frames sent
    across one are dropped, as on a real network.

    ``group_commit`` builds the replicas with ``Memory(group_commit=True)``; a sync round
    (``sync_to``) is then also the flush that commits a peer's pending writes.
    ``flush_probability`` is the chance that a live peer runs its sync round in a tick (drawn
    per peer and tick from the seed's ``-flush`` stream); it can be changed between ticks.

    ``commit_interval_ms`` > 0 builds the replicas with it and calls ``Memory.poll()`` on
    every live peer in every tick, after the deliveries and before the sync rounds (the
    driver's timer). ``max_frame_bytes`` (when given) builds the replicas with it, so
    ``sync_to`` splits what it sends by size too. Both are passed to the memory factory
    only when set.
    """

    def __init__(
        self,
        peers: int | Sequence[str] = 4,
        seed: int = 0,
        *,
        loss: float | None = None,
        loss_probability: float | None = None,
        duplicate: float | None = None,
        duplicate_probability: float | None = None,
        reorder: bool = False,
        max_delay_ticks: int = 3,
        tick_ms: int = 10,
        routing: str = "mesh",
        gossip_fanout: int = 2,
        batch_size: int = 512,
        retransmit_rounds: int = 8,
        space: str = "sim",
        memory_factory: MemoryFactory | None = None,
        record: bool = True,
        sample: bool = False,
        replay: str | None = None,
        group_commit: bool = False,
        flush_probability: float = 1.0,
        commit_interval_ms: int = 0,
        max_frame_bytes: int | None = None,
    ) -> None:
        if isinstance(peers, bool) or not isinstance(peers, int | list | tuple):
            raise ConfigError(f"peers must be a count or a list of names, got {peers!r}")
        if isinstance(peers, int):
            names = [f"p{i}" for i in range(check_int(peers, "peers", 1, 1024))]
        else:
            names = list(peers)
            if not names or any(not isinstance(n, str) or not n for n in names):
                raise ConfigError("peer names must be non-empty strings")
            if len(set(names)) != len(names):
                raise ConfigError("peer names must be unique")
        self.seed = check_int(seed, "seed", 0, (1 << 63) - 1)
        loss_p = _alias(loss, loss_probability, "loss")
        dup_p = _alias(duplicate, duplicate_probability, "duplicate")
        self.routing = check_choice(routing, "routing", ROUTINGS)
        self.gossip_fanout = check_int(gossip_fanout, "gossip_fanout", 1, 1024)
        self.tick_ms = check_int(tick_ms, "tick_ms", 1, 60_000)
        self.batch_size = check_int(batch_size, "batch_size", 1, 65_536)
        self.retransmit_rounds = check_int(retransmit_rounds, "retransmit_rounds", 1, 1 << 20)
        if not isinstance(group_commit, bool):
            raise ConfigError(f"group_commit must be a bool, got {group_commit!r}")
        self.group_commit = group_commit
        self.commit_interval_ms = check_int(commit_interval_ms, "commit_interval_ms", 0,
                                            3_600_000)
        self.max_frame_bytes = (None if max_frame_bytes is None
                                else check_int(max_frame_bytes, "max_frame_bytes", 1024,
                                               16 << 20))
        self._poll_cycles = self._poll_commits = 0
        self._split_rounds = self._largest_frame = self._oversize_frames = 0
        self._flush_rng = random.Random(f"{seed}-flush")
        self.flush_probability = flush_probability
        self.space = space
        self._factory: MemoryFactory = memory_factory or Memory
        self.replay_command = replay or (
            f"python -m hybridsync.sim --seed {seed} --peers {len(names)} "
            f"--loss {loss_p} --duplicate {dup_p} --{'' if reorder else 'no-'}reorder "
            f"--routing {routing} --batch-size {batch_size}"
            + (f" --group-commit --flush-probability {flush_probability}" if group_commit else "")
            + (f" --commit-interval-ms {commit_interval_ms}" if commit_interval_ms else "")
            + (f" --max-frame-bytes {max_frame_bytes}" if max_frame_bytes is not None else "")
        )
        self.network = Network(
            random.Random(f"{seed}-net"),
            loss=loss_p, duplicate=dup_p, reorder=reorder, max_delay_ticks=max_delay_ticks,
        )
        self._route_rng = random.Random(f"{seed}-route")
        self._fault_rng = random.Random(f"{seed}-faults-sim")
        self._names = tuple(names)
        self._tick = 0
        self._stores: dict[str, MemoryStore] = {n: MemoryStore() for n in names}
        self._memories: dict[str, Memory] = {}
        self._up: dict[str, bool] = {}
        self._incarnation_rng = {n: random.Random(f"{seed}-incarnation-{n}") for n in names}
        self._incarnations: dict[str, set[int]] = {n: set() for n in names}
        self._crashes = self._restarts = self._rejected = 0
        self.recorder: Recorder | None = Recorder() if record else None
        self.samples: list[TickSample] | None = [] if sample else None
        self._last_counts = (0, 0)
        self.violations: list[str] = []
        for n in names:
            self._start(n)

    @classmethod
    def from_options(cls, options: SimOptions, **kwargs: Any) -> Simulation:
        """The network and replicas of ``options`` (the workload and faults are the runner's)."""
        return cls(
            options.peers, options.seed, loss=options.loss, duplicate=options.duplicate,
            reorder=options.reorder, max_delay_ticks=options.max_delay_ticks,
            tick_ms=options.tick_ms, routing=options.routing,
            gossip_fanout=options.gossip_fanout, batch_size=options.batch_size,
            replay=options.replay_command(), group_commit=options.group_commit,
            flush_probability=options.flush_probability,
            commit_interval_ms=options.commit_interval_ms,
            max_frame_bytes=(None if options.max_frame_bytes == DEFAULT_MAX_FRAME_BYTES
                             else options.max_frame_bytes),
            **kwargs,
        )

    @classmethod
    def random(
        cls, seed: int, *, scale: str = "default", out: TextIO | None = sys.stdout,
        **kwargs: Any,
    ) -> Simulation:
        """A simulation whose options are drawn from ``seed``; prints the seed and the drawn
        options first (to ``out``), so any run can be replayed.

        >>> import io
        >>> sim = Simulation.random(7, scale="small", out=io.StringIO())
        >>> sim.seed, len(sim.peers) >= 2
        (7, True)
        """
        options = SimOptions.draw(seed, scale=scale)
        if out is not None:
            out.write(f"seed={seed} options: {options.describe()}\n")
            out.flush()
        return cls.from_options(options, **kwargs)

    # ---- peers ---------------------------------------------------------------------------
    @property
    def peers(self) -> tuple[str, ...]:
        return self._names

    @property
    def flush_probability(self) -> float:
        """The chance that a live peer runs its sync round (its flush) in a tick."""
        return self._flush_p

    @flush_probability.setter
    def flush_probability(self, value: float) -> None:
        p = check_probability(value, "flush_probability")
        if p < 0.05:
            raise ConfigError("flush_probability must be at least 0.05, or peers barely sync")
        self._flush_p = p

    def memory(self, peer: str) -> Memory:
        """The live replica of ``peer`` (a new object after each restart)."""
        self._check_peer(peer)
        if not self._up[peer]:
            raise SimulationError(f"{peer} is crashed; restart() it first")
        return self._memories[peer]

    def memories(self) -> dict[str, Memory]:
        """Every live replica by name."""
        return {n: self._memories[n] for n in self._names if self._up[n]}

    def is_up(self, peer: str) -> bool:
        self._check_peer(peer)
        return self._up[peer]

    def _check_peer(self, peer: object) -> None:
        if peer not in self._stores:
            raise ConfigError(f"unknown peer {peer!r}; peers are {', '.join(self._names)}")

    def _new_incarnation(self, peer: str) -> int:
        rng, used = self._incarnation_rng[peer], self._incarnations[peer]
        for _ in range(1000):
            inc = rng.getrandbits(_INCARNATION_BITS) or 1
            if inc not in used:
                used.add(inc)
                return inc
        raise SimulationError("could not draw a fresh incarnation")  # pragma: no cover

    def _start(self, peer: str) -> None:
        store = self._stores[peer]
        replayed = list(store.contributions())
        extra: dict[str, Any] = {"group_commit": True} if self.group_commit else {}
        if self.commit_interval_ms:
            extra["commit_interval_ms"] = self.commit_interval_ms
        if self.max_frame_bytes is not None:
            extra["max_frame_bytes"] = self.max_frame_bytes
        mem = self._factory(
            self.space, peer, store=store, clock=self._clock,
            incarnation=self._new_incarnation(peer), batch_size=self.batch_size,
            retransmit_rounds=self.retransmit_rounds, **extra,
        )
        if mem.group_commit != self.group_commit:
            raise ConfigError(f"the memory factory built {peer} with group_commit="
                              f"{mem.group_commit}, the simulation wants {self.group_commit}")
        self._memories[peer] = mem
        self._up[peer] = True
        if self.recorder is not None:
            self.recorder.attach(peer, mem, replayed)

    def _clock(self) -> int:
        return self._tick * self.tick_ms

    @property
    def now_ms(self) -> int:
        return self._clock()

    @property
    def tick_count(self) -> int:
        """Ticks run so far."""
        return self._tick

    # ---- faults --------------------------------------------------------------------------
    def crash(self, peer: str) -> None:
        """Kill ``peer``: it keeps only what it committed to its store (with group commit,
        writes still pending are lost); frames in flight to it are lost."""
        self._check_peer(peer)
        if not self._up[peer]:
            raise SimulationError(f"{peer} is already crashed")
        mem = self._memories.pop(peer)
        if self.recorder is not None:
            self.recorder.detach(peer, mem)
        self._up[peer] = False
        self.network.drop_to(peer)
        self._crashes += 1

    def restart(self, peer: str) -> Memory:
        """Rebuild ``peer`` from its store with a fresh incarnation."""
        self._check_peer(peer)
        if self._up[peer]:
            raise SimulationError(f"{peer} is running; crash() it first")
        self._start(peer)
        self._restarts += 1
        return self._memories[peer]

    def restart_all(self) -> list[str]:
        down = [n for n in self._names if not self._up[n]]
        for n in down:
            self.restart(n)
        return down

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Cut every link between different groups (both ways). A peer listed in no group is
        cut from everyone."""
        listed: dict[str, int] = {}
        for g, members in enumerate(groups):
            for m in members:
                self._check_peer(m)
                if m in listed:
                    raise ConfigError(f"{m} is in more than one group")
                listed[m] = g
        self.network.block(
            (a, b) for a in self._names for b in self._names
            if a != b and (a not in listed or b not in listed or listed[a] != listed[b])
        )

    def partition_random(self) -> list[list[str]]:
        """Split the peers into two random non-empty groups (drawn from the seed)."""
        names = list(self._names)
        if len(names) < 2:
            return [names]
        self._fault_rng.shuffle(names)
        k = self._fault_rng.randint(1, len(names) - 1)
        groups = [sorted(names[:k]), sorted(names[k:])]
        self.partition(groups)
        return groups

    def isolate(self, peer: str) -> None:
        """Cut ``peer`` from everyone, both ways."""
        self._check_peer(peer)
        self.partition([[n for n in self._names if n != peer]])

    def one_way(self, src: str, dst: str) -> None:
        """Drop ``src -> dst`` while ``dst -> src`` still flows."""
        self._check_peer(src)
        self._check_peer(dst)
        self.network.block([(src, dst)])

    def clog(self, src: str, dst: str, ticks: int) -> None:
        """Hold the frames on ``src -> dst`` for ``ticks`` ticks (delayed, not lost)."""
        self._check_peer(src)
        self._check_peer(dst)
        self.network.clog(src, dst, self._tick + check_int(ticks, "ticks", 1, 1_000_000))

    def heal(self) -> None:
        """End every partition, one-way cut and clog (crashed peers stay down)."""
        self.network.heal(self._tick)

    @property
    def partitioned(self) -> bool:
        return bool(self.network.blocked)

    # ---- running -------------------------------------------------------------------------
    def _targets(self, peer: str) -> list[str]:
        others = [n for n in self._names if n != peer]
        if not others:
            return []
        if self.routing == "mesh":
            return others
        if self.routing == "star":
            hub = self._names[0]
            return others if peer == hub else [hub]
        k = min(self.gossip_fanout, len(others))
        return self._route_rng.sample(others, k)

    def tick(self, *, after_delivery: Callable[[], object] | None = None) -> None:
        """One tick: deliver what is due, then one sync round of every live peer (each with
        ``flush_probability``). ``after_delivery`` runs between the two (a fault that strikes
        mid-tick, e.g. a crash before the peer flushed what it received)."""
        self._tick += 1
        now = self._tick
        recorder = self.recorder
        for d in self.network.deliver(now, self._up):
            if recorder is not None:
                recorder.receiving(d.dst, True)
            try:
                self._memories[d.dst].receive(d.src, d.frame)
            except ProtocolError as exc:
                self._rejected += 1
                self.violations.append(
                    f"tick {now}: {d.dst} rejected an honest frame from {d.src}: {exc}")
            finally:
                if recorder is not None:
                    recorder.receiving(d.dst, False)
        if after_delivery is not None:
            after_delivery()
        if self.commit_interval_ms:
            self._poll_all()
        flush_p = self._flush_p
        for peer in self._names:
            # Targets are drawn for every peer, up or not, so the draws do not depend on crashes.
            targets = self._targets(peer)
            if flush_p < 1.0 and self._flush_rng.random() >= flush_p:
                continue  # no flush this tick (drawn for every peer, up or not)
            if not self._up[peer]:
                continue
            mem = self._memories[peer]
            if not targets and self.group_commit:
                mem.commit()  # a lone peer's flush still commits its batch (as hs.Peer's does)
            for dst in targets:
                frames = mem.sync_to(dst)
                if len(frames) > 1:
                    self._split_rounds += 1
                for frame in frames:
                    self._note_frame(len(frame))
                    self.network.send(now, peer, dst, frame)
        if self.samples is not None:
            self.samples.append(self._sample())
        if self.violations:
            raise GuaranteeViolation(self.violations[0], replay=self.replay_command)

    def _poll_all(self) -> None:
        """The driver's timer: ``poll()`` every live replica (a cycle once the interval has
        passed on the simulated clock); counts the cycles and those that committed."""
        for peer in self._names:
            if not self._up[peer]:
                continue
            mem = self._memories[peer]
            before = mem.version_vector.get(peer, 0)
            if mem.poll():
                self._poll_cycles += 1
                if mem.version_vector.get(peer, 0) > before:
                    self._poll_commits += 1

    def _note_frame(self, size: int) -> None:
        if size > self._largest_frame:
            self._largest_frame = size
        if self.max_frame_bytes is not None and size > self.max_frame_bytes:
            self._oversize_frames += 1

    def run(self, ticks: int, *, on_tick: Callable[[Simulation], None] | None = None) -> None:
        """Run ``ticks`` ticks (``on_tick`` is called after each)."""
        for _ in range(check_int(ticks, "ticks", 0, 10_000_000)):
            self.tick()
            if on_tick is not None:
                on_tick(self)

    def skip(self, ticks: int) -> None:
        """Let ``ticks`` ticks of simulated time pass with no sync rounds (frames in flight
        arrive at the next tick). Aligns runs on a tick grid."""
        self._tick += check_int(ticks, "ticks", 0, 10_000_000)

    def run_until_converged(
        self, max_ticks: int = 500, *, on_tick: Callable[[Simulation], None] | None = None
    ) -> int:
        """Tick until every replica is identical; returns the ticks used.

        Raises :class:`GuaranteeViolation` (liveness) when ``max_ticks`` pass first, and
        :class:`SimulationError` when a peer is down (it could never converge).
        """
        check_int(max_ticks, "max_ticks", 0, 10_000_000)
        down = [n for n in self._names if not self._up[n]]
        if down:
            raise SimulationError(f"{', '.join(down)} crashed: restart before converging")
        for used in range(max_ticks + 1):
            if self.converged():
                return used
            if used == max_ticks:
                break
            self.tick()
            if on_tick is not None:
                on_tick(self)
        raise GuaranteeViolation(
            f"G1 liveness: replicas did not converge within {max_ticks} ticks after the "
            f"faults stopped ({self._divergence_report()})",
            replay=self.replay_command,
        )

    def converged(self) -> bool:
        """Every peer is up, no write waits for a cycle (group commit) and all replicas are
        byte-identical (heads, fields JSON, regions)."""
        if not all(self._up.values()):
            return False
        mems = [self._memories[n] for n in self._names]
        if any(m.pending_writes for m in mems):
            return False
        heads = mems[0].heads
        if any(m.heads != heads for m in mems[1:]):
            return False
        digest = mems[0].state_digest()  # fields JSON and every region's bytes
        return all(m.state_digest() == digest for m in mems[1:])

    def _divergence_report(self) -> str:
        parts = []
        for n in self._names:
            if not self._up[n]:
                parts.append(f"{n}: down")
                continue
            m = self._memories[n]
            st = m.stats()
            parts.append(f"{n}: {st.log_length} contributions, {st.heads} heads, "
                         f"{st.pending} parked"
                         + (f", {st.late} refused as late" if st.late else "")
                         + (f", {m.pending_writes} writes pending" if m.pending_writes else ""))
        return "; ".join(parts)

    # ---- measuring -----------------------------------------------------------------------
    def divergence(self) -> tuple[int, int]:
        """``(distinct states, max contributions a live replica lacks)``."""
        vvs: list[dict[str, int]] = []
        heads: set[tuple[str, ...]] = set()
        for n in self._names:
            if self._up[n]:
                m = self._memories[n]
                vvs.append(m.version_vector.to_dict())
                heads.add(m.heads)
        union: dict[str, int] = {}
        for vv in vvs:
            for a, s in vv.items():
                if s > union.get(a, 0):
                    union[a] = s
        lag = max((sum(s - vv.get(a, 0) for a, s in union.items()) for vv in vvs), default=0)
        return len(heads), lag

    def _sample(self) -> TickSample:
        c = self.network.counters
        msgs, nbytes = c.sent - self._last_counts[0], c.bytes_sent - self._last_counts[1]
        self._last_counts = (c.sent, c.bytes_sent)
        distinct, lag = self.divergence()
        return TickSample(self._tick, self.now_ms, msgs, nbytes, distinct, lag,
                          self.partitioned, sum(1 for u in self._up.values() if not u))

    @property
    def stats(self) -> SimStats:
        c: NetworkCounters = self.network.counters
        peers: dict[str, PeerStats] = {}
        for n in self._names:
            if self._up[n]:
                st = self._memories[n].stats()
                peers[n] = PeerStats(True, self._memories[n].incarnation, st.log_length,
                                     st.content_bytes, st.metadata_bytes, st.conflicts,
                                     st.frames_sent, st.bytes_sent)
            else:
                peers[n] = PeerStats(False, 0, len(self._stores[n]), 0, 0, 0, 0, 0)
        return SimStats(
            ticks=self._tick, rounds=self._tick, messages=c.sent, bytes=c.bytes_sent,
            delivered=c.delivered, bytes_delivered=c.bytes_delivered, duplicated=c.duplicated,
            dropped_loss=c.dropped_loss, dropped_partition=c.dropped_partition,
            dropped_down=c.dropped_down, clogged=c.clogged, in_flight=self.network.in_flight,
            crashes=self._crashes, restarts=self._restarts, rejected_frames=self._rejected,
            peers=peers, poll_cycles=self._poll_cycles, poll_commits=self._poll_commits,
            split_rounds=self._split_rounds, largest_frame=self._largest_frame,
            oversize_frames=self._oversize_frames,
        )

    def __repr__(self) -> str:
        up = sum(self._up.values())
        return (f"Simulation(peers={len(self._names)}, up={up}, seed={self.seed}, "
                f"tick={self._tick}, routing={self.routing!r})")


def _alias(value: float | None, alias: float | None, name: str) -> float:
    if value is not None and alias is not None:
        raise ConfigError(f"give {name}= or {name}_probability=, not both")
    chosen = value if value is not None else alias
    return check_probability(0.0 if chosen is None else chosen, name)
