"""W1 scratchpad benchmark: a big text rewritten span by span, handed over whole every cycle.

The workload (seeded, identical for every system): a text of ``size`` characters (lines of
words, a few non-ASCII ones such as ``naïve``, ``café``, ``→``), then ``cycles`` cycles, each
replacing a random 20–200 character span with 20–200 characters of new words. Building the new
``str`` is the workload's job and is not timed; what is timed, per cycle, is what a system does
with it:

* ``hybridsync``: ``a.text("s").set(new)``, ``a.sync_to("b")`` → ``b.receive("a", f)``, then
  the acknowledgement ``b.sync_to("a")`` → ``a.receive("b", f)``; wire = every frame, both ways;
* ``pycrdt``: diff-match-patch ``diff_main`` (its 1 s ``Diff_Timeout``) with semantic
  cleanup, the edits applied to a pycrdt ``Text`` in one transaction at UTF-8 byte offsets; the
  update goes from ``a``'s observer to ``b.apply_update``; wire = the updates;
* ``pycrdt (word diff)``: the same, with the edits from hybridsync's own bounded word diff
  (``_textdiff.trim`` + ``_middle_diffs``) instead of diff-match-patch: isolates the CRDT's cost;
* ``loro``: ``LoroText.update(new)`` (Loro's own Myers diff) and ``commit()``; the local update
  goes to ``b.import_``; wire = the updates;
* ``dmp``: plain diff-match-patch, ``diff_main`` + ``patch_make`` + ``patch_toText`` on the
  writer, ``patch_fromText`` + ``patch_apply`` on the receiver; wire = the patch text.

After the run: the receiver's text must equal the workload's (else the run fails), the state
at rest (what a replica stores) is measured against the content's UTF-8 size, and the time to
load that state into a fresh replica and read the text back. Each system runs in its own
subprocess, so the process memory growth (RSS after the run minus RSS once the workload is
built) is that system's alone.

Run from the repository root::

    python -m benchmarks.texts                 # 1 MB × 10,000 cycles and 10 MB × 1,000
    python -m benchmarks.texts --quick         # 100 KB × 300 cycles
    python -m benchmarks.texts --size 1000000 --cycles 2000 --system hybridsync
    python -m benchmarks.texts --profile --size 10000000 --cycles 200   # cProfile, hybridsync
    python -m benchmarks.texts --breakdown --size 1000000 --cycles 1000  # wire bytes, by part
    python -m benchmarks.texts --memory --size 1000000 --cycles 1000     # hybridsync's memory
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib.util
import itertools
import json
import os
import pstats
import random
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from io import StringIO
from typing import Any

from benchmarks._common import current_rss_kib, machine, markdown_table

__all__ = [
    "SYSTEMS",
    "Result",
    "Workload",
    "check_goals",
    "main",
    "make_workload",
    "memory_breakdown",
    "report",
    "run",
    "run_system",
    "wire_breakdown",
]

DEFAULT_SEED = 20261121
CLOCK_BASE_MS = 1_795_219_200_000  # 2026-11-21T00:00:00Z: realistic HLC sizes on the wire
FULL_SIZES: tuple[tuple[int, int], ...] = ((1_000_000, 10_000), (10_000_000, 1_000))
QUICK_SIZES: tuple[tuple[int, int], ...] = ((100_000, 300),)
# hybridsync compacts its log at the stability frontier once this many contributions are
# stable (``Memory(gc_min_entries=...)``): the state at rest is the checkpoint plus the rest.
GC_MIN_ENTRIES = 128
SYSTEMS = ("hybridsync", "pycrdt", "pycrdt (word diff)", "loro", "dmp")

_VOCAB = (
    'the', 'of', 'and', 'to', 'in', 'is', 'that', 'for', 'it', 'as', 'with', 'was', 'on', 'be',
    'by', 'at', 'this', 'are', 'from', 'or', 'an', 'which', 'one', 'all', 'were', 'there',
    'when', 'can', 'has', 'more', 'if', 'their', 'will', 'about', 'would', 'up', 'out', 'them',
    'some', 'into', 'time', 'agent', 'memory', 'sync', 'plan', 'step', 'task', 'note', 'result',
    'check', 'retry', 'tool', 'call', 'output', 'input', 'error', 'value', 'field', 'region',
    'buffer', 'text', 'patch', 'diff', 'merge', 'replica', 'peer', 'frame', 'ack', 'state',
    'log', 'order', 'naïve', 'café', 'façade', 'déjà', '→', '✓', 'über', 'résumé', 'coöperate'
)


# ---- the workload --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Workload:
    """The initial text and the edits, each ``(start, end, inserted)`` on the previous text."""

    text: str
    edits: tuple[tuple[int, int, str], ...]

    def texts(self) -> itertools.accumulate[str]:
        """Every text the writer hands over, in order (built lazily: one alive at a time)."""
        return itertools.accumulate(
            self.edits, lambda cur, e: cur[: e[0]] + e[2] + cur[e[1] :], initial=self.text
        )

    def final(self) -> str:
        out = self.text
        for text in self.texts():
            out = text
        return out


def _words(rng: random.Random, n: int) -> str:
    out: list[str] = []
    size = 0
    while size < n:
        w = rng.choice(_VOCAB)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n]


def make_workload(size: int, cycles: int, *, seed: int = DEFAULT_SEED) -> Workload:
    """A ``size``-character text of lines of words, and ``cycles`` span replacements."""
    if size < 400 or cycles < 1:
        raise ValueError("need a text of at least 400 characters and at least one cycle")
    rng = random.Random(seed)
    lines: list[str] = []
    total = 0
    while total < size:
        line = _words(rng, rng.randint(40, 100))
        lines.append(line)
        total += len(line) + 1
    text = "\n".join(lines)[:size]
    length = len(text)
    edits = []
    for _ in range(cycles):
        span = rng.randint(20, 200)
        start = rng.randrange(0, length - span)
        inserted = _words(rng, rng.randint(20, 200))
        edits.append((start, start + span, inserted))
        length += len(inserted) - span
    return Workload(text, tuple(edits))


# ---- measuring one system ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Result:
    """One system on one size."""

    system: str
    size: int  # nominal size of the text, in characters
    chars: int  # characters of the final text
    content_bytes: int  # UTF-8 size of the final text
    cycles: int
    median_ms: float
    p99_ms: float
    mean_ms: float
    wire_bytes_per_cycle: float
    state_bytes: int  # what the receiving replica keeps at rest
    state_note: str
    load_ms: float  # fresh replica from that state, text read back as a str
    rss_growth_mib: float | None  # from before the replicas exist (initial text included)
    cycles_rss_growth_mib: float | None  # from after the initial text is synced
    equal: bool
    extra: dict[str, float]

    @property
    def state_ratio(self) -> float:
        return self.state_bytes / self.content_bytes

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state_ratio"] = self.state_ratio
        return d


class _Cycle:
    """Per-system hooks: ``setup(text)``, ``cycle(new)`` (timed), ``state()``, ``load(state)``."""

    wire = 0

    def prepare(self) -> None:
        """Import what the system needs (before the memory baseline is taken)."""

    def setup(self, text: str) -> None:
        raise NotImplementedError

    def cycle(self, new: str) -> None:
        raise NotImplementedError

    def received(self) -> str:
        raise NotImplementedError

    def state(self) -> tuple[Any, int, str]:
        """What the receiver keeps at rest: (the state, its size in bytes, what it is)."""
        raise NotImplementedError

    def load(self, state: Any) -> str:
        raise NotImplementedError

    def extra(self) -> dict[str, float]:
        return {}


def _clock() -> Callable[[], int]:
    return itertools.count(CLOCK_BASE_MS).__next__


class _Hybridsync(_Cycle):
    def prepare(self) -> None:
        import hybridsync  # noqa: F401

    def setup(self, text: str) -> None:
        import hybridsync as hs
        from hybridsync.store import MemoryStore

        self.hs = hs
        self.store = MemoryStore()
        opts = {"commit_interval_ms": None, "gc_min_entries": GC_MIN_ENTRIES}
        self.a = hs.Memory("bench", "a", clock=_clock(), incarnation=1, **opts)
        self.b = hs.Memory("bench", "b", clock=_clock(), incarnation=2, store=self.store, **opts)
        self.ta = self.a.text("s")
        self.ta.set(text)
        self._move()
        self.wire = 0

    def _move(self) -> None:
        a, b = self.a, self.b
        for f in a.sync_to("b"):
            self.wire += len(f)
            b.receive("a", f)
        for f in b.sync_to("a"):
            self.wire += len(f)
            a.receive("b", f)

    def cycle(self, new: str) -> None:
        self.ta.set(new)
        self._move()

    def received(self) -> str:
        return self.b.text("s").value

    def state(self) -> tuple[Any, int, str]:
        st = self.b.stats()
        self._stats = st
        size = st.content_bytes + st.metadata_bytes
        return self.store, size, "Memory.stats(): content + metadata"

    def load(self, state: Any) -> str:
        m = self.hs.Memory("bench", "b", clock=_clock(), incarnation=3, store=state,
                           commit_interval_ms=None, gc_min_entries=GC_MIN_ENTRIES)
        return m.text("s").value

    def extra(self) -> dict[str, float]:
        st, sa = self._stats, self.a.stats()
        return {"log_length": float(st.log_length), "metadata_bytes": float(st.metadata_bytes),
                "compacted": float(st.compacted),
                "writer_state_bytes": float(sa.content_bytes + sa.metadata_bytes),
                "writer_log_length": float(sa.log_length)}


class _Pycrdt(_Cycle):
    def __init__(self, word_diff: bool = False) -> None:
        self.word_diff = word_diff

    def prepare(self) -> None:
        import diff_match_patch  # noqa: F401
        import pycrdt  # noqa: F401

        if self.word_diff:
            import hybridsync.regions._textdiff  # noqa: F401

    def setup(self, text: str) -> None:
        import pycrdt
        from diff_match_patch import diff_match_patch

        self.pycrdt = pycrdt
        self.dmp = diff_match_patch()  # Diff_Timeout 1 s: the library's own bound
        self.a = pycrdt.Doc(client_id=0x5EED0001)
        self.b = pycrdt.Doc(client_id=0x5EED0002)
        self.ta = self.a.get("s", type=pycrdt.Text)
        self.tb = self.b.get("s", type=pycrdt.Text)

        def forward(event: Any) -> None:
            self.wire += len(event.update)
            self.b.apply_update(event.update)

        self.sub = self.a.observe(forward)
        self.ta.insert(0, text)
        self.cur = text
        self.wire = 0

    def _diffs(self, old: str, new: str) -> list[tuple[int, str]]:
        if self.word_diff:
            from hybridsync.regions._textdiff import _middle_diffs, trim

            p, s = trim(old, new)
            out = [(0, old[:p])] if p else []
            out += _middle_diffs(old[p : len(old) - s], new[p : len(new) - s])
            return out
        diffs: list[tuple[int, str]] = self.dmp.diff_main(old, new)
        self.dmp.diff_cleanupSemantic(diffs)
        return diffs

    def cycle(self, new: str) -> None:
        diffs = self._diffs(self.cur, new)
        ta = self.ta
        pos = 0  # UTF-8 byte offset: pycrdt Text indices are bytes
        with self.a.transaction():
            for op, t in diffs:
                n = len(t.encode())
                if op == 0:
                    pos += n
                elif op == 1:
                    ta.insert(pos, t)
                    pos += n
                else:
                    del ta[pos : pos + n]
        self.cur = new

    def received(self) -> str:
        return str(self.tb)

    def state(self) -> tuple[Any, int, str]:
        st = self.b.get_update()
        return st, len(st), "Doc.get_update()"

    def load(self, state: Any) -> str:
        d = self.pycrdt.Doc()
        d.apply_update(state)
        return str(d.get("s", type=self.pycrdt.Text))


class _Loro(_Cycle):
    def prepare(self) -> None:
        import loro  # noqa: F401

    def setup(self, text: str) -> None:
        import loro

        self.loro = loro
        self.a, self.b = loro.LoroDoc(), loro.LoroDoc()  # type: ignore[no-untyped-call]
        self.a.peer_id, self.b.peer_id = 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F
        self.ta = self.a.get_text("s")

        def forward(update: bytes) -> bool:
            self.wire += len(update)
            self.b.import_(update)
            return True

        self.sub = self.a.subscribe_local_update(forward)
        self.ta.insert(0, text)
        self.a.commit()
        self.wire = 0

    def cycle(self, new: str) -> None:
        self.ta.update(new)
        self.a.commit()

    def received(self) -> str:
        return str(self.b.get_text("s").to_string())

    def state(self) -> tuple[Any, int, str]:
        snap = self.b.export(self.loro.ExportMode.Snapshot())
        self._shallow = self.b.export(self.loro.ExportMode.ShallowSnapshot(self.b.oplog_frontiers))
        return snap, len(snap), "snapshot"

    def load(self, state: Any) -> str:
        d = self.loro.LoroDoc()  # type: ignore[no-untyped-call]
        d.import_(state)
        return str(d.get_text("s").to_string())

    def extra(self) -> dict[str, float]:
        return {"shallow_snapshot_bytes": float(len(self._shallow))}


class _Dmp(_Cycle):
    def prepare(self) -> None:
        import diff_match_patch  # noqa: F401

    def setup(self, text: str) -> None:
        from diff_match_patch import diff_match_patch

        self.dmp = diff_match_patch()
        self.cur = text
        self.b_text = text
        self.wire = 0

    def cycle(self, new: str) -> None:
        dmp = self.dmp
        diffs = dmp.diff_main(self.cur, new)
        wire = dmp.patch_toText(dmp.patch_make(self.cur, diffs)).encode()
        self.wire += len(wire)
        self.b_text, _ = dmp.patch_apply(dmp.patch_fromText(wire.decode()), self.b_text)
        self.cur = new

    def received(self) -> str:
        return self.b_text

    def state(self) -> tuple[Any, int, str]:
        data = self.b_text.encode()
        return data, len(data), "the text (no metadata)"

    def load(self, state: Any) -> str:
        return str(state.decode())


def _make(system: str) -> _Cycle:
    if system == "hybridsync":
        return _Hybridsync()
    if system == "pycrdt":
        return _Pycrdt()
    if system == "pycrdt (word diff)":
        return _Pycrdt(word_diff=True)
    if system == "loro":
        return _Loro()
    if system == "dmp":
        return _Dmp()
    raise ValueError(f"unknown system {system!r}; known: {list(SYSTEMS)}")


def _settled_rss_kib() -> int | None:
    """RSS after a full collection and ``malloc_trim(0)``: what the process holds, not free
    heap pages. The workload makes a new multi-megabyte ``str`` every cycle; glibc's dynamic
    mmap threshold puts them in the heap once the first is freed, and without the trim the
    heap's free pages would count as growth of whichever system ran."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return current_rss_kib()


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run_system(system: str, workload: Workload) -> Result:
    """Measure one system in this process (``run`` isolates each in a subprocess)."""
    sut = _make(system)
    sut.prepare()
    rss0 = _settled_rss_kib()
    texts = workload.texts()
    sut.setup(next(texts))
    rss_setup = _settled_rss_kib()
    times: list[float] = []
    clock = time.perf_counter
    last = workload.text
    for new in texts:
        t0 = clock()
        sut.cycle(new)
        times.append(clock() - t0)
        last = new
    rss1 = _settled_rss_kib()
    # the workload's own last text (held by this loop for every system, counted in every
    # system's growth; a system that keeps that very str pays nothing more for it)
    workload_text_mib = sys.getsizeof(last) / 2**20
    wire = sut.wire
    equal = sut.received() == last
    state, state_bytes, note = sut.state()
    t0 = clock()
    loaded = sut.load(state)
    load_s = clock() - t0
    equal = equal and loaded == last
    times.sort()
    return Result(
        system=system,
        size=len(workload.text),
        chars=len(last),
        content_bytes=len(last.encode()),
        cycles=len(times),
        median_ms=1e3 * _percentile(times, 0.5),
        p99_ms=1e3 * _percentile(times, 0.99),
        mean_ms=1e3 * sum(times) / len(times),
        wire_bytes_per_cycle=wire / len(times),
        state_bytes=state_bytes,
        state_note=note,
        load_ms=1e3 * load_s,
        rss_growth_mib=None if rss0 is None or rss1 is None else (rss1 - rss0) / 1024,
        cycles_rss_growth_mib=(
            None if rss_setup is None or rss1 is None else (rss1 - rss_setup) / 1024),
        equal=equal,
        extra={**sut.extra(), "workload_text_mib": workload_text_mib},
    )


