from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("ready", "endpoints", "json")
    READY_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    endpoints: _containers.RepeatedCompositeFieldContainer[EndpointStatus]
    json: str
    def __init__(self, ready: _Optional[bool] = ..., endpoints: _Optional[_Iterable[_Union[EndpointStatus, _Mapping]]] = ..., json: _Optional[str] = ...) -> None: ...

class EndpointStatus(_message.Message):
    __slots__ = ("service", "generation", "endpoint", "type", "ready", "not_ready_reason", "workers_busy", "workers_idle", "workers_starting", "queue_depth", "served", "rejected", "timed_out", "crashed", "restarts")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    NOT_READY_REASON_FIELD_NUMBER: _ClassVar[int]
    WORKERS_BUSY_FIELD_NUMBER: _ClassVar[int]
    WORKERS_IDLE_FIELD_NUMBER: _ClassVar[int]
    WORKERS_STARTING_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    SERVED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    CRASHED_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    service: str
    generation: str
    endpoint: str
    type: str
    ready: bool
    not_ready_reason: str
    workers_busy: int
    workers_idle: int
    workers_starting: int
    queue_depth: int
    served: int
    rejected: int
    timed_out: int
    crashed: int
    restarts: int
    def __init__(self, service: _Optional[str] = ..., generation: _Optional[str] = ..., endpoint: _Optional[str] = ..., type: _Optional[str] = ..., ready: _Optional[bool] = ..., not_ready_reason: _Optional[str] = ..., workers_busy: _Optional[int] = ..., workers_idle: _Optional[int] = ..., workers_starting: _Optional[int] = ..., queue_depth: _Optional[int] = ..., served: _Optional[int] = ..., rejected: _Optional[int] = ..., timed_out: _Optional[int] = ..., crashed: _Optional[int] = ..., restarts: _Optional[int] = ...) -> None: ...
