"""Run every benchmark: ``python -m benchmarks`` (what ``make bench`` calls).

``--quick`` makes each benchmark small enough for a smoke run; other arguments are not
forwarded. Benchmarks run in sequence in this process and print Markdown to stdout.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

from benchmarks import fields


def _optional_main(module: str) -> Callable[..., Any] | None:
    """``module.main`` if that benchmark module exists (it may arrive with another issue)."""
    if importlib.util.find_spec(module) is None:
        return None
    main = getattr(importlib.import_module(module), "main", None)
    return main if callable(main) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    args = parser.parse_args(argv)
    status = 0

    print("# Fields: hybridsync vs raw pycrdt vs Loro\n", flush=True)
    status |= fields.main(["--quick"] if args.quick else [])

    network_main = _optional_main("benchmarks.network")
    if network_main is not None:
        print("\n# Network: hybridsync peers vs pycrdt-websocket\n", flush=True)
        rc = network_main(["--quick"] if args.quick else [])
        status |= rc if isinstance(rc, int) else 0

    gc_main = _optional_main("benchmarks.fields_gc")
    if gc_main is not None:
        print("\n# Fields GC: Yjs tombstone compaction\n", flush=True)
        rc = gc_main(["--quick"] if args.quick else [])
        status |= rc if isinstance(rc, int) else 0

    buffers_main = _optional_main("benchmarks.buffers")
    if buffers_main is not None:
        print("\n# Buffers (W4): block deltas of a 256 MiB float16 buffer, raw and Q4\n",
              flush=True)
        rc = buffers_main(["--quick"] if args.quick else [])
        status |= rc if isinstance(rc, int) else 0

    texts_main = _optional_main("benchmarks.texts")
    if texts_main is not None:
        print("\n# Texts (W1): scratchpad span replacements handed over whole\n", flush=True)
        rc = texts_main(["--quick", "--quiet"] if args.quick else ["--quiet"])
        status |= rc if isinstance(rc, int) else 0

    damage_main = _optional_main("benchmarks.text_damage")
    if damage_main is not None:
        print("\n# Texts: damage of concurrent edits per diff configuration\n", flush=True)
        rc = damage_main(["--trials", "10", "--check-memory", "5"] if args.quick else [])
        status |= rc if isinstance(rc, int) else 0

    q4_main = _optional_main("benchmarks.q4_error")
    if q4_main is not None:
        print("\n# Q4 codec\n", flush=True)
        rc = q4_main(["--mib", "8", "--repeat", "1"] if args.quick else [])
        status |= rc if isinstance(rc, int) else 0
    return status


if __name__ == "__main__":
    sys.exit(main())
