"""``metadata-growth``: what a replica keeps beyond its content under endless text churn —
hybridsync without GC, hybridsync with GC, and a pure-CRDT design holding the same texts in
pycrdt ``Text`` (the seeds' central claim: diff/patch regions compacted at the stability
frontier stay within a constant of the content; sequence-CRDT metadata grows with the edits).

**The edit stream (the same for all three).** Each peer owns ``texts-per-peer`` texts of
about ``text-chars`` characters (words, a few of them non-ASCII), created at tick 0. Every
tick, ``edit-rate`` edits (on average) each pick a text at random, and its owner replaces a
random span of 20–200 characters by new words of about the same length (the size drifts back
towards ``text-chars``: steady live content, endless churn). Only a text's owner edits it, so
every edit is made on a text that is exactly what the stream says, and all three systems end
with byte-identical texts (checked at the end; the run fails loudly otherwise).

**The systems.**

* ``hybridsync`` and ``hybridsync + GC``: ``peers`` replicas in the simulator (seeded
  network, ``routing``, ``loss``), the owner does ``text.set(new)`` and ``commit()`` (one
  contribution per edit), every peer syncs every tick. With GC the replicas are
  ``Memory(..., gc_min_entries=N)``: a replica folds the stable prefix of its log into a
  checkpoint once ``N`` contributions are stable (docs/gc.md).
* ``pycrdt``: one ``pycrdt.Doc`` per owner (its own client id) applies each edit as the
  minimal Yjs operations (delete the span, insert the new words, at UTF-8 offsets, one
  transaction per edit), and a reader ``Doc`` applies every update as it happens: the state
  of a fully synced replica. pycrdt's own garbage collection is on (the default): deleted
  text keeps only its tombstone structure.

**What is measured.** ``content`` = UTF-8 bytes of the texts. For hybridsync,
``metadata`` = ``Memory.stats().metadata_bytes`` (the largest over the replicas): retained
contributions (payloads and headers), stubs, the Yjs fields document's overhead, the fields
checkpoint; text bases share the content's rope and are not counted there. ``at rest`` =
what the replica's store holds: each stored contribution (payload plus a fixed-width header:
32-byte id, 32 bytes per parent, author, kind, note, three 8-byte integers) plus the
checkpoint's encoded bytes (which include a copy of each text as of the checkpoint). For
pycrdt, ``state`` = ``len(doc.get_update())`` of the reader (Yjs v1, what it stores and
sends to a joining peer) and ``metadata`` = state − content. Ratios are metadata ÷ content.
Every system is measured at each of ``samples`` points; the GC replicas, whose metadata is a
sawtooth (it grows until a compaction), are also measured every tick, and each point carries
the highest value since the previous one (``*_peak``).
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pycrdt

from hybridsync.errors import GuaranteeViolation
from hybridsync.replica import Memory
from hybridsync.scenarios._common import Context, Outcome, Row, check_range, figure, write_rows
from hybridsync.sim import Simulation
from hybridsync.sim._options import MAX_PEERS, ROUTINGS
from hybridsync.store import MemoryStore

__all__ = ["COLUMNS", "ChurnStream", "Edit", "add_arguments", "measure", "run_scenario"]

COLUMNS = (
    "tick", "edits", "content_bytes",
    "hs_metadata_bytes", "hs_log_length", "hs_at_rest_bytes",
    "gc_metadata_bytes", "gc_log_length", "gc_compacted", "gc_at_rest_bytes",
    "gc_metadata_peak_bytes", "gc_at_rest_peak_bytes",
    "pycrdt_state_bytes", "pycrdt_metadata_bytes",
    "hs_ratio", "gc_ratio", "gc_ratio_peak", "pycrdt_ratio",
)
_VOCAB = (
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "with", "on", "agent", "memory",
    "sync", "plan", "step", "task", "note", "result", "check", "retry", "tool", "call", "output",
    "input", "error", "value", "field", "region", "text", "patch", "merge", "replica", "peer",
    "state", "log", "order", "naïve", "café", "→", "über", "résumé",
)
_PYCRDT_CLIENT_BASE = 0x5EED0000


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace characters ``[start, end)`` of text ``name`` (owned by ``owner``) by ``new``."""

    name: str
    owner: str
    start: int
    end: int
    new: str


