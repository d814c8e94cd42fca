"""The benchmark's own figures on tiny runs: the no-op cycle, the scaling test and DiffSync.

Nothing here holds a timing against a goal: the keys exist, the numbers are sane and the
derived figures follow from the measured ones.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from syncrecon import CycleReport, Reconciler
from syncrecon.__main__ import main
from syncrecon._bench import _own_cpu, run_bench
from syncrecon._bench_scaling import PHASES, growth, measure_size, own_phase_cpu, run_scaling
from syncrecon._scenario import deal_sync, generated_pair
from syncrecon.storage.memory import MemoryStorage
from syncrecon.testing import ManualClock

RECORDS = 200


@pytest.fixture(scope="module")
def bench() -> dict[str, Any]:
    return run_bench(
        records=RECORDS,
        deepdiff_sample=20,
        compare_sample=100,
        webhooks=False,
        connectors=False,
    )


def test_noop_cycle_finds_every_record_unchanged(bench: dict[str, Any]) -> None:
    assert bench["unchanged_record_cpu_us"] > 0
    assert bench["noop_cycle_s"] > 0
    assert bench["noop_cycle_writes"] == 0
    assert bench["noop_cycle_api_calls"] > 0
    # Every record of both sides is found unchanged, most by modification time.
    unchanged = bench["noop_cycle_unchanged"]
    assert sum(unchanged.values()) == 2 * RECORDS
    assert unchanged["modification_time"] > RECORDS
    assert "connectors" in bench["noop_cycle_phases_cpu_s"]
    assert "noop_cycle_vs_diffsync" not in bench  # not asked for
    assert "scaling" not in bench


def test_own_cpu_counts_decide_once() -> None:
    """``decide`` runs inside ``compare``: the cycle's own CPU counts it once."""
    timings = {"read": 1.0, "match": 0.25, "compare": 2.0, "decide": 1.5, "write": 0.5}
    report = _report_with({**timings, "connectors": 0.75})
    assert _own_cpu(report) == pytest.approx(1.0 + 0.25 + 2.0 + 0.5 - 0.75)
    own = own_phase_cpu(report, {"read": 0.5, "write": 0.25})
    assert own == pytest.approx(
        {"read": 0.5, "match": 0.25, "compare": 0.5, "decide": 1.5, "write": 0.25}
    )
    assert sum(own.values()) == pytest.approx(_own_cpu(report))


def _report_with(timings: dict[str, float]) -> CycleReport:
    clock = ManualClock()
    left, right = generated_pair(3, 1, clock)
    report = Reconciler(deal_sync(left, right), MemoryStorage(), clock=clock).run_cycle()
    return attrs.evolve(report, timings=timings)


def test_a_size_measured_in_process_attributes_every_connector_call() -> None:
    figures = measure_size(RECORDS)
    assert figures["records_per_side"] == RECORDS
    assert figures["first_cycle_s"] > 0
    assert figures["steady_cycle_s"] > 0
    assert figures["peak_rss_mb"] >= figures["baseline_rss_mb"] > 0
    for cycle in ("first", "steady"):
        per_record = figures[f"{cycle}_cycle_cpu_us_per_record"]
        assert set(per_record) == {*PHASES, "total"}
        assert all(v >= 0 for v in per_record.values())
        assert per_record["total"] > 0
        assert per_record["total"] == pytest.approx(sum(per_record[p] for p in PHASES), abs=0.01)
        # The bench's split of the connectors' CPU by phase covers every call the cycle made
        # (none under "other") and stays inside the cycle's own total for them.
        split = figures[f"{cycle}_cycle_connectors_cpu_s"]
        assert "other" not in split
        assert split.get("read", 0) > 0
        total = figures[f"{cycle}_cycle_phases_cpu_s"]["connectors"]
        assert sum(split.values()) <= total + 1e-4


def test_scaling_runs_each_size_in_its_own_process() -> None:
    out = run_scaling([RECORDS, 2 * RECORDS])
    assert set(out["scaling"]) == {str(RECORDS), str(2 * RECORDS)}
    small, large = out["scaling"][str(RECORDS)], out["scaling"][str(2 * RECORDS)]
    assert large["records_per_side"] == 2 * RECORDS
    for figures in (small, large):
        assert figures["peak_rss_mb"] > 0
        assert figures["steady_cycle_cpu_us_per_record"]["total"] > 0
    ratios = out["scaling_growth"]
    for cycle in ("first", "steady"):
        key = f"{cycle}_cycle_cpu_us_per_record"
        for phase in (*PHASES, "total"):
            a, b = small[key][phase], large[key][phase]
            expected = round(b / a, 3) if a > 0 else None
            assert ratios[f"{cycle}_{phase}"] == expected
        wall = (large[f"{cycle}_cycle_s"] / (2 * RECORDS)) / (small[f"{cycle}_cycle_s"] / RECORDS)
        assert ratios[f"{cycle}_wall"] == pytest.approx(wall, abs=1e-3)