def available(system: str) -> bool:
    return system != "loro" or importlib.util.find_spec("loro") is not None


def run(
    sizes: Sequence[tuple[int, int]],
    *,
    systems: Sequence[str] = SYSTEMS,
    seed: int = DEFAULT_SEED,
    isolate: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    """Every system on every ``(size, cycles)``; each in its own subprocess when ``isolate``.

    Raises ``AssertionError`` when a system's receiver ends with a different text.
    """
    results: list[Result] = []
    for size, cycles in sizes:
        for system in systems:
            if not available(system):
                continue
            if progress is not None:
                progress(f"{system}: {size:,} chars, {cycles:,} cycles")
            if isolate:
                r = _in_subprocess(system, size, cycles, seed)
            else:
                r = run_system(system, make_workload(size, cycles, seed=seed))
            if not r.equal:
                raise AssertionError(f"{system} at {size:,} chars: the receiver's text differs")
            results.append(r)
    return results


def _in_subprocess(system: str, size: int, cycles: int, seed: int) -> Result:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])])}

    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.texts", "--child", system, "--size", str(size),
         "--cycles", str(cycles), "--seed", str(seed)],
        capture_output=True, text=True, env=env, cwd=root, check=False, timeout=6 * 3600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{system} failed:\n{out.stderr[-4000:]}")
    d = json.loads(out.stdout.strip().splitlines()[-1])
    d.pop("state_ratio", None)
    return Result(**d)


