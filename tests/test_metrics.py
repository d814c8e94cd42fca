"""Metrics export: a Prometheus collector in the host's registry, OpenTelemetry instruments.

Both read the known history of ``test_dashboard`` (its ``NOW`` injected through a clock): the
storage counters all time, the rest over the 7 days before ``NOW``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest

from syncrecon import ConfigurationError
from syncrecon.metrics import PrometheusCollector, register_opentelemetry
from syncrecon.storage import Storage
from syncrecon.testing import ManualClock
from test_dashboard import NOW, cycle, escalation, history

prometheus_client = pytest.importorskip("prometheus_client")
otel = pytest.importorskip("opentelemetry.metrics")

DAY = 86400
HOUR = timedelta(hours=1)


def test_importing_the_module_imports_and_registers_nothing() -> None:
    code = (
        "import sys, syncrecon.metrics, syncrecon.dashboard;"
        " assert 'prometheus_client' not in sys.modules, 'prometheus';"
        " assert not any(m.startswith('opentelemetry') for m in sys.modules), 'otel'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert not any(name.startswith("syncrecon") for name in names)


# -- Prometheus ----------------------------------------------------------------------------------


def registry_of(storage: Storage, **kwargs: Any) -> Any:
    registry = prometheus_client.CollectorRegistry()
    registry.register(PrometheusCollector(storage, clock=ManualClock(NOW), **kwargs))
    return registry


def test_prometheus_counters_are_the_storage_totals(storage: Storage) -> None:
    history(storage)
    value = registry_of(storage).get_sample_value
    hubspot = {"source": "hubspot", "direction": "hubspot->billing"}
    billing = {"source": "billing", "direction": "billing->hubspot"}
    # All time: the two 100s before the dashboard's window count here.
    assert value("syncrecon_fast_loop_events_total", {**hubspot, "outcome": "applied"}) == 210
    assert value("syncrecon_fast_loop_events_total", {**hubspot, "outcome": "echo"}) == 4
    assert value("syncrecon_fast_loop_events_total", {**billing, "outcome": "rejected"}) == 3
    assert value("syncrecon_fast_loop_rejections_total", {"reason": "SignatureError"}) == 2
    assert value("syncrecon_cycles_total", {"sync": "deals", "mode": "full"}) == 3
    assert value("syncrecon_cycles_total", {"sync": "deals", "mode": "incremental"}) == 1
    assert value("syncrecon_discrepancies_found_total", {"sync": "deals"}) == 50 + 10 + 5 + 4
    assert value("syncrecon_auto_resolved_total", {"sync": "deals", "rule": "recency"}) == 49
    assert value("syncrecon_auto_resolved_total", {"sync": "deals", "rule": "merge"}) == 2


def test_prometheus_gauges_are_the_window_and_the_queue(storage: Storage) -> None:
    history(storage)
    value = registry_of(storage).get_sample_value
    assert value("syncrecon_escalated", {"category": "deal_value"}) == 4
    assert value("syncrecon_escalated", {"category": "contract_dates"}) == 2
    assert value("syncrecon_escalated", {"category": "possible_duplicate"}) == 1
    assert value("syncrecon_auto_resolution_rate") == pytest.approx(13 / 20)
    assert value("syncrecon_queue_depth") == 3
    assert value("syncrecon_queue_depth_by_category", {"category": "schema_drift"}) == 1
    assert value("syncrecon_queue_oldest_age_seconds") == 30 * DAY
    quantile = "syncrecon_time_to_resolution_quantile_seconds"
    assert value(quantile, {"quantile": "0.5"}) == 5 * 3600
    assert value(quantile, {"quantile": "0.9"}) == 10 * DAY
    assert value(quantile, {"quantile": "1"}) == 10 * DAY


def test_prometheus_time_to_resolution_gauge_histogram(storage: Storage) -> None:
    history(storage)
    registry = registry_of(storage)
    name = "syncrecon_time_to_resolution_seconds"
    # Closed after 30m, 2h, 5h, 1d, 2d and 10d; Prometheus buckets are "less than or equal".
    expected = {
        "3600": 1,
        "14400": 2,
        "86400": 4,
        "259200": 5,
        "604800": 5,
        "1209600": 6,
        "+Inf": 6,
    }
    for le, count in expected.items():
        assert registry.get_sample_value(f"{name}_bucket", {"le": le}) == count, le
    assert registry.get_sample_value(f"{name}_gcount") == 6
    seconds = 1800 + 7200 + 18000 + DAY + 2 * DAY + 10 * DAY
    assert registry.get_sample_value(f"{name}_gsum") == seconds
    text = prometheus_client.generate_latest(registry).decode()
    assert 'syncrecon_time_to_resolution_seconds_bucket{le="86400"} 4.0' in text
    assert "# TYPE syncrecon_cycles_total counter" in text


def test_prometheus_for_one_sync(storage: Storage) -> None:
    history(storage)
    cycle(storage, NOW, found=2, auto={"merge": 2}, sync="tickets")
    escalation(storage, NOW - HOUR, "deal_value", sync="tickets")
    value = registry_of(storage, sync="tickets").get_sample_value
    assert value("syncrecon_cycles_total", {"sync": "tickets", "mode": "full"}) == 1
    assert value("syncrecon_cycles_total", {"sync": "deals", "mode": "full"}) is None
    assert value("syncrecon_auto_resolved_total", {"sync": "tickets", "rule": "merge"}) == 2
    assert value("syncrecon_queue_depth") == 1


def test_prometheus_on_an_empty_database(memory_storage: Storage) -> None:
    value = registry_of(memory_storage).get_sample_value
    assert value("syncrecon_queue_depth") == 0
    assert value("syncrecon_queue_oldest_age_seconds") == 0
    assert value("syncrecon_auto_resolution_rate") is None
    assert value("syncrecon_time_to_resolution_seconds_gcount") == 0


def test_prometheus_names_clash_in_one_registry(memory_storage: Storage) -> None:
    registry = registry_of(memory_storage)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(PrometheusCollector(memory_storage))
    other = registry_of(memory_storage, prefix="crm")  # another prefix may share a registry
    assert other.get_sample_value("crm_queue_depth") == 0


def test_prometheus_missing_is_a_configuration_error(
    memory_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client.core", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'syncrecon\[prometheus\]'"):
        PrometheusCollector(memory_storage)


# -- OpenTelemetry -------------------------------------------------------------------------------


class RecordingMeter(otel.NoOpMeter):  # type: ignore[misc, name-defined]
    """The API's no-op meter, keeping each observable instrument's callbacks to call them."""

    def __init__(self) -> None:
        super().__init__("test")
        self.instruments: dict[str, tuple[str, Sequence[Callable[..., Any]], str]] = {}

    def create_observable_counter(self, name: str, callbacks: Any = None, **kw: Any) -> Any:
        self.instruments[name] = ("counter", callbacks, kw.get("unit", ""))
        return super().create_observable_counter(name, callbacks, **kw)

    def create_observable_gauge(self, name: str, callbacks: Any = None, **kw: Any) -> Any:
        self.instruments[name] = ("gauge", callbacks, kw.get("unit", ""))
        return super().create_observable_gauge(name, callbacks, **kw)

    def observe(self, name: str) -> dict[tuple[tuple[str, Any], ...], float]:
        """What the SDK would read: each callback's observations, by attributes."""
        out = {}
        for callback in self.instruments[name][1]:
            for observation in callback(otel.CallbackOptions()):
                assert isinstance(observation, otel.Observation)
                out[tuple(sorted((observation.attributes or {}).items()))] = observation.value
        return out


