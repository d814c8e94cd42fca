"""A Griffe extension that lets syncrecon's reStructuredText-flavoured docstrings render in MkDocs.

syncrecon's docstrings are written for humans and ``help()``: double-backtick literals, Sphinx
roles (``:class:`~syncrecon.Record```), ``::`` literal blocks and doctest examples. Markdown
reads double backticks as code already; this extension rewrites the rest when mkdocstrings loads
the package, without touching the source:

- a role becomes a code span (``~`` keeps only the last dotted part, as Sphinx does);
- a paragraph ending in ``::`` ends in ``:`` (its indented block is a Markdown code block);
- an unindented doctest (lines starting with ``>>>``) becomes a fenced ``pycon`` block;
- a simple table (columns framed by ``=====  =====`` lines) becomes a Markdown table.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_BORDER = re.compile(r"^=+( +=+)+$")
_ROLE = re.compile(r":(?:class|meth|func|attr|data|exc|mod|obj|const):`(~?)([^`]+)`")


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def _row(line: str, columns: int) -> str:
    """A table row as Markdown; cells are split at two or more spaces."""
    parts = re.split(r"\s{2,}", line.strip(), maxsplit=columns - 1)
    return "| " + " | ".join(parts) + " |"


def _tables(lines: list[str]) -> list[str]:
    """Turn rST simple tables (a border, a header, a border, rows, a border) into Markdown."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        border = lines[i]
        ends = [j for j in range(i + 1, len(lines)) if lines[j] == border]
        if not _BORDER.match(border) or len(ends) < 2 or ends[0] != i + 2:
            out.append(lines[i])
            i += 1
            continue
        columns = len(border.split())
        out += [_row(lines[i + 1], columns), "|" + "---|" * columns]
        out += [_row(row, columns) for row in lines[i + 3 : ends[1]]]
        i = ends[1] + 1
    return out


def rewrite(text: str) -> str:
    """The docstring ``text`` in the Markdown that mkdocstrings renders."""
    text = _ROLE.sub(_role, "\n".join(_tables(text.splitlines())))
    out: list[str] = []
    in_doctest = False
    for line in text.splitlines():
        if line.startswith(">>>") and not in_doctest:
            out.append("```pycon")
            in_doctest = True
        elif in_doctest and not line.strip():
            out.append("```")
            in_doctest = False
        line = line.replace("  # doctest: +SKIP", "")
        out.append(line[:-1] if line.endswith("::") and line.strip() != "::" else line)
    if in_doctest:
        out.append("```")
    return "\n".join(out)


class RstDocstrings(griffe.Extension):
    """Rewrite every docstring once the object tree is built."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
