"""MkDocs hooks for the hybridsync docs site (``mkdocs.yml``: ``hooks:``).

The site is built with ``--strict``: every warning fails ``make test``. The repository's
Markdown links to files outside ``docs/`` (``ARCHITECTURE.md``, ``hybridsync/sim/``,
``simulations/README.md``), which GitHub renders fine but MkDocs cannot resolve. Instead of
copying those files by hand, this hook:

1. adds the repository's other READMEs as generated pages (``EXTERNAL_PAGES``), so
   ``ARCHITECTURE.md`` and ``simulations/README.md`` are part of the site and always current;
2. rewrites, in every page, a relative link that leaves ``docs/``: to the generated page when
   its target is one of them, to a copy of the image when it is an image, and otherwise to
   the repository path in code (`` `hybridsync/sim/` ``), because a source file is not a page.
   A link whose target does not exist is left alone in a docs page, so MkDocs still reports
   it; in a generated page (a README that may point at made, uncommitted output such as
   ``simulations/results/``) it is shown as the path;
3. leaves out of the nav the pages other issues are still writing (``PENDING_PAGES``) while
   their file does not exist, and logs that it did.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.hybridsync")

# site page -> repository file it is generated from
EXTERNAL_PAGES = {
    "architecture.md": "ARCHITECTURE.md",
    "simulations.md": "simulations/README.md",
    "notebooks.md": "notebooks/README.md",
    "testing.md": "tests/README.md",
}
# a link to the repository README goes to the site's home page
ALIASES = {"README.md": "index.md"}
# nav entries whose page another issue is writing; dropped (with a log line) until they exist
PENDING_PAGES = ("interop.md", "inspector.md")

_LINK = re.compile(
    r"(?P<bang>!?)\[(?P<text>[^\]\n]*)\]\((?P<target>[^)\s]+)(?P<title>\s+\"[^\"]*\")?\)"
)
_FENCE = re.compile(r"^\s*(```|~~~)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_IMAGE_EXT = (".png", ".svg", ".jpg", ".jpeg", ".gif", ".webp")
_COPIES = "_repo"  # where images from outside docs/ land in the site


def _root(config: Any) -> Path:
    return Path(config["config_file_path"]).resolve().parent


def _docs(config: Any) -> Path:
    return Path(config["docs_dir"]).resolve()


def _origin(src_uri: str, config: Any) -> Path:
    """The repository folder a page's relative links start from."""
    external = EXTERNAL_PAGES.get(src_uri)
    if external is not None:
        return (_root(config) / external).parent
    return (_docs(config) / src_uri).parent


def _resolve(target: str, origin: Path, config: Any) -> tuple[str, str] | None:
    """``(repository-relative path, fragment)`` of a relative link, or None for URLs,
    anchors and absolute paths."""
    if not target or target.startswith(("#", "/")) or _SCHEME.match(target):
        return None
    path, _, fragment = target.partition("#")
    full = Path(os.path.normpath(origin / path))
    try:
        rel = full.relative_to(_root(config)).as_posix()
    except ValueError:
        rel = full.as_posix()  # outside the repository: leave it to MkDocs
    return rel, fragment


def _outside_docs(rel: str) -> bool:
    return not (rel == "docs" or rel.startswith("docs/"))


def _markdown_sources(files: Files, config: Any) -> list[tuple[str, str]]:
    out = []
    for f in files.documentation_pages():
        if f.src_uri in EXTERNAL_PAGES:
            continue
        out.append((f.src_uri, Path(f.abs_src_path or "").read_text(encoding="utf-8")))
    for page, source in EXTERNAL_PAGES.items():
        path = _root(config) / source
        if path.is_file():
            out.append((page, path.read_text(encoding="utf-8")))
    return out


def _links(markdown: str) -> list[re.Match[str]]:
    found: list[re.Match[str]] = []
    fenced = False
    offset = 0
    for line in markdown.splitlines(keepends=True):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            found.extend(m for m in _LINK.finditer(markdown, offset, offset + len(line)))
        offset += len(line)
    return found


