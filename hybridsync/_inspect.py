"""What ``hybridsync inspect PATH`` shows: a stored replica's fields, regions, history,
conflicts and stats, as a readable text or as JSON."""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from hybridsync.causal._hlc import hlc_split
from hybridsync.fields._values import canonical_json_default
from hybridsync.replica import Memory
from hybridsync.store.sqlite import SQLiteStore, stored_identity

__all__ = ["inspect_store", "render_text"]


def inspect_store(path: str, *, history: int = 20) -> dict[str, Any]:
    """Open the store at ``path`` (never creating one) and describe it.

    Raises :class:`~hybridsync.errors.StoreError` for a missing, foreign or damaged file.
    """
    space, peer = stored_identity(path)
    store = SQLiteStore(path, space=space, peer=peer, exclusive=False)  # a running peer may
    mem = Memory(space, peer, store=store, commit_interval_ms=None)  # hold the writer's lock
    try:
        st = mem.stats()
        log = mem.history()
        regions = []
        for kind, name, data in mem.region_bytes():
            entry: dict[str, Any] = {"name": name, "kind": kind, "bytes": len(data)}
            if kind == "text":
                text = data.decode("utf-8", errors="replace")
                entry["lines"] = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
                entry["preview"] = text[:200]
            regions.append(entry)
        shown = log[-history:] if history > 0 else []
        return {
            "path": os.path.abspath(path),
            "file_bytes": _file_bytes(path),
            "space": space,
            "peer": peer,
            "state_digest": mem.state_digest(),
            "heads": list(mem.heads),
            "fields": json.loads(mem.fields_json()),
            "regions": regions,
            "history": {
                "length": len(log),
                "authors": dict(sorted(Counter(c.author for c in log).items())),
                "shown": [_contribution(c) for c in shown],
            },
            "conflicts": [
                {"plane": c.plane, "location": c.location, "kind": c.kind,
                 "authors": list(c.authors), "detail": c.detail}
                for c in mem.conflicts()
            ],
            "stats": {
                "content_bytes": st.content_bytes,
                "metadata_bytes": st.metadata_bytes,
                "log_length": st.log_length,
                "heads": st.heads,
                "version_vector": st.version_vector,
                "conflicts": st.conflicts,
            },
        }
    finally:
        mem.close()


def _file_bytes(path: str) -> int:
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


def _contribution(c: Any) -> dict[str, Any]:
    ms, _ = hlc_split(c.hlc)
    return {
        "id": c.id.hex()[:16],
        "author": c.author,
        "seq": c.seq,
        "lamport": c.lamport,
        "time": datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds"),
        "kind": c.kind,
        "note": c.note,
        "payload_bytes": len(c.payload),
        "parents": len(c.parents),
    }


def render_text(report: dict[str, Any], *, width: int = 100) -> str:
    """The report as the text ``hybridsync inspect`` prints."""
    out: list[str] = []
    st, hist = report["stats"], report["history"]
    out.append(f"store      {report['path']} ({report['file_bytes']:,} bytes on disk)")
    out.append(f"replica    space {report['space']!r}, peer {report['peer']!r}")
    out.append(f"state      digest {report['state_digest']}, {len(report['heads'])} head(s)")
    vv = ", ".join(f"{k}:{v}" for k, v in sorted(st["version_vector"].items()))
    out.append(f"log        {hist['length']} contributions; version vector {{{vv}}}")
    out.append(f"size       content {st['content_bytes']:,} B, metadata {st['metadata_bytes']:,} B")
    out.append("")
    fields = json.dumps(report["fields"], indent=2, sort_keys=True, ensure_ascii=False,
                        default=canonical_json_default)
    lines = fields.splitlines()
    out.append(f"fields ({len(report['fields'])} keys)")
    for line in lines[:60]:
        out.append("  " + _clip(line, width - 2))
    if len(lines) > 60:
        out.append(f"  ... {len(lines) - 60} more lines (use --json)")
    out.append("")
    out.append(f"regions ({len(report['regions'])})")
    for r in report["regions"]:
        extra = f", {r['lines']} lines" if r["kind"] == "text" else ""
        out.append(f"  {r['name']:<24} {r['kind']:<6} {r['bytes']:>10,} B{extra}")
        if r["kind"] == "text" and r["preview"]:
            first = r["preview"].splitlines()[0] if r["preview"].splitlines() else ""
            out.append(f"  {'':<24} {_clip(repr(first), width - 28)}")
    out.append("")
    shown = hist["shown"]
    authors = ", ".join(f"{a} {n}" for a, n in hist["authors"].items())
    out.append(f"history (last {len(shown)} of {hist['length']}; by author: {authors or '-'})")
    for c in shown:
        note = f"  {c['note']!r}" if c["note"] else ""
        dot = f"{c['author']}#{c['seq']}"
        out.append(f"  {c['time']}  {dot:<18} {c['kind']:<7} "
                   f"{c['payload_bytes']:>7,} B  {c['id']}{note}")
    out.append("")
    out.append(f"conflicts ({len(report['conflicts'])})")
    for c in report["conflicts"]:
        out.append("  " + c["detail"])  # never clipped: it is the point of looking
    return "\n".join(out)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."
