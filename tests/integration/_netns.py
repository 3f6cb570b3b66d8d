"""A throwaway network of Linux network namespaces for partition and loss tests (DESIGN.md §5).

``NetLab(n)`` builds, as root::

    node0 (eth0 10.254.0.1/24) ─veth─ p0 ┐
    node1 (eth0 10.254.0.2/24) ─veth─ p1 ├─ br0   (in its own "switch" namespace)
    ...                                  ┘

Every namespace, the bridge and every veth live in namespaces the lab creates, so nothing in
the root namespace changes and no packet can leave the machine: the /24 exists only on the
lab's bridge. Names carry the creating process id and a random tag, so parallel test workers
never collide; ``close()`` (also run by ``with``, ``atexit`` and on a failed build) deletes
every namespace, which destroys the bridge and the veths with it. A lab left behind by a
process that was killed outright is swept by the next lab whose creator sees that pid gone.

Faults are nftables rules in the switch namespace's bridge ``forward`` hook; ARP is always let
through, so neighbour entries stay valid and a heal works at once. ``tc netem`` is not used
(the kernel here is built without it).

- ``partition([[0, 1], [2, 3]])``: drop every frame between ports of different groups
  (nodes in no group keep talking to everyone);
- ``loss(15)``: drop each frame with probability 15 % (``numgen random mod 100 < 15``);
- ``heal()``: delete both kinds of rule.

``unavailable_reason()`` says why no lab can be built here (not root, no ``ip``/``nft``, no
namespace support), or ``None``; tests skip with that reason.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterable, Sequence
from functools import cache

__all__ = ["SUBNET_PREFIX", "NetLab", "NetLabError", "unavailable_reason"]

SUBNET_PREFIX = "10.254.0."  # the lab's /24; it exists only on the lab's own bridge
_NAME_PREFIX = "hslab"
_NAME_RE = re.compile(rf"^{_NAME_PREFIX}(\d+)x[0-9a-f]+-")
_TABLE = "hslab"
_COMMAND_TIMEOUT_S = 20.0


class NetLabError(RuntimeError):
    """A command that builds or changes the lab failed (message carries its stderr)."""


def _run(argv: Sequence[str], *, stdin: str | None = None, check: bool = True) -> str:
    try:
        done = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetLabError(f"{' '.join(argv)}: {exc}") from exc
    if check and done.returncode != 0:
        raise NetLabError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


@cache
def unavailable_reason() -> str | None:
    """Why network namespaces cannot be used here, or ``None`` when they can."""
    if os.name != "posix" or not os.path.isdir("/proc/self/ns"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN); run the suite as root"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"`{tool}` not found: install {package} (scripts/ci-setup.sh does, as root)"
    probe = f"{_NAME_PREFIX}{os.getpid()}x{secrets.token_hex(3)}-probe"
    try:
        _run(["ip", "netns", "add", probe])
    except NetLabError as exc:
        return f"cannot create a network namespace (no CAP_NET_ADMIN?): {exc}"
    try:
        _run(
            ["ip", "netns", "exec", probe, "nft", "-f", "-"],
            stdin=f"table bridge {_TABLE} {{\n chain forward_hs {{\n  type filter hook forward "
            "priority 0; policy accept;\n  numgen random mod 100 < 1 drop\n }\n}\n",
        )
    except NetLabError as exc:
        return f"nftables bridge filtering unavailable: {exc}"
    finally:
        _run(["ip", "netns", "del", probe], check=False)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Delete lab namespaces whose creating process is gone; return their names."""
    swept = []
    for line in _run(["ip", "netns", "list"], check=False).splitlines():
        name = line.split(" ", 1)[0]
        match = _NAME_RE.match(name)
        if match and not _alive(int(match.group(1))):
            _run(["ip", "netns", "del", name], check=False)
            swept.append(name)
    return swept


