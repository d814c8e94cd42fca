"""Every script in examples/ runs to completion, as a user would run it.

Each example ends with its own assertions (the systems agree, a second cycle writes nothing), so
exit code 0 means the example still shows what it says. Examples run in a subprocess with this
interpreter, warnings as errors, from a temporary directory, so that nothing they write lands in
the repository.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

# What each example must print, beyond finishing without an error.
EXPECTED_OUTPUT = {
    "notebook_connectors.py": [
        "of 'deals' (full)",
        "escalated by category: money 1",
        "needs a person: deal-1.amount",
        "converged: the second cycle wrote nothing",
    ],
    **{
        name: [
            "webhook applied to billing by the worker",
            "unsigned request 401",
            "POST /reconcile wrote nothing",
        ]
        for name in ("fastapi_app.py", "flask_app.py", "django_app.py")
    },
}


def test_there_are_examples() -> None:
    assert "notebook_connectors.py" in {path.name for path in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs(path: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{path.name} failed:\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip(), f"{path.name} printed nothing"
    for expected in EXPECTED_OUTPUT.get(path.name, []):
        assert expected in result.stdout, f"{path.name} did not print {expected!r}"
    assert not list(tmp_path.iterdir()), f"{path.name} left files behind"
