"""``hybridsync demo``: three agents in three processes share one memory over loopback TCP.

The orchestrator (:func:`run_demo`) starts three *agent* processes (``python -m
hybridsync._demo agent ...``). Each agent holds a durable replica (SQLite in a temporary
folder) and runs a :class:`~hybridsync.peer.Peer` that finds the others by mDNS on
127.0.0.1. The orchestrator tells the agents what to write (one JSON command per line on
their stdin) and reads their status (one JSON object per line on their stdout), which it
turns into the live view. The story: the planner writes a goal and tasks, the workers
claim tasks, append to a shared scratchpad and fill their rows of a shared buffer; the
critic's network link is cut silently and it edits on its own while the others edit too;
the link comes back, and every replica converges to the same state digest, with the
concurrent writes reported as conflicts on every replica.

The cut is a real one for the sessions: every byte of the critic's sessions crosses a
:class:`_Link` in the critic's process (a relay in front of its listener, announced by mDNS
instead of the listener, and one relay towards each peer it finds), and cutting the link
stops relaying without closing anything, so no goodbye and no FIN reach anyone. Every
peer's heartbeat notices the silence (``dead_after_s``), the sessions close, the peers
re-query mDNS and redial, and once the link is back the redial (or the next re-query) heals
the mesh. mDNS itself is multicast on loopback and does not cross the link: during the cut
the others still hear the critic's announcements (their dials into the cut fail), while the
critic ignores what it hears until the link is back.

Every wait is bounded (``step_timeout_s``); a stuck demo prints what it was waiting for and
the agents' logs, and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from hybridsync.errors import HybridSyncError
from hybridsync.transport._relay import relay

__all__ = ["AGENTS", "agent_main", "run_demo"]

AGENTS = ("planner", "researcher", "critic")
SPACE = "demo"
SCRATCHPAD = "scratchpad"
BUFFER_SHAPE = (64, 32)  # each agent keeps its own buffer "kv/<name>" (float16)
HEARTBEAT_S = 0.5  # the agents' heartbeat; a session silent for 4 of them is closed
RETIRE_AFTER_S = 300.0  # a member silent this long stops blocking compaction (docs/gc.md)


# ==== the critic's network link ================================================================
class _Link:
    """A network link the demo can cut, inside one agent's process.

    :meth:`front` puts a relay in front of the agent's listener (mDNS announces the relay's
    port), :meth:`egress` one in front of each address the agent dials, so every byte of
    the agent's sessions crosses a relay of this link. :meth:`cut` makes the relays stop
    reading and writing, hold new connections without opening their other side, and hold
    closes: to both ends the link is silent, exactly as a pulled cable (TCP flow control
    pushes back on the senders). :meth:`heal` releases what was held, in order.
    """

    def __init__(self) -> None:
        self.up = asyncio.Event()
        self.up.set()
        self._egress: dict[str, str] = {}
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def is_up(self) -> bool:
        return self.up.is_set()

    def cut(self) -> None:
        self.up.clear()

    def heal(self) -> None:
        self.up.set()

    def front(self, port: int) -> int:
        """A relay to ``127.0.0.1:port``; returns the relay's port."""
        return self._relay_to("127.0.0.1", port)

    def egress(self, url: str) -> str:
        """The URL of a relay to ``url`` (one per address, made on first use)."""
        from hybridsync.transport import format_url, parse_url

        if url not in self._egress:
            host, port = parse_url(url)
            self._egress[url] = format_url("127.0.0.1", self._relay_to(host, port))
        return self._egress[url]

    def _relay_to(self, host: str, port: int) -> int:
        # The socket listens at once (connections wait in its backlog), so the port can be
        # announced or dialed before the server task below runs.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        sock.setblocking(False)

        async def serve() -> None:
            server = await asyncio.start_server(
                lambda r, w: self._accept(r, w, host, port), sock=sock)
            self._servers.append(server)

        self._spawn(serve())
        return int(sock.getsockname()[1])

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      host: str, port: int) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self.up.wait()
            try:
                up_reader, up_writer = await asyncio.open_connection(host, port)
            except OSError:
                return
            self._writers.add(up_writer)
            try:
                await asyncio.gather(relay(reader, up_writer, self.up),
                                     relay(up_reader, writer, self.up))
            finally:
                self._writers.discard(up_writer)
                up_writer.close()
        except asyncio.CancelledError:
            pass  # close(): a handler of start_server must not end cancelled
        finally:
            self._writers.discard(writer)
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in list(self._writers):
            w.close()
        for server in self._servers:
            await server.wait_closed()


