"""The deployer's errors and the exit codes a CI pipeline relies on.

    DeployError            exit 1: an operation failed (the node refused, a test query
    |                              failed, a rollout stopped)
    +-- UsageError         exit 2: bad arguments, unreadable or invalid files
    +-- Unreachable        exit 3: no node answered at that address

`from_rpc_error` maps a `grpc.RpcError` once, into one of these with a single readable line
that names the node and carries the node's own details.
"""

from __future__ import annotations

import re

import grpc

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class DeployError(Exception):
    """An operation failed: the message is one line for stderr."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code  # the gRPC status name when the node answered with one


class UsageError(DeployError):
    exit_code = EXIT_USAGE


class Unreachable(DeployError):
    exit_code = EXIT_UNREACHABLE


_KEY_HINT = (
    "check --admin-key or $APINODE_ADMIN_KEY; a node on this machine keeps its key in "
    "DATA_DIR/admin-keys.txt (give --data-dir)"
)
_HINTS = {
    grpc.StatusCode.UNAUTHENTICATED: _KEY_HINT,
    grpc.StatusCode.PERMISSION_DENIED: _KEY_HINT,
    grpc.StatusCode.UNIMPLEMENTED: "is this an apinode node of the same version?",
}


# UNAVAILABLE is both "no connection" (grpc core) and a node's own 503s (not ready, queue
# timeout): only the transport's wording means the node itself could not be reached.
_TRANSPORT = re.compile(
    r"failed to connect|connection refused|socket closed|connection reset|broken pipe"
    r"|connections to all backends failing|name resolution|dns resolution|goaway"
    r"|endpoint read failed|no route to host",
    re.IGNORECASE,
)


def from_rpc_error(exc: grpc.RpcError, target: str, what: str) -> DeployError:
    """One readable error for a failed call `what` to the node at `target`."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
    name = code.name if code is not None else "UNKNOWN"
    if code == grpc.StatusCode.UNAVAILABLE and _TRANSPORT.search(details):
        return Unreachable(f"node {target} unreachable ({what}): {details}", code=name)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeployError(f"node {target} did not answer {what} in time ({details})", code=name)
    hint = _HINTS.get(code) if code is not None else None
    suffix = f" ({hint})" if hint else ""
    return DeployError(f"node {target} refused {what}: {name}: {details}{suffix}", code=name)
