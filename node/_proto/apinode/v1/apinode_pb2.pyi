from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Value(_message.Message):
    __slots__ = ("number", "integer", "text", "flag", "null")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    NULL_FIELD_NUMBER: _ClassVar[int]
    number: float
    integer: int
    text: str
    flag: bool
    null: _struct_pb2.NullValue
    def __init__(self, number: _Optional[float] = ..., integer: _Optional[int] = ..., text: _Optional[str] = ..., flag: _Optional[bool] = ..., null: _Optional[_Union[_struct_pb2.NullValue, str]] = ...) -> None: ...

class Dispatch(_message.Message):
    __slots__ = ("forced_generation", "dispatch_key")
    FORCED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_KEY_FIELD_NUMBER: _ClassVar[int]
    forced_generation: str
    dispatch_key: str
    def __init__(self, forced_generation: _Optional[str] = ..., dispatch_key: _Optional[str] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("service", "endpoint", "features", "context", "dispatch", "request_id", "return_enriched", "explanations")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RETURN_ENRICHED_FIELD_NUMBER: _ClassVar[int]
    EXPLANATIONS_FIELD_NUMBER: _ClassVar[int]
    service: str
    endpoint: str
    features: _containers.MessageMap[str, Value]
    context: _struct_pb2.Struct
    dispatch: Dispatch
    request_id: str
    return_enriched: bool
    explanations: Explanations
    def __init__(self, service: _Optional[str] = ..., endpoint: _Optional[str] = ..., features: _Optional[_Mapping[str, Value]] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., dispatch: _Optional[_Union[Dispatch, _Mapping]] = ..., request_id: _Optional[str] = ..., return_enriched: _Optional[bool] = ..., explanations: _Optional[_Union[Explanations, _Mapping]] = ...) -> None: ...

class Explanations(_message.Message):
    __slots__ = ("enabled", "method", "n_explanations", "n_monte_carlo_steps")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    N_EXPLANATIONS_FIELD_NUMBER: _ClassVar[int]
    N_MONTE_CARLO_STEPS_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    method: str
    n_explanations: int
    n_monte_carlo_steps: int
    def __init__(self, enabled: _Optional[bool] = ..., method: _Optional[str] = ..., n_explanations: _Optional[int] = ..., n_monte_carlo_steps: _Optional[int] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("prediction", "probas", "ignored", "ignore_reason", "enriched_features", "explanations", "explanation_method", "proba_percentile")
    class ProbasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class EnrichedFeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    class ExplanationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    PROBAS_FIELD_NUMBER: _ClassVar[int]
    IGNORED_FIELD_NUMBER: _ClassVar[int]
    IGNORE_REASON_FIELD_NUMBER: _ClassVar[int]
    ENRICHED_FEATURES_FIELD_NUMBER: _ClassVar[int]
    EXPLANATIONS_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_METHOD_FIELD_NUMBER: _ClassVar[int]
    PROBA_PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    prediction: Value
    probas: _containers.ScalarMap[str, float]
    ignored: bool
    ignore_reason: str
    enriched_features: _containers.MessageMap[str, Value]
    explanations: _containers.ScalarMap[str, float]
    explanation_method: str
    proba_percentile: int
    def __init__(self, prediction: _Optional[_Union[Value, _Mapping]] = ..., probas: _Optional[_Mapping[str, float]] = ..., ignored: _Optional[bool] = ..., ignore_reason: _Optional[str] = ..., enriched_features: _Optional[_Mapping[str, Value]] = ..., explanations: _Optional[_Mapping[str, float]] = ..., explanation_method: _Optional[str] = ..., proba_percentile: _Optional[int] = ...) -> None: ...

class ApiContext(_message.Message):
    __slots__ = ("service_id", "endpoint_id", "service_generation")
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_GENERATION_FIELD_NUMBER: _ClassVar[int]
    service_id: str
    endpoint_id: str
    service_generation: str
    def __init__(self, service_id: _Optional[str] = ..., endpoint_id: _Optional[str] = ..., service_generation: _Optional[str] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "error_type", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    error_type: str
    message: str
    def __init__(self, code: _Optional[str] = ..., error_type: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("result", "timing", "api_context", "request_id", "error")
    class TimingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RESULT_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    API_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    result: Prediction
    timing: _containers.ScalarMap[str, float]
    api_context: ApiContext
    request_id: str
    error: Error
    def __init__(self, result: _Optional[_Union[Prediction, _Mapping]] = ..., timing: _Optional[_Mapping[str, float]] = ..., api_context: _Optional[_Union[ApiContext, _Mapping]] = ..., request_id: _Optional[str] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class PredictItem(_message.Message):
    __slots__ = ("features", "context")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    features: _containers.MessageMap[str, Value]
    context: _struct_pb2.Struct
    def __init__(self, features: _Optional[_Mapping[str, Value]] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class PredictMultiRequest(_message.Message):
    __slots__ = ("service", "endpoint", "items", "dispatch", "return_enriched", "explanations")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_FIELD_NUMBER: _ClassVar[int]
    RETURN_ENRICHED_FIELD_NUMBER: _ClassVar[int]
    EXPLANATIONS_FIELD_NUMBER: _ClassVar[int]
    service: str
    endpoint: str
    items: _containers.RepeatedCompositeFieldContainer[PredictItem]
    dispatch: Dispatch
    return_enriched: bool
    explanations: Explanations
    def __init__(self, service: _Optional[str] = ..., endpoint: _Optional[str] = ..., items: _Optional[_Iterable[_Union[PredictItem, _Mapping]]] = ..., dispatch: _Optional[_Union[Dispatch, _Mapping]] = ..., return_enriched: _Optional[bool] = ..., explanations: _Optional[_Union[Explanations, _Mapping]] = ...) -> None: ...

class PredictMultiResponse(_message.Message):
    __slots__ = ("results", "timing", "api_context")
    class TimingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    API_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Prediction]
    timing: _containers.ScalarMap[str, float]
    api_context: ApiContext
    def __init__(self, results: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., timing: _Optional[_Mapping[str, float]] = ..., api_context: _Optional[_Union[ApiContext, _Mapping]] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("service", "endpoint", "arguments", "dispatch")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_FIELD_NUMBER: _ClassVar[int]
    service: str
    endpoint: str
    arguments: _struct_pb2.Struct
    dispatch: Dispatch
    def __init__(self, service: _Optional[str] = ..., endpoint: _Optional[str] = ..., arguments: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., dispatch: _Optional[_Union[Dispatch, _Mapping]] = ...) -> None: ...

class RunResponse(_message.Message):
    __slots__ = ("response", "timing", "api_context")
    class TimingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    API_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    response: _struct_pb2.Value
    timing: _containers.ScalarMap[str, float]
    api_context: ApiContext
    def __init__(self, response: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., timing: _Optional[_Mapping[str, float]] = ..., api_context: _Optional[_Union[ApiContext, _Mapping]] = ...) -> None: ...

class LookupItem(_message.Message):
    __slots__ = ("data",)
    class DataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: _containers.MessageMap[str, Value]
    def __init__(self, data: _Optional[_Mapping[str, Value]] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("service", "endpoint", "items", "dispatch")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_FIELD_NUMBER: _ClassVar[int]
    service: str
    endpoint: str
    items: _containers.RepeatedCompositeFieldContainer[LookupItem]
    dispatch: Dispatch
    def __init__(self, service: _Optional[str] = ..., endpoint: _Optional[str] = ..., items: _Optional[_Iterable[_Union[LookupItem, _Mapping]]] = ..., dispatch: _Optional[_Union[Dispatch, _Mapping]] = ...) -> None: ...

class LookupResult(_message.Message):
    __slots__ = ("data", "ignored", "ignore_reason", "matches")
    class DataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    DATA_FIELD_NUMBER: _ClassVar[int]
    IGNORED_FIELD_NUMBER: _ClassVar[int]
    IGNORE_REASON_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    data: _containers.MessageMap[str, Value]
    ignored: bool
    ignore_reason: str
    matches: int
    def __init__(self, data: _Optional[_Mapping[str, Value]] = ..., ignored: _Optional[bool] = ..., ignore_reason: _Optional[str] = ..., matches: _Optional[int] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("results", "timing", "api_context")
    class TimingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    API_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[LookupResult]
    timing: _containers.ScalarMap[str, float]
    api_context: ApiContext
    def __init__(self, results: _Optional[_Iterable[_Union[LookupResult, _Mapping]]] = ..., timing: _Optional[_Mapping[str, float]] = ..., api_context: _Optional[_Union[ApiContext, _Mapping]] = ...) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("service", "endpoint", "parameters", "dispatch")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_FIELD_NUMBER: _ClassVar[int]
    service: str
    endpoint: str
    parameters: _containers.MessageMap[str, Value]
    dispatch: Dispatch
    def __init__(self, service: _Optional[str] = ..., endpoint: _Optional[str] = ..., parameters: _Optional[_Mapping[str, Value]] = ..., dispatch: _Optional[_Union[Dispatch, _Mapping]] = ...) -> None: ...

class Row(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("columns", "rows", "updated_rows", "timing", "api_context")
    class TimingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_ROWS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    API_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedScalarFieldContainer[str]
    rows: _containers.RepeatedCompositeFieldContainer[Row]
    updated_rows: int
    timing: _containers.ScalarMap[str, float]
    api_context: ApiContext
    def __init__(self, columns: _Optional[_Iterable[str]] = ..., rows: _Optional[_Iterable[_Union[Row, _Mapping]]] = ..., updated_rows: _Optional[int] = ..., timing: _Optional[_Mapping[str, float]] = ..., api_context: _Optional[_Union[ApiContext, _Mapping]] = ...) -> None: ...