# ---- goals and report ------------------------------------------------------------------------
def check_goals(results: Sequence[Result]) -> dict[tuple[int, str], tuple[float, float, bool]]:
    """The issue's goals for hybridsync, per size: ``(size, goal) -> (value, limit, met)``.

    time ≤ 0.3× Loro's and ≤ 0.5× pycrdt's (medians), wire bytes per cycle ≤ Loro's, state at
    rest ≤ 1.05× the content, process memory growth ≤ 0.25× Loro's. A goal whose reference
    system did not run is left out.
    """
    out: dict[tuple[int, str], tuple[float, float, bool]] = {}
    for h in (r for r in results if r.system == "hybridsync"):
        same = {r.system: r for r in results if r.size == h.size and r.cycles == h.cycles}
        loro, pyc = same.get("loro"), same.get("pycrdt")
        if loro is not None:
            out[(h.size, "time ≤ 0.3× Loro")] = (h.median_ms, 0.3 * loro.median_ms,
                                                  h.median_ms <= 0.3 * loro.median_ms)
            out[(h.size, "wire ≤ Loro")] = (h.wire_bytes_per_cycle, loro.wire_bytes_per_cycle,
                                             h.wire_bytes_per_cycle <= loro.wire_bytes_per_cycle)
            if h.rss_growth_mib is not None and loro.rss_growth_mib is not None:
                limit = 0.25 * loro.rss_growth_mib
                out[(h.size, "memory ≤ 0.25× Loro")] = (h.rss_growth_mib, limit,
                                                         h.rss_growth_mib <= limit)
            hc, lc = h.cycles_rss_growth_mib, loro.cycles_rss_growth_mib
            if hc is not None and lc is not None:
                out[(h.size, "memory over the cycles ≤ 0.25× Loro")] = (hc, 0.25 * lc,
                                                                       hc <= 0.25 * lc)
        if pyc is not None:
            out[(h.size, "time ≤ 0.5× pycrdt")] = (h.median_ms, 0.5 * pyc.median_ms,
                                                    h.median_ms <= 0.5 * pyc.median_ms)
        out[(h.size, "state ≤ 1.05× content")] = (h.state_ratio, 1.05, h.state_ratio <= 1.05)
    return out


