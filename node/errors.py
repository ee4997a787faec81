"""apinode's error hierarchy, mapped once to HTTP status, gRPC status and `errorType`.

Every failure a caller can see is an :class:`ApiNodeError`. Transports never decide a
status themselves: the aiohttp middleware and the gRPC decorator read :data:`ERROR_TABLE`.

    ApiNodeError
    ├── BadRequest                 400  INVALID_ARGUMENT     (malformed body, missing feature, ...)
    │   ├── PayloadTooLarge        413  INVALID_ARGUMENT
    │   ├── DispatchKeyMissing     400  INVALID_ARGUMENT     (a hash mapping and no dispatch key)
    │   ├── NotSupported           400  UNIMPLEMENTED        (a Dataiku feature apinode lacks: explanations, forecast)
    │   ├── RequestTimeout         408  DEADLINE_EXCEEDED    (an HTTP body slower than --body-timeout)
    │   └── SqlBadValue            400  INVALID_ARGUMENT     (the database refused a caller's value)
    ├── Unauthorized               401  UNAUTHENTICATED
    ├── Forbidden                  403  PERMISSION_DENIED
    ├── NotFound                   404  NOT_FOUND            (service, endpoint, generation)
    │   └── NoLookupMatch          404  NOT_FOUND            (a lookup key matches no row; policy `fail`)
    ├── Conflict                   409  FAILED_PRECONDITION  (admin operations)
    │   └── MultipleLookupMatches  409  FAILED_PRECONDITION  (a lookup key matches several rows; policy `fail`)
    ├── Overloaded                 503  RESOURCE_EXHAUSTED   (queue full; Retry-After)
    ├── QueueTimeout               503  UNAVAILABLE          (waited `timeout` ms in the queue)
    ├── NotReady                   503  UNAVAILABLE          (no live worker, backing off)
    ├── ShuttingDown               503  UNAVAILABLE
    ├── WorkerCrashed              500  UNAVAILABLE          (the worker died with the request)
    ├── RunTimeout                 504  DEADLINE_EXCEEDED    (max_run_ms reached; worker replaced)
    ├── UserCodeError              500  INTERNAL             (an exception in the endpoint's code)
    ├── SqlError                   500  INTERNAL             (an SQL endpoint's statement failed)
    ├── DatabaseUnavailable        503  UNAVAILABLE          (an SQL endpoint's database cannot be reached)
    └── InternalError              500  INTERNAL
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc


class ApiNodeError(Exception):
    """Base of every error a caller can see. `message` is safe to show to the caller."""

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_json(self) -> dict[str, Any]:
        entry = kind_of(self)
        return {
            "errorType": entry.error_type,
            "message": self.message,
            "detailedMessage": self.detail or self.message,
        }


class BadRequest(ApiNodeError):
    """The request itself is wrong; retrying it unchanged cannot succeed."""


class PayloadTooLarge(BadRequest):
    pass


class DispatchKeyMissing(BadRequest):
    """A service dispatches by hash and the request has no dispatch key. `how` says where
    the caller puts it: it differs by verb and transport, which the data plane knows."""

    def __init__(self, service: str, how: str = "a dispatch key") -> None:
        super().__init__(f"service {service!r} dispatches by hash: the request needs {how}")
        self.service = service


class NotSupported(BadRequest):
    """The caller asks for a feature of the Dataiku API node that apinode does not have
    (explanations, forecasts, effects): said plainly rather than silently left out."""


class RequestTimeout(BadRequest):
    """The client did not send its request (head or body) in time; the connection closes."""


class SqlBadValue(BadRequest):
    """The database refused a value of the caller: not a number for an integer column, a
    duplicate key (SQLSTATE classes 22 and 23)."""


class Unauthorized(ApiNodeError):
    pass


class Forbidden(ApiNodeError):
    pass


class NotFound(ApiNodeError):
    pass


class Conflict(ApiNodeError):
    pass


class NoLookupMatch(NotFound):
    pass


class MultipleLookupMatches(Conflict):
    pass


class Overloaded(ApiNodeError):
    """The endpoint's queue is full. `retry_after` is a hint in seconds."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueTimeout(ApiNodeError):
    pass