def test_opentelemetry_instruments(storage: Storage) -> None:
    history(storage)
    meter = RecordingMeter()
    created = register_opentelemetry(storage, meter, clock=ManualClock(NOW))
    assert len(created) == len(meter.instruments) == 11
    kinds = {name: kind for name, (kind, _, _) in meter.instruments.items()}
    assert kinds["syncrecon.cycles"] == kinds["syncrecon.fast_loop.events"] == "counter"
    assert kinds["syncrecon.queue.depth"] == kinds["syncrecon.escalated"] == "gauge"
    assert meter.instruments["syncrecon.time_to_resolution"][2] == "s"

    events = meter.observe("syncrecon.fast_loop.events")
    hubspot = (("direction", "hubspot->billing"), ("outcome", "applied"), ("source", "hubspot"))
    assert events[hubspot] == 210
    assert meter.observe("syncrecon.fast_loop.rejections") == {
        (("reason", "MalformedPayloadError"),): 1,
        (("reason", "SignatureError"),): 2,
    }
    assert meter.observe("syncrecon.cycles") == {
        (("mode", "full"), ("sync", "deals")): 3,
        (("mode", "incremental"), ("sync", "deals")): 1,
    }
    assert meter.observe("syncrecon.discrepancies_found") == {(("sync", "deals"),): 69}
    assert meter.observe("syncrecon.auto_resolved")[(("rule", "recency"), ("sync", "deals"))] == 49
    assert meter.observe("syncrecon.escalated") == {
        (("category", "deal_value"),): 4,
        (("category", "contract_dates"),): 2,
        (("category", "possible_duplicate"),): 1,
    }
    assert meter.observe("syncrecon.auto_resolution_rate") == {(): pytest.approx(0.65)}
    assert meter.observe("syncrecon.time_to_resolution") == {
        (("quantile", "0.5"),): 5 * 3600,
        (("quantile", "0.9"),): 10 * DAY,
        (("quantile", "1"),): 10 * DAY,
    }
    assert meter.observe("syncrecon.queue.depth") == {(): 3}
    assert meter.observe("syncrecon.queue.depth_by_category") == {
        (("category", "contract_dates"),): 1,
        (("category", "deal_value"),): 1,
        (("category", "schema_drift"),): 1,
    }
    assert meter.observe("syncrecon.queue.oldest_age") == {(): 30 * DAY}


def test_opentelemetry_window_numbers_are_computed_once_per_max_age(storage: Storage) -> None:
    escalation(storage, NOW - HOUR, "deal_value")
    cached, fresh = RecordingMeter(), RecordingMeter()
    register_opentelemetry(storage, cached, clock=ManualClock(NOW), max_age=3600)
    register_opentelemetry(storage, fresh, clock=ManualClock(NOW), max_age=0)
    assert cached.observe("syncrecon.queue.depth") == fresh.observe("syncrecon.queue.depth")
    escalation(storage, NOW - HOUR, "deletion")
    assert cached.observe("syncrecon.queue.depth") == {(): 1}
    assert fresh.observe("syncrecon.queue.depth") == {(): 2}


def test_opentelemetry_on_the_global_api_meter(memory_storage: Storage) -> None:
    # With only the API installed, the global meter is a proxy: instruments are still created.
    instruments = register_opentelemetry(memory_storage, otel.get_meter("syncrecon-test"))
    assert len(instruments) == 11


def test_opentelemetry_missing_is_a_configuration_error(
    memory_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.metrics", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'syncrecon\[otel\]'"):
        register_opentelemetry(memory_storage, object())
