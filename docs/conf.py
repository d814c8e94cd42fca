"""Sphinx configuration for the syncrecon documentation.

Build with ``make docs`` (``sphinx-build -W --keep-going -q -b html docs .site``): every
warning is an error. The pages are Markdown (MyST); the API reference is autodoc, which reads
the Sphinx-style docstrings (``:param x:``, ``:class:`` roles) as they are. The Furo theme
bundles its assets and its search index: the built site loads nothing from another host.

In docs/reference.md an entry is an autodoc directive in an ``{eval-rst}`` block, and each
``autoclass``/``autoexception``/``automodule`` says ``:members:`` itself (a list such as
``:members: Storage, Link`` picks members). ``members`` is deliberately not in
``autodoc_default_options``: Sphinx would replace every directive's own member list with it.
Document an object once; where a module re-exports a name documented elsewhere, leave it out
with ``:exclude-members:`` (two descriptions of one object are a "duplicate object" warning).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from docutils import nodes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # the docs build without an installed package, too

from syncrecon import __version__  # noqa: E402

project = "syncrecon"
author = "syncrecon developers"
copyright = "syncrecon developers"
release = __version__
version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    # No sphinx.ext.intersphinx: the build must not fetch anything from the network.
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
templates_path: list[str] = []

# -- MyST: the Markdown pages -------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
# Headings up to ### get GitHub-style anchors, so ``page.md#some-heading`` links keep working.
myst_heading_anchors = 3

# -- autodoc: the API reference -----------------------------------------------------------
autodoc_default_options = {
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autoclass_content = "class"
autodoc_preserve_defaults = True
python_display_short_literal_types = True

# -- HTML ----------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"syncrecon {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
html_copy_source = False


def _drop_object_base(app: Any, name: str, obj: Any, options: Any, bases: list[Any]) -> None:
    """``Bases: object`` says nothing: a class with no real base shows no bases (below)."""
    if bases == [object]:
        bases.clear()


def _drop_empty_bases(app: Any, doctree: nodes.document) -> None:
    """Remove the ``Bases:`` line autodoc still writes for a class whose bases were cleared."""
    for paragraph in list(doctree.findall(nodes.paragraph)):
        if paragraph.astext().strip() == "Bases:":
            paragraph.parent.remove(paragraph)


def setup(app: Any) -> None:
    app.connect("autodoc-process-bases", _drop_object_base)
    app.connect("doctree-read", _drop_empty_bases)
