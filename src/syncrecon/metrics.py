"""Export the dashboard's numbers to Prometheus or OpenTelemetry (optional extras).

Nothing here is registered or imported at import time: the host builds an exporter over its
storage and hands it to *its* registry or meter, and the client library is imported only then
(a missing one raises :class:`~syncrecon.ConfigurationError` naming the extra to install).

>>> from prometheus_client import CollectorRegistry  # doctest: +SKIP
>>> registry.register(PrometheusCollector(storage))  # doctest: +SKIP
>>> register_opentelemetry(storage, meter_provider.get_meter("syncrecon"))  # doctest: +SKIP

What is exported (``syncrecon`` is the default prefix; Prometheus names use ``_``, OpenTelemetry
names ``.``, e.g. ``syncrecon_queue_depth`` and ``syncrecon.queue.depth``):

- counters, all time: ``fast_loop_events`` (``source``, ``direction``, ``outcome``),
  ``fast_loop_rejections`` (``reason``), ``cycles`` (``sync``, ``mode``),
  ``discrepancies_found`` (``sync``) and ``auto_resolved`` (``sync``, ``rule``);
- gauges over the window: ``escalated`` (``category``: escalations first detected in it),
  ``auto_resolution_rate``, the time to resolution of the escalations closed in it
  (``time_to_resolution_quantile_seconds`` / ``time_to_resolution`` with ``quantile`` 0.5, 0.9
  and 1, nearest rank; Prometheus also gets a gauge histogram ``time_to_resolution_seconds``);
- gauges now: ``queue_depth``, ``queue_depth_by_category`` (``category``) and
  ``queue_oldest_age_seconds`` / ``queue.oldest_age``.

The counters are the storage's own, so they keep counting across restarts and workers:
``increase(syncrecon_auto_resolved_total[7d])`` is number 3 of the dashboard. The gauges are
computed over the exporter's ``window`` (default: 7 days) at each scrape or collection.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from ._clock import Clock
from ._exceptions import ConfigurationError
from .dashboard._model import TTR_EDGES, TimeToResolution
from .dashboard._queries import (
    _ceil_hour,
    _counters,
    _detected_since,
    _queue,
    _tally,
    _went_to_operator,
)
from .dashboard._stats import _rate
from .storage._base import Storage

__all__ = ["PrometheusCollector", "register_opentelemetry"]

_QUANTILES = (("0.5", 50), ("0.9", 90), ("1", 100))


def _import(module: str, extra: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(
            f"{what} needs the {module.split('.')[0]!r} package: pip install 'syncrecon[{extra}]'"
        ) from exc


@attrs.frozen(kw_only=True)
class _Window:
    """The windowed numbers both exporters publish."""

    escalated: Mapping[str, int]
    auto_resolved: int
    queue: TimeToResolution

    @property
    def rate(self) -> float | None:
        return _rate(self.auto_resolved, sum(self.escalated.values()))


def _window(storage: Storage, sync: str | None, window: timedelta, now: datetime) -> _Window:
    start = _ceil_hour(now - window)
    recent = _detected_since(storage, sync, start)
    auto = _counters(storage, "auto_resolved", start, now, sync)
    return _Window(
        escalated=_tally(i for i in recent if i.detected_at < now and _went_to_operator(i)),
        auto_resolved=sum(n for _, n in auto),
        queue=_queue(storage, sync, start, now),
    )


def _all_time(
    storage: Storage, metric: str, sync: str | None
) -> list[tuple[Mapping[str, str], int]]:
    return _counters(storage, metric, None, None, sync)


def _events(
    storage: Storage, sync: str | None
) -> tuple[dict[tuple[str, str, str], int], dict[str, int]]:
    """All-time fast-loop events by (source, direction, outcome), and rejections by reason."""
    events: dict[tuple[str, str, str], int] = {}
    reasons: dict[str, int] = {}
    for labels, n in _all_time(storage, "webhook_events", sync):
        key = (
            labels.get("source", "unknown"),
            labels.get("direction", "unknown"),
            labels.get("outcome", "unknown"),
        )
        events[key] = events.get(key, 0) + n
        if "reason" in labels:
            reasons[labels["reason"]] = reasons.get(labels["reason"], 0) + n
    return events, reasons


def _by(
    rows: Iterable[tuple[Mapping[str, str], int]], names: tuple[str, ...]
) -> dict[tuple[str, ...], int]:
    out: dict[tuple[str, ...], int] = {}
    for labels, n in rows:
        key = tuple(labels.get(name, "") for name in names)
        out[key] = out.get(key, 0) + n
    return out


_COUNTERS: tuple[tuple[str, str, tuple[str, ...], str, str], ...] = (
    ("cycles", "cycles", ("sync", "mode"), "{cycle}", "Reconciliation cycles run."),
    (
        "discrepancies_found",
        "discrepancies",
        ("sync",),
        "{discrepancy}",
        "Discrepancies the cycles found (one that waits is found by every cycle).",
    ),
    (
        "auto_resolved",
        "auto_resolved",
        ("sync", "rule"),
        "{discrepancy}",
        "Discrepancies fixed by a rule.",
    ),
)
"""(exported name, storage counter, labels, unit, help) of the reconciler's counters."""


