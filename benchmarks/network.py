"""Network benchmark: two peers over real sockets, hybridsync vs pycrdt-websocket, same run.

Every system runs as **two processes** (each with its own interpreter and event loop, as two
agents would): a *writer* and a *reader*. The orchestrator (this module's ``main``) drives
them with JSON lines on their stdin/stdout and times everything with ``time.monotonic_ns``,
which is one system-wide clock on Linux (namespaces included), so a timestamp taken in one
process can be subtracted from one taken in another.

- **hybridsync:** ``hs.Memory`` + ``hs.Peer`` on each side, the writer dials the reader
  (``peers=[url]``), one authenticated, encrypted TCP session (group secret). Two
  configurations: ``hybridsync`` (the default ``Memory``: every autocommitted write is its own
  contribution, durable when it returns) and ``hybridsync-group`` (``group_commit=True``:
  the writes made between two cycles become one contribution at the next cycle, which
  ``hs.Peer`` runs at most ``coalesce_s`` after a write). ``--gc off`` runs both with
  ``gc_min_entries=None`` (to measure what garbage collection costs here).
- **pycrdt-websocket:** the reader is a ``WebsocketServer`` with its ``YRoom`` (the room's
  own ``Doc`` is the reader's replica) served through the ``websockets`` library; the writer is
  a ``pycrdt.Doc`` synchronised by ``pycrdt.Provider`` over a ``websockets`` client
  connection (plain ``ws://``, no TLS: the baseline pays no encryption), reconnecting after a
  drop with a backoff of its own (``Provider`` itself does not reconnect).

Phases, each on a fresh pair of processes:

1. **throughput:** the writer makes ``--writes`` single-key writes (the fields benchmark's
   seeded workload: ``benchmarks.fields.make_writes``), each its own commit/transaction
   (for ``hybridsync-group``: its own autocommitted write), yielding to its event loop after
   every write so its transport can run, then an end marker. Writes/s = writes ÷ (first
   write → end marker visible on the reader); *drain* = last write returned → end marker
   visible (the backlog the reader still had). The reader's whole map is then compared with
   what the workload wrote. ``--repeat`` runs it several times (systems interleaved) and
   reports the median.
2. **latency:** ``--samples`` writes, one every ``--interval-ms``; for each, the time from the
   write (writer's clock reading just before it) to the reader's observer seeing it.
   ``--latency-runs`` runs (default 8), each on fresh pairs. By default every run has all
   systems' pairs at once, their writes phase-interleaved (system k writes ``k × interval /
   n`` after the first) and the order rotated from run to run, so a busy spell of a shared
   machine hits all of them alike (``--unpaired``: one pair at a time, systems
   interleaved). Reported: each run's median and p99 per system, the pooled median and p99,
   and for each hybridsync configuration in how many runs its median was lower than
   pycrdt-websocket's (with a sign test: run-to-run noise on a shared machine is about
   ±0.05 ms, as large as the differences measured).
3. **partition:** both sides write during a ``--partition-s`` cut (a namespace partition
   with nftables when root, else ``tests/integration/_proxy.py`` on loopback), the cut heals,
   and the time from the heal until both sides hold each other's last write is measured;
   then both replicas must be equal.

``--checkout NAME=PATH`` adds a system NAME: ``--checkout-system`` (default
``hybridsync-group``) run from another checkout of hybridsync (its child processes start in
PATH and import that tree), for an A/B of two trees in one run, e.g. ``--writes 0
--partition-s 0 --system hybridsync-group --checkout before=/tmp/old``.

Goal (issue 4): hybridsync ≥ 2× pycrdt-websocket's writes/s, at equal or lower latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.util
import json
import math
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._common import machine, markdown_table  # noqa: E402

SYSTEMS = ("hybridsync", "hybridsync-group", "pycrdt-websocket")
HS_SYSTEMS = ("hybridsync", "hybridsync-group")
DEFAULT_WRITES = 20_000
QUICK_WRITES = 500
DEFAULT_SAMPLES = 500
DEFAULT_REPEAT = 3
DEFAULT_LATENCY_RUNS = 8
QUICK_LATENCY_RUNS = 2
QUICK_SAMPLES = 50
DEFAULT_INTERVAL_MS = 10
DEFAULT_PARTITION_S = 30.0
QUICK_PARTITION_S = 2.0
PARTITION_WRITES = 200  # per side, during the cut
SECRET = b"network benchmark group secret"
SPACE = "bench-net"
ROOM = "/bench-net"
# The baseline gets hs.Peer's liveness defaults: a ping after 1 s of quiet, dead when nothing
# came back for 4 s in all (websockets: ping_interval 1 s + ping_timeout 3 s), and redials
# with backoff from 0.2 s doubling to 10 s, jitter 50–100 %.
PING_INTERVAL_S = 1.0
PING_TIMEOUT_S = 3.0
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 10.0
TIMEOUT_S = 180.0  # upper bound of any single wait
THROUGHPUT_TARGET = 2.0


def _load(name: str) -> ModuleType:
    """A helper module of the integration tests (``tests/integration/<name>.py``)."""
    path = ROOT / "tests" / "integration" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"hybridsync_bench_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _now() -> int:
    return time.monotonic_ns()


def _canonical(content: dict[str, Any]) -> str:
    """A digest of a flat map's content; numbers as floats (pycrdt stores ints as floats)."""
    plain = {k: float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
             for k, v in content.items()}
    blob = json.dumps(plain, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# =========================================================================================
# Child processes: one replica each, driven by JSON lines
# =========================================================================================


class _Node:
    """One replica in a child process: write, read, and tell when keys arrive."""

    def __init__(self) -> None:
        self._waiters: dict[str, tuple[Any, asyncio.Future[int]]] = {}
        self.seen: dict[str, int] = {}  # key -> first arrival (monotonic ns), for "lat*" keys

    # backend hooks
    def write(self, key: str, value: Any) -> None:
        raise NotImplementedError

    def get(self, key: str) -> Any:
        raise NotImplementedError

    def content(self) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        return None

    # shared
    def changed(self, keys: Sequence[str]) -> None:
        now = _now()
        for key in keys:
            if key.startswith("lat") and key not in self.seen:
                self.seen[key] = now
            waiter = self._waiters.get(key)
            if waiter is not None and not waiter[1].done() and self.get(key) == waiter[0]:
                waiter[1].set_result(now)

    async def wait_for(self, key: str, value: Any, timeout_s: float) -> int:
        if self.get(key) == value:
            return _now()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters[key] = (value, fut)
        try:
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self._waiters.pop(key, None)


class _HsNode(_Node):
    def __init__(self, mem: Any) -> None:
        super().__init__()
        self.mem = mem
        self.peer: Any = None
        mem.observe(lambda change: self.changed([p.split("/", 1)[0] for p in change.paths]))

    def write(self, key: str, value: Any) -> None:
        self.mem.fields[key] = value

    def get(self, key: str) -> Any:
        try:
            return self.mem.fields[key]
        except KeyError:
            return None

    def content(self) -> dict[str, Any]:
        return dict(self.mem.fields.to_dict())

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sessions": len(getattr(self.peer, "sessions", ()) or ())}
        if self.peer is not None:  # compactions run by hs.Peer in its idle time (or forced)
            stats = self.peer.stats()
            for k in ("compactions", "compactions_forced", "compacted_entries"):
                if k in stats:
                    out[k] = stats[k]
        return out

    async def close(self) -> None:
        if self.peer is not None:
            await self.peer.stop()
        self.mem.close()


class _YNode(_Node):
    """A pycrdt ``Doc`` whose root map ``fields`` is the replica."""

    def __init__(self, doc: Any) -> None:
        super().__init__()
        from pycrdt import Map

        self.doc = doc
        self.map = doc.get("fields", type=Map)
        self._sub = self.map.observe(lambda event: self.changed(list(event.keys)))

    def write(self, key: str, value: Any) -> None:
        self.map[key] = value

    def get(self, key: str) -> Any:
        return self.map.get(key)

    def content(self) -> dict[str, Any]:
        return dict(self.map.to_py() or {})


class _WsChannel:
    """``pycrdt.Channel`` over a ``websockets`` connection."""

    def __init__(self, ws: Any, path: str) -> None:
        self._ws = ws
        self._path = path

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> _WsChannel:
        return self

    async def __anext__(self) -> bytes:
        from websockets.exceptions import ConnectionClosed

        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        await self._ws.send(message)

    async def recv(self) -> bytes:
        message = await self._ws.recv()
        return message if isinstance(message, bytes) else message.encode()


async def _ws_client_loop(node: _YNode, uri: str, connected: asyncio.Event) -> None:
    """Keep ``node.doc`` connected to the room at ``uri``: reconnect after any drop."""
    import random

    from pycrdt import Provider
    from websockets.asyncio.client import connect
    from websockets.exceptions import WebSocketException

    backoff = RECONNECT_MIN_S
    while True:
        try:
            async with connect(uri, ping_interval=PING_INTERVAL_S, ping_timeout=PING_TIMEOUT_S,
                               open_timeout=5, max_size=None, compression=None) as ws:
                backoff = RECONNECT_MIN_S
                async with Provider(node.doc, _WsChannel(ws, ROOM)) as provider:
                    await provider.synced.wait()
                    connected.set()
                    await ws.wait_closed()
        except (OSError, TimeoutError, WebSocketException):
            pass
        connected.clear()
        await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
        backoff = min(backoff * 2, RECONNECT_MAX_S)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _serve_commands(node: _Node, ready: dict[str, Any]) -> None:
    """Answer JSON commands on stdin until ``stop`` (or EOF)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    _emit({"ready": True, **ready})
    while True:
        line = await reader.readline()
        if not line:
            return
        cmd = json.loads(line)
        op = cmd["op"]
        try:
            reply = await _COMMANDS[op](node, cmd)
        except Exception as exc:  # the orchestrator reports it; the child keeps serving
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        _emit(reply)
        if op == "stop":
            return


async def _cmd_burst(node: _Node, cmd: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.fields import make_writes

    writes = make_writes(cmd["n"], keys=cmd["keys"], seed=cmd["seed"])
    t0 = _now()
    for key, value in writes:
        node.write(key, value)
        await asyncio.sleep(0)
    node.write("__end__", cmd["tag"])
    return {"t0": t0, "t1": _now()}


async def _cmd_latency(node: _Node, cmd: dict[str, Any]) -> dict[str, Any]:
    """``m`` writes ``interval_ms`` apart; with ``start_ns``, write i at ``start_ns + i ×
    interval`` on the system-wide clock (so pairs started together stay out of each other's
    way: ``--paired``)."""
    sent = []
    interval = cmd["interval_ms"] / 1000
    start_ns = cmd.get("start_ns")
    for i in range(cmd["m"]):
        if start_ns is not None:
            delay = (start_ns + round(i * interval * 1e9) - _now()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
        sent.append(_now())
        node.write(f"lat{i:06d}", i)
        if start_ns is None:
            await asyncio.sleep(interval)
    if start_ns is not None:
        await asyncio.sleep(interval)
    return {"sent": sent}


async def _cmd_write_many(node: _Node, cmd: dict[str, Any]) -> dict[str, Any]:
    for i in range(cmd["n"]):
        node.write(f"{cmd['prefix']}{i:05d}", f"{cmd['prefix']}-{i}")
        await asyncio.sleep(0)
    return {"ok": True}


async def _cmd_write(node: _Node, cmd: dict[str, Any]) -> dict[str, Any]:
    t = _now()
    node.write(cmd["key"], cmd["value"])
    return {"t": t}


async def _cmd_wait(node: _Node, cmd: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"t": await node.wait_for(cmd["key"], cmd["value"], cmd["within_s"])}
    except TimeoutError:
        return {"t": None}


async def _cmd_seen(node: _Node, cmd: dict[str, Any]) -> dict[str, Any]:
    return {"seen": node.seen}


async def _cmd_digest(node: _Node, cmd: dict[str, Any]) -> dict[str, Any]:
    content = node.content()
    return {"digest": _canonical(content), "keys": len(content), **node.describe()}


async def _cmd_check(node: _Node, cmd: dict[str, Any]) -> dict[str, Any]:
    """Is every key of the seeded workload there with its last written value?"""
    from benchmarks.fields import make_writes

    expected: dict[str, Any] = {}
    for key, value in make_writes(cmd["n"], keys=cmd["keys"], seed=cmd["seed"]):
        expected[key] = value
    content = node.content()
    got = {k: content.get(k) for k in expected}
    return {"equal": _canonical(got) == _canonical(expected), "keys": len(content)}


async def _cmd_cpu(node: _Node, cmd: dict[str, Any]) -> dict[str, Any]:
    return {"cpu_s": time.process_time()}


async def _cmd_stop(node: _Node, cmd: dict[str, Any]) -> dict[str, Any]:
    await node.close()
    return {"stopped": True}


_COMMANDS: dict[str, Callable[[_Node, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "burst": _cmd_burst,
    "latency": _cmd_latency,
    "write_many": _cmd_write_many,
    "write": _cmd_write,
    "wait": _cmd_wait,
    "seen": _cmd_seen,
    "digest": _cmd_digest,
    "check": _cmd_check,
    "cpu": _cmd_cpu,
    "stop": _cmd_stop,
}


async def _child_hybridsync(args: argparse.Namespace) -> None:
    import hybridsync as hs

    # GC as recorded (256 stable contributions; the default is on only with declared members)
    options: dict[str, Any] = {"group_commit": args.group_commit,
                               "gc_min_entries": None if args.no_gc else 256}
    mem = hs.Memory(SPACE, args.name, **options)
    node = _HsNode(mem)
    peers = [args.connect] if args.connect else []
    node.peer = await hs.Peer.start(mem, host=args.host, port=args.port, secret=SECRET,
                                    peers=peers)
    await _serve_commands(node, {"url": node.peer.url})


async def _child_ws_server(args: argparse.Namespace) -> None:
    from pycrdt.websocket import WebsocketServer
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    def disconnects(exc: BaseException, _log: Any) -> bool:
        """A client that went away is routine (the room keeps serving the others)."""
        if isinstance(exc, BaseExceptionGroup):
            return all(disconnects(e, _log) for e in exc.exceptions)
        return isinstance(exc, ConnectionClosed | OSError)

    wss = WebsocketServer(rooms_ready=True, auto_clean_rooms=False,
                          exception_handler=disconnects)
    async with wss:
        room = await wss.get_room(ROOM)
        node = _YNode(room.ydoc)

        async def handler(ws: Any) -> None:
            await wss.serve(_WsChannel(ws, ROOM))

        async with serve(handler, args.host, args.port, ping_interval=PING_INTERVAL_S,
                         ping_timeout=PING_TIMEOUT_S, max_size=None, compression=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            await _serve_commands(node, {"url": f"ws://{args.host}:{port}{ROOM}"})


async def _child_ws_client(args: argparse.Namespace) -> None:
    from pycrdt import Doc

    node = _YNode(Doc())
    connected = asyncio.Event()
    task = asyncio.create_task(_ws_client_loop(node, args.connect, connected))
    await asyncio.wait_for(connected.wait(), TIMEOUT_S)
    try:
        await _serve_commands(node, {"url": args.connect})
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _child_main(args: argparse.Namespace) -> int:
    role = {"hybridsync": _child_hybridsync, "ws-server": _child_ws_server,
            "ws-client": _child_ws_client}[args.role]
    profile_dir = os.environ.get("HYBRIDSYNC_BENCH_PROFILE")
    if not profile_dir:
        asyncio.run(role(args))
        return 0
    import cProfile

    with cProfile.Profile() as prof:
        asyncio.run(role(args))
    prof.dump_stats(os.path.join(profile_dir, f"{args.role}-{args.name}-{os.getpid()}.prof"))
    return 0


# =========================================================================================
# The orchestrator
# =========================================================================================


class _Child:
    """A child process spoken to with JSON lines."""

    def __init__(self, argv: list[str], name: str, cwd: Path | None = None) -> None:
        self.name = name
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     cwd=cwd or ROOT, start_new_session=True)
        self.ready = self._read(TIMEOUT_S)
        if "error" in self.ready:
            raise RuntimeError(f"{name}: {self.ready['error']}")

    def _read(self, timeout_s: float) -> dict[str, Any]:
        import selectors

        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout_s):
                raise TimeoutError(f"{self.name}: no answer within {timeout_s:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} exited (status {self.proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def send(self, op: str, **kw: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, **kw}) + "\n").encode())
        self.proc.stdin.flush()

    def ask(self, op: str, timeout_s: float = TIMEOUT_S, **kw: Any) -> dict[str, Any]:
        self.send(op, **kw)
        reply = self._read(timeout_s)
        if "error" in reply:
            raise RuntimeError(f"{self.name} {op}: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.ask("stop", timeout_s=10)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def _argv(role: str, name: str, *, host: str = "127.0.0.1", port: int = 0,
          connect: str | None = None, flags: Sequence[str] = ()) -> list[str]:
    argv = [sys.executable, "-m", "benchmarks.network", "--role", role, "--name", name,
            "--host", host, "--port", str(port), *flags]
    return [*argv, "--connect", connect] if connect else argv


# Child flags of each hybridsync configuration; ``--gc off`` adds ``--no-gc`` to both.
_HS_FLAGS = {"hybridsync": (), "hybridsync-group": ("--group-commit",)}
_GC_OFF = False
# ``--checkout NAME=PATH``: an extra system NAME, one of HS_SYSTEMS run from another checkout
# (its children start in PATH, so they import that tree's hybridsync): name -> (system, root)
_CHECKOUTS: dict[str, tuple[str, Path]] = {}


def _resolve(system: str) -> tuple[str, Path]:
    """(the configuration, the tree its children run from) of a system or checkout."""
    return _CHECKOUTS.get(system, (system, ROOT))


def is_hybridsync(system: str) -> bool:
    return _resolve(system)[0] in HS_SYSTEMS


@dataclass
class _Pair:
    reader: _Child
    writer: _Child

    def close(self) -> None:
        self.writer.close()
        self.reader.close()


Wrap = Callable[[int, list[str]], list[str]]


def _start_pair(system: str, *, wrap: Wrap | None = None, reader_host: str = "127.0.0.1",
                dial: Callable[[str], str] | None = None) -> _Pair:
    """Reader first (it listens), then the writer dialling it; both synced on a hello."""
    w = wrap or (lambda _i, argv: argv)
    d = dial or (lambda url: url)
    config, root = _resolve(system)
    role_r, role_w = (("hybridsync", "hybridsync") if config in HS_SYSTEMS
                      else ("ws-server", "ws-client"))
    flags = (*_HS_FLAGS[config], *(("--no-gc",) if _GC_OFF else ())) if (
        config in HS_SYSTEMS) else ()
    reader = _Child(w(1, _argv(role_r, "reader", host=reader_host, flags=flags)),
                    f"{system} reader", root)
    try:
        writer = _Child(w(0, _argv(role_w, "writer", connect=d(reader.ready["url"]),
                                   flags=flags)), f"{system} writer", root)
    except BaseException:
        reader.close()
        raise
    pair = _Pair(reader, writer)
    try:
        tag = secrets.token_hex(4)
        writer.ask("write", key="hello", value=tag)
        if reader.ask("wait", key="hello", value=tag, within_s=60)["t"] is None:
            raise RuntimeError(f"{system}: the pair never synced a first write")
    except BaseException:
        pair.close()
        raise
    return pair


@dataclass
class Result:
    system: str
    writes: int = 0
    writes_per_s: float = 0.0
    cpu_us_per_write: float = 0.0
    drain_ms: float = 0.0
    runs: list[tuple[float, float, float]] = field(default_factory=list)  # each repeat:
    # (writes/s, CPU µs/write, drain ms); the median run by writes/s gives the columns
    equal: bool = False
    samples: int = 0
    latency_median_ms: float = 0.0
    latency_p99_ms: float = 0.0
    latency_lost: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    # each latency run: (median ms, p99 ms, samples, 1-minute load average at its start)
    latency_runs: list[tuple[float, float, int, float]] = field(default_factory=list)
    partition_s: float = 0.0
    partition_mode: str = ""
    converge_after_heal_s: float | None = None
    partition_equal: bool = False
    notes: list[str] = field(default_factory=list)


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[rank]


def throughput(system: str, writes: int, *, keys: int = 1000, seed: int = 20261121,
               result: Result) -> None:
    pair = _start_pair(system)
    try:
        tag = secrets.token_hex(4)
        cpu0 = pair.writer.ask("cpu")["cpu_s"] + pair.reader.ask("cpu")["cpu_s"]
        pair.reader.send("wait", key="__end__", value=tag, within_s=TIMEOUT_S)
        burst = pair.writer.ask("burst", n=writes, keys=keys, seed=seed, tag=tag)
        seen = pair.reader._read(TIMEOUT_S)
        if seen.get("t") is None:
            raise RuntimeError(f"{system}: the end marker never arrived")
        cpu1 = pair.writer.ask("cpu")["cpu_s"] + pair.reader.ask("cpu")["cpu_s"]
        result.writes = writes
        rate = writes / ((seen["t"] - burst["t0"]) / 1e9)
        # CPU of both processes (acks and stragglers after the end marker included):
        # unlike wall time, barely moved by other jobs on a shared machine.
        cpu = (cpu1 - cpu0) / writes * 1e6
        drain = (seen["t"] - burst["t1"]) / 1e6
        check = pair.reader.ask("check", n=writes, keys=keys, seed=seed)
        mine = pair.writer.ask("digest")
        theirs = pair.reader.ask("digest")
        equal = bool(check["equal"]) and mine["digest"] == theirs["digest"]
        result.equal = equal and (result.equal or not result.runs)
        result.runs.append((rate, cpu, drain))
        if "compactions" in mine:
            result.notes.append(
                f"throughput run {len(result.runs)} ({rate:,.0f} writes/s): compactions "
                + ", ".join(f"{who} {d['compactions']} ({d['compactions_forced']} forced, "
                            f"{d['compacted_entries']} entries)"
                            for who, d in (("writer", mine), ("reader", theirs)))
            )
        median = sorted(result.runs)[(len(result.runs) - 1) // 2]
        result.writes_per_s, result.cpu_us_per_write, result.drain_ms = median
    finally:
        pair.close()


def latency(system: str, samples: int, interval_ms: float, *, result: Result) -> None:
    pair = _start_pair(system)
    try:
        load = os.getloadavg()[0]
        sent = pair.writer.ask("latency", m=samples, interval_ms=interval_ms)["sent"]
        _collect_latency(pair, sent, samples, result, load)
    finally:
        pair.close()


def latency_paired(systems: Sequence[str], samples: int, interval_ms: float, *,
                   results: dict[str, Result]) -> None:
    """Every system's pair at once, phase-interleaved: system k writes at ``start + i ×
    interval + k × interval / len(systems)``, so a busy spell of the machine hits them alike
    and a write never overlaps another system's (only what runs between writes — GC
    compactions, heartbeats — can land on another system's sample)."""
    pairs: list[tuple[str, _Pair]] = []
    try:
        for system in systems:
            pairs.append((system, _start_pair(system)))
        time.sleep(0.5)  # everyone settled
        load = os.getloadavg()[0]
        start = time.monotonic_ns() + 300_000_000
        step = round(interval_ms * 1e6 / len(pairs))
        for k, (_, pair) in enumerate(pairs):
            pair.writer.send("latency", m=samples, interval_ms=interval_ms,
                             start_ns=start + k * step)
        timeout = TIMEOUT_S + samples * interval_ms / 1000
        sent = [pair.writer._read(timeout) for _, pair in pairs]
        for (system, pair), reply in zip(pairs, sent, strict=True):
            if "error" in reply:
                raise RuntimeError(f"{system} writer latency: {reply['error']}")
            _collect_latency(pair, reply["sent"], samples, results[system], load)
    finally:
        for _, pair in pairs:
            pair.close()


def _collect_latency(pair: _Pair, sent: list[int], samples: int, result: Result,
                     load: float) -> None:
    tag = secrets.token_hex(4)
    pair.writer.ask("write", key="__end__", value=tag)
    pair.reader.ask("wait", key="__end__", value=tag, within_s=TIMEOUT_S)
    seen = pair.reader.ask("seen")["seen"]
    lat = [(seen[f"lat{i:06d}"] - t) / 1e6 for i, t in enumerate(sent)
           if f"lat{i:06d}" in seen]
    result.latencies_ms.extend(lat)  # pooled over the repeats
    result.latency_runs.append((_percentile(lat, 0.5), _percentile(lat, 0.99), len(lat),
                                load))
    result.samples += len(lat)
    result.latency_lost += samples - len(lat)
    result.latency_median_ms = _percentile(result.latencies_ms, 0.5)
    result.latency_p99_ms = _percentile(result.latencies_ms, 0.99)


def partition(system: str, seconds: float, *, result: Result) -> None:
    """Cut the pair for ``seconds`` while both write; time from heal to convergence."""
    netns = _load("_netns")
    lab: Any = None
    proxy: Any = None
    cut: Callable[[], object]
    heal: Callable[[], object]
    if netns.unavailable_reason() is None:
        lab = netns.NetLab(2)
        result.partition_mode = "netns"
        pair = _start_pair(system, wrap=lab.command, reader_host=lab.address(1))
        cut, heal = (lambda: lab.partition([[0], [1]])), lab.heal
    else:
        proxy_mod = _load("_proxy")
        holder: dict[str, Any] = {}

        def dial(url: str) -> str:
            scheme, rest = url.split("://", 1)
            hostport, _, path = rest.partition("/")
            holder["proxy"] = proxy_mod.PartitionProxy(int(hostport.rsplit(":", 1)[1]))
            return f"{scheme}://127.0.0.1:{holder['proxy'].port}" + (f"/{path}" if path else "")

        result.partition_mode = "loopback proxy"
        pair = _start_pair(system, dial=dial)
        proxy = holder["proxy"]
        cut, heal = proxy.partition, proxy.heal
    result.partition_s = seconds
    try:
        tag = secrets.token_hex(4)
        cut()
        t_cut = time.monotonic()
        pair.writer.ask("write_many", prefix="w", n=PARTITION_WRITES)
        pair.reader.ask("write_many", prefix="r", n=PARTITION_WRITES)
        time.sleep(max(0.0, seconds - 0.5 - (time.monotonic() - t_cut)))
        pair.writer.ask("write", key="end-w", value=tag)
        pair.reader.ask("write", key="end-r", value=tag)
        time.sleep(max(0.0, seconds - (time.monotonic() - t_cut)))
        t_heal = time.monotonic_ns()
        heal()
        pair.writer.send("wait", key="end-r", value=tag, within_s=TIMEOUT_S)
        pair.reader.send("wait", key="end-w", value=tag, within_s=TIMEOUT_S)
        tw = pair.writer._read(TIMEOUT_S + 10)["t"]
        tr = pair.reader._read(TIMEOUT_S + 10)["t"]
        if tw is None or tr is None:
            result.notes.append(f"did not converge within {TIMEOUT_S:.0f} s of the heal")
        else:
            result.converge_after_heal_s = (max(tw, tr) - t_heal) / 1e9
        a, b = pair.writer.ask("digest"), pair.reader.ask("digest")
        result.partition_equal = a["digest"] == b["digest"] and a["keys"] == b["keys"]
    finally:
        pair.close()
        if lab is not None:
            lab.close()
        if proxy is not None:
            proxy.close()


def available() -> dict[str, str | None]:
    """Each system and why it cannot run here (``None`` when it can)."""
    import hybridsync as hs

    why = None if hasattr(hs, "Peer") else "hybridsync has no Peer yet"
    out: dict[str, str | None] = dict.fromkeys(HS_SYSTEMS, why)
    missing = [m for m in ("pycrdt.websocket", "websockets") if importlib.util.find_spec(m) is None]
    out["pycrdt-websocket"] = (f"not installed: {', '.join(missing)} (pip install "
                               "'hybridsync[bench]')" if missing else None)
    return out


def run(*, writes: int, samples: int, interval_ms: float, partition_s: float,
        systems: Sequence[str] = SYSTEMS, repeat: int = 1, paired: bool = False,
        latency_runs: int | None = None,
        progress: Callable[[str], None] = lambda _m: None) -> list[Result]:
    """Throughput ``repeat`` times and latency ``latency_runs`` times (default ``repeat``)
    per system, systems interleaved; ``paired``: each latency run has every system's pair
    at once (:func:`latency_paired`), the phase order rotated from run to run."""
    by_system = {system: Result(system) for system in systems}
    runs = repeat if latency_runs is None else latency_runs
    for i in range(repeat if writes > 0 else 0):  # systems interleaved, so a busy spell
        for system in systems:                    # hits them alike
            progress(f"{system}: throughput ({writes:,} writes, run {i + 1}/{repeat})")
            throughput(system, writes, result=by_system[system])
    for i in range(runs if samples > 0 else 0):
        if paired:  # all at once; the phase order rotates from run to run
            order = [*systems[i % len(systems):], *systems[:i % len(systems)]]
            progress(f"{', '.join(order)}: latency at once ({samples} samples each, "
                     f"run {i + 1}/{runs})")
            latency_paired(order, samples, interval_ms, results=by_system)
            continue
        for system in systems:
            progress(f"{system}: latency ({samples} samples, run {i + 1}/{runs})")
            latency(system, samples, interval_ms, result=by_system[system])
    results = []
    for system in systems:
        r = by_system[system]
        if partition_s > 0:
            progress(f"{system}: {partition_s:g} s partition")
            partition(system, partition_s, result=r)
        results.append(r)
    return results


def report(results: Sequence[Result]) -> str:
    base = next((r for r in results if r.system == "pycrdt-websocket"), None)
    rows = []
    for r in results:
        ratio = (f"{r.writes_per_s / base.writes_per_s:.2f}×" if base and base.writes_per_s
                 else "–")
        conv = ("not converged" if r.converge_after_heal_s is None and r.partition_s
                else f"{r.converge_after_heal_s:.2f}" if r.converge_after_heal_s is not None
                else "–")
        spread = (f" ({min(x[0] for x in r.runs):,.0f}–{max(x[0] for x in r.runs):,.0f})"
                  if len(r.runs) > 1 else "")
        rows.append([
            _label(r.system), f"{r.writes_per_s:,.0f}{spread}", ratio,
            f"{r.cpu_us_per_write:.0f}", f"{r.drain_ms:.1f}",
            ("yes" if r.equal else "NO") if r.runs else "–",
            f"{r.latency_median_ms:.2f}", f"{r.latency_p99_ms:.2f}", f"{r.latency_lost}",
            f"{r.partition_s:g} ({r.partition_mode})" if r.partition_s else "–", conv,
            ("yes" if r.partition_equal else "NO") if r.partition_s else "–",
        ])
    return markdown_table(
        ["system", "writes/s (min–max)", "×baseline", "CPU µs/write", "drain ms", "equal",
         "latency median ms",
         "latency p99 ms", "lost", "partition s", "converged after heal s", "equal after heal"],
        rows)


@dataclass(frozen=True)
class LatencyComparison:
    """``system`` against ``baseline`` run by run (run i of both: the same paired run, or
    adjacent ones unpaired) and pooled over all runs."""

    system: str
    baseline: str
    median_diffs_ms: tuple[float, ...]  # per run: system's median − baseline's
    wins: int  # runs where the system's median is lower (by at least 1 µs)
    losses: int  # higher by at least 1 µs
    ties: int
    sign_test_p: float  # two-sided sign test over the runs that are not ties
    pooled_median_ms: tuple[float, float]  # (system, baseline)
    pooled_p99_ms: tuple[float, float]


def _sign_test(wins: int, losses: int) -> float:
    """Two-sided p of ``wins`` against ``losses`` if either side were equally likely."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def compare_latency(results: Sequence[Result], system: str,
                    baseline: str = "pycrdt-websocket") -> LatencyComparison | None:
    mine = next((r for r in results if r.system == system), None)
    base = next((r for r in results if r.system == baseline), None)
    if mine is None or base is None or not mine.latency_runs or not base.latency_runs:
        return None
    diffs = tuple(a[0] - b[0] for a, b in zip(mine.latency_runs, base.latency_runs,
                                                strict=False))
    wins = sum(d <= -0.001 for d in diffs)
    losses = sum(d >= 0.001 for d in diffs)
    return LatencyComparison(
        system, baseline, diffs, wins, losses, len(diffs) - wins - losses,
        _sign_test(wins, losses), (mine.latency_median_ms, base.latency_median_ms),
        (mine.latency_p99_ms, base.latency_p99_ms),
    )


def report_latency_runs(results: Sequence[Result]) -> str:
    """One row per latency run: the load at its start, each system's median / p99 (ms)."""
    with_runs = [r for r in results if r.latency_runs]
    if not with_runs:
        return ""
    rows = []
    for i in range(max(len(r.latency_runs) for r in with_runs)):
        load = next(r.latency_runs[i][3] for r in with_runs if i < len(r.latency_runs))
        cells = [f"{r.latency_runs[i][0]:.3f} / {r.latency_runs[i][1]:.2f}"
                 if i < len(r.latency_runs) else "–" for r in with_runs]
        rows.append([str(i + 1), f"{load:.2f}", *cells])
    rows.append(["pooled", "", *[f"{r.latency_median_ms:.3f} / {r.latency_p99_ms:.2f}"
                                 for r in with_runs]])
    return markdown_table(["latency run", "load (1 min)",
                           *[f"{_label(r.system)} median / p99 ms" for r in with_runs]], rows)


def describe_comparison(c: LatencyComparison) -> str:
    diffs = ", ".join(f"{d * 1000:+.0f}" for d in c.median_diffs_ms)
    return (f"{_label(c.system)} vs {c.baseline}: median lower in {c.wins} of "
            f"{len(c.median_diffs_ms)} runs, higher in {c.losses}, equal in {c.ties} "
            f"(sign test p = {c.sign_test_p:.3f}); per run, µs: {diffs}; pooled median "
            f"{c.pooled_median_ms[0]:.3f} vs {c.pooled_median_ms[1]:.3f} ms, p99 "
            f"{c.pooled_p99_ms[0]:.2f} vs {c.pooled_p99_ms[1]:.2f} ms")


def _label(system: str) -> str:
    if is_hybridsync(system) and _GC_OFF:
        return f"{system} (GC off)"
    return system


def check_goal(results: Sequence[Result], system: str | None = None) -> dict[str, bool] | None:
    """Issue 4's goal for ``system`` (default: the last hybridsync configuration run):
    ≥ 2× the baseline's writes/s, median and p99 latency not higher."""
    names = [r.system for r in results if r.system in HS_SYSTEMS]
    if system is None and names:
        system = names[-1]
    hs_r = next((r for r in results if r.system == system), None)
    base = next((r for r in results if r.system == "pycrdt-websocket"), None)
    if hs_r is None or base is None or not base.writes_per_s:
        return None
    return {
        "throughput": hs_r.writes_per_s >= THROUGHPUT_TARGET * base.writes_per_s,
        "latency_median": hs_r.latency_median_ms <= base.latency_median_ms,
        "latency_p99": hs_r.latency_p99_ms <= base.latency_p99_ms,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_WRITES} writes, {QUICK_SAMPLES} samples, "
                             f"{QUICK_PARTITION_S:g} s partition")
    parser.add_argument("--writes", type=int, default=None)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--interval-ms", type=float, default=DEFAULT_INTERVAL_MS)
    parser.add_argument("--partition-s", type=float, default=None,
                        help=f"length of the cut (default {DEFAULT_PARTITION_S:g}; 0 skips)")
    parser.add_argument("--system", action="append", choices=list(SYSTEMS))
    parser.add_argument("--repeat", type=int, default=None,
                        help=f"throughput runs per system, median reported (default "
                             f"{DEFAULT_REPEAT}; 1 with --quick)")
    parser.add_argument("--gc", choices=["on", "off"], default="on",
                        help="hybridsync's garbage collection (default on, as in Memory)")
    parser.add_argument("--latency-runs", type=int, default=None,
                        help=f"latency runs (default {DEFAULT_LATENCY_RUNS}; "
                             f"{QUICK_LATENCY_RUNS} with --quick), each reported")
    parser.add_argument("--paired", action="store_true", default=True,
                        help="latency: every system's pair at once in each run, writes "
                             "phase-interleaved, the order rotated from run to run (the "
                             "default: a paired comparison on a busy machine)")
    parser.add_argument("--unpaired", dest="paired", action="store_false",
                        help="latency: one pair at a time, systems interleaved")
    parser.add_argument("--checkout", action="append", default=[], metavar="NAME=PATH",
                        help="also run --checkout-system from the checkout at PATH, as "
                             "system NAME (an A/B of two trees in one run)")
    parser.add_argument("--checkout-system", choices=list(HS_SYSTEMS),
                        default="hybridsync-group")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    parser.add_argument("--quiet", action="store_true")
    # child roles (internal)
    parser.add_argument("--role", choices=["hybridsync", "ws-server", "ws-client"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--name", default="peer", help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--connect", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--group-commit", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-gc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        return _child_main(args)
    global _GC_OFF
    _GC_OFF = args.gc == "off"

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"  … {msg}", file=sys.stderr, flush=True)

    writes = (args.writes if args.writes is not None
              else QUICK_WRITES if args.quick else DEFAULT_WRITES)
    samples = (args.samples if args.samples is not None
               else QUICK_SAMPLES if args.quick else DEFAULT_SAMPLES)
    partition_s = (args.partition_s if args.partition_s is not None
                   else QUICK_PARTITION_S if args.quick else DEFAULT_PARTITION_S)
    avail = available()
    systems = [s for s in (args.system or SYSTEMS) if avail[s] is None]
    for spec in args.checkout:
        name, sep, path = spec.partition("=")
        root = Path(path).resolve()
        if not sep or not name or name in avail or not (root / "hybridsync").is_dir():
            parser.error(f"--checkout wants NAME=PATH of a hybridsync checkout, got {spec!r}")
        _CHECKOUTS[name] = (args.checkout_system, root)
        systems.insert(0, name)
    m = machine(("hybridsync", "pycrdt", "pycrdt-websocket", "websockets", "cryptography"))
    load_before = os.getloadavg()[0]
    repeat = args.repeat or (1 if args.quick else DEFAULT_REPEAT)
    latency_runs = args.latency_runs or (QUICK_LATENCY_RUNS if args.quick
                                         else DEFAULT_LATENCY_RUNS)
    results = run(writes=writes, samples=samples, interval_ms=args.interval_ms,
                  partition_s=partition_s, systems=systems, repeat=repeat,
                  paired=args.paired, latency_runs=latency_runs, progress=progress)
    print(f"Network benchmark: {writes:,} writes (throughput, median of {repeat}), "
          f"{latency_runs} × {samples} writes every {args.interval_ms:g} ms (latency), "
          f"{partition_s:g} s partition; hybridsync GC {args.gc}; "
          f"{time.strftime('%Y-%m-%d')}")
    for line in m.describe():
        print(f"  {line}")
    print(f"  Load average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    for s, why in avail.items():
        if why is not None:
            print(f"  {s} skipped: {why}")
    for name, (config, root) in _CHECKOUTS.items():
        print(f"  {name}: {config} from the checkout at {root}")
    print("  latency: " + ("all pairs at once in each run, writes phase-interleaved, order "
                         "rotated (paired)" if args.paired
                         else "one pair at a time, systems interleaved (--unpaired)"))
    print()
    print(report(results))
    runs_table = report_latency_runs(results)
    if runs_table:
        print("\nLatency by run (median / p99 of each run's samples):\n")
        print(runs_table)
        for r in results:
            c = compare_latency(results, r.system) if is_hybridsync(r.system) else None
            if c is not None:
                print(f"\n{describe_comparison(c)}")
    for r in results:
        for note in r.notes:
            print(f"\n{r.system}: {note}")
    goal = check_goal(results)
    for r in results:
        if is_hybridsync(r.system):
            g = check_goal(results, r.system)
            if g is not None:
                missed = [k for k, ok in g.items() if not ok]
                c = compare_latency(results, r.system)
                runs_note = (f"; median lower in {c.wins} of {len(c.median_diffs_ms)} runs"
                             if c is not None else "")
                print(f"\nGoal for {_label(r.system)} (≥ {THROUGHPUT_TARGET:g}× writes/s, "
                      "pooled latency not higher): "
                      + ("met" if not missed else f"missed: {', '.join(missed)}")
                      + runs_note)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": asdict(m), "date": time.strftime("%Y-%m-%d"),
                       "results": [asdict(r) for r in results]}, f, indent=2)
    failed = any((r.runs and not r.equal) or (r.partition_s and not r.partition_equal)
                 for r in results)
    missed_goal = goal is not None and not all(goal.values())
    return 1 if failed or (args.strict and missed_goal) else 0


if __name__ == "__main__":
    sys.exit(main())