def test_growth_of_one_size_is_empty_and_of_a_zero_cost_is_none() -> None:
    def figures(n: int, us: float) -> dict[str, Any]:
        per = dict.fromkeys(PHASES, us) | {"total": us * len(PHASES)}
        return {
            "records_per_side": n,
            "first_cycle_s": n * 1e-5,
            "steady_cycle_s": n * 2e-5,
            "first_cycle_cpu_us_per_record": per,
            "steady_cycle_cpu_us_per_record": per | {"match": 0.0},
        }

    assert growth({100: figures(100, 1.0)}) == {}
    ratios = growth({100: figures(100, 1.0), 1000: figures(1000, 3.0)})
    assert ratios["first_read"] == 3.0
    assert ratios["steady_match"] is None
    assert ratios["first_wall"] == ratios["steady_wall"] == 1.0


def test_bench_cli_reads_its_scaling_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--scaling", "10,x"])
    assert "not a list of record counts" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--scaling", "0,10"])
    assert "must be positive" in capsys.readouterr().err


@pytest.fixture
def stub_bench(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``run_bench`` replaced: the CLI's arguments to it are kept."""
    import syncrecon._bench

    seen: dict[str, Any] = {}

    def run_bench(**kwargs: Any) -> dict[str, Any]:
        seen.update(kwargs)
        return {"records_per_side": kwargs["records"]}

    monkeypatch.setattr(syncrecon._bench, "run_bench", run_bench)
    return seen


def test_bench_without_diffsync_says_which_extra_and_skips_the_figure(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stub_bench: dict[str, Any],
) -> None:
    import syncrecon.__main__ as cli

    monkeypatch.setattr(cli, "_missing", lambda *modules: [m for m in modules if m == "diffsync"])
    assert main(["bench", "--json", "--records", "10", "--scaling", "10,20"]) == 0
    err = capsys.readouterr().err
    assert "noop_cycle_vs_diffsync skipped" in err
    assert "pip install 'syncrecon[bench]'" in err
    assert stub_bench["diffsync"] is False
    assert stub_bench["scaling"] == (10, 20)

    # Asked for explicitly, it is an error.
    assert main(["bench", "--records", "10", "--diffsync"]) == 2
    err = capsys.readouterr().err
    assert "diffsync missing" in err
    assert "pip install 'syncrecon[bench]'" in err

    # Turned off, nothing is said.
    assert main(["bench", "--json", "--records", "10", "--no-diffsync"]) == 0
    assert capsys.readouterr().err == ""
    assert stub_bench["diffsync"] is False


def test_bench_with_diffsync_installed_runs_it_by_default(
    monkeypatch: pytest.MonkeyPatch, stub_bench: dict[str, Any]
) -> None:
    import syncrecon.__main__ as cli

    monkeypatch.setattr(cli, "_missing", lambda *modules: [])
    assert main(["bench", "--json", "--records", "10"]) == 0
    assert stub_bench["diffsync"] is True
    assert stub_bench["scaling"] == ()


def test_noop_cycle_vs_diffsync() -> None:
    pytest.importorskip("diffsync")
    out = run_bench(
        records=RECORDS,
        deepdiff_sample=20,
        compare_sample=100,
        webhooks=False,
        connectors=False,
        diffsync=True,
    )
    # DiffSync loads both sides, finds the mapped values equal and syncs an empty diff.
    assert out["diffsync_summary"]["no-change"] == RECORDS
    assert all(out["diffsync_summary"][k] == 0 for k in ("create", "update", "delete"))
    assert out["diffsync_objects"] == 2 * RECORDS
    assert out["diffsync_s"] > 0
    assert out["diffsync_s"] >= out["diffsync_load_s"] > 0
    assert out["diffsync_peak_rss_mb"] >= out["diffsync_baseline_rss_mb"] > 0
    assert out["noop_cycle_vs_diffsync_own_cpu"] > 0
    assert out["noop_cycle_vs_diffsync"] == pytest.approx(
        out["noop_cycle_s"] / out["diffsync_s"], rel=0.15
    )


# -- the served front door (syncrecon._bench_served) -----------------------------------------

WRK_REPORT = """Running 1s test @ http://127.0.0.1:4000/webhooks/crm
  2 threads and 20 connections
Requests/sec:   9000.50
Transfer/sec:      1.20MB
syncrecon-wrk ok=8999 non2xx=1 reused=0
"""


def test_served_figures_come_from_wrk_and_only_clean_runs_give_a_ratio() -> None:
    from syncrecon._bench_served import judge, read_wrk_report

    bare = read_wrk_report(WRK_REPORT.replace("ok=8999 non2xx=1", "ok=9000 non2xx=0"))
    assert bare["ok_per_s"] == pytest.approx(9000.5)
    served = read_wrk_report(
        WRK_REPORT.replace("9000.50", "4500.25").replace("non2xx=1", "non2xx=0")
    )
    clean = judge("sqlite", bare, served, stored=served["ok"])
    assert clean["served_vs_bare_sqlite"] == round(4500.25 / 9000.5, 3)
    assert "served_vs_bare_sqlite_reason" not in clean

    # A non-2xx answer, a socket error, a request sent twice or a 2xx whose event is not in
    # the inbox: the rates are reported, the ratio is not.
    errors = read_wrk_report(
        WRK_REPORT + "  Socket errors: connect 0, read 2, write 0, timeout 1\n"
    )
    assert errors["non_2xx"] == 1
    assert errors["socket_errors"] == 3
    assert errors["ok_per_s"] == pytest.approx(9000.5 * 8999 / 9000)
    for run, stored in (
        (errors, errors["ok"]),
        ({**served, "reused": 5}, served["ok"]),
        (served, served["ok"] - 1),
    ):
        figures = judge("postgres", bare, run, stored)
        assert figures["served_vs_bare_postgres"] is None
        assert figures["served_vs_bare_postgres_reason"]
        assert figures["served_webhook_requests_per_s_postgres"] > 0
    with pytest.raises(RuntimeError, match="unreadable"):
        read_wrk_report("no figures here")


def test_served_bench_without_wrk_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from syncrecon._bench_served import run_served_bench

    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = run_served_bench(seconds=1)
    for kind in ("sqlite", "postgres"):
        assert out[f"served_vs_bare_{kind}"] is None
        assert "wrk is not installed" in out[f"served_vs_bare_{kind}_reason"]


def test_signed_requests_pass_the_webhook_verifier() -> None:
    from datetime import UTC, datetime

    from syncrecon._bench_served import SECRET, signed_request
    from syncrecon.webhooks import StandardWebhooksVerifier

    raw = signed_request(7, datetime.now(UTC))
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /webhooks/crm HTTP/1.1"
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    assert int(headers["content-length"]) == len(body)
    delivery = StandardWebhooksVerifier(secrets=[SECRET]).verify(
        method="POST", url="http://127.0.0.1/webhooks/crm", headers=headers, body=body
    )
    assert delivery.delivery_id == "msg_000000007"


def test_served_bench_measures_both_apps_over_http() -> None:
    """One short round on SQLite (and PostgreSQL when a server is named): the keys are there
    and every 2xx answer's event was stored. No figure is held against the goal here."""
    import shutil

    from syncrecon._bench_served import run_served_bench

    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install wrk)")
    pytest.importorskip("uvloop")
    pytest.importorskip("httptools")
    out = run_served_bench(seconds=1, rounds=1)
    assert "wrk -t2 -c20 -d1s" in out["served_settings"]
    assert out["served_vs_bare_sqlite"] is not None, out.get("served_vs_bare_sqlite_reason")
    assert out["served_vs_bare_sqlite"] > 0
    assert out["served_webhook_non_2xx_sqlite"] == 0
    assert out["served_webhook_events_stored_sqlite"] > 0
    assert out["served_bare_requests_per_s_sqlite"] > 0
    assert len(out["served_runs_sqlite"]["webhook"]) == 1
    if out["served_vs_bare_postgres"] is None:
        assert out["served_vs_bare_postgres_reason"]


