"""What a worker is told to load: the one message the front sends it at start (`init`).

The registry builds a :class:`WorkerSpec` per pool; the supervisor sends it over the pipe
as it is (pickled, like every message); the worker's :func:`~node.worker.runtime.load_runtime`
reads it. The endpoint travels as its typed manifest entry (:class:`apz.specs.EndpointSpec`,
frozen dataclasses): no dict of the manifest is read again in the worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from apz.specs import EndpointSpec


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    package_dir: str  # the unpacked generation: the endpoint's paths are relative to it
    endpoint: EndpointSpec  # an enrichment table's pool gets a sql endpoint built for it (node/registry.py)
    onnx_threads: int = 1
    # The DSN of a sql endpoint's node connection: credentials, so never in a repr (logs, errors)
    dsn: str | None = field(default=None, repr=False)