class ChurnStream:
    """The seeded edit stream; ``texts`` always holds what every text should be."""

    def __init__(self, seed: int, peers: Sequence[str], *, texts_per_peer: int = 1,
                 text_chars: int = 2000, edit_rate: float = 2.0) -> None:
        self._rng = random.Random(f"{seed}-churn")
        self.text_chars = text_chars
        self.edit_rate = edit_rate
        self.owner: dict[str, str] = {}
        self.texts: dict[str, str] = {}
        for p in peers:
            for i in range(texts_per_peer):
                name = f"{p}/notes{i}"
                self.owner[name] = p
                self.texts[name] = self._words(text_chars)
        self._names = sorted(self.texts)

    def _words(self, n: int) -> str:
        out: list[str] = []
        size = 0
        while size < n:
            w = self._rng.choice(_VOCAB)
            out.append(w)
            size += len(w) + 1
        return " ".join(out)[:n]

    def content_bytes(self) -> int:
        return sum(len(t.encode()) for t in self.texts.values())

    def tick(self) -> list[tuple[Edit, str]]:
        """This tick's edits, in order, each with the text it was made on (``texts`` holds
        the result)."""
        rate = self.edit_rate
        n = int(rate) + (1 if self._rng.random() < rate - int(rate) else 0)
        edits = []
        for _ in range(n):
            name = self._rng.choice(self._names)
            text = self.texts[name]
            span = min(self._rng.randint(20, 200), max(1, len(text) - 1))
            start = self._rng.randrange(0, len(text) - span + 1)
            drift = len(text) / self.text_chars  # > 1: shrink, < 1: grow
            size = max(1, round(span * self._rng.uniform(0.8, 1.2) / drift))
            new = self._words(size)
            edits.append((Edit(name, self.owner[name], start, start + span, new), text))
            self.texts[name] = text[:start] + new + text[start + span:]
        return edits


class _Pycrdt:
    """Per-owner writer docs and one reader doc that applies every update."""

    def __init__(self, stream: ChurnStream) -> None:
        owners = sorted(set(stream.owner.values()))
        self.writers: dict[str, pycrdt.Doc[Any]] = {
            o: pycrdt.Doc(client_id=_PYCRDT_CLIENT_BASE + i) for i, o in enumerate(owners)}
        self.reader: pycrdt.Doc[Any] = pycrdt.Doc(client_id=_PYCRDT_CLIENT_BASE + len(owners))
        self._subs = [w.observe(self._forward) for w in self.writers.values()]
        for name, text in stream.texts.items():
            doc = self.writers[stream.owner[name]]
            with doc.transaction():
                doc.get(name, type=pycrdt.Text).insert(0, text)

    def _forward(self, event: Any) -> None:
        self.reader.apply_update(event.update)

    def apply(self, edit: Edit, before: str) -> None:
        doc = self.writers[edit.owner]
        text = doc.get(edit.name, type=pycrdt.Text)
        # pycrdt Text indices are UTF-8 byte offsets (DESIGN.md §5)
        start = len(before[: edit.start].encode())
        end = start + len(before[edit.start : edit.end].encode())
        with doc.transaction():
            if end > start:
                del text[start:end]
            text.insert(start, edit.new)

    def state_bytes(self) -> int:
        return len(self.reader.get_update())

    def text(self, name: str) -> str:
        return str(self.reader.get(name, type=pycrdt.Text))


