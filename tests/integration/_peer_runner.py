"""One ``hs.Memory`` + ``hs.Peer`` in its own process, driven by JSON lines on stdin.

Started by the partition and load tests (``python _peer_runner.py --name p0 ...``), inside a
network namespace or on loopback. It prints ``{"ready": true, "url": ...}`` once listening,
then answers one JSON line per command:

- ``{"op": "write", "key": k, "value": v}``: one write, one commit.
- ``{"op": "stream", "n": N, "interval_ms": I}``: start writing ``<name>:000000`` …
  in the background, one commit every ``I`` ms; the value ``"<name>@<monotonic ns>"`` is the
  write's time, so a receiver can tell how long the write took to reach it.
- ``{"op": "join", "within_s": T}``: wait for the stream to finish; ``{"written": n}``.
- ``{"op": "state"}``: state digest, number of keys, heads, live sessions (remote names),
  RSS, and the convergence lag of every remote stream write seen so far.
- ``{"op": "lags"}``: every convergence lag seen so far, in ms.
- ``{"op": "keys"}``: every key of the fields.
- ``{"op": "connect", "url": u}``: ``peer.connect(u)``.
- ``{"op": "text", "name": n, "value": v}``: set the text region ``n`` to ``v``; with
  ``"old": o`` instead, replace the first ``o`` in it by ``"new"`` (an error if absent);
  one commit.
- ``{"op": "buffer", "name": n, "shape": [r, c], "row": i, "value": x}``: fill row ``i``
  of the float32 buffer ``n`` with ``x``; one commit.
- ``{"op": "regions", "buffers": {n: shape}}``: every region as folded (kind, name, blake2b
  of its bytes), each text's value, the rows of the float32 buffers named (a row's value
  if it is uniform, else ``null``), and the conflicts (plane, kind, location, detail).
- ``{"op": "stop"}``: ``peer.stop()``, close the memory, exit.

``time.monotonic_ns`` is one system-wide clock on Linux (namespaces included), so a writer's
timestamp and a reader's arrival time compare across processes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from typing import Any

import numpy as np

import hybridsync as hs


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _summary(values_ms: list[float]) -> dict[str, float | int]:
    if not values_ms:
        return {"n": 0}
    ordered = sorted(values_ms)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return {"n": len(ordered), "median_ms": q(0.5), "p99_ms": q(0.99), "max_ms": ordered[-1]}


class Runner:
    def __init__(self, mem: hs.Memory, name: str) -> None:
        self.mem = mem
        self.name = name
        self.peer: Any = None
        self.stream: asyncio.Task[int] | None = None
        self.lags_ms: list[float] = []
        self.seen: set[str] = set()
        mem.observe(self._on_change)

    def _on_change(self, change: Any) -> None:
        if change.local:
            return
        now = time.monotonic_ns()
        for path in change.paths:
            key = path.split("/", 1)[0]
            if key in self.seen:
                continue
            value = self.mem.fields.get(key)
            if isinstance(value, str) and "@" in value:
                self.seen.add(key)
                self.lags_ms.append((now - int(value.rsplit("@", 1)[1])) / 1e6)

    async def _stream(self, n: int, interval_s: float) -> int:
        for i in range(n):
            self.mem.fields[f"{self.name}:{i:06d}"] = f"{self.name}@{time.monotonic_ns()}"
            await asyncio.sleep(interval_s)
        return n

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd["op"]
        if op == "write":
            self.mem.fields[cmd["key"]] = cmd["value"]
            return {"ok": True}
        if op == "stream":
            if self.stream is not None and not self.stream.done():
                return {"error": "a stream is already running"}
            self.stream = asyncio.create_task(self._stream(cmd["n"], cmd["interval_ms"] / 1000))
            return {"ok": True}
        if op == "join":
            if self.stream is None:
                return {"written": 0}
            return {"written": await asyncio.wait_for(self.stream, cmd["within_s"])}
        if op == "state":
            sessions = self.peer.sessions
            return {
                "digest": self.mem.state_digest(),
                "keys": len(self.mem.fields.to_dict()),
                "heads": list(self.mem.heads),
                "sessions": sorted(sessions),
                "session_states": {k: v.state for k, v in sessions.items()},
                "stats": self.peer.stats(),
                "rss_kib": _rss_kib(),
                "lag": _summary(self.lags_ms),
            }
        if op == "lags":
            return {"lags_ms": self.lags_ms}
        if op == "keys":
            return {"keys": sorted(self.mem.fields.to_dict())}
        if op == "text":
            region = self.mem.text(cmd["name"])
            if "value" in cmd:
                region.set(cmd["value"])
            elif cmd["old"] in region.value:
                region.set(region.value.replace(cmd["old"], cmd["new"], 1))
            else:
                return {"error": f"{cmd['old']!r} is not in text {cmd['name']!r}"}
            self.mem.commit()
            return {"ok": True}
        if op == "buffer":
            buf = self.mem.buffer(cmd["name"], shape=tuple(cmd["shape"]), dtype="float32")
            buf.array[cmd["row"]] = cmd["value"]
            self.mem.commit()
            return {"ok": True}
        if op == "regions":
            kinds = self.mem.regions()
            rows: dict[str, list[float | None]] = {}
            for name, shape in cmd.get("buffers", {}).items():
                if kinds.get(name) == "buffer":
                    arr = self.mem.buffer(name, shape=tuple(shape), dtype="float32").array
                    rows[name] = [float(r[0]) if bool(np.all(r == r[0])) else None
                                  for r in arr.reshape(arr.shape[0], -1)]
            return {
                "bytes": [[kind, name, hashlib.blake2b(data, digest_size=16).hexdigest()]
                          for kind, name, data in self.mem.region_bytes()],
                "texts": {n: self.mem.text(n).value for n, k in kinds.items() if k == "text"},
                "rows": rows,
                "conflicts": [[c.plane, c.kind, c.location, c.detail]
                              for c in self.mem.conflicts()],
            }
        if op == "connect":
            return {"remote": await self.peer.connect(cmd["url"], timeout_s=cmd["within_s"])}
        if op == "stop":
            if self.stream is not None:
                self.stream.cancel()
            await self.peer.stop()
            self.mem.close()
            return {"stopped": True}
        return {"error": f"unknown op {op!r}"}


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    mem = hs.Memory(args.space, args.name)
    runner = Runner(mem, args.name)
    runner.peer = await hs.Peer.start(
        mem,
        host=args.host,
        port=args.port,
        secret=bytes.fromhex(args.secret_hex),
        peers=args.peer,
        heartbeat_s=args.heartbeat_s,
        reconnect_max_s=args.reconnect_max_s,
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    _emit({"ready": True, "url": runner.peer.url})
    while True:
        line = await reader.readline()
        if not line:  # the test went away: stop cleanly all the same
            await runner.handle({"op": "stop"})
            return
        cmd = json.loads(line)
        try:
            reply = await runner.handle(cmd)
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        _emit(reply)
        if cmd["op"] == "stop":
            return


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--space", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--secret-hex", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--peer", action="append", default=[])
    parser.add_argument("--heartbeat-s", type=float, default=1.0)
    parser.add_argument("--reconnect-max-s", type=float, default=10.0)
    asyncio.run(main(parser.parse_args()))
