"""Prometheus metrics: what a node did, for dashboards and alerts.

Request outcomes and latencies are recorded once, in the data plane (`Metrics.observe`);
pool state (queue depth, workers, crashes, restarts, rejections) is read from the
supervisor at scrape time by a collector, so the hot path pays nothing for it. Latencies
are histograms, never summaries, so they aggregate across nodes.

    apinode_requests_total{service,endpoint,generation,protocol,outcome}   counter
    apinode_request_duration_seconds{service,endpoint,protocol}            histogram
    apinode_queue_wait_seconds{service,endpoint}                           histogram
    apinode_compute_seconds{service,endpoint}                              histogram (one per batch member)
    apinode_inflight_requests                                              gauge (node-wide)
    apinode_endpoint_inflight_requests{service,endpoint}                   gauge
    apinode_pool_saturation{service,endpoint,generation}                   gauge (busy workers / ceil)
    apinode_queue_depth{service,endpoint,generation}                       gauge
    apinode_workers{service,endpoint,generation,state}                     gauge (busy|idle|starting)
    apinode_worker_crashes_total{service,endpoint,generation}              counter
    apinode_worker_restarts_total{service,endpoint,generation}             counter
    apinode_rejected_total{service,endpoint,generation,reason}             counter (overloaded|queue_timeout|cancelled|run_timeout)
    apinode_package_loads_total{service,outcome}                           counter
    apinode_querylog_dropped_total                                         counter
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from node.querylog import QueryLog

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)


class _PoolCollector(Collector):
    def __init__(self, supervisor: Any) -> None:
        self.sup = supervisor

    def collect(self) -> Iterator[Any]:
        labels = ["service", "endpoint", "generation"]
        depth = GaugeMetricFamily("apinode_queue_depth", "Requests waiting for a worker", labels=labels)
        saturation = GaugeMetricFamily(
            "apinode_pool_saturation", "Busy workers over the pool's ceiling (ceil), 0 to 1", labels=labels
        )
        workers = GaugeMetricFamily("apinode_workers", "Worker processes by state", labels=[*labels, "state"])
        crashes = CounterMetricFamily("apinode_worker_crashes", "Workers that died", labels=labels)
        restarts = CounterMetricFamily("apinode_worker_restarts", "Workers started to replace others", labels=labels)
        rejected = CounterMetricFamily("apinode_rejected", "Requests not served, by reason", labels=[*labels, "reason"])
        for key, pool in list(self.sup.pools.items()):
            lv = [key.service, key.endpoint_id, key.generation]
            depth.add_metric(lv, pool.waiting)
            counts = pool.counts()
            saturation.add_metric(lv, counts.busy / pool.settings.ceil)
            for state, n in (("busy", counts.busy), ("idle", counts.idle), ("starting", counts.starting)):
                workers.add_metric([*lv, state], n)
            s = pool.stats
            crashes.add_metric(lv, s.crashed)
            restarts.add_metric(lv, s.restarts)
            for reason, value in (
                ("overloaded", s.rejected),
                ("queue_timeout", s.timed_out),
                ("cancelled", s.cancelled),
                ("run_timeout", s.run_timeouts),
            ):
                rejected.add_metric([*lv, reason], value)
        yield from (depth, saturation, workers, crashes, restarts, rejected)


class _QueryLogCollector(Collector):
    def __init__(self, querylog: QueryLog) -> None:
        self.querylog = querylog

    def collect(self) -> Iterator[Any]:
        dropped = CounterMetricFamily("apinode_querylog_dropped", "Query log lines dropped (slow or full disk)")
        dropped.add_metric([], self.querylog.dropped)
        yield dropped


class _Family(Collector):
    """A counter or histogram kept in plain lists on the hot path.

    prometheus-client's own metrics take a lock and walk the buckets in Python on every
    observation (some 20 µs a request for the four below); the node observes from its one
    event-loop thread, so a bisect and two additions do, and the client library formats
    them at scrape time, on the same thread."""

    def __init__(self, name: str, doc: str, labels: list[str], buckets: tuple[float, ...] | None = None) -> None:
        self.name, self.doc, self.labels, self.buckets = name, doc, labels, buckets
        self.series: dict[tuple[str, ...], list[float]] = {}
        self._width = len(buckets) + 2 if buckets is not None else 1  # bucket counts, +Inf, sum

    def inc(self, labels: tuple[str, ...]) -> None:
        s = self.series.get(labels)
        if s is None:
            s = self.series[labels] = [0]
        s[0] += 1

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        s = self.series.get(labels)
        if s is None:
            s = self.series[labels] = [0] * (self._width - 1) + [0.0]
        s[bisect_left(self.buckets, value)] += 1  # type: ignore[arg-type]  # `le` is inclusive: first bound >= value
        s[-1] += value

    def collect(self) -> Iterator[Any]:
        if self.buckets is None:
            counter = CounterMetricFamily(self.name, self.doc, labels=self.labels)
            for lv, s in list(self.series.items()):
                counter.add_metric(list(lv), s[0])
            yield counter
            return
        hist = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        bounds = [floatToGoString(b) for b in self.buckets] + ["+Inf"]  # type: ignore[no-untyped-call]
        for lv, s in list(self.series.items()):
            hist.add_metric(list(lv), list(zip(bounds, accumulate(s[:-1]), strict=True)), sum_value=s[-1])
        yield hist


class InFlight(Collector):
    """Requests inside the data plane (every transport), node-wide and per endpoint.

    The hot path pays two dict updates a request (`enter`/`leave`, from the event-loop
    thread); a key leaves the dict at 0, so names a caller made up never accumulate. At
    scrape time every endpoint the node serves gets a series (0 when idle: an autoscaler
    must read 0, not a missing series), and names it does not serve none."""

    def __init__(self) -> None:
        self.total = 0
        self.by_endpoint: dict[tuple[str, str], int] = {}
        self.endpoints: Callable[[], Iterable[tuple[str, str]]] = lambda: ()  # set by the data plane

    def enter(self, key: tuple[str, str]) -> None:
        self.total += 1
        self.by_endpoint[key] = self.by_endpoint.get(key, 0) + 1

    def leave(self, key: tuple[str, str]) -> None:
        self.total -= 1
        n = self.by_endpoint[key] - 1
        if n:
            self.by_endpoint[key] = n
        else:
            del self.by_endpoint[key]

    def collect(self) -> Iterator[Any]:
        total = GaugeMetricFamily("apinode_inflight_requests", "Requests in the node, from decoded to answered")
        total.add_metric([], self.total)
        per = GaugeMetricFamily(
            "apinode_endpoint_inflight_requests", "Requests in the node, per endpoint", labels=["service", "endpoint"]
        )
        for key in sorted(set(self.endpoints())):
            per.add_metric(list(key), self.by_endpoint.get(key, 0))
        yield from (total, per)


class Metrics:
    """Every metric of a node. `querylog`: the node's query log, if it keeps one (its
    dropped-lines counter is exported)."""

    def __init__(self, supervisor: Any, querylog: QueryLog | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = _Family(
            "apinode_requests",
            "Requests answered, by outcome (ok or the errorType)",
            ["service", "endpoint", "generation", "protocol", "outcome"],
        )
        self.duration = _Family(
            "apinode_request_duration_seconds",
            "Time from decoded request to answer, in the node",
            ["service", "endpoint", "protocol"],
            LATENCY_BUCKETS,
        )
        self.wait = _Family(
            "apinode_queue_wait_seconds", "Time waiting for a worker", ["service", "endpoint"], LATENCY_BUCKETS
        )
        self.compute = _Family(
            "apinode_compute_seconds", "Time in the worker (whole batch)", ["service", "endpoint"], LATENCY_BUCKETS
        )
        for family in (self.requests, self.duration, self.wait, self.compute):
            r.register(family)
        self.loads = Counter("apinode_package_loads", "Package loads, by outcome", ["service", "outcome"], registry=r)
        self.inflight = InFlight()
        r.register(self.inflight)
        r.register(_PoolCollector(supervisor))
        if querylog is not None:
            r.register(_QueryLogCollector(querylog))

    def observe(
        self,
        service: str,
        endpoint: str,
        generation: str,
        protocol: str,
        outcome: str,
        seconds: float,
        wait_us: int | None = None,
        compute_us: int | None = None,
    ) -> None:
        self.requests.inc((service, endpoint, generation, protocol, outcome))
        self.duration.observe((service, endpoint, protocol), seconds)
        if wait_us is not None:
            self.wait.observe((service, endpoint), wait_us / 1e6)
        if compute_us is not None:
            self.compute.observe((service, endpoint), compute_us / 1e6)

    def render(self) -> bytes:
        return generate_latest(self.registry)
