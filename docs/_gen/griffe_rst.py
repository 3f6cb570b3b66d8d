"""A griffe extension that renders hybridsync's docstrings as Markdown for mkdocstrings.

The docstrings are written for ``help()`` and doctest, with a few reStructuredText habits:
Sphinx roles (:class:`~hybridsync.Memory`), ``::`` before a literal block, and doctest
sessions (``>>>``). MkDocs would show the roles verbatim and read ``>>>`` as nested quotes.
This extension changes only the rendered text, never the source:

- a role becomes a code span of the object's name (the last dotted part with ``~``);
- a paragraph ending in ``::`` ends in ``:``, a bare ``::`` line goes (the indented block
  below is already a Markdown code block);
- a doctest session (consecutive ``>>>``/``...`` lines and their output) becomes a
  ``pycon`` fenced block.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|attr|data|exc|mod|obj|const):`(~?)([^`]+)`")
_PROMPT = re.compile(r"^(\s*)(>>>|\.\.\.)( |$)")


def _role(m: re.Match[str]) -> str:
    tilde, target = m.group(1), m.group(2)
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def to_markdown(text: str) -> str:
    """The docstring ``text`` with roles, ``::`` and doctest sessions made Markdown."""
    text = _ROLE.sub(_role, text)
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _PROMPT.match(line)
        if m and m.group(2) == ">>>":
            indent = m.group(1)
            out.append(f"{indent}```pycon")
            while i < len(lines) and lines[i].strip():
                out.append(lines[i])
                i += 1
            out.append(f"{indent}```")
            continue
        if line.strip() == "::":
            line = ""  # a bare marker: the indented block below is the code block
        elif line.rstrip().endswith("::"):
            line = line.rstrip()[:-1]
        out.append(line)
        i += 1
    return "\n".join(out)


class RstToMarkdown(griffe.Extension):
    """Rewrite every docstring griffe loads (see the module docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        doc = obj.docstring
        if doc is not None and "```pycon" not in doc.value:  # once per docstring
            doc.value = to_markdown(doc.value)
