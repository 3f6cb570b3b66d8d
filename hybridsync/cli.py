"""The ``hybridsync`` command line.

``hybridsync demo``      three agent processes find each other by mDNS and converge, live
``hybridsync peer``      a long-running peer keeping a stored replica in sync
``hybridsync inspect``   fields, regions, history, conflicts and stats of a stored replica
``hybridsync simulate``  simulation scenarios (``--list``): a progress bar, a CSV and a plot

Exit status: 0 ok, 1 a guarantee was violated or a runtime failure (store, network,
discovery), 2 usage error. Adding a command is one ``_add_<name>`` function and one line in
:func:`build_parser`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import secrets
import shutil
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hybridsync.discovery import check_interfaces
from hybridsync.errors import (
    ConfigError,
    DiscoveryError,
    GuaranteeViolation,
    HybridSyncError,
    SimulationError,
    StoreError,
)
from hybridsync.replica import Memory
from hybridsync.store.sqlite import stored_identity
from hybridsync.transport import parse_url

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_VIOLATION, EXIT_USAGE = 0, 1, 2
EXIT_FAILURE = 1  # a runtime failure: store, network, discovery


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridsync",
        description="Coordinator-free sync of AI agents' working memory. "
        "Run a command with --help for its options.",
        epilog="Exit status: 0 ok, 1 a guarantee was violated or a runtime failure, "
        "2 usage error.",
    )
    from hybridsync import __version__

    parser.add_argument("--version", action="version", version=f"hybridsync {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(sub)
    _add_peer(sub)
    _add_inspect(sub)
    _add_simulate(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hybridsync`` script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except GuaranteeViolation as exc:
        print(f"guarantee violated: {exc}", file=sys.stderr)
        return EXIT_VIOLATION
    except (ConfigError, SimulationError) as exc:
        print(f"hybridsync {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StoreError, DiscoveryError, HybridSyncError) as exc:
        # A store of another space or a damaged one, a busy port, mDNS that cannot start.
        print(f"hybridsync {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"hybridsync {args.command}: interrupted", file=sys.stderr)
        return EXIT_FAILURE


# ---- simulate ------------------------------------------------------------------------------
def _add_simulate(sub: Any) -> None:
    from hybridsync.scenarios import SCENARIOS, add_common_arguments
    from hybridsync.scenarios._partition import add_arguments as partition_arguments

    p = sub.add_parser(
        "simulate",
        help="run a simulation scenario (--list); write a CSV and a plot",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a deterministic simulation scenario: real replicas over a seeded\n"
        "simulated network (no sockets, no real time), with a progress bar. Each scenario\n"
        "writes NAME.csv and NAME.png into --out (default results/NAME/) and checks the\n"
        "guarantees on the way. `hybridsync simulate NAME --help` explains what NAME\n"
        "measures. Without NAME it runs `partition` (its options, see `hybridsync\n"
        "simulate partition --help`), writing only what --csv and --plot ask for.",
        usage="hybridsync simulate [-h] [--list] [NAME] [options]",
        epilog="examples:\n  hybridsync simulate --list\n"
        "  hybridsync simulate partition-heal --peers 2,4,8,16 --progress\n"
        "  hybridsync simulate --seed 7 --peers 6 --loss 0.1 --csv run.csv --plot run.png\n\n"
        "exit status: 0 ok, 1 a guarantee was violated, 2 usage error",
    )
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    # the options of ``partition`` when no NAME is given (hidden from --help)
    partition_arguments(p, hidden=True)
    p.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help=argparse.SUPPRESS)
    names = p.add_subparsers(dest="scenario", metavar="NAME", title="scenarios")
    for s in SCENARIOS.values():
        sp = names.add_parser(s.name, help=s.summary, description=s.description,
                              epilog=f"example: {s.example}",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        s.add_arguments(sp)
        add_common_arguments(sp, s.name)
    p.set_defaults(handler=_simulate, scenario=None)


def _simulate(args: argparse.Namespace) -> int:
    from hybridsync.scenarios import describe_all, run_named

    if args.list:
        print(describe_all())
        return EXIT_OK
    if args.scenario is None:  # `hybridsync simulate [options]`: the partition timeline
        args.out, args.draw = None, True
    _check_frame_probabilities(args)  # before a scenario prints its header line
    run_named(args.scenario or "partition", args)
    return EXIT_OK


def _check_frame_probabilities(args: argparse.Namespace) -> None:
    """``--loss`` and ``--duplicate`` (one value or a list, as the scenario takes them) are
    probabilities: a usage error before anything runs or prints."""
    from hybridsync.sim._options import check_probability

    for dest in ("loss", "duplicate"):
        value = getattr(args, dest, None)
        for v in value if isinstance(value, list) else [value]:
            if v is not None:
                check_probability(v, f"--{dest}")


# ---- peer ----------------------------------------------------------------------------------
def _add_peer(sub: Any) -> None:
    p = sub.add_parser(
        "peer",
        help="run a long-lived peer that keeps a stored replica in sync",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Open (or create) the replica stored in DB and keep it in sync with the\n"
        "other peers of the space over encrypted TCP: the ones given with --peer, and\n"
        "with --mdns the ones found by mDNS on the --interface addresses. Logs every\n"
        "session that opens or closes. Stops cleanly (flush, goodbye) on Ctrl-C or SIGTERM.",
        epilog="examples:\n"
        "  python -c 'import secrets; print(secrets.token_hex(32))' > group.key\n"
        "  hybridsync peer --space swarm-1 --secret-file group.key --path a.db --mdns\n"
        "  hybridsync peer --space swarm-1 --secret-file group.key --path b.db \\\n"
        "      --listen 0.0.0.0:7001 --peer tcp://10.0.0.5:7001\n\n"
        "The secret file holds the group secret (at least 8 bytes; surrounding\n"
        "whitespace is ignored). More in docs/operations.md.\n\n"
        "exit status: 0 stopped cleanly, 1 runtime failure (store, port, discovery),\n"
        "2 usage error",
    )
    p.add_argument("--space", required=True, help="name of the shared memory space")
    p.add_argument("--secret-file", required=True, metavar="FILE",
                   help="file holding the group secret")
    p.add_argument("--path", required=True, metavar="DB",
                   help="SQLite file of this replica (created if absent)")
    p.add_argument("--name", help="this replica's peer name (default: the name stored in DB, "
                   "or HOSTNAME-xxxx for a new one)")
    p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT",
                   help="where to accept sessions (default 127.0.0.1:0, a free port)")
    p.add_argument("--peer", action="append", default=[], dest="peers", metavar="URL",
                   help="a peer to keep a session with, tcp://host:port (repeatable)")
    p.add_argument("--member", action="append", default=[], dest="members", metavar="NAME",
                   help="a peer name of the space known in advance (repeatable): no "
                   "compaction leaves it behind before it is heard of; without any, the "
                   "peer never compacts by itself (docs/gc.md)")
    p.add_argument("--retire-after", type=float, metavar="SECONDS",
                   help="leave a member out of the compaction frontier once it has "
                   "acknowledged nothing new for this long (default: never, so one member "
                   "that is gone for good blocks compaction; docs/gc.md, Retirement)")
    p.add_argument("--mdns", action="store_true",
                   help="announce and find peers by mDNS (on the --interface addresses)")
    p.add_argument("--interface", action="append", dest="interfaces", metavar="IP",
                   help="IPv4 address for mDNS (repeatable; default 127.0.0.1, so nothing "
                   "leaves this machine unless you name a LAN address)")
    p.add_argument("--status-interval", type=float, default=30.0, metavar="S",
                   help="log a status line every S seconds (default 30; 0 = never)")
    p.add_argument("--http", metavar="HOST:PORT",
                   help="serve the live memory inspector page here (e.g. 127.0.0.1:8080; "
                   "port 0 = a free one). No authentication: keep it on loopback "
                   "(docs/inspector.md)")
    p.add_argument("--websocket", metavar="HOST:PORT",
                   help="also serve the fields document to stock Yjs clients (y-websocket "
                   "WebsocketProvider, room /SPACE) here (docs/interop.md)")
    p.add_argument("--websocket-token-file", metavar="PATH",
                   help="Yjs clients must send the token in this file as ?token=")
    p.add_argument("--websocket-readonly", action="store_true",
                   help="Yjs clients may read but not edit")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    p.set_defaults(handler=_peer)


def read_secret(path: str) -> bytes:
    """The group secret in ``path`` (surrounding whitespace stripped)."""
    try:
        data = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the secret file {path}: {exc.strerror}") from None
    if len(data) < 8:
        raise ConfigError(f"the secret in {path} is shorter than 8 bytes")
    return data


def parse_listen(text: str, option: str = "--listen") -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``) → ``(host, port)``."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{option} must look like HOST:PORT (e.g. 127.0.0.1:7001), got {text!r}")
    return host, int(port)


def _default_name(path: str) -> str:
    if os.path.exists(path):
        return stored_identity(path)[1]
    host = socket.gethostname().split(".")[0] or "peer"
    return f"{host}-{secrets.token_hex(2)}"


def _retire_after_ms(seconds: float | None) -> int | None:
    """``--retire-after`` in whole milliseconds (``Memory(retire_after_ms=...)``)."""
    if seconds is None:
        return None
    if not math.isfinite(seconds) or not 0.001 <= seconds <= 10 * 365 * 86400:
        raise ConfigError(f"--retire-after must be a number of seconds from 0.001 to "
                          f"{10 * 365 * 86400} (ten years), got {seconds:g}")
    return round(seconds * 1000)


def _peer(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
    )
    if not args.verbose:
        logging.getLogger("zeroconf").setLevel(logging.WARNING)
    secret = read_secret(args.secret_file)
    host, port = parse_listen(args.listen)
    http = parse_listen(args.http, "--http") if args.http else None
    ws = parse_listen(args.websocket, "--websocket") if args.websocket else None
    if ws is None and (args.websocket_token_file or args.websocket_readonly):
        raise ConfigError("--websocket-token-file and --websocket-readonly need --websocket")
    token = read_secret(args.websocket_token_file).decode(errors="strict") \
        if args.websocket_token_file else None
    if args.status_interval < 0:
        raise ConfigError("--status-interval must be >= 0")
    if not args.mdns and args.interfaces:
        raise ConfigError("--interface only makes sense with --mdns")
    interfaces = check_interfaces(args.interfaces or ["127.0.0.1"])
    for url in args.peers:
        parse_url(url)  # every usage error before the store is opened (or created)
    retire_ms = _retire_after_ms(args.retire_after)
    name = args.name or _default_name(args.path)
    # StoreError: another space, damaged; ConfigError: a bad --member
    mem = Memory(args.space, name, path=args.path, members=args.members,
                 retire_after_ms=retire_ms)
    try:
        return asyncio.run(_run_peer(mem, host=host, port=port, secret=secret,
                                     peers=args.peers, mdns=args.mdns, interfaces=interfaces,
                                     status_interval_s=args.status_interval, http=http,
                                     websocket=ws, websocket_token=token,
                                     websocket_readonly=args.websocket_readonly))
    finally:
        mem.close()


async def _run_peer(mem: Memory, *, host: str, port: int, secret: bytes, peers: Sequence[str],
                    mdns: bool, interfaces: Sequence[str], status_interval_s: float,
                    http: tuple[str, int] | None = None,
                    websocket: tuple[str, int] | None = None,
                    websocket_token: str | None = None,
                    websocket_readonly: bool = False) -> int:
    from hybridsync.inspector import Inspector
    from hybridsync.peer import Peer

    log = logging.getLogger("hybridsync.cli")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    peer = await Peer.start(mem, host=host, port=port, secret=secret,
                            discovery="mdns" if mdns else None, peers=list(peers),
                            interfaces=list(interfaces), websocket=websocket,
                            websocket_token=websocket_token,
                            websocket_readonly=websocket_readonly)
    print(f"hybridsync peer {mem.peer!r} of space {mem.space!r} listening on {peer.url}"
          + (f" (mDNS on {', '.join(interfaces)})" if mdns else ""), flush=True)
    if peer.websocket_url is not None:
        print(f"yjs: connect a WebsocketProvider to {peer.websocket_url} room "
              f"{mem.space!r}" + (" (read-only)" if websocket_readonly else ""), flush=True)
    inspector: Inspector | None = None
    if http is not None:
        try:
            inspector = await Inspector.start(mem, peer, host=http[0], port=http[1])
        except BaseException:
            await peer.stop()
            raise
        print(f"inspector: open {inspector.url} in a browser", flush=True)
    log.info("replica %s: %d commits, digest %s", mem.peer, len(mem.history()),
             mem.state_digest()[:12])
    known: dict[str, str] = {}
    opened = 0
    last_status = loop.time()
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
            now = {n: s.url for n, s in peer.sessions.items()}
            for n in sorted(now.keys() - known.keys()):
                opened += 1
                log.info("session with %s opened (%s)", n, now[n])
            for n in sorted(known.keys() - now.keys()):
                log.info("session with %s closed", n)
            known = now
            if status_interval_s and loop.time() - last_status >= status_interval_s:
                last_status = loop.time()
                st = mem.stats()
                log.info("status: %d sessions, %d commits, %d conflicts, sync bytes in %d "
                         "out %d, digest %s", len(known), st.log_length, st.conflicts,
                         st.bytes_received, st.bytes_sent, mem.state_digest()[:12])
    finally:
        log.info("stopping: flushing and saying goodbye")
        if inspector is not None:
            await inspector.stop()
        await peer.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    st = mem.stats()
    counters = peer.stats()
    print(f"stopped: {opened} sessions opened, {st.log_length} commits, {st.conflicts} "
          f"conflicts, digest {mem.state_digest()[:12]}; handshake failures "
          f"{counters.get('handshake_failures', 0)}, protocol errors "
          f"{counters.get('protocol_errors', 0)}", flush=True)
    return EXIT_OK


# ---- inspect -------------------------------------------------------------------------------
def _add_inspect(sub: Any) -> None:
    p = sub.add_parser(
        "inspect",
        help="show a stored replica: fields, regions, history, conflicts, stats",
        description="Open the replica stored in DB without changing it and print its fields, "
        "regions, latest history, conflicts and sizes. Safe to run while a peer uses DB.",
        epilog="Exit status: 0 ok, 1 the store is missing, foreign or damaged, 2 usage error.",
    )
    p.add_argument("path", metavar="DB", help="SQLite file of a replica")
    p.add_argument("--json", action="store_true", help="print one JSON document instead")
    p.add_argument("--history", type=int, default=20, metavar="N",
                   help="how many of the latest contributions to list (default 20)")
    p.set_defaults(handler=_inspect)


def _inspect(args: argparse.Namespace) -> int:
    from hybridsync._inspect import inspect_store, render_text

    if args.history < 0:
        raise ConfigError("--history must be >= 0")
    report = inspect_store(args.path, history=args.history)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        print(render_text(report, width=shutil.get_terminal_size((100, 24)).columns))
    return EXIT_OK


# ---- demo ----------------------------------------------------------------------------------
def _add_demo(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="three agent processes find each other by mDNS and converge, live",
        description="Starts three agents (planner, researcher, critic), each a separate "
        "process with its own SQLite replica and an encrypted TCP peer; they find each other "
        "by mDNS on 127.0.0.1 (nothing leaves this machine). They write fields, a shared "
        "scratchpad text and their own buffers; the critic's network link is cut silently "
        "(no goodbye: the heartbeats notice) and it keeps editing; the link comes back and "
        "re-query and redial heal the mesh. A live table shows who has what, the bytes on "
        "the wire and the conflicts; the demo ends by itself (about 15-30 s) with a summary.",
        epilog="Exit status: 0 every replica converged to the same state, 1 it did not "
        "(or a step timed out).",
    )
    p.add_argument(
        "--pace-s", type=float, default=float(os.environ.get("HYBRIDSYNC_DEMO_PACE_S", "1.0")),
        help="at most one live view per this many seconds (default 1.0, "
        "env HYBRIDSYNC_DEMO_PACE_S)",
    )
    p.add_argument("--step-timeout-s", type=float, default=30.0,
                   help="give up when one step takes longer (default 30)")
    p.add_argument("--keep", metavar="DIR",
                   help="keep the agents' databases and logs in DIR (then try: "
                   "hybridsync inspect DIR/critic.db)")
    p.add_argument("--retire-after", type=float, metavar="SECONDS", default=300.0,
                   help="each agent leaves a member silent this long out of compaction "
                   "(default 300; see hybridsync peer --retire-after and docs/gc.md, "
                   "Retirement)")
    p.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from hybridsync._demo import run_demo

    if args.pace_s < 0 or args.step_timeout_s <= 0:
        raise ConfigError("--pace-s must be >= 0 and --step-timeout-s > 0")
    retire_ms = _retire_after_ms(args.retire_after)
    assert retire_ms is not None
    return run_demo(sys.stdout, pace_s=args.pace_s, step_timeout_s=args.step_timeout_s,
                    keep=args.keep, retire_after_s=retire_ms / 1000)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