def on_config(config: Any) -> Any:
    """Drop pending pages that do not exist yet from the nav."""
    docs = _docs(config)

    def keep(item: Any) -> bool:
        target = item if isinstance(item, str) else next(iter(item.values()), None)
        if isinstance(target, str) and target in PENDING_PAGES and not (docs / target).exists():
            log.info("nav: %s does not exist yet; left out of this build", target)
            return False
        return True

    def prune(items: Any) -> Any:
        out = []
        for item in items:
            if isinstance(item, dict):
                (title, value), = item.items()
                if isinstance(value, list):
                    out.append({title: prune(value)})
                    continue
            if keep(item):
                out.append(item)
        return out

    if config.get("nav"):
        config["nav"] = prune(config["nav"])
    return config


def on_files(files: Files, config: Any) -> Files:
    """Add the external READMEs as pages and the images they or the docs use."""
    root = _root(config)
    for page, source in EXTERNAL_PAGES.items():
        path = root / source
        if not path.is_file():
            log.warning("%s is missing: the %s page cannot be generated", source, page)
            continue
        files.append(File.generated(config, page, abs_src_path=str(path)))
    seen: set[str] = set()
    for src_uri, markdown in _markdown_sources(files, config):
        origin = _origin(src_uri, config)
        for m in _links(markdown):
            resolved = _resolve(m.group("target"), origin, config)
            if resolved is None or not resolved[0].lower().endswith(_IMAGE_EXT):
                continue
            rel = resolved[0]
            if _outside_docs(rel) and (root / rel).is_file() and rel not in seen:
                seen.add(rel)
                files.append(File.generated(config, f"{_COPIES}/{rel}",
                                            abs_src_path=str(root / rel)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Rewrite links that leave ``docs/`` (see the module docstring)."""
    src_uri = page.file.src_uri
    origin = _origin(src_uri, config)
    root = _root(config)
    here = posixpath.dirname(src_uri)
    by_source = {v: k for k, v in EXTERNAL_PAGES.items()} | ALIASES
    from_external = src_uri in EXTERNAL_PAGES

    def site_link(site_path: str, fragment: str) -> str:
        link = posixpath.relpath(site_path, here or ".")
        return f"{link}#{fragment}" if fragment else link

    def rewrite(m: re.Match[str]) -> str:
        resolved = _resolve(m.group("target"), origin, config)
        if resolved is None:
            return m.group(0)
        rel, fragment = resolved
        bang, text, title = m.group("bang"), m.group("text"), m.group("title") or ""
        if not _outside_docs(rel):
            if not from_external:
                return m.group(0)  # an ordinary docs link: MkDocs checks it
            inside = rel[len("docs/"):] if rel != "docs" else "."
            return f"{bang}[{text}]({site_link(inside, fragment)}{title})"
        if rel in by_source:
            return f"{bang}[{text}]({site_link(by_source[rel], fragment)}{title})"
        if not (root / rel).exists():
            if not from_external:
                return m.group(0)  # broken: let MkDocs report it
            # A README may point at output that is made, not committed (results/ plots).
            log.info("%s: %s does not exist; shown as a path", src_uri, rel)
            return f"{text} (`{rel}`)" if text and text.strip("`") != rel else f"`{rel}`"
        if bang and rel.lower().endswith(_IMAGE_EXT):
            return f"![{text}]({site_link(f'{_COPIES}/{rel}', '')}{title})"
        shown = rel + "/" if (root / rel).is_dir() else rel
        code = f"`{shown}`"
        if text.strip("`").rstrip("/") in (rel, posixpath.basename(rel)):
            return code
        return f"{text} ({code})"

    out = []
    fenced = False
    for line in markdown.splitlines(keepends=True):
        if _FENCE.match(line):
            fenced = not fenced
            out.append(line)
        elif fenced:
            out.append(line)
        else:
            out.append(_LINK.sub(rewrite, line))
    return "".join(out)
