"""Test-side control of ``_peer_runner.py`` processes: start a group, ask, wait, clean up.

Every wait is bounded in time (``within_s``) and every poll loop in count; a process that
does not answer in time fails the test with its name and the command, never hangs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RUNNER = Path(__file__).with_name("_peer_runner.py")
Wrap = Callable[[int, list[str]], list[str]]


def runner_argv(
    space: str,
    secret: bytes,
    name: str,
    *,
    host: str = "127.0.0.1",
    peers: Sequence[str] = (),
    heartbeat_s: float = 1.0,
    reconnect_max_s: float = 2.0,
) -> list[str]:
    """The command line of one ``_peer_runner.py``."""
    argv = [
        sys.executable,
        str(RUNNER),
        "--space",
        space,
        "--name",
        name,
        "--secret-hex",
        secret.hex(),
        "--host",
        host,
        "--heartbeat-s",
        str(heartbeat_s),
        "--reconnect-max-s",
        str(reconnect_max_s),
    ]
    for url in peers:
        argv += ["--peer", url]
    return argv


class PeerProcess:
    """One ``_peer_runner.py`` process."""

    def __init__(self, argv: list[str], name: str, *, within_s: float = 60.0) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
        )
        self.ready = self._read(within_s, "start")
        self.url: str = self.ready["url"]

    def _read(self, within_s: float, what: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(within_s):
                raise TimeoutError(f"{self.name}: no answer to {what} within {within_s} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} exited (status {self.proc.poll()}) during {what}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.name} {what}: {reply['error']}")
        return reply

    def ask(self, op: str, within_s: float = 30.0, **kw: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, "within_s": within_s, **kw}) + "\n").encode())
        self.proc.stdin.flush()
        return self._read(within_s + 5, op)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.ask("stop", within_s=10)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


class Cluster:
    """``n`` peers of one space; peer ``i`` dials ``dials(i)`` (earlier peers only)."""

    def __init__(
        self,
        n: int,
        *,
        wrap: Wrap | None = None,
        host: Callable[[int], str] = lambda _i: "127.0.0.1",
        dials: Callable[[int], Sequence[int]] = lambda i: range(i),
        reconnect_max_s: float = 2.0,
        heartbeat_s: float = 1.0,
    ) -> None:
        self.space = f"it-{secrets.token_hex(4)}"
        self.secret = secrets.token_bytes(32)
        self.peers: list[PeerProcess] = []
        try:
            for i in range(n):
                argv = runner_argv(
                    self.space,
                    self.secret,
                    f"p{i}",
                    host=host(i),
                    peers=[self.peers[j].url for j in dials(i)],
                    heartbeat_s=heartbeat_s,
                    reconnect_max_s=reconnect_max_s,
                )
                self.peers.append(PeerProcess(wrap(i, argv) if wrap else argv, f"p{i}"))
        except BaseException:
            self.close()
            raise

    def states(self, within_s: float = 30.0) -> list[dict[str, Any]]:
        return [p.ask("state", within_s) for p in self.peers]

    def wait(
        self,
        done: Callable[[list[dict[str, Any]]], bool],
        *,
        within_s: float,
        every_s: float = 0.25,
    ) -> tuple[bool, list[dict[str, Any]], float]:
        """Poll states until ``done(states)``; (reached, last states, seconds waited)."""
        start = time.monotonic()
        states = self.states()
        for _ in range(int(within_s / every_s) + 1):
            if done(states) or time.monotonic() - start > within_s:
                break
            time.sleep(every_s)
            states = self.states()
        return done(states), states, time.monotonic() - start

    def wait_converged(
        self, keys: int | None = None, *, within_s: float
    ) -> tuple[bool, list[dict[str, Any]], float]:
        """Wait until every peer has the same state digest (and ``keys`` keys, if given)."""

        def done(states: list[dict[str, Any]]) -> bool:
            if len({s["digest"] for s in states}) != 1:
                return False
            return keys is None or all(s["keys"] == keys for s in states)

        return self.wait(done, within_s=within_s)

    def close(self) -> None:
        for p in self.peers:
            p.close()


def written_keys(name: str, n: int) -> set[str]:
    """The keys ``stream`` of ``n`` writes makes on peer ``name``."""
    return {f"{name}:{i:06d}" for i in range(n)}