class NotReady(ApiNodeError):
    pass


class ShuttingDown(ApiNodeError):
    pass


class WorkerCrashed(ApiNodeError):
    pass


class RunTimeout(ApiNodeError):
    pass


class UserCodeError(ApiNodeError):
    pass


class SqlError(ApiNodeError):
    """An SQL endpoint's statement failed in the database for a reason of its own (syntax,
    unknown table, permission): the service must be fixed, not the request."""


class DatabaseUnavailable(ApiNodeError):
    """An SQL endpoint's database cannot be reached (even after reconnecting once)."""


class InternalError(ApiNodeError):
    pass


@dataclass(frozen=True, slots=True)
class ErrorKind:
    http_status: int
    grpc_code: grpc.StatusCode
    error_type: str


ERROR_TABLE: dict[type[ApiNodeError], ErrorKind] = {
    ApiNodeError: ErrorKind(500, grpc.StatusCode.INTERNAL, "INTERNAL_ERROR"),
    BadRequest: ErrorKind(400, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUEST"),
    PayloadTooLarge: ErrorKind(413, grpc.StatusCode.INVALID_ARGUMENT, "PAYLOAD_TOO_LARGE"),
    NotSupported: ErrorKind(400, grpc.StatusCode.UNIMPLEMENTED, "NOT_SUPPORTED"),
    RequestTimeout: ErrorKind(408, grpc.StatusCode.DEADLINE_EXCEEDED, "REQUEST_TIMEOUT"),
    Unauthorized: ErrorKind(401, grpc.StatusCode.UNAUTHENTICATED, "UNAUTHORIZED"),
    Forbidden: ErrorKind(403, grpc.StatusCode.PERMISSION_DENIED, "FORBIDDEN"),
    NotFound: ErrorKind(404, grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
    Conflict: ErrorKind(409, grpc.StatusCode.FAILED_PRECONDITION, "CONFLICT"),
    NoLookupMatch: ErrorKind(404, grpc.StatusCode.NOT_FOUND, "NO_LOOKUP_MATCH"),
    MultipleLookupMatches: ErrorKind(409, grpc.StatusCode.FAILED_PRECONDITION, "MULTIPLE_LOOKUP_MATCHES"),
    Overloaded: ErrorKind(503, grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED"),
    QueueTimeout: ErrorKind(503, grpc.StatusCode.UNAVAILABLE, "QUEUE_TIMEOUT"),
    NotReady: ErrorKind(503, grpc.StatusCode.UNAVAILABLE, "NOT_READY"),
    ShuttingDown: ErrorKind(503, grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN"),
    WorkerCrashed: ErrorKind(500, grpc.StatusCode.UNAVAILABLE, "WORKER_CRASHED"),
    RunTimeout: ErrorKind(504, grpc.StatusCode.DEADLINE_EXCEEDED, "RUN_TIMEOUT"),
    UserCodeError: ErrorKind(500, grpc.StatusCode.INTERNAL, "USER_CODE_ERROR"),
    SqlBadValue: ErrorKind(400, grpc.StatusCode.INVALID_ARGUMENT, "SQL_BAD_VALUE"),
    SqlError: ErrorKind(500, grpc.StatusCode.INTERNAL, "SQL_ERROR"),
    DatabaseUnavailable: ErrorKind(503, grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE"),
    InternalError: ErrorKind(500, grpc.StatusCode.INTERNAL, "INTERNAL_ERROR"),
}


def kind_of(exc: ApiNodeError) -> ErrorKind:
    for cls in type(exc).__mro__:
        entry = ERROR_TABLE.get(cls)
        if entry is not None:
            return entry
    return ERROR_TABLE[ApiNodeError]


def retry_after(exc: ApiNodeError) -> str | None:
    """The Retry-After a refusal carries (whole seconds, at least 1), on every transport:
    HTTP's header, the Open Inference Protocol's, gRPC's trailing metadata."""
    if isinstance(exc, Overloaded):
        return str(max(1, round(exc.retry_after)))
    return None
