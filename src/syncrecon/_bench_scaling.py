"""``python -m syncrecon bench --scaling 10000,100000,1000000``: how a cycle's cost grows.

Each size runs in its own child process (so sizes do not share a peak memory) on a fresh
temporary SQLite database: a first cycle links the two generated systems, a share of the
records drifts, a steady cycle runs. Per size and phase the figure is syncrecon's own CPU per
record of both sides, the connectors' share left out; the growth figure of a phase is its cost
per record at the largest size over its cost per record at the smallest (about 1: linear; over
2: something scans or copies more than it should).

The connectors' CPU is split by phase here (a cycle report gives one total): the bench times
the generated systems' calls itself and names the phase by the cycle step on the call stack.
The cycle's ``compare`` timing includes its ``decide`` timing; here ``compare`` is the
compare phase less ``decide``, so the five phases add up to the cycle's own CPU.
"""

from __future__ import annotations

import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._connector import RetrySettings
from ._reconciler import CycleReport, Reconciler
from ._scenario import deal_sync, generated_pair
from .storage.sqlite import SQLiteStorage
from .testing import ManualClock

PHASES = ("read", "match", "compare", "decide", "write")
CYCLES = ("first", "steady")

# The cycle steps that call connectors, by phase (the steps ``_Cycle._run`` and ``_settle`` call).
_STEP_PHASES = {
    "_check_schema": "schema",
    "_stage_listing": "read",
    "_stage_counterparts": "read",
    "_match": "match",
    "_compare": "compare",
    "_plan_singles": "compare",
    "_execute": "write",
}
_CONNECTOR_METHODS = ("list_records", "read_records", "write_records", "describe_fields")


def rss_mb() -> float:
    """This process's peak resident memory so far, in MB.

    On Linux the high-water mark of the process's own memory (``VmHWM``): ``ru_maxrss``
    carries a parent's peak over into a child it starts, whatever the child uses.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


class PhaseMeter:
    """CPU seconds spent inside a connector's calls, by the cycle phase that made them.

    Calls made outside a known cycle step land under ``"other"``.
    """

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}

    def instrument(self, system: Any) -> None:
        """Time ``system``'s connector methods (replaced on the instance, still bound to it)."""
        for name in _CONNECTOR_METHODS:
            setattr(system, name, types.MethodType(self._timed(getattr(system, name)), system))

    def take(self) -> dict[str, float]:
        """The CPU seconds per phase since the last ``take``."""
        taken, self.cpu = self.cpu, {}
        return {phase: round(s, 6) for phase, s in sorted(taken.items())}

    def _timed(self, bound: Callable[..., Any]) -> Callable[..., Any]:
        def call(_self: Any, *args: Any, **kwargs: Any) -> Any:
            began = time.process_time()
            try:
                return bound(*args, **kwargs)
            finally:
                phase = _calling_phase(sys._getframe(1))
                spent = time.process_time() - began
                self.cpu[phase] = self.cpu.get(phase, 0.0) + spent

        call.__name__ = getattr(bound, "__name__", "call")
        return call


def _calling_phase(frame: types.FrameType | None) -> str:
    while frame is not None:
        phase = _STEP_PHASES.get(frame.f_code.co_name)
        if phase is not None:
            return phase
        frame = frame.f_back
    return "other"


def own_phase_cpu(report: CycleReport, connectors: Mapping[str, float]) -> dict[str, float]:
    """A cycle's own CPU seconds per phase: the phases partitioned (``compare`` less
    ``decide``, which runs inside it), each less the connectors' share ``connectors``."""
    t = report.timings
    spent = {
        "read": t.get("read", 0.0),
        "match": t.get("match", 0.0),
        "compare": t.get("compare", 0.0) - t.get("decide", 0.0),
        "decide": t.get("decide", 0.0),
        "write": t.get("write", 0.0),
    }
    return {phase: max(spent[phase] - connectors.get(phase, 0.0), 0.0) for phase in PHASES}


def _per_record_us(own: Mapping[str, float], records: int) -> dict[str, float]:
    per = {phase: round(own[phase] / (2 * records) * 1e6, 3) for phase in PHASES}
    per["total"] = round(sum(own.values()) / (2 * records) * 1e6, 3)
    return per