# ==== the agent process ========================================================================
def _set_path(fields: Any, path: Sequence[str], value: Any) -> None:
    node = fields
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


async def _agent(args: argparse.Namespace) -> int:
    import hybridsync as hs
    from hybridsync.discovery import MdnsDiscovery
    from hybridsync.peer import Peer

    secret = Path(args.secret_file).read_bytes().strip()
    retire_ms = None if args.retire_after_s is None else max(1, round(args.retire_after_s * 1e3))
    mem = hs.Memory(SPACE, args.name, path=args.path, members=AGENTS,
                    retire_after_ms=retire_ms)
    kv_name = f"kv/{args.name}"
    loop = asyncio.get_running_loop()
    out_lock = asyncio.Lock()

    async def emit(obj: dict[str, Any]) -> None:
        async with out_lock:
            sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
            sys.stdout.flush()

    link = _Link() if args.link else None

    def discovery(space_tag: str, peer_id: str, port: int, *, interfaces: Sequence[str],
                  on_found: Callable[[str, str], None]) -> MdnsDiscovery:
        """mDNS; behind a link, it announces the link's front and dials through the link
        (and hears nothing while the link is cut)."""
        if link is None:
            return MdnsDiscovery(space_tag, peer_id, port, interfaces=interfaces,
                                 on_found=on_found)

        def found(url: str, peer: str) -> None:
            if link.is_up:
                on_found(link.egress(url), peer)

        return MdnsDiscovery(space_tag, peer_id, link.front(port), interfaces=interfaces,
                             on_found=found)

    peer = await Peer.start(mem, host="127.0.0.1", port=0, secret=secret,
                            discovery=discovery, interfaces=["127.0.0.1"],
                            heartbeat_s=HEARTBEAT_S)
    wire = {"in": 0, "out": 0}
    seen: dict[tuple[str, str], tuple[int, int]] = {}

    def wire_bytes() -> tuple[int, int]:
        """Bytes on the wire over every session so far (closed ones included)."""
        live = {}
        for info in peer.sessions.values():
            live[(info.peer, info.url)] = (info.bytes_in, info.bytes_out)
        for key, (bi, bo) in list(seen.items()):
            if key not in live:  # closed: keep what it carried
                wire["in"] += bi
                wire["out"] += bo
                del seen[key]
        seen.update(live)
        return (wire["in"] + sum(b[0] for b in seen.values()),
                wire["out"] + sum(b[1] for b in seen.values()))

    def status() -> dict[str, Any]:
        fields = mem.fields.to_dict()
        text = mem.text(SCRATCHPAD).value if SCRATCHPAD in mem.regions() else ""
        buffers = sorted(n for n, kind in mem.regions().items() if kind == "buffer")
        wire_in, wire_out = wire_bytes()
        mem.stable_frontier()  # (brings retirement up to date)
        replica = mem.stats()
        counters = peer.stats()
        return {
            "type": "status", "name": args.name,
            "net": "up" if link is None or link.is_up else "cut",
            "url": peer.url, "sessions": sorted(peer.sessions),
            "heartbeat_timeouts": counters["heartbeat_timeouts"],
            "requeries": counters["requeries"], "sessions_opened": counters["sessions_opened"],
            "retired": list(replica.retired), "retire_after_s": args.retire_after_s,
            # contributions held, compacted ones included (history() lists the retained)
            "commits": sum(replica.version_vector.values()), "digest": mem.state_digest(),
            "conflicts": [c.detail for c in mem.conflicts()],
            "goal": fields.get("goal"), "tasks": fields.get("tasks", {}),
            "scratch_lines": len(text.splitlines()), "buffers": buffers,
            "wire_in": wire_in, "wire_out": wire_out,
        }

    async def reporter() -> None:
        while True:
            await emit(status())
            await asyncio.sleep(args.status_interval_s)

    async def execute(cmd: dict[str, Any]) -> None:
        op = cmd.get("op")
        if op == "write":
            with mem.transaction(note=str(cmd.get("note", ""))):
                for path, value in cmd.get("set", []):
                    _set_path(mem.fields, path, value)
                lines = cmd.get("append", [])
                if lines:
                    pad = mem.text(SCRATCHPAD)
                    pad.set(pad.value + "".join(f"{line}\n" for line in lines))
                if "row" in cmd:  # fill one row of this agent's own buffer
                    buf = mem.buffer(kv_name, shape=BUFFER_SHAPE, dtype="float16")
                    r = int(cmd["row"])
                    buf.array[r % BUFFER_SHAPE[0]] = r
        elif op in ("cut", "heal"):
            if link is None:
                raise ValueError(f"{args.name} has no link to {op} (start it with --link)")
            if op == "cut":
                link.cut()
            else:
                link.heal()
        else:
            raise ValueError(f"unknown command {op!r}")

    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    reporting = asyncio.create_task(reporter())
    await emit({"type": "ready", "name": args.name, "url": peer.url})

    async def commands() -> None:
        while True:
            line = await reader.readline()
            if not line:  # the orchestrator is gone: stop
                return
            cmd = json.loads(line)
            if cmd.get("op") == "stop":
                return
            await execute(cmd)
            await emit({"type": "ack", "id": cmd.get("id")})
            await emit(status())

    reading = asyncio.create_task(commands())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if reading.done() and reading.exception() is not None:
            raise reading.exception()  # type: ignore[misc]
    finally:
        for t in (reading, stopping):
            t.cancel()
        if link is not None:
            link.heal()  # (a goodbye must be able to leave)
        await peer.stop()
        if link is not None:
            await link.close()
        reporting.cancel()
        await asyncio.gather(reporting, reading, stopping, return_exceptions=True)
        final = status()
        final["type"] = "final"
        await emit(final)
        mem.close()
    return 0


