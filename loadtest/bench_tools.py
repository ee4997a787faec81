"""The C load generators `make bench` measures with beside its own: wrk and h2load.

wrk drives HTTP/1.1 (a Lua script sets the method, headers and body; ``--latency`` prints
p50/p99). h2load drives gRPC over HTTP/2: a gRPC call is a POST of length-prefixed
messages (a 0 byte, the length as 4 big-endian bytes, the protobuf) with
``content-type: application/grpc`` and ``te: trailers``. A unary Predict is one framed
message; a PredictStream with ``n`` messages in one body is ``n`` predictions on one
stream, answered in order. h2load counts every HTTP 200 as a success and never reads the
``grpc-status`` trailer, so :func:`verify_grpc` sends the very same bytes once through
grpc itself and checks the status and the answers; the suite also compares the node's own
counters around each h2load run. h2load's percentiles come from its per-request log
(``--log-file``, microseconds) through the same HDR histogram the harness uses.

Both tools run one thread (``-t1``), pinned with taskset to the generator's cores. Their CPU
time is read from the kernel (children's rusage) and taken against wall time: a tool busy
90% of its core is reported as saturated, as the harness's own self-check does.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from loadtest.result import SATURATED
from loadtest.stats import Latency
from node._proto.apinode.v1 import apinode_pb2 as pb

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(slots=True)
class ToolRun:
    """One run of an external generator: what it counted, and how busy it was."""

    tool: str
    command: str
    ok: int = 0
    throughput: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: dict[str, int] = field(default_factory=dict)
    cpu: float = 0.0
    failed: str | None = None  # the tool did not run or its output could not be read

    @property
    def saturated(self) -> bool:
        return self.cpu >= SATURATED

    def row(self, per_request: int = 1) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "throughput": round(self.throughput * per_request, 1),
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "ok": self.ok,
            "errors": self.errors,
            "generator_cpu": round(self.cpu, 3),
            "generator_saturated": self.saturated,
            "failed": self.failed,
            "command": self.command,
        }


def available(tool: str) -> bool:
    return shutil.which(tool) is not None


def _timed(cmd: list[str], timeout: float) -> tuple[str, float]:
    """Runs ``cmd``; returns its output and its CPU time over its wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out.stdout + out.stderr, cpu / wall if wall > 0 else 0.0


def _pin(cpus: Sequence[int] | None) -> list[str]:
    if not cpus or not available("taskset"):
        return []
    return ["taskset", "-c", ",".join(str(c) for c in cpus)]


def wrk(
    url: str,
    body: bytes,
    *,
    concurrency: int,
    duration: float,
    work: Path,
    cpus: Sequence[int] | None = None,
) -> ToolRun:
    """wrk -t1 -c``concurrency`` POSTing ``body`` as JSON to ``url`` for ``duration`` s."""
    script = work / "wrk-post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
    )
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--latency", "-s", str(script), url]
    run = ToolRun("wrk", " ".join([*cmd[:-3], "-s", "post.lua", url]))
    if not available("wrk"):
        run.failed = "wrk not installed"
        return run
    out, run.cpu = _timed(_pin(cpus) + cmd, duration + 60)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not rps or not total:
        run.failed = "cannot read wrk's output: " + out.strip()[-300:]
        return run
    for pct, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M):
        setattr(run, f"p{pct}_ms", float(value) * _UNIT_MS[unit])
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        run.errors["non-2xx"] = int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        for name, n in zip(("connect", "read", "write", "timeout"), sock.groups(), strict=True):
            if int(n):
                run.errors[f"socket {name}"] = int(n)
    run.ok = int(total.group(1)) - run.errors.get("non-2xx", 0)
    run.throughput = float(rps.group(1)) * run.ok / max(1, int(total.group(1)))
    return run


def grpc_frame(messages: Sequence[bytes]) -> bytes:
    """Messages as one gRPC request body: uncompressed, length-prefixed."""
    return b"".join(b"\x00" + len(m).to_bytes(4, "big") + m for m in messages)


def h2load(
    address: str,
    method: str,
    body: bytes,
    *,
    clients: int,
    streams: int,
    duration: float,
    warmup: float,
    work: Path,
    cpus: Sequence[int] | None = None,
) -> ToolRun:
    """h2load POSTing the framed ``body`` to gRPC ``method`` (a path) at ``address``.

    ``clients`` connections x ``streams`` concurrent streams each; ``throughput`` is calls
    (HTTP/2 streams) per second over the measured ``duration``, after ``warmup``.
    """
    data, log = work / "h2load-body.bin", work / "h2load.log"
    data.write_bytes(body)
    log.unlink(missing_ok=True)
    cmd = [
        "h2load",
        "-t1",
        f"-c{clients}",
        f"-m{streams}",
        f"-D{max(1, round(duration * 1000))}ms",
        f"--warm-up-time={max(0, round(warmup * 1000))}ms",
        "-d",
        str(data),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        f"--log-file={log}",
        f"http://{address}{method}",
    ]
    shown = [*cmd[:6], "-d", "body.bin", "-H", "'content-type: application/grpc'", "-H", "'te: trailers'", cmd[-1]]
    run = ToolRun("h2load", " ".join(shown))
    if not available("h2load"):
        run.failed = "h2load not installed"
        return run
    out, run.cpu = _timed(_pin(cpus) + cmd, duration + warmup + 60)
    rps = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
    reqs = re.search(
        r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out
    )
    if not rps or not reqs:
        run.failed = "cannot read h2load's output: " + out.strip()[-300:]
        return run
    total, _, succeeded, failed, errored = (int(x) for x in reqs.groups())
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if codes:
        for name, n in zip(("3xx", "4xx", "5xx"), codes.groups()[1:], strict=True):
            if int(n):
                run.errors[f"http {name}"] = int(n)
    if failed:
        run.errors["failed"] = failed
    if errored:
        run.errors["errored"] = errored
    run.ok = succeeded
    run.throughput = float(rps.group(1)) * succeeded / max(1, total)
    lat = Latency()
    if log.exists():
        for line in log.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1].startswith("2"):
                lat.record(int(parts[2]) / 1e6)
    run.p50_ms, run.p99_ms = lat.percentile_ms(50), lat.percentile_ms(99)
    return run


def verify_grpc(address: str, method: str, messages: Sequence[bytes], timeout: float = 10.0) -> str | None:
    """Sends ``messages`` (serialized requests) to ``method`` through grpc itself.

    One message: a unary call, which must end with status OK and a result. Several: one
    PredictStream call, which must answer each, in order, without ``error``. Returns None
    when the body h2load is about to send is sound, else what is wrong with it.
    """
    with grpc.insecure_channel(address) as channel:
        try:
            if method.endswith("/PredictStream"):
                call = channel.stream_stream(
                    method, request_serializer=None, response_deserializer=pb.PredictResponse.FromString
                )
                answers = list(call(iter(messages), timeout=timeout))
                if len(answers) != len(messages):
                    return f"{len(messages)} messages streamed, {len(answers)} answers"
                bad = [a for a in answers if a.HasField("error")]
                if bad:
                    return f"{len(bad)} answers with an error, e.g. {bad[0].error.code}: {bad[0].error.message}"
                return None
            unary = channel.unary_unary(
                method, request_serializer=None, response_deserializer=pb.PredictResponse.FromString
            )
            answer = unary(messages[0], timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            return f"grpc status {code.name if code else 'UNKNOWN'}: {exc}"
        return None if answer.HasField("result") else "answer without a result"
