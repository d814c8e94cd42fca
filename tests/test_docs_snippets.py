"""The code in README.md and docs/ runs: the docs' examples are checked by running them.

Conventions for fenced code blocks in those Markdown files:

- a block fenced with exactly ```` ```python ```` is a complete program: it runs in a fresh
  namespace, with the working directory set to a temporary directory (so a SQLite file it makes
  goes there), and must finish without an exception or a warning. Use ``assert`` to show what a
  reader should expect. A block with a top-level ``await`` runs inside a running event loop, as
  a notebook cell does;
- a block fenced with ```` ```pycon ```` is a doctest: its ``>>>`` lines run in a fresh namespace
  and their printed output must match;
- anything else is not run: ```` ```py ```` for Python that needs a server, a framework or a
  real system (it is highlighted like ``python``), and ``text``, ``console``, ``yaml``, ... .
"""

from __future__ import annotations

import ast
import asyncio
import doctest
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(
    r"^(?P<indent> *)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S
)


def blocks(kind: str) -> list[pytest.ParameterSet]:
    """Every block fenced with exactly ``kind``, as a parameter with a ``page:line`` id."""
    found = []
    for page in PAGES:
        text = page.read_text("utf-8")
        for match in FENCE.finditer(text):
            if match["info"].strip() != kind:
                continue
            line = text.count("\n", 0, match.start()) + 2  # the first line of code
            body = "\n".join(row[len(match["indent"]) :] for row in match["body"].splitlines())
            name = f"{page.relative_to(ROOT)}:{line}"
            found.append(pytest.param(name, body, line, id=name))
    return found


PYTHON = blocks("python")
PYCON = blocks("pycon")


def test_the_pages_that_promise_runnable_code_have_some() -> None:
    pages = {name.split(":")[0] for name, _, _ in (p.values for p in PYTHON)}
    assert {"README.md", "docs/quickstart.md", "docs/concepts.md"} <= pages


@pytest.mark.parametrize(("name", "source", "line"), PYTHON)
def test_python_block_runs(
    name: str, source: str, line: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # Line numbers in tracebacks point into the Markdown page.
    code = compile(
        "\n" * (line - 1) + source,
        str(ROOT / name.split(":")[0]),
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
    )
    namespace: dict[str, object] = {"__name__": "__main__"}
    if code.co_flags & inspect.CO_COROUTINE:
        asyncio.run(eval(code, namespace))
    else:
        exec(code, namespace)


@pytest.mark.parametrize(("name", "source", "line"), PYCON)
def test_pycon_block_output_matches(
    name: str, source: str, line: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    parser = doctest.DocTestParser()
    test = parser.get_doctest(source, {"__name__": "__main__"}, name, name, line - 1)
    assert test.examples, f"{name} has no >>> lines"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures: list[str] = []
    runner.run(test, out=failures.append)
    assert runner.failures == 0, "".join(failures)


def test_the_quickstart_runs_twice_in_one_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notebook cell re-run: the second run must not find the first run's state."""
    page = ROOT / "docs" / "quickstart.md"
    (body,) = [
        m["body"] for m in FENCE.finditer(page.read_text("utf-8")) if m["info"].strip() == "python"
    ][:1]
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        exec(compile(body, str(page), "exec"), {"__name__": "__quickstart__"})


def test_the_storage_skeleton_in_extending_names_every_method() -> None:
    """``docs/extending.md`` says ``isinstance(MyStorage(...), syncrecon.Storage)`` checks that
    no method is missing: its own skeleton must pass that check."""
    from syncrecon.storage import Storage

    text = (ROOT / "docs" / "extending.md").read_text("utf-8")
    (body,) = [m["body"] for m in FENCE.finditer(text) if "class MyStorage" in m["body"]]
    namespace: dict[str, object] = {}
    exec(compile(body, "extending.md", "exec"), namespace)
    cls = namespace["MyStorage"]
    assert isinstance(cls, type)
    assert isinstance(cls.__new__(cls), Storage)


# The site is built by Sphinx with MyST (``make docs``). MkDocs' Markdown extensions render
# there as plain text, without a warning to fail the build: an admonition is written
# ```` ```{note} ```` (or ``:::{note}``), an include ```` ```{include} ````, and an API entry
# an autodoc directive in an ```` ```{eval-rst} ```` block (see docs/reference.md).
MKDOCS_ONLY = re.compile(
    r"^ *(?:!!!|\?\?\?\+?) *\w"  # admonitions (admonition, pymdownx.details)
    r"|^ *::: *[\w.]+ *$"  # mkdocstrings' ``::: syncrecon.Name``
    r"|^ *-+8<-+"  # pymdownx.snippets
    r"|\{ *[#.][\w-]+ *\}$",  # attr_list: ``## Heading { #anchor }``
    re.M,
)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_mkdocs_only_syntax(page: Path) -> None:
    text = FENCE.sub("", page.read_text("utf-8"))  # code blocks may show anything
    found = [m.group(0).strip() for m in MKDOCS_ONLY.finditer(text)]
    assert found == [], f"{page.relative_to(ROOT)}: MkDocs syntax Sphinx would print as text"
