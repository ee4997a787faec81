"""apinode's load generator: closed and open loop load over JSON HTTP and gRPC.

The pieces, in the order a run meets them:

- :mod:`loadtest.config`: :class:`LoadConfig` (target, payload, loop, bounds) and parsers.
- :mod:`loadtest.payloads`: request bodies from a package, JSONL or CSV; cycle or sample.
- :mod:`loadtest.transport`: the interface the loops drive; :mod:`loadtest.fast_http`
  (the default HTTP client), :mod:`loadtest.http_client` (aiohttp) and
  :mod:`loadtest.grpc_client` implement it (:mod:`loadtest.grpc_messages` encodes).
- :mod:`loadtest.loops`: closed loop and open loop (latency from the intended send time).
- :mod:`loadtest.runner`: one process's run (:func:`run_load`) and a whole run
  (:func:`run`), with :mod:`loadtest.procs` for several client processes.
- :mod:`loadtest.stats` / :mod:`loadtest.result`: HDR histograms, :class:`LoadResult`.
- :mod:`loadtest.sweep`: steps of growing load against a latency objective.
- :mod:`loadtest.report`, :mod:`loadtest.plot`, :mod:`loadtest.session`,
  :mod:`loadtest.cli`: tables, JSON, PNG and the ``apinode loadtest`` command.

A benchmark suite uses the library directly::

    from loadtest import LoadConfig, Target, run, run_sweep, Slo
    result = run(LoadConfig(target=Target(url=..., service="fraud", endpoint="score"),
                            payload="build/fraud.apz", concurrency=16, duration=10.0))
    result.ok_throughput, result.p99(), result.errors, result.to_dict()
"""

from loadtest.config import ConfigError, LoadConfig, LoadError, Target
from loadtest.result import LoadResult
from loadtest.runner import Progress, Shard, run, run_load
from loadtest.stats import Latency
from loadtest.sweep import Slo, SweepResult, SweepStep, run_sweep

__all__ = [
    "ConfigError",
    "Latency",
    "LoadConfig",
    "LoadError",
    "LoadResult",
    "Progress",
    "Shard",
    "Slo",
    "SweepResult",
    "SweepStep",
    "Target",
    "run",
    "run_load",
    "run_sweep",
]