def _size(chars: int) -> str:
    return f"{chars / 1e6:g} M chars" if chars >= 1_000_000 else f"{chars / 1e3:g} k chars"


def report(results: Sequence[Result]) -> str:
    headers = ["text", "system", "cycles", "median ms", "p99 ms", "wire B/cycle",
               "state at rest ×content (receiver)", "load ms", "RSS +MiB", "of which cycles"]
    rows = []
    for r in results:
        state = f"{r.state_ratio:.2f}"
        if "writer_state_bytes" in r.extra:
            state += f" (writer {r.extra['writer_state_bytes'] / r.content_bytes:.2f})"
        if "shallow_snapshot_bytes" in r.extra:
            state += f" (shallow {r.extra['shallow_snapshot_bytes'] / r.content_bytes:.2f})"
        rows.append([
            _size(r.size), r.system, f"{r.cycles:,}", f"{r.median_ms:.2f}",
            f"{r.p99_ms:.2f}", f"{r.wire_bytes_per_cycle:,.0f}", state, f"{r.load_ms:,.1f}",
            "–" if r.rss_growth_mib is None else f"{r.rss_growth_mib:,.1f}",
            "–" if r.cycles_rss_growth_mib is None else f"{r.cycles_rss_growth_mib:,.1f}",
        ])
    return markdown_table(headers, rows)


