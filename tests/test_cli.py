"""The command line: the demo's JSON contract, and the benchmark on a small run."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncrecon", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_demo_json_converges_and_keeps_the_database(tmp_path: Path) -> None:
    db = tmp_path / "demo.sqlite"
    proc = _run("demo", "--json", "--seed", "3", "--records", "600", "--db", str(db))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["converged"] is True
    assert out["discrepancies_found"] > 0
    assert isinstance(out["api_calls"], int)
    assert out["api_calls"] > 0
    assert set(out["auto_resolved"]) >= {"merge", "recency", "source_of_truth", "create_on"}
    assert all(isinstance(v, int) for v in out["auto_resolved"].values())
    assert {"deal_value", "contract_dates"} <= set(out["escalated"])
    # Both loops ran: the fast loop applied webhooks, dropped repeated deliveries, recognized
    # the webhooks of syncrecon's own writes and refused changes older than applied ones.
    events = out["webhook_events"]
    assert all(isinstance(v, int) for v in events.values())
    assert events["applied"] > 0
    assert events["duplicate"] > 0
    assert events["echo"] > 0
    assert events["stale"] > 0
    assert "rejected" not in events  # every simulated webhook is signed and well formed
    with sqlite3.connect(db) as conn:
        cycles = conn.execute("SELECT count(*) FROM cycles").fetchone()[0]
        escalated = conn.execute(
            "SELECT count(*) FROM items WHERE status = 'escalated'"
        ).fetchone()[0]
        counted = conn.execute("SELECT count(*) FROM inbox WHERE outcome = 'applied'").fetchone()[0]
    assert cycles == len(out["cycles"])
    assert escalated == sum(out["escalated"].values())
    assert counted == events["applied"]


def test_demo_is_reproducible_with_a_seed() -> None:
    first = json.loads(_run("demo", "--json", "--seed", "5", "--records", "300").stdout)
    second = json.loads(_run("demo", "--json", "--seed", "5", "--records", "300").stdout)
    assert first == second


def test_demo_text_output() -> None:
    proc = _run("demo", "--records", "300")
    assert proc.returncode == 0, proc.stderr
    assert "the systems agree on every non-escalated field: yes" in proc.stdout


def test_bench_small_run_reports_its_figures() -> None:
    proc = _run("bench", "--json", "--records", "3000", "--deepdiff-sample", "200")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for key in (
        "records_per_side",
        "api_calls",
        "api_call_floor",
        "compare_s_per_100k",
        "deepdiff_s_per_100k",
        "peak_rss_mb",
    ):
        assert key in out
    assert out["records_per_side"] == 3000
    assert out["api_calls"] >= out["api_call_floor"] > 0
    assert out["converged_rerun_writes"] == 0
    assert out["discrepancies_found"] > 0
