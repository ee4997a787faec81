from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeyInfo(_message.Message):
    __slots__ = ("id", "label", "description", "created_by", "created_on", "source", "key", "service")
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_ON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    id: str
    label: str
    description: str
    created_by: str
    created_on: str
    source: str
    key: str
    service: str
    def __init__(self, id: _Optional[str] = ..., label: _Optional[str] = ..., description: _Optional[str] = ..., created_by: _Optional[str] = ..., created_on: _Optional[str] = ..., source: _Optional[str] = ..., key: _Optional[str] = ..., service: _Optional[str] = ...) -> None: ...

class KeyList(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[KeyInfo]
    def __init__(self, keys: _Optional[_Iterable[_Union[KeyInfo, _Mapping]]] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class AddKeyRequest(_message.Message):
    __slots__ = ("service", "id", "label", "description", "created_by")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    service: str
    id: str
    label: str
    description: str
    created_by: str
    def __init__(self, service: _Optional[str] = ..., id: _Optional[str] = ..., label: _Optional[str] = ..., description: _Optional[str] = ..., created_by: _Optional[str] = ...) -> None: ...

class DeleteKeyRequest(_message.Message):
    __slots__ = ("service", "id", "key")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    service: str
    id: str
    key: str
    def __init__(self, service: _Optional[str] = ..., id: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class PushHeader(_message.Message):
    __slots__ = ("size", "sha256", "filename", "activate", "mapping")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    ACTIVATE_FIELD_NUMBER: _ClassVar[int]
    MAPPING_FIELD_NUMBER: _ClassVar[int]
    size: int
    sha256: str
    filename: str
    activate: bool
    mapping: Mapping
    def __init__(self, size: _Optional[int] = ..., sha256: _Optional[str] = ..., filename: _Optional[str] = ..., activate: _Optional[bool] = ..., mapping: _Optional[_Union[Mapping, _Mapping]] = ...) -> None: ...

class PushChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: PushHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[PushHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class TestQueryResult(_message.Message):
    __slots__ = ("endpoint", "index", "ok", "error", "latency_ms", "response_json")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_JSON_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    index: int
    ok: bool
    error: str
    latency_ms: float
    response_json: str
    def __init__(self, endpoint: _Optional[str] = ..., index: _Optional[int] = ..., ok: _Optional[bool] = ..., error: _Optional[str] = ..., latency_ms: _Optional[float] = ..., response_json: _Optional[str] = ...) -> None: ...

class PushResult(_message.Message):
    __slots__ = ("service", "generation", "new", "activated", "tests", "state")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    NEW_FIELD_NUMBER: _ClassVar[int]
    ACTIVATED_FIELD_NUMBER: _ClassVar[int]
    TESTS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    service: str
    generation: str
    new: bool
    activated: bool
    tests: _containers.RepeatedCompositeFieldContainer[TestQueryResult]
    state: ServiceState
    def __init__(self, service: _Optional[str] = ..., generation: _Optional[str] = ..., new: _Optional[bool] = ..., activated: _Optional[bool] = ..., tests: _Optional[_Iterable[_Union[TestQueryResult, _Mapping]]] = ..., state: _Optional[_Union[ServiceState, _Mapping]] = ...) -> None: ...

class MappingEntry(_message.Message):
    __slots__ = ("generation", "proba")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    PROBA_FIELD_NUMBER: _ClassVar[int]
    generation: str
    proba: float
    def __init__(self, generation: _Optional[str] = ..., proba: _Optional[float] = ...) -> None: ...

class Mapping(_message.Message):
    __slots__ = ("mode", "entries")
    MODE_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    mode: str
    entries: _containers.RepeatedCompositeFieldContainer[MappingEntry]
    def __init__(self, mode: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[MappingEntry, _Mapping]]] = ...) -> None: ...

class GenerationInfo(_message.Message):
    __slots__ = ("generation", "loaded", "active", "share", "sha256", "stored_at", "endpoints")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    STORED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    generation: str
    loaded: bool
    active: bool
    share: float
    sha256: str
    stored_at: str
    endpoints: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, generation: _Optional[str] = ..., loaded: _Optional[bool] = ..., active: _Optional[bool] = ..., share: _Optional[float] = ..., sha256: _Optional[str] = ..., stored_at: _Optional[str] = ..., endpoints: _Optional[_Iterable[str]] = ...) -> None: ...

class ServiceState(_message.Message):
    __slots__ = ("service", "enabled", "mapping", "generations")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    MAPPING_FIELD_NUMBER: _ClassVar[int]
    GENERATIONS_FIELD_NUMBER: _ClassVar[int]
    service: str
    enabled: bool
    mapping: Mapping
    generations: _containers.RepeatedCompositeFieldContainer[GenerationInfo]
    def __init__(self, service: _Optional[str] = ..., enabled: _Optional[bool] = ..., mapping: _Optional[_Union[Mapping, _Mapping]] = ..., generations: _Optional[_Iterable[_Union[GenerationInfo, _Mapping]]] = ...) -> None: ...

class ListServicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListServicesResponse(_message.Message):
    __slots__ = ("services",)
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[ServiceState]
    def __init__(self, services: _Optional[_Iterable[_Union[ServiceState, _Mapping]]] = ...) -> None: ...

class ServiceRequest(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class GenerationRequest(_message.Message):
    __slots__ = ("service", "generation")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    service: str
    generation: str
    def __init__(self, service: _Optional[str] = ..., generation: _Optional[str] = ...) -> None: ...

class SetMappingRequest(_message.Message):
    __slots__ = ("service", "mapping")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    MAPPING_FIELD_NUMBER: _ClassVar[int]
    service: str
    mapping: Mapping
    def __init__(self, service: _Optional[str] = ..., mapping: _Optional[_Union[Mapping, _Mapping]] = ...) -> None: ...

class DeleteServiceResponse(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class TuningRequest(_message.Message):
    __slots__ = ("service", "endpoint")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    service: str
    endpoint: str
    def __init__(self, service: _Optional[str] = ..., endpoint: _Optional[str] = ...) -> None: ...

class SetTuningRequest(_message.Message):
    __slots__ = ("service", "endpoint", "pool")
    class PoolEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    service: str
    endpoint: str
    pool: _containers.ScalarMap[str, int]
    def __init__(self, service: _Optional[str] = ..., endpoint: _Optional[str] = ..., pool: _Optional[_Mapping[str, int]] = ...) -> None: ...

class Tuning(_message.Message):
    __slots__ = ("service", "endpoint", "pool", "source")
    class PoolEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    service: str
    endpoint: str
    pool: _containers.ScalarMap[str, int]
    source: str
    def __init__(self, service: _Optional[str] = ..., endpoint: _Optional[str] = ..., pool: _Optional[_Mapping[str, int]] = ..., source: _Optional[str] = ...) -> None: ...

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