def report_goals(results: Sequence[Result]) -> str:
    rows = []
    for (chars, goal), (value, limit, met) in check_goals(results).items():
        rows.append([_size(chars), goal, f"{value:,.2f}", f"{limit:,.2f}",
                     f"{value / limit:.2f}" if limit else "–", "pass" if met else "MISS"])
    return markdown_table(["text", "goal", "hybridsync", "limit", "÷ limit", ""], rows)


def wire_breakdown(size: int, cycles: int, *, seed: int = DEFAULT_SEED) -> dict[str, float]:
    """Where hybridsync's wire bytes go, per cycle (averages), from the frames themselves.

    Runs the W1 cycles untimed and takes every frame apart: the text patch (inserted text,
    deleted text sent literally, equal text — contexts and equalities between edits —,
    digests, and the rest: positions, lengths, op framing), the region part around it, the
    contribution's framing, the frame's, and the acknowledgement the receiver sends back.
    """
    import msgpack

    import hybridsync as hs
    from hybridsync.regions._textdiff import decode_patch

    wl = make_workload(size, cycles, seed=seed)
    opts: dict[str, Any] = {"commit_interval_ms": None, "gc_min_entries": GC_MIN_ENTRIES}
    a = hs.Memory("bench", "a", clock=_clock(), incarnation=1, **opts)
    b = hs.Memory("bench", "b", clock=_clock(), incarnation=2, **opts)
    texts = wl.texts()
    a.text("s").set(next(texts))
    out = dict.fromkeys(("inserted text", "deleted text", "equal text", "digests",
                         "positions, lengths, op framing", "patch", "region part",
                         "contribution framing", "frame header", "acknowledgement", "total"),
                        0.0)

    def move() -> None:
        for f in a.sync_to("b"):
            b.receive("a", f)
            out["total"] += len(f)
            frame = msgpack.unpackb(f, raw=False)
            sizes = 0
            for c in frame[5]:
                n = len(msgpack.packb(c, use_bin_type=True))
                sizes += n
                payload = c[7]
                out["contribution framing"] += n - len(payload)
                for _, _, data in msgpack.unpackb(payload, raw=False):
                    out["region part"] -= len(data)
                    out["patch"] += len(data)
                    parts = {"inserted text": 0, "deleted text": 0, "equal text": 0,
                             "digests": 0}
                    for h in decode_patch(data):
                        for op, t in h.diffs:
                            if isinstance(t, str):
                                key = ("equal text", "inserted text", "deleted text")[op]
                                parts[key] += len(t.encode())
                        digest = getattr(h, "digest", None)  # patch format 1 had none
                        parts["digests"] += len(digest) if digest is not None else 0
                    for key, v in parts.items():
                        out[key] += v
                    out["positions, lengths, op framing"] += len(data) - sum(parts.values())
                out["region part"] += len(payload)
            out["frame header"] += len(f) - sizes
        for f in b.sync_to("a"):
            a.receive("b", f)
            out["total"] += len(f)
            out["acknowledgement"] += len(f)

    move()
    out = dict.fromkeys(out, 0.0)
    n = 0
    for new in texts:
        a.text("s").set(new)
        move()
        n += 1
    if b.text("s").value != a.text("s").value:
        raise AssertionError("the receiver's text differs")
    return {k: v / n for k, v in out.items()}