class PrometheusCollector:
    """A ``prometheus_client`` collector of the dashboard's numbers; the host registers it.

    >>> registry.register(PrometheusCollector(storage, sync="deals"))  # doctest: +SKIP

    Each scrape reads ``storage`` (counters all-time, the rest over ``window`` ending now).
    ``sync`` narrows to one sync; register one collector per registry. ``clock`` (for tests)
    tells the time. Raises :class:`~syncrecon.ConfigurationError` when ``prometheus_client`` is
    not installed (``pip install 'syncrecon[prometheus]'``).
    """

    def __init__(
        self,
        storage: Storage,
        *,
        sync: str | None = None,
        window: timedelta = timedelta(days=7),
        prefix: str = "syncrecon",
        clock: Clock | None = None,
    ) -> None:
        self._core = _import("prometheus_client.core", "prometheus", "PrometheusCollector")
        self.storage = storage
        self.sync = sync
        self.window = window
        self.prefix = prefix
        self.clock = clock

    def __repr__(self) -> str:
        return f"PrometheusCollector({self.storage!r}, sync={self.sync!r})"

    def _families(self) -> dict[str, Any]:
        core, p = self._core, self.prefix
        days = f"{self.window / timedelta(days=1):g} days"
        counter, gauge = core.CounterMetricFamily, core.GaugeMetricFamily
        families = {
            "events": counter(
                f"{p}_fast_loop_events",
                "Webhook events by source, direction and outcome.",
                labels=["source", "direction", "outcome"],
            ),
            "rejections": counter(
                f"{p}_fast_loop_rejections",
                "Webhook requests rejected, by reason.",
                labels=["reason"],
            ),
        }
        for name, _, labels, _, doc in _COUNTERS:
            families[name] = counter(f"{p}_{name}", doc, labels=list(labels))
        families |= {
            "escalated": gauge(
                f"{p}_escalated",
                f"Escalations first detected in the last {days}, by category.",
                labels=["category"],
            ),
            "rate": gauge(
                f"{p}_auto_resolution_rate",
                f"auto_resolved / (auto_resolved + escalated) over the last {days}.",
            ),
            "ttr": core.GaugeHistogramMetricFamily(
                f"{p}_time_to_resolution_seconds",
                f"Time to resolution of the escalations closed in the last {days}.",
            ),
            "ttr_quantiles": gauge(
                f"{p}_time_to_resolution_quantile_seconds",
                f"Nearest-rank quantiles of the time to resolution over the last {days}.",
                labels=["quantile"],
            ),
            "depth": gauge(f"{p}_queue_depth", "Escalated items waiting for an operator."),
            "depth_by_category": gauge(
                f"{p}_queue_depth_by_category",
                "Escalated items waiting for an operator, by category.",
                labels=["category"],
            ),
            "oldest": gauge(
                f"{p}_queue_oldest_age_seconds",
                "How long the oldest waiting escalated item has waited (0 when none waits).",
            ),
        }
        return families

    def describe(self) -> Iterator[Any]:
        """The metric families without samples (what the registry checks for clashes)."""
        yield from self._families().values()

    def collect(self) -> Iterator[Any]:
        """Read storage and yield the metric families with their samples."""
        now = self.clock.now() if self.clock is not None else datetime.now(UTC)
        fam = self._families()
        events, reasons = _events(self.storage, self.sync)
        for event, n in sorted(events.items()):
            fam["events"].add_metric(list(event), n)
        for reason, n in sorted(reasons.items()):
            fam["rejections"].add_metric([reason], n)
        for name, metric, labels, _, _ in _COUNTERS:
            for key, n in sorted(_by(_all_time(self.storage, metric, self.sync), labels).items()):
                fam[name].add_metric(list(key), n)

        w = _window(self.storage, self.sync, self.window, now)
        for category, n in w.escalated.items():
            fam["escalated"].add_metric([category], n)
        if w.rate is not None:
            fam["rate"].add_metric([], w.rate)
        q = w.queue
        buckets = []
        for edge in TTR_EDGES:
            within = sum(1 for d in q.durations if d <= edge)
            buckets.append((f"{edge.total_seconds():.0f}", float(within)))  # whole seconds
        buckets.append(("+Inf", float(q.count)))
        fam["ttr"].add_metric([], buckets, sum(d.total_seconds() for d in q.durations))
        for label, percent in _QUANTILES:
            value = q.percentile(percent)
            if value is not None:
                fam["ttr_quantiles"].add_metric([label], value.total_seconds())
        fam["depth"].add_metric([], q.queue_depth)
        for category, n in q.queue_by_category.items():
            fam["depth_by_category"].add_metric([category], n)
        oldest = q.oldest_open
        fam["oldest"].add_metric([], 0.0 if oldest is None else oldest.age.total_seconds())
        yield from fam.values()


