"""What a load run is: the target, the payloads, the loop and its bounds.

:class:`LoadConfig` is a frozen dataclass of plain values so that it pickles to the client
processes of a multi-process run; each process rebuilds its payloads and connections from
it. The parsers here (durations, latencies, sweep steps) are shared by the CLI and by
benchmark suites that read their settings from text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["http", "grpc", "grpc-stream"]
MODES: tuple[Mode, ...] = ("http", "grpc", "grpc-stream")
HttpClient = Literal["fast", "aiohttp"]
HTTP_CLIENTS: tuple[HttpClient, ...] = ("fast", "aiohttp")
VERBS = ("predict", "predict-multi", "run", "lookup", "lookup-multi", "query")
DEFAULT_URL = "http://127.0.0.1:12000"
DEFAULT_GRPC = "127.0.0.1:12001"

_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zµ]*)\s*$")


class ConfigError(ValueError):
    """A load configuration that cannot run, with a message that says why."""


class LoadError(RuntimeError):
    """A run that failed as a whole (a client process died or could not start)."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where the requests go and how they are framed.

    HTTP: ``url`` + ``path``, or ``url`` + ``/public/api/v1/{service}/{endpoint}/{verb}``.
    gRPC: ``grpc`` (host:port); ``verb`` picks the RPC (predict → Predict, predict-multi →
    PredictMulti, run → Run, lookup and lookup-multi → Lookup, query → Query);
    ``grpc-stream`` mode uses PredictStream.
    """

    mode: Mode = "http"
    url: str = DEFAULT_URL
    grpc: str = DEFAULT_GRPC
    service: str | None = None
    endpoint: str | None = None
    verb: str = "predict"
    path: str | None = None
    method: str = "POST"
    api_key: str | None = None

    def http_url(self) -> str:
        base = self.url.rstrip("/")
        if self.path is not None:
            return base + "/" + self.path.lstrip("/")
        if not self.service or not self.endpoint:
            raise ConfigError("HTTP target needs --path, or --service and --endpoint")
        return f"{base}/public/api/v1/{self.service}/{self.endpoint}/{self.verb}"

    def describe(self) -> str:
        if self.mode == "http":
            try:
                return f"{self.method} {self.http_url()}"
            except ConfigError:
                return self.url
        rpc = "PredictStream" if self.mode == "grpc-stream" else self.verb
        return f"grpc {self.grpc} {rpc} {self.service}/{self.endpoint}"


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """One load run.

    Closed loop (``rate is None``): ``concurrency`` clients, each sending its next request
    when the previous answer arrives. Open loop: requests are scheduled at ``rate`` per
    second (constant gaps, or exponential gaps with ``poisson``), whatever the server does;
    latency counts from the scheduled time. At most ``max_inflight`` requests are
    outstanding; a scheduled request beyond that is *dropped by the generator* and counted.

    ``http_client``: ``fast`` (raw asyncio connections, :mod:`loadtest.fast_http`: one
    core drives well over 10,000 req/s) or ``aiohttp`` (the full client, a few thousand).

    ``connections``: HTTP connection pool size, or number of gRPC streams in grpc-stream
    mode. Default: ``concurrency`` in closed loop; in open loop ``max_inflight`` for HTTP
    (opened lazily, as needed) and ``channels`` streams for gRPC.

    Bounds: ``duration`` seconds and/or ``requests`` (first reached wins); ``warmup``
    seconds of the same load run before, and are not measured.
    """

    target: Target = field(default_factory=Target)
    payload: str | None = None
    bodies: tuple[object, ...] | None = None
    sample: bool = False
    seed: int | None = None
    concurrency: int = 1
    rate: float | None = None
    poisson: bool = False
    duration: float | None = 10.0
    requests: int | None = None
    warmup: float = 0.0
    procs: int = 1
    max_inflight: int = 10_000
    connections: int | None = None
    channels: int = 1
    timeout: float = 30.0
    cpus: tuple[int, ...] | None = None
    http_client: HttpClient = "fast"

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    def validate(self) -> LoadConfig:
        """Returns self, or raises :class:`ConfigError`."""
        t = self.target
        if t.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}")
        if t.verb not in VERBS:
            raise ConfigError(f"verb must be one of {', '.join(VERBS)}")
        if t.mode == "http":
            t.http_url()
            if self.http_client not in HTTP_CLIENTS:
                raise ConfigError(f"http client must be one of {', '.join(HTTP_CLIENTS)}")
        else:
            if not t.service or not t.endpoint:
                raise ConfigError("gRPC target needs --service and --endpoint")
            if t.mode == "grpc-stream" and t.verb != "predict":
                raise ConfigError(
                    f"grpc-stream mode only streams predictions (verb predict), not {t.verb}: use --mode grpc or http"
                )
        if self.rate is None and self.concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise ConfigError("rate must be positive")
        if self.duration is None and self.requests is None:
            raise ConfigError("give a duration or a number of requests")
        if self.duration is not None and self.duration <= 0:
            raise ConfigError("duration must be positive")
        if self.requests is not None and self.requests < 1:
            raise ConfigError("requests must be at least 1")
        for name in ("procs", "max_inflight", "channels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.connections is not None and self.connections < 1:
            raise ConfigError("connections must be at least 1")
        if self.warmup < 0 or self.timeout <= 0:
            raise ConfigError("warmup must be >= 0 and timeout > 0")
        return self

    def step_value(self) -> float:
        """The knob a sweep turns: the rate in open loop, else the concurrency."""
        return self.rate if self.rate is not None else float(self.concurrency)

    def summary(self) -> dict[str, object]:
        return {
            "target": self.target.describe(),
            "mode": self.target.mode,
            "http_client": self.http_client if self.target.mode == "http" else None,
            "loop": "open" if self.open_loop else "closed",
            "concurrency": None if self.open_loop else self.concurrency,
            "rate": self.rate,
            "poisson": self.poisson if self.open_loop else None,
            "procs": self.procs,
            "duration": self.duration,
            "requests": self.requests,
            "warmup": self.warmup,
        }


def parse_quantity(text: str, default_unit: str) -> float:
    """``"10s"``, ``"500ms"``, ``"2m"``, ``"250us"``, or a bare number in ``default_unit``."""
    m = _QUANTITY.match(text)
    if not m:
        raise ConfigError(f"cannot read {text!r} as a duration (e.g. 10s, 500ms, 2m)")
    unit = m.group(2) or default_unit
    if unit not in _UNITS:
        raise ConfigError(f"unknown unit {unit!r} in {text!r} (use us, ms, s, m or h)")
    return float(m.group(1)) * _UNITS[unit]


def parse_duration(text: str) -> float:
    """Seconds; a bare number means seconds."""
    return parse_quantity(text, "s")


def parse_latency(text: str) -> float:
    """Seconds; a bare number means milliseconds (``--slo-p99 5`` is 5 ms)."""
    return parse_quantity(text, "ms")


def parse_steps(text: str) -> list[float]:
    """``"1,4,16,64"`` → [1.0, 4.0, 16.0, 64.0]."""
    try:
        steps = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"cannot read sweep steps {text!r} (e.g. 1,4,16,64)") from None
    if not steps or any(s <= 0 for s in steps):
        raise ConfigError("sweep steps must be positive numbers")
    return steps


def parse_cpus(text: str) -> tuple[int, ...]:
    """``"2,3"`` or ``"4-7"`` (taskset syntax) → CPU ids."""
    cpus: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            cpus.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(f"cannot read CPU list {text!r} (e.g. 2,3 or 4-7)") from None
    return tuple(cpus)