def memory_breakdown(size: int, cycles: int, *, seed: int = DEFAULT_SEED, top: int = 15) -> str:
    """Where hybridsync's memory growth goes at the end of a W1 run (both replicas, one
    process, as in the benchmark): the allocations still alive, by source line (tracemalloc,
    started before the replicas exist), and what each replica holds, by kind of object."""
    import tracemalloc

    wl = make_workload(size, cycles, seed=seed)
    sut = _Hybridsync()
    sut.prepare()
    rss0 = _settled_rss_kib()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    texts = wl.texts()
    sut.setup(next(texts))
    last = wl.text
    for new in texts:
        sut.cycle(new)
        last = new
    rss1 = _settled_rss_kib()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    mib = 2.0**20
    lines = [f"hybridsync, W1, {size:,} characters, {cycles:,} cycles"]
    if rss0 is not None and rss1 is not None:
        lines.append(f"RSS growth {(rss1 - rss0) / 1024:.1f} MiB (tracemalloc's own "
                     f"bookkeeping included)")
    lines.append(f"the workload's last text (held by the benchmark): "
                 f"{sys.getsizeof(last) / mib:.2f} MiB")
    lines.append(f"allocations alive at the end that were not there before setup, top {top}:")
    skip = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diff = after.filter_traces(skip).compare_to(before.filter_traces(skip), "lineno")
    for stat in diff[:top]:
        frame = stat.traceback[0]
        where = os.path.relpath(frame.filename) if frame.filename.startswith(os.getcwd()) \
            else frame.filename.rsplit("site-packages/", 1)[-1]
        lines.append(f"  {stat.size_diff / mib:8.2f} MiB {stat.count_diff:7d} blocks  "
                     f"{where}:{frame.lineno}")
    for name, mem, store in (("writer", sut.a, None), ("receiver", sut.b, sut.store)):
        st = mem._regions.texts["s"]
        fold = st.fold
        chunks = fold.rope._chunks
        seen = {id(c) for c in chunks}
        rope = fold.rope.stored_bytes() + 8 * len(chunks)
        kept = 0
        for _, r, _, _ in fold._checkpoints:
            for c in r._chunks:
                if id(c) not in seen:
                    seen.add(id(c))
                    kept += sys.getsizeof(c)
        utf8 = sum(1 for c in chunks if isinstance(c, bytes))
        wide = sum(1 for c in chunks if isinstance(c, str) and not c.isascii()
                   and max(c) > "\xff")
        entries = sum(sys.getsizeof(e.hunks) for e in fold._entries if e.hunks is not None)
        log = mem._log
        payloads = sum(len(c.payload) for c in log.ordered())
        meta = store._meta if store is not None else getattr(mem._store, "_meta", {})
        held = sum(map(len, meta.values()))
        backlog = list(getattr(mem._conflict_index, "_backlog", ()))
        backlog_mib = sum(len(c.payload) + 300 for c in backlog) / mib
        lines.append(
            f"{name}: rope {rope / mib:.2f} MiB ({len(chunks)} chunks: {utf8} kept as UTF-8, "
            f"{wide} str of 2-4 B a character), checkpoints' own chunks {kept / mib:.2f} MiB "
            f"({len(fold._checkpoints)} checkpoints), {len(fold._entries)} fold entries "
            f"{entries / mib:.3f} MiB, {len(log)} contributions' payloads "
            f"{payloads / mib:.3f} MiB, store checkpoint {held / mib:.2f} MiB, "
            f"contributions waiting in the fields conflict index: {len(backlog)} "
            f"(~{backlog_mib:.2f} MiB), value is the str handed over: {st._working is last}")
    return "\n".join(lines)