def agent_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hybridsync._demo agent")
    p.add_argument("role", choices=["agent"])
    p.add_argument("--name", required=True)
    p.add_argument("--secret-file", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--status-interval-s", type=float, default=0.25)
    p.add_argument("--link", action="store_true",
                   help="route every session through a link the orchestrator can cut")
    p.add_argument("--retire-after-s", type=float, default=None,
                   help="Memory(retire_after_ms=...): a member silent this long stops "
                   "blocking compaction (default never)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {args.name} %(name)s %(levelname)s %(message)s")
    return asyncio.run(_agent(args))


# ==== the orchestrator ========================================================================
class DemoFailed(HybridSyncError):
    """A step did not happen within its time bound (the message says which)."""


@dataclass
class _Agent:
    name: str
    proc: asyncio.subprocess.Process
    log_path: Path
    status: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    acks: set[int] = field(default_factory=set)
    exited: int | None = None
    final: dict[str, Any] = field(default_factory=dict)


class _View:
    """The live view: a table of the agents, printed when something changed (at most once per
    ``pace_s``, and at least every few seconds while waiting)."""

    def __init__(self, out: TextIO, started: float, pace_s: float) -> None:
        self.out = out
        self.started = started
        self.pace_s = pace_s
        self._last_key: Any = None
        self._last_at = 0.0

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def table(self, agents: Sequence[_Agent], title: str, *, force: bool = False) -> None:
        now = time.monotonic()
        key = tuple((a.status.get("digest"), tuple(a.status.get("sessions", ())),
                     a.status.get("net"), a.status.get("commits")) for a in agents)
        if not force and (now - self._last_at < self.pace_s or
                          (key == self._last_key and now - self._last_at < 5 * self.pace_s)):
            return
        self._last_key, self._last_at = key, now
        digests = {a.status.get("digest") for a in agents if a.status}
        if not all(a.status for a in agents):
            state = "starting"
        else:
            state = ("all replicas identical" if len(digests) == 1
                     else f"{len(digests)} different states")
        self.say(f"[{now - self.started:5.1f} s] {title}: {state}")
        self.say(f"  {'agent':<11}{'net':<9}{'sessions with':<22}{'commits':>7}  "
                 f"{'digest':<9}{'confl':>5}  {'wire in/out':>13}  {'pad':>4} {'bufs':>4}  tasks")
        for a in agents:
            s = a.status
            if not s:
                self.say(f"  {a.name:<11}(starting)")
                continue
            sessions = ",".join(s["sessions"]) or "-"
            tasks = " ".join(
                f"{t}:{v.get('status', '?')}" + (f"@{v['owner']}" if "owner" in v else "")
                for t, v in sorted(s["tasks"].items()) if isinstance(v, dict)
            ) or "-"
            wire = f"{_kib(s['wire_in'])}/{_kib(s['wire_out'])}"
            net = "up" if s["net"] == "up" else "CUT"
            self.say(f"  {a.name:<11}{net:<9}"
                     f"{sessions:<22}{s['commits']:>7}  {s['digest'][:8]:<9}"
                     f"{len(s['conflicts']):>5}  {wire:>13}  {s['scratch_lines']:>4} "
                     f"{len(s['buffers']):>2}/{len(AGENTS)}  {tasks}")


def _kib(n: int) -> str:
    return f"{n / 1024:.1f}k" if n >= 1024 else f"{n}B"


class _Orchestrator:
    def __init__(self, workdir: Path, out: TextIO, *, pace_s: float, step_timeout_s: float,
                 python: str, retire_after_s: float | None = RETIRE_AFTER_S) -> None:
        self.workdir = workdir
        self.retire_after_s = retire_after_s
        self.view = _View(out, time.monotonic(), pace_s)
        self.step_timeout_s = step_timeout_s
        self.python = python
        self.agents: dict[str, _Agent] = {}
        self._readers: list[asyncio.Task[None]] = []
        self._next_id = 0
        self._sent: dict[int, dict[str, Any]] = {}
        self.writes = 0  # write commands sent: one commit each
        self._changed = asyncio.Event()

    @property
    def ordered(self) -> list[_Agent]:
        return [self.agents[n] for n in AGENTS if n in self.agents]

    async def spawn(self) -> None:
        secret_file = self.workdir / "secret"
        secret_file.write_text(secrets.token_hex(32) + "\n")
        secret_file.chmod(0o600)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for name in AGENTS:
            log_path = self.workdir / f"{name}.log"
            extra = ["--link"] if name == AGENTS[2] else []  # the critic's link can be cut
            if self.retire_after_s is not None:
                extra += ["--retire-after-s", repr(self.retire_after_s)]
            with log_path.open("wb") as log_fh:
                proc = await asyncio.create_subprocess_exec(
                    self.python, "-m", "hybridsync._demo", "agent", "--name", name,
                    "--secret-file", str(secret_file), "--path", str(self.workdir / f"{name}.db"),
                    *extra,
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    stderr=log_fh, env=env,
                )
            agent = _Agent(name, proc, log_path)
            self.agents[name] = agent
            self._readers.append(asyncio.create_task(self._read(agent)))

    async def _read(self, agent: _Agent) -> None:
        assert agent.proc.stdout is not None
        while True:
            line = await agent.proc.stdout.readline()
            if not line:
                break
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            kind = msg.get("type")
            if kind == "status":
                agent.status = msg
            elif kind == "ready":
                agent.ready = True
            elif kind == "ack":
                agent.acks.add(int(msg["id"]))
            elif kind == "final":
                agent.final = msg
            self._changed.set()
        agent.exited = await agent.proc.wait()
        self._changed.set()

    async def send(self, name: str, cmd: dict[str, Any]) -> int:
        agent = self.agents[name]
        self._next_id += 1
        cmd = {**cmd, "id": self._next_id}
        self._sent[self._next_id] = cmd
        self.writes += cmd["op"] == "write"
        assert agent.proc.stdin is not None
        agent.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await agent.proc.stdin.drain()
        return self._next_id

    async def do(self, name: str, cmd: dict[str, Any]) -> None:
        """Send a command and wait for its acknowledgement."""
        cid = await self.send(name, cmd)
        await self.acked(name, cid)

    async def acked(self, name: str, cid: int) -> None:
        cmd = self._sent[cid]
        await self.until(lambda: cid in self.agents[name].acks, f"{name} to do {cmd['op']}",
                         title=f"{name}: {cmd.get('note', cmd['op'])}")

    async def until(self, cond: Callable[[], bool], what: str, *, title: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.step_timeout_s
        while not cond():
            for a in self.ordered:
                if a.exited is not None:
                    raise DemoFailed(f"agent {a.name} exited with status {a.exited} "
                                     f"while waiting for {what}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DemoFailed(f"no {what} within {self.step_timeout_s:g} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 0.5))
            self.view.table(self.ordered, title)

    async def hold(self, seconds: float, title: str) -> None:
        """Let time pass (the view keeps updating), for the reader to see a phase."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            await asyncio.sleep(min(left, 0.25))
            self.view.table(self.ordered, title)
        self.view.table(self.ordered, title, force=True)

    def converged(self, names: Sequence[str] = AGENTS, *, commits: int | None = None) -> bool:
        """The agents show one digest and hold ``commits`` contributions (default: every
        write acknowledged so far)."""
        want = self.writes if commits is None else commits
        st = [self.agents[n].status for n in names]
        return all(st) and len({s["digest"] for s in st}) == 1 and all(
            s["commits"] == want for s in st)

    def meshed(self, names: Sequence[str] = AGENTS) -> bool:
        return all(set(self.agents[n].status.get("sessions", ())) >= set(names) - {n}
                   for n in names)

    def apart(self, name: str) -> bool:
        """No agent lists a session with ``name``, and ``name`` lists none."""
        return not self.agents[name].status.get("sessions") and all(
            name not in a.status.get("sessions", ()) for a in self.ordered)

    async def shutdown(self) -> None:
        for a in self.ordered:
            if a.exited is None and a.proc.stdin is not None:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    a.proc.stdin.write(b'{"op":"stop"}\n')
                    await a.proc.stdin.drain()
                    a.proc.stdin.close()
        for a in self.ordered:
            try:
                await asyncio.wait_for(a.proc.wait(), timeout=15)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    a.proc.kill()
                await a.proc.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)

    def logs_tail(self, lines: int = 15) -> str:
        out = []
        for a in self.ordered:
            text = a.log_path.read_text(errors="replace").splitlines() if a.log_path.exists() \
                else []
            out.append(f"--- {a.name} log (last {lines} lines) ---")
            out.extend(text[-lines:])
        return "\n".join(out)


async def _story(o: _Orchestrator) -> dict[str, Any]:
    say = o.view.say
    planner, researcher, critic = AGENTS
    say(f"hybridsync demo: {len(AGENTS)} agents, each its own process with its own SQLite "
        f"replica, find each other by mDNS on 127.0.0.1 and sync over encrypted TCP. "
        f"No coordinator.")
    say(f"(working folder {o.workdir})")
    say()
    await o.spawn()
    await o.until(lambda: all(a.ready for a in o.ordered), "agents started",
                  title="starting agents")
    await o.until(o.meshed, "full mesh of sessions (mDNS discovery)",
                  title="discovering each other by mDNS")
    o.view.table(o.ordered, "every agent has a session with the two others", force=True)

    say()
    say("== the planner writes a goal, three tasks and the first scratchpad line ==")
    await o.do(planner, {
        "op": "write", "note": "plan",
        "set": [[["goal"], "ship v1"],
                [["tasks"], {f"t{i}": {"status": "open"} for i in (1, 2, 3)}]],
        "append": [f"{planner}: plan drafted, three tasks"], "row": 1,
    })
    await o.until(o.converged, "convergence", title="syncing")
    o.view.table(o.ordered, "everyone has the plan", force=True)

    say()
    say("== the workers claim tasks at the same time, write notes and their buffer rows ==")
    ids = [
        (researcher, await o.send(researcher, {
            "op": "write", "note": "claim t1",
            "set": [[["tasks", "t1", "owner"], researcher], [["tasks", "t1", "status"], "doing"]],
            "append": [f"{researcher}: reading the papers for t1"], "row": 2})),
        (critic, await o.send(critic, {
            "op": "write", "note": "claim t2",
            "set": [[["tasks", "t2", "owner"], critic], [["tasks", "t2", "status"], "doing"]],
            "append": [f"{critic}: reviewing the design for t2"], "row": 3})),
    ]
    for n, i in ids:
        await o.acked(n, i)
    await o.until(o.converged, "convergence", title="syncing")
    o.view.table(o.ordered, "both claims everywhere", force=True)

    say()
    say(f"== {critic}'s network link is cut: no goodbye, no FIN, just silence ==")
    say(f"   (the others still list a session with {critic} until their heartbeat has heard "
        f"nothing for {4 * HEARTBEAT_S:g} s; so does {critic})")
    cut_at = time.monotonic()
    await o.do(critic, {"op": "cut"})
    ids = [
        (critic, await o.send(critic, {
            "op": "write", "note": "t1 looks blocked",
            "set": [[["tasks", "t1", "status"], "blocked"]],
            "append": [f"{critic}: t1 looks blocked to me (cut off)"], "row": 4})),
        (researcher, await o.send(researcher, {
            "op": "write", "note": "t1 done",
            "set": [[["tasks", "t1", "status"], "done"]],
            "append": [f"{researcher}: t1 is done"], "row": 5})),
        (planner, await o.send(planner, {
            "op": "write", "note": "new date",
            "set": [[["goal"], "ship v1 on Friday"], [["tasks", "t3", "owner"], planner]],
            "append": [f"{planner}: moved the date, I take t3"], "row": 6})),
    ]
    for n, i in ids:
        await o.acked(n, i)
    await o.until(lambda: o.apart(critic), f"heartbeats to close every session with {critic}",
                  title="heartbeats listen to the silence")
    noticed_s = time.monotonic() - cut_at
    o.view.table(o.ordered, f"heartbeats closed every session with {critic}", force=True)
    await o.until(lambda: o.converged([planner, researcher], commits=o.writes - 1),
                  "the connected two to converge", title="partitioned")
    await o.hold(1.0, f"{critic} is cut off")
    if o.converged():
        raise DemoFailed(f"{critic} cannot hold the others' writes while cut off")

    say()
    say(f"== the link comes back: re-query (mDNS) and redial find {critic} again ==")
    rejoined_at = time.monotonic()
    await o.do(critic, {"op": "heal"})
    await o.until(o.meshed, "the mesh to heal", title="rejoining")
    mesh_s = time.monotonic() - rejoined_at
    await o.until(o.converged, "convergence after the heal", title="anti-entropy")
    heal_s = time.monotonic() - rejoined_at
    o.view.table(o.ordered, "converged", force=True)
    return {"heal_s": heal_s, "mesh_s": mesh_s, "noticed_s": noticed_s}


async def _run(workdir: Path, out: TextIO, *, pace_s: float, step_timeout_s: float,
               retire_after_s: float | None) -> int:
    o = _Orchestrator(workdir, out, pace_s=pace_s, step_timeout_s=step_timeout_s,
                      retire_after_s=retire_after_s,
                      python=sys.executable)
    started = time.monotonic()
    say = o.view.say
    try:
        facts = await _story(o)
    except DemoFailed as exc:
        say(f"demo failed: {exc}")
        await o.shutdown()
        say(o.logs_tail())
        return 1
    except BaseException:
        await o.shutdown()
        raise
    await o.shutdown()
    finals = {a.name: a.final for a in o.ordered}
    codes = {a.name: a.exited for a in o.ordered}
    say()
    say("== summary ==")
    if any(c != 0 for c in codes.values()) or not all(finals.values()):
        say(f"an agent did not stop cleanly: exit codes {codes}")
        say(o.logs_tail())
        return 1
    digests = {f["digest"] for f in finals.values()}
    conflicts = {json.dumps(f["conflicts"]) for f in finals.values()}
    ref = finals[AGENTS[0]]
    ok = len(digests) == 1 and len(conflicts) == 1
    shown = ", ".join(f"{n} {f['digest'][:12]}" for n, f in finals.items())
    say(("converged: " if ok else "NOT converged: ") + f"state digests {shown}")
    say(f"every replica holds {ref['commits']} commits; scratchpad {ref['scratch_lines']} lines; "
        f"buffers {', '.join(ref['buffers'])}; goal {ref['goal']!r}")
    for n, f in finals.items():
        say(f"  {n:<11} wire in {_kib(f['wire_in'])}, out {_kib(f['wire_out'])}")
    for c in ref["conflicts"]:
        say(f"conflict (reported identically by all {len(finals)}): {c}")
    tasks = " ".join(f"{t}:{v.get('status')}@{v.get('owner', '-')}"
                     for t, v in sorted(ref["tasks"].items()))
    say(f"final tasks: {tasks}")
    counts = ", ".join(f"{n} {f['heartbeat_timeouts']}" for n, f in finals.items())
    say(f"the cut: heartbeat timeouts {counts} (every session with {AGENTS[2]} closed "
        f"{facts['noticed_s']:.1f} s after the cut)")
    counts = ", ".join(f"{n} {f['requeries']}" for n, f in finals.items())
    say(f"the heal: mDNS re-queries {counts}; the mesh was whole again "
        f"{facts['mesh_s']:.1f} s after the link came back, and {AGENTS[2]} caught up "
        f"{facts['heal_s']:.1f} s after it")
    retired = sorted({m for f in finals.values() for m in f["retired"]})
    if ref["retire_after_s"] is None:
        say("retirement: off (a member that never comes back blocks compaction)")
    else:
        say(f"retirement: a member silent for {ref['retire_after_s']:g} s stops blocking "
            f"compaction (docs/gc.md); retired now: {', '.join(retired) or 'nobody'}")
    say(f"demo took {time.monotonic() - started:.1f} s")
    return 0 if ok else 1


def run_demo(out: TextIO | None = None, *, pace_s: float = 1.0, step_timeout_s: float = 30.0,
             keep: str | None = None, retire_after_s: float | None = RETIRE_AFTER_S) -> int:
    """Run the demo; returns the exit status (0 converged, 1 failed). ``keep`` is a folder
    that keeps the agents' databases and logs (default: a temporary folder, removed).
    ``retire_after_s`` is each agent's ``Memory(retire_after_ms=...)`` in seconds (None:
    never retire)."""
    out = out or sys.stdout
    if keep is not None:
        workdir = Path(keep)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in AGENTS:
            for suffix in (".db", ".db-wal", ".db-shm"):
                (workdir / f"{name}{suffix}").unlink(missing_ok=True)
        return asyncio.run(_run(workdir, out, pace_s=pace_s, step_timeout_s=step_timeout_s,
                                retire_after_s=retire_after_s))
    tmp = Path(tempfile.mkdtemp(prefix="hybridsync-demo-"))
    try:
        return asyncio.run(_run(tmp, out, pace_s=pace_s, step_timeout_s=step_timeout_s,
                                retire_after_s=retire_after_s))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(agent_main())