class NetLab:
    """``n`` namespaces on one bridge, with partition and loss faults; see the module doc."""

    def __init__(self, n: int) -> None:
        if not 1 <= n <= 200:
            raise ValueError(f"a lab has 1..200 nodes, not {n}")
        reason = unavailable_reason()
        if reason is not None:
            raise NetLabError(reason)
        sweep_stale()
        self.n = n
        self.tag = f"{_NAME_PREFIX}{os.getpid()}x{secrets.token_hex(3)}"
        self.switch = f"{self.tag}-sw"
        self.nodes = [f"{self.tag}-n{i}" for i in range(n)]
        self._created: list[str] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._closed = False
        atexit.register(self.close)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # ---- building -------------------------------------------------------------------------

    def _build(self) -> None:
        for ns in (self.switch, *self.nodes):
            _run(["ip", "netns", "add", ns])
            self._created.append(ns)
        sw = ["ip", "-n", self.switch]
        _run([*sw, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])
        for i, ns in enumerate(self.nodes):
            port = f"p{i}"
            _run([*sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns])
            _run([*sw, "link", "set", port, "master", "br0"])
            _run([*sw, "link", "set", port, "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _run([*sw, "link", "set", "br0", "up"])
        self._nft(
            f"table bridge {_TABLE} {{\n"
            "  chain partition_hs { }\n"
            "  chain loss_hs { }\n"
            "  chain forward_hs {\n"
            "    type filter hook forward priority 0; policy accept;\n"
            "    ether type arp accept\n"
            "    jump partition_hs\n"
            "    jump loss_hs\n"
            "  }\n"
            "}\n"
        )

    def _nft(self, script: str) -> None:
        _run(["ip", "netns", "exec", self.switch, "nft", "-f", "-"], stdin=script)

    # ---- queries --------------------------------------------------------------------------

    def address(self, i: int) -> str:
        """Node ``i``'s IPv4 address on the lab's /24."""
        self._check_node(i)
        return f"{SUBNET_PREFIX}{i + 1}"

    def ruleset(self) -> str:
        """The switch's nftables ruleset, as ``nft list ruleset`` prints it."""
        return _run(["ip", "netns", "exec", self.switch, "nft", "list", "ruleset"])

    def _check_node(self, i: int) -> None:
        if not 0 <= i < self.n:
            raise ValueError(f"node {i} is not in a lab of {self.n}")

    # ---- processes ------------------------------------------------------------------------

    def command(self, i: int, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside node ``i``'s namespace."""
        self._check_node(i)
        return ["ip", "netns", "exec", self.nodes[i], *argv]

    def popen(self, i: int, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside node ``i``; ``close()`` kills it if it still runs."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            self.command(i, argv), start_new_session=True, **kwargs
        )
        self._procs.append(proc)
        return proc

    # ---- faults ---------------------------------------------------------------------------

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """Cut every link between nodes of different groups (replaces an earlier partition)."""
        sets = [sorted(set(g)) for g in groups]
        seen: set[int] = set()
        for g in sets:
            for i in g:
                self._check_node(i)
                if i in seen:
                    raise ValueError(f"node {i} is in two groups")
                seen.add(i)
        rules = []
        for a, ga in enumerate(sets):
            for b, gb in enumerate(sets):
                if a != b and ga and gb:
                    src = ", ".join(f'"p{i}"' for i in ga)
                    dst = ", ".join(f'"p{i}"' for i in gb)
                    rules.append(
                        f"add rule bridge {_TABLE} partition_hs "
                        f"iifname {{ {src} }} oifname {{ {dst} }} drop\n"
                    )
        self._nft(f"flush chain bridge {_TABLE} partition_hs\n" + "".join(rules))

    def loss(self, percent: int, nodes: Iterable[int] | None = None) -> None:
        """Drop each frame with probability ``percent`` %, entering from ``nodes`` (default:
        every node); replaces an earlier loss rule."""
        if not 0 <= percent <= 100:
            raise ValueError(f"loss is a percentage 0..100, not {percent}")
        match = ""
        if nodes is not None:
            ports = sorted(set(nodes))
            for i in ports:
                self._check_node(i)
            match = "iifname { " + ", ".join(f'"p{i}"' for i in ports) + " } "
        # numgen's range is 0..99: 100 % is a plain drop.
        chance = f"numgen random mod 100 < {percent} " if percent < 100 else ""
        rule = f"add rule bridge {_TABLE} loss_hs {match}{chance}drop\n" if percent else ""
        self._nft(f"flush chain bridge {_TABLE} loss_hs\n{rule}")

    def heal(self) -> None:
        """Remove every partition and loss rule."""
        self._nft(
            f"flush chain bridge {_TABLE} partition_hs\nflush chain bridge {_TABLE} loss_hs\n"
        )

    # ---- teardown -------------------------------------------------------------------------

    def close(self) -> None:
        """Kill the lab's processes and delete its namespaces (idempotent, never raises)."""
        if self._closed:
            return
        self._closed = True
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        for ns in reversed(self._created):
            with contextlib.suppress(NetLabError):
                _run(["ip", "netns", "del", ns], check=False)
        self._created.clear()
        atexit.unregister(self.close)

    def __enter__(self) -> NetLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