class _Snapshot:
    """The windowed numbers, recomputed at most every ``max_age`` seconds (one per export)."""

    def __init__(
        self,
        storage: Storage,
        sync: str | None,
        window: timedelta,
        clock: Clock | None,
        max_age: float,
    ) -> None:
        self._args = (storage, sync, window)
        self._clock = clock
        self._max_age = max_age
        self._lock = threading.Lock()
        self._value: _Window | None = None
        self._at = 0.0

    def get(self) -> _Window:
        with self._lock:
            if self._value is None or time.monotonic() - self._at > self._max_age:
                now = self._clock.now() if self._clock is not None else datetime.now(UTC)
                storage, sync, window = self._args
                self._value = _window(storage, sync, window, now)
                self._at = time.monotonic()
            return self._value


def register_opentelemetry(
    storage: Storage,
    meter: Any,
    *,
    sync: str | None = None,
    window: timedelta = timedelta(days=7),
    prefix: str = "syncrecon",
    clock: Clock | None = None,
    max_age: float = 5.0,
) -> list[Any]:
    """Create observable instruments for the dashboard's numbers on the host's ``meter``.

    Uses the OpenTelemetry API only (``opentelemetry.metrics``): the host's SDK and exporter
    collect them. Counters are observable counters of the storage's all-time totals; the
    window's numbers are observable gauges, computed at most once per ``max_age`` seconds
    however many instruments read them. Returns the instruments. Raises
    :class:`~syncrecon.ConfigurationError` when ``opentelemetry-api`` is not installed
    (``pip install 'syncrecon[otel]'``).
    """
    api = _import("opentelemetry.metrics", "otel", "register_opentelemetry")
    observation = api.Observation
    snapshot = _Snapshot(storage, sync, window, clock, max_age)

    def counter(metric: str, labels: tuple[str, ...]) -> Callable[[Any], list[Any]]:
        def observe(options: Any) -> list[Any]:
            rows = _by(_all_time(storage, metric, sync), labels)
            return [observation(n, dict(zip(labels, key, strict=True))) for key, n in rows.items()]

        return observe

    def events(options: Any) -> list[Any]:
        found, _ = _events(storage, sync)
        return [
            observation(n, {"source": s, "direction": d, "outcome": o})
            for (s, d, o), n in sorted(found.items())
        ]

    def rejections(options: Any) -> list[Any]:
        _, reasons = _events(storage, sync)
        return [observation(n, {"reason": r}) for r, n in sorted(reasons.items())]

    def escalated(options: Any) -> list[Any]:
        return [observation(n, {"category": c}) for c, n in snapshot.get().escalated.items()]

    def rate(options: Any) -> list[Any]:
        value = snapshot.get().rate
        return [] if value is None else [observation(value)]

    def resolution(options: Any) -> list[Any]:
        queue = snapshot.get().queue
        found = [(label, queue.percentile(percent)) for label, percent in _QUANTILES]
        return [observation(v.total_seconds(), {"quantile": q}) for q, v in found if v is not None]

    def depth(options: Any) -> list[Any]:
        return [observation(snapshot.get().queue.queue_depth)]

    def depth_by_category(options: Any) -> list[Any]:
        queue = snapshot.get().queue
        return [observation(n, {"category": c}) for c, n in queue.queue_by_category.items()]

    def oldest(options: Any) -> list[Any]:
        item = snapshot.get().queue.oldest_open
        return [observation(0.0 if item is None else item.age.total_seconds())]

    p = prefix
    return [
        meter.create_observable_counter(
            f"{p}.fast_loop.events",
            callbacks=[events],
            unit="{event}",
            description="Webhook events by source, direction and outcome.",
        ),
        meter.create_observable_counter(
            f"{p}.fast_loop.rejections",
            callbacks=[rejections],
            unit="{request}",
            description="Webhook requests rejected, by reason.",
        ),
        *(
            meter.create_observable_counter(
                f"{p}.{name}", callbacks=[counter(metric, labels)], unit=unit, description=doc
            )
            for name, metric, labels, unit, doc in _COUNTERS
        ),
        meter.create_observable_gauge(
            f"{p}.escalated",
            callbacks=[escalated],
            unit="{item}",
            description="Escalations first detected in the window, by category.",
        ),
        meter.create_observable_gauge(
            f"{p}.auto_resolution_rate",
            callbacks=[rate],
            unit="1",
            description="auto_resolved / (auto_resolved + escalated) over the window.",
        ),
        meter.create_observable_gauge(
            f"{p}.time_to_resolution",
            callbacks=[resolution],
            unit="s",
            description="Nearest-rank quantiles of the time to resolution over the window.",
        ),
        meter.create_observable_gauge(
            f"{p}.queue.depth",
            callbacks=[depth],
            unit="{item}",
            description="Escalated items waiting for an operator.",
        ),
        meter.create_observable_gauge(
            f"{p}.queue.depth_by_category",
            callbacks=[depth_by_category],
            unit="{item}",
            description="Escalated items waiting for an operator, by category.",
        ),
        meter.create_observable_gauge(
            f"{p}.queue.oldest_age",
            callbacks=[oldest],
            unit="s",
            description="How long the oldest waiting escalated item has waited.",
        ),
    ]