class _Replicas:
    """A simulation of hybridsync replicas (with or without GC) that also keeps its stores."""

    def __init__(self, peers: int, seed: int, gc_min_entries: int | None, *, routing: str,
                 loss: float) -> None:
        self.stores: dict[str, MemoryStore] = {}

        def make(space: str, peer: str, *, store: MemoryStore, **kw: Any) -> Memory:
            self.stores[peer] = store
            return Memory(space, peer, store=store, gc_min_entries=gc_min_entries, **kw)

        self.sim = Simulation(peers, seed, routing=routing, loss=loss, reorder=True,
                              memory_factory=make, record=False)

    def apply(self, edit: Edit, before: str) -> None:
        mem = self.sim.memory(edit.owner)
        text = mem.text(edit.name)
        if text.value != before:
            raise GuaranteeViolation(f"{edit.owner}'s own text {edit.name!r} is not what it "
                                     "wrote (nobody else edits it)")
        text.set(before[: edit.start] + edit.new + before[edit.end :])
        mem.commit()

    def sample(self) -> tuple[int, int, int, int]:
        """(largest metadata_bytes, largest log length, compacted, largest at-rest bytes)."""
        stats = [m.stats() for m in self.sim.memories().values()]
        rest = [self._at_rest(s) for s in self.stores.values()]
        return (max(s.metadata_bytes for s in stats), max(s.log_length for s in stats),
                max(s.compacted for s in stats), max(rest))

    @staticmethod
    def _at_rest(store: MemoryStore) -> int:
        n = 0
        for c in store.contributions():
            n += (len(c.payload) + 32 * (1 + len(c.parents)) + len(c.author.encode())
                  + len(c.kind) + len(c.note.encode()) + 24)
        checkpoint = store.get_meta("checkpoint")
        return n + (len(checkpoint) if checkpoint else 0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--peers", type=int, default=3, help=f"replicas, 2..{MAX_PEERS} (default 3)")
    p.add_argument("--texts-per-peer", type=int, default=1,
                   help="texts each peer owns and edits (default 1)")
    p.add_argument("--text-chars", type=int, default=2000,
                   help="steady size of each text in characters (default 2000)")
    p.add_argument("--ticks", type=int, default=300, help="ticks of churn (default 300)")
    p.add_argument("--edit-rate", type=float, default=2.0,
                   help="edits per tick, whole group (default 2)")
    p.add_argument("--gc-min-entries", type=int, default=32,
                   help="GC threshold of the GC replicas: Memory(gc_min_entries=N) "
                   "(default 32)")
    p.add_argument("--samples", type=int, default=30,
                   help="measurements along the run (default 30)")
    p.add_argument("--routing", choices=ROUTINGS, default="mesh", help="default mesh")
    p.add_argument("--loss", type=float, default=0.0, help="frame loss probability (default 0)")


def measure(
    *, seed: int = 1, peers: int = 3, texts_per_peer: int = 1, text_chars: int = 2000,
    ticks: int = 300, edit_rate: float = 2.0, gc_min_entries: int = 32, samples: int = 30,
    routing: str = "mesh", loss: float = 0.0, liveness_ticks: int = 5000,
    on_tick: Callable[[int], None] | None = None,
) -> list[Row]:
    """Run the three systems on one edit stream; one row per sample (the last after the
    replicas converged). Raises :class:`GuaranteeViolation` when a replica does not converge
    or any system's texts differ from the stream's."""
    check_range([peers], "--peers", 2, MAX_PEERS)
    check_range([texts_per_peer], "--texts-per-peer", 1, 64)
    check_range([text_chars], "--text-chars", 400, 10_000_000)
    check_range([ticks], "--ticks", 1, 10_000_000)
    check_range([edit_rate], "--edit-rate", 0.0, 64.0)
    check_range([gc_min_entries], "--gc-min-entries", 1, 1 << 40)
    check_range([samples], "--samples", 1, 100_000)
    names = [f"p{i}" for i in range(peers)]
    stream = ChurnStream(seed, names, texts_per_peer=texts_per_peer, text_chars=text_chars,
                         edit_rate=edit_rate)
    crdt = _Pycrdt(stream)
    plain = _Replicas(peers, seed, None, routing=routing, loss=loss)
    gc = _Replicas(peers, seed, gc_min_entries, routing=routing, loss=loss)
    systems = (plain, gc)
    for name, text in stream.texts.items():
        for s in systems:
            mem = s.sim.memory(stream.owner[name])
            mem.text(name).set(text)
            mem.commit()
    for s in systems:  # every replica holds every text before the churn starts
        s.sim.run_until_converged(liveness_ticks)
    every = max(1, ticks // samples)
    rows: list[Row] = []
    edits = 0
    # GC makes a sawtooth; it is measured every tick, and each row keeps the highest value
    # since the previous row (sampling alone would alias it)
    gc_now = gc.sample()
    peak = [gc_now[0], gc_now[3]]

    def sample(tick: int) -> None:
        content = stream.content_bytes()
        hs_meta, hs_len, _, hs_rest = plain.sample()
        gc_meta, gc_len, gc_compacted, gc_rest = gc_now
        state = crdt.state_bytes()
        rows.append({
            "tick": tick, "edits": edits, "content_bytes": content,
            "hs_metadata_bytes": hs_meta, "hs_log_length": hs_len, "hs_at_rest_bytes": hs_rest,
            "gc_metadata_bytes": gc_meta, "gc_log_length": gc_len,
            "gc_compacted": gc_compacted, "gc_at_rest_bytes": gc_rest,
            "gc_metadata_peak_bytes": peak[0], "gc_at_rest_peak_bytes": peak[1],
            "pycrdt_state_bytes": state, "pycrdt_metadata_bytes": state - content,
            "hs_ratio": hs_meta / content, "gc_ratio": gc_meta / content,
            "gc_ratio_peak": peak[0] / content, "pycrdt_ratio": (state - content) / content,
        })
        peak[:] = [gc_meta, gc_rest]

    sample(0)
    for t in range(1, ticks + 1):
        for edit, before in stream.tick():
            crdt.apply(edit, before)
            for s in systems:
                s.apply(edit, before)
            edits += 1
        for s in systems:
            s.sim.tick()
        gc_now = gc.sample()
        peak[:] = [max(peak[0], gc_now[0]), max(peak[1], gc_now[3])]
        if t % every == 0 and t < ticks:
            sample(t)
        if on_tick is not None:
            on_tick(t)
    for s in systems:
        s.sim.run_until_converged(liveness_ticks)
    gc_now = gc.sample()
    peak[:] = [max(peak[0], gc_now[0]), max(peak[1], gc_now[3])]
    sample(ticks)
    _check_texts(stream, crdt, systems)
    return rows


def _check_texts(stream: ChurnStream, crdt: _Pycrdt, systems: Sequence[_Replicas]) -> None:
    for name, want in stream.texts.items():
        if crdt.text(name) != want:
            raise GuaranteeViolation(f"pycrdt's text {name!r} differs from the edit stream")
        for s, label in zip(systems, ("hybridsync", "hybridsync + GC"), strict=True):
            for peer, mem in s.sim.memories().items():
                if mem.text(name).value != want:
                    raise GuaranteeViolation(
                        f"{label}: {peer}'s text {name!r} differs from the edit stream")


def plot(path: Path, rows: Sequence[Row], title: str, gc_min_entries: int) -> None:
    """Left: metadata ÷ content over the edits; right: bytes at rest against the content."""
    x = [r["edits"] for r in rows]
    with figure(path, ncols=2, size=(13, 5), title=title) as (_, axes):
        ax, ax2 = axes
        ax.plot(x, [r["pycrdt_ratio"] for r in rows], marker=".", color="tab:red",
                label="pycrdt Text (state − content)")
        ax.plot(x, [r["hs_ratio"] for r in rows], marker=".", color="tab:blue",
                label="hybridsync, no GC")
        ax.plot(x, [r["gc_ratio"] for r in rows], marker=".", color="tab:green",
                label=f"hybridsync, GC (gc_min_entries={gc_min_entries})")
        ax.plot(x, [r["gc_ratio_peak"] for r in rows], color="tab:green", lw=0.8, ls=":",
                label="hybridsync, GC: highest since the previous point")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_xlabel("edits (span replacements, whole group)")
        ax.set_ylabel("metadata ÷ content (log scale)")
        ax.set_title("metadata per replica, relative to the content")
        ax.legend(fontsize=8)
        kib = 1024
        ax2.plot(x, [r["pycrdt_state_bytes"] / kib for r in rows], color="tab:red",
                 label="pycrdt: encoded state")
        ax2.plot(x, [r["hs_at_rest_bytes"] / kib for r in rows], color="tab:blue",
                 label="hybridsync, no GC: store")
        ax2.plot(x, [r["gc_at_rest_bytes"] / kib for r in rows], color="tab:green",
                 label="hybridsync, GC: store + checkpoint")
        ax2.plot(x, [r["gc_at_rest_peak_bytes"] / kib for r in rows], color="tab:green",
                 lw=0.8, ls=":", label="hybridsync, GC: highest since the previous point")
        ax2.plot(x, [r["content_bytes"] / kib for r in rows], color="black", ls="--",
                 label="content (UTF-8 of the texts)")
        ax2.set_yscale("log")
        ax2.set_xlabel("edits (span replacements, whole group)")
        ax2.set_ylabel("KiB per replica (log scale)")
        ax2.set_title("bytes a replica keeps at rest")
        ax2.legend(fontsize=8)


def run_scenario(args: argparse.Namespace, ctx: Context) -> Outcome:
    ctx.say(f"metadata-growth: {args.peers} peers x {args.texts_per_peer} text(s) of "
            f"~{args.text_chars} chars, {args.ticks} ticks at {args.edit_rate:g} edits/tick, "
            f"GC threshold {args.gc_min_entries}, seed {args.seed}")
    bar = ctx.bar(args.ticks, unit="tick")
    try:
        rows = measure(
            seed=args.seed, peers=args.peers, texts_per_peer=args.texts_per_peer,
            text_chars=args.text_chars, ticks=args.ticks, edit_rate=args.edit_rate,
            gc_min_entries=args.gc_min_entries, samples=args.samples, routing=args.routing,
            loss=args.loss, on_tick=lambda t: bar.update())
    finally:
        bar.close()
    csv_path = ctx.path("metadata-growth.csv")
    write_rows(csv_path, COLUMNS, rows)
    png = None
    if ctx.plot:
        png = ctx.path("metadata-growth.png")
        plot(png, rows, f"metadata-growth: {args.peers} peers, {args.peers * args.texts_per_peer}"
                        f" texts of ~{args.text_chars} chars, {rows[-1]['edits']} edits "
                        f"(seed {args.seed})", args.gc_min_entries)
    last = rows[-1]
    peak_gc = max(r["gc_ratio_peak"] for r in rows)
    summary = [
        f"after {last['edits']} edits, content {last['content_bytes']} B; metadata ÷ content: "
        f"pycrdt {last['pycrdt_ratio']:.2f}, hybridsync no GC {last['hs_ratio']:.2f}, "
        f"hybridsync GC {last['gc_ratio']:.2f} (peak {peak_gc:.2f})",
        f"at rest: pycrdt {last['pycrdt_state_bytes']} B, hybridsync no GC "
        f"{last['hs_at_rest_bytes']} B ({last['hs_log_length']} contributions), hybridsync GC "
        f"{last['gc_at_rest_bytes']} B ({last['gc_log_length']} retained, "
        f"{last['gc_compacted']} compacted)",
    ]
    return Outcome(rows, csv_path, png, summary)