def test_the_bench_reports_the_sharded_cycle(bench: dict[str, Any]) -> None:
    assert bench["shards"] == 2
    assert bench["same_totals"] is True  # 2 shards end where one unsharded cycle does
    assert bench["sharded_cycle_speedup"] == pytest.approx(
        bench["unsharded_cycle_s"] / bench["sharded_2_cycle_s"], rel=0.05
    )


def test_bench_cli_passes_the_parts_and_the_server_on(stub_bench: dict[str, Any]) -> None:
    argv = ["bench", "--json", "--records", "10", "--no-diffsync"]
    assert main(argv) == 0
    assert (stub_bench["served"], stub_bench["drain"], stub_bench["sharded"]) == (True,) * 3
    assert stub_bench["postgres_url"] is None
    assert (
        main([*argv, "--no-served", "--no-drain", "--no-sharded", "--postgres-url", "pg://x"]) == 0
    )
    assert (stub_bench["served"], stub_bench["drain"], stub_bench["sharded"]) == (False,) * 3
    assert stub_bench["postgres_url"] == "pg://x"


def test_postgres_figures_say_why_without_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    import syncrecon._local_postgres
    from syncrecon._bench import POSTGRES_URL_VARS, _postgres_figures

    for var in POSTGRES_URL_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(syncrecon._local_postgres, "find_bindir", lambda: None)
    out = _postgres_figures(None, served=False, drain=True)
    assert out["webhook_events_per_s_postgres"] is None
    assert "no PostgreSQL server" in out["postgres_reason"]