def profile(size: int, cycles: int, seed: int, top: int = 30) -> str:
    wl = make_workload(size, cycles, seed=seed)
    prof = cProfile.Profile()
    prof.enable()
    run_system("hybridsync", wl)
    prof.disable()
    out = StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="100,000 characters, 300 cycles")
    parser.add_argument("--size", type=int, help="characters of the text (with --cycles)")
    parser.add_argument("--cycles", type=int, help="cycles (with --size)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--system", action="append", choices=list(SYSTEMS),
                        help="systems to run (default: all)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--profile", action="store_true", help="cProfile of hybridsync instead")
    parser.add_argument("--breakdown", action="store_true",
                        help="where hybridsync's wire bytes go, per cycle, instead")
    parser.add_argument("--memory", action="store_true",
                        help="where hybridsync's memory growth goes (tracemalloc), instead")
    parser.add_argument("--child", choices=list(SYSTEMS), help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if args.size or args.cycles:
        sizes: tuple[tuple[int, int], ...] = ((args.size or 1_000_000, args.cycles or 1_000),)
    else:
        sizes = QUICK_SIZES if args.quick else FULL_SIZES
    if args.child:
        size, cycles = sizes[0]
        r = run_system(args.child, make_workload(size, cycles, seed=args.seed))
        print(json.dumps(r.as_dict()))
        return 0
    if args.profile:
        print(profile(*sizes[0], args.seed))
        return 0
    if args.memory:
        size, cycles = sizes[0]
        print(memory_breakdown(size, cycles, seed=args.seed))
        return 0
    if args.breakdown:
        size, cycles = sizes[0]
        parts = wire_breakdown(size, cycles, seed=args.seed)
        print(f"hybridsync wire bytes per cycle, W1, {size:,} characters, {cycles:,} cycles")
        print(markdown_table(["part", "B/cycle"], [[k, f"{v:.1f}"] for k, v in parts.items()]))
        return 0

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"  … {msg}", file=sys.stderr, flush=True)

    m = machine(("hybridsync", "pycrdt", "loro", "diff-match-patch", "msgpack"))
    started = time.strftime("%Y-%m-%d %H:%M")
    load_before = os.getloadavg()[0]
    results = run(sizes, systems=args.system or SYSTEMS, seed=args.seed, progress=progress)
    print(f"W1 scratchpad: span replacements of 20–200 characters handed over as whole texts "
          f"(seed {args.seed}), {started}")
    for line in m.describe():
        print(f"  {line}")
    print(f"  Load average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print()
    print(report(results))
    print()
    if any(r.system == "hybridsync" for r in results):
        print(report_goals(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": asdict(m), "started": started,
                       "results": [r.as_dict() for r in results]}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
