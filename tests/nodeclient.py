"""What a test sees of a running node, wherever it runs: addresses, the admin key, status.

`tests.nodeproc.NodeProc` (a node in a subprocess: for kill -9, signals, the CLI, the node's
own output) and `tests.inproc.InProcNode` (a node on an event loop in a thread of the test
process) share this surface, so a test moves from one to the other by its import.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import requests


class _WithMetadata(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds fixed metadata (the admin key) to every call."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=(*(details.metadata or ()), *self.metadata))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class NodeClient:
    """Needs `data_dir`, `http_port`, `grpc_port`, `log()`, `given_admin_key()` and `running()`."""

    data_dir: Path
    http_port: int
    grpc_port: int

    def log(self) -> str:
        raise NotImplementedError

    def given_admin_key(self) -> str | None:
        """The first admin key the node was started with, if any."""
        raise NotImplementedError

    def running(self) -> bool:
        """Whether the node still runs (it has not died, nor been stopped)."""
        raise NotImplementedError

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def status(self) -> dict[str, Any]:
        r = requests.get(self.http + "/admin/status", headers=self.admin_headers(), timeout=10)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def pool(self, service: str, endpoint: str, generation: str | None = None) -> dict[str, Any]:
        svc = self.status()["services"][service]
        return svc["generations"][generation or svc["active"]][endpoint]  # type: ignore[no-any-return]

    def admin_key(self) -> str | None:
        """This node's admin key: the first it was given (`--admin-key`), else the first
        of DATA_DIR/admin-keys.txt (where a node given none generates one); None for a node
        without keys (`--admin-open-loopback`)."""
        given = self.given_admin_key()
        if given is not None:
            return given
        path = self.data_dir / "admin-keys.txt"
        lines = path.read_text().splitlines() if path.exists() else []
        return next((k.strip() for k in lines if k.strip() and not k.startswith("#")), None)

    def admin_headers(self) -> dict[str, str]:
        """HTTP headers that authorise an admin call (`/admin/...`)."""
        key = self.admin_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def admin_metadata(self) -> tuple[tuple[str, str], ...]:
        """gRPC metadata that authorises an Admin call."""
        key = self.admin_key()
        return (("authorization", f"Bearer {key}"),) if key else ()

    def admin_channel(self, channel: grpc.Channel) -> grpc.Channel:
        """`channel`, with this node's admin key on every call it makes."""
        return grpc.intercept_channel(channel, _WithMetadata(self.admin_metadata()))

    def admin_args(self) -> list[str]:
        """Arguments that give `apinode deploy` this node's admin key."""
        key = self.admin_key()
        return [f"--admin-key={key}"] if key else []

    def url(self, service: str, endpoint: str, verb: str) -> str:
        return f"{self.http}/public/api/v1/{service}/{endpoint}/{verb}"

    def wait_for(self, predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; node log:\n{self.log()[-3000:]}")


RUNNING: dict[str, NodeClient] = {}  # gRPC address -> the node this process started there


def node_at(target: str) -> NodeClient | None:
    """The node this process started at a gRPC address, if it still runs (its port is its
    own while it runs: the OS gives a bound port to no one else)."""
    node = RUNNING.get(target)
    return node if node is not None and node.running() else None