def measure_size(records: int, *, seed: int = 1, drift: float = 0.01) -> dict[str, Any]:
    """A first and a steady cycle at ``records`` per side, in this process."""
    from ._bench import drift_records

    rng = random.Random(seed)
    clock = ManualClock()
    left, right = generated_pair(records, seed, clock)
    meter = PhaseMeter()
    meter.instrument(left)
    meter.instrument(right)
    clock.advance(3600)
    baseline = rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        storage = SQLiteStorage(str(Path(tmp) / "scaling.sqlite"))
        reconciler = Reconciler(
            deal_sync(left, right),
            storage,
            clock=clock,
            retry=RetrySettings(sleep=clock.advance),
            scratch_dir=tmp,
        )
        wall = time.perf_counter()
        first = reconciler.run_cycle()
        first_s = time.perf_counter() - wall
        first_conn = meter.take()

        clock.advance(3600)
        drift_records(rng, clock, left, right, records, int(records * drift))
        clock.advance(3600)
        meter.take()
        wall = time.perf_counter()
        steady = reconciler.run_cycle()
        steady_s = time.perf_counter() - wall
        steady_conn = meter.take()
        storage.close()
    return {
        "records_per_side": records,
        "first_cycle_s": round(first_s, 3),
        "steady_cycle_s": round(steady_s, 3),
        "first_cycle_cpu_us_per_record": _per_record_us(own_phase_cpu(first, first_conn), records),
        "steady_cycle_cpu_us_per_record": _per_record_us(
            own_phase_cpu(steady, steady_conn), records
        ),
        "first_cycle_phases_cpu_s": dict(first.timings),
        "steady_cycle_phases_cpu_s": dict(steady.timings),
        "first_cycle_connectors_cpu_s": first_conn,
        "steady_cycle_connectors_cpu_s": steady_conn,
        "steady_cycle_unchanged": dict(steady.unchanged),
        "steady_cycle_api_calls": steady.total_api_calls,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": rss_mb(),
    }


def growth(per_size: Mapping[int, Mapping[str, Any]]) -> dict[str, float | None]:
    """Per phase of each cycle (and each cycle's wall time): the cost per record at the
    largest size over the cost per record at the smallest; ``None`` where the smallest is 0."""
    if len(per_size) < 2:
        return {}
    small, large = per_size[min(per_size)], per_size[max(per_size)]
    ratios: dict[str, float | None] = {}

    def ratio(a: float, b: float) -> float | None:
        return round(b / a, 3) if a > 0 else None

    for cycle in CYCLES:
        key = f"{cycle}_cycle_cpu_us_per_record"
        for phase in (*PHASES, "total"):
            ratios[f"{cycle}_{phase}"] = ratio(small[key][phase], large[key][phase])
        ratios[f"{cycle}_wall"] = ratio(
            small[f"{cycle}_cycle_s"] / small["records_per_side"],
            large[f"{cycle}_cycle_s"] / large["records_per_side"],
        )
    return ratios


def run_scaling(sizes: Sequence[int], *, seed: int = 1, drift: float = 0.01) -> dict[str, Any]:
    """Each size in a child process; the figures per size and their growth."""
    per_size = {
        n: run_child("syncrecon._bench_scaling", {"records": n, "seed": seed, "drift": drift})
        for n in sorted(set(sizes))
    }
    return {
        "scaling": {str(n): figures for n, figures in per_size.items()},
        "scaling_growth": growth(per_size),
    }


def run_child(module: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Run ``module``'s :func:`child_main` in a fresh interpreter and return its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        proc = subprocess.run(
            [sys.executable, "-m", module, json.dumps(dict(kwargs)), str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(
                f"python -m {module} {kwargs} failed ({proc.returncode}): {proc.stderr[-2000:]}"
            )
        figures: dict[str, Any] = json.loads(out.read_text())
        return figures


def child_main(measure: Callable[..., dict[str, Any]], argv: Sequence[str]) -> int:
    """``python -m <module> '<json keyword arguments>' <output path>``: measure, write JSON."""
    kwargs, out = json.loads(argv[0]), Path(argv[1])
    out.write_text(json.dumps(measure(**kwargs)))
    return 0


if __name__ == "__main__":
    sys.exit(child_main(measure_size, sys.argv[1:]))
