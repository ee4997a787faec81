"""Prometheus metrics: what a node did, for dashboards and alerts.

Request outcomes and latencies are recorded once, in the data plane (`Metrics.observe`);
pool state (queue depth, workers, crashes, restarts, rejections) is read from the
supervisor at scrape time by a collector, so the hot path pays nothing for it. Latencies
are histograms, never summaries, so they aggregate across nodes.

    apinode_requests_total{service,endpoint,generation,protocol,outcome}   counter
    apinode_request_duration_seconds{service,endpoint,protocol}            histogram
    apinode_queue_wait_seconds{service,endpoint}                           histogram
    apinode_compute_seconds{service,endpoint}                              histogram (one per batch member)
    apinode_queue_depth{service,endpoint,generation}                       gauge
    apinode_workers{service,endpoint,generation,state}                     gauge (busy|idle|starting)
    apinode_worker_crashes_total{service,endpoint,generation}              counter
    apinode_worker_restarts_total{service,endpoint,generation}             counter
    apinode_rejected_total{service,endpoint,generation,reason}             counter (overloaded|queue_timeout|cancelled|run_timeout)
    apinode_package_loads_total{service,outcome}                           counter
    apinode_querylog_dropped_total                                         counter
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)


class _PoolCollector(Collector):
    def __init__(self, supervisor: Any) -> None:
        self.sup = supervisor

    def collect(self) -> Iterator[Any]:
        labels = ["service", "endpoint", "generation"]
        depth = GaugeMetricFamily("apinode_queue_depth", "Requests waiting for a worker", labels=labels)
        workers = GaugeMetricFamily("apinode_workers", "Worker processes by state", labels=[*labels, "state"])
        crashes = CounterMetricFamily("apinode_worker_crashes", "Workers that died", labels=labels)
        restarts = CounterMetricFamily("apinode_worker_restarts", "Workers started to replace others", labels=labels)
        rejected = CounterMetricFamily("apinode_rejected", "Requests not served, by reason", labels=[*labels, "reason"])
        for key, pool in list(self.sup.pools.items()):
            service, rest = key.split("/", 1)
            endpoint, generation = rest.split("@", 1)
            generation = generation.split("~", 1)[0]
            lv = [service, endpoint, generation]
            depth.add_metric(lv, pool.waiting)
            states = [w.state for w in pool.workers if not w.retiring]
            for state in ("busy", "idle", "starting"):
                workers.add_metric([*lv, state], states.count(state))
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
        yield from (depth, workers, crashes, restarts, rejected)
        ql = getattr(self.sup, "querylog", None)
        if ql is not None:
            dropped = CounterMetricFamily("apinode_querylog_dropped", "Query log lines dropped (slow or full disk)")
            dropped.add_metric([], ql.dropped)
            yield dropped


class Metrics:
    def __init__(self, supervisor: Any) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "apinode_requests",
            "Requests answered, by outcome (ok or the errorType)",
            ["service", "endpoint", "generation", "protocol", "outcome"],
            registry=r,
        )
        self.duration = Histogram(
            "apinode_request_duration_seconds",
            "Time from decoded request to answer, in the node",
            ["service", "endpoint", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.wait = Histogram(
            "apinode_queue_wait_seconds",
            "Time waiting for a worker",
            ["service", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute = Histogram(
            "apinode_compute_seconds",
            "Time in the worker (whole batch)",
            ["service", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.loads = Counter("apinode_package_loads", "Package loads, by outcome", ["service", "outcome"], registry=r)
        r.register(_PoolCollector(supervisor))
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

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
        self._child(self.requests, service, endpoint, generation, protocol, outcome).inc()
        self._child(self.duration, service, endpoint, protocol).observe(seconds)
        if wait_us is not None:
            self._child(self.wait, service, endpoint).observe(wait_us / 1e6)
        if compute_us is not None:
            self._child(self.compute, service, endpoint).observe(compute_us / 1e6)

    def render(self) -> bytes:
        return generate_latest(self.registry)
