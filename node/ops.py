"""The data plane's typed operations: what a transport hands :class:`~node.dataplane.DataPlane`
and what it gets back.

Each transport decodes its wire format into these values and encodes the results back
(`node.http.codec` for the Dataiku JSON, `node.grpc.convert` for protobuf, `node.oip` for
tensors); the core never sees a wire format. Timing keys, result fields and the query log
keep the Dataiku API's names (`Timing.as_dict`), since every wire and the log share them.

A few request fields hold the caller's value unchecked (`features`, `context`, the fields of
`Explanations`, `arguments`): the core checks them against the endpoint it resolved, so
that an unknown service is a 404 before a malformed body is a 400, on every transport.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final


class _Missing:
    """A field the caller did not send at all (which differs from sending null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls, over what: the API key checked, the peer logged, the protocol counted."""

    api_key: str | None = None
    peer: str | None = None
    protocol: str = "http"


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Which generation answers: a pinned one, or the mapping's pick (by hash of the key).
    Values are the caller's, checked by the registry (a forced generation must be a string)."""

    forced_generation: Any = None
    dispatch_key: Any = None

    def as_registry(self) -> dict[str, Any]:
        """The registry's form (:meth:`node.registry.Registry.resolve`)."""
        out: dict[str, Any] = {}
        if self.forced_generation is not None:
            out["forcedGeneration"] = self.forced_generation
        if self.dispatch_key is not None:
            out["dispatchKey"] = self.dispatch_key
        return out


@dataclass(frozen=True, slots=True)
class ApiContext:
    service_id: str
    endpoint_id: str
    service_generation: str


@dataclass(slots=True)
class Timing:
    """Stage durations in microseconds; unset stages are left out of `as_dict`."""

    pre_processing: float | None = None
    wait: float | None = None
    prediction: float | None = None
    post_processing: float | None = None
    total: float | None = None
    enrich: float | None = None
    lookup: float | None = None
    execution: float | None = None

    def as_dict(self) -> dict[str, float]:
        """The stages under the names every wire uses, in the Dataiku API's order."""
        out: dict[str, float] = {}
        for name, value in (
            ("preProcessing", self.pre_processing),
            ("wait", self.wait),
            ("prediction", self.prediction),
            ("postProcessing", self.post_processing),
            ("total", self.total),
            ("enrich", self.enrich),
            ("lookup", self.lookup),
            ("execution", self.execution),
        ):
            if value is not None:
                out[name] = value
        return out

    @property
    def compute(self) -> float:
        """The time user code or the model ran (µs), for the metrics."""
        return self.prediction if self.prediction is not None else self.execution or 0.0


# ---- predict ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Explanations:
    """What the caller asks of explanations (None: the endpoint's default). Values are the
    caller's, checked against the endpoint by :func:`node.explanations.job`."""

    enabled: Any = None
    method: Any = None
    n_explanations: Any = None
    n_monte_carlo_steps: Any = None


@dataclass(slots=True)
class Prediction:
    """One row's answer. An ignored row (enrichment found no key or no match) has only
    `ignore_reason` (and the enriched features, when asked)."""

    prediction: Any = None
    probas: dict[str, float] | None = None
    ignored: bool = False
    ignore_reason: str | None = None
    proba_percentile: int | None = None
    explanations: dict[str, float] | None = None
    explanation_method: str | None = None
    enriched_features: dict[str, Any] | None = None

    @classmethod
    def ignored_for(cls, reason: str) -> Prediction:
        return cls(ignored=True, ignore_reason=reason)

    def as_dict(self) -> dict[str, Any]:
        """The Dataiku API's result object (its JSON API and the query log)."""
        if self.ignored:
            out: dict[str, Any] = {"ignored": True, "ignoreReason": self.ignore_reason}
        else:
            out = {"prediction": self.prediction}
            if self.probas is not None:
                out["probas"] = self.probas
            out["ignored"] = False
            if self.proba_percentile is not None:
                out["probaPercentile"] = self.proba_percentile
            if self.explanations is not None:
                out["explanations"] = self.explanations
                out["explanationMethod"] = self.explanation_method
        if self.enriched_features is not None:
            out["enrichedFeatures"] = self.enriched_features
        return out


@dataclass(slots=True)
class PredictRequest:
    service: str
    endpoint: str
    features: Any = MISSING  # a mapping of feature name -> value, checked by the endpoint's codec
    context: Any = None  # free caller context, logged
    dispatch: Dispatch | None = None
    return_enriched: bool = False
    explanations: Explanations | None = None


@dataclass(slots=True)
class PredictItem:
    features: Any = MISSING
    context: Any = None


@dataclass(slots=True)
class PredictMultiRequest:
    service: str
    endpoint: str
    items: list[PredictItem] = field(default_factory=list)
    dispatch: Dispatch | None = None
    return_enriched: bool = False
    explanations: Explanations | None = None
    context: Any = None  # a context for the whole call (the Dataiku client sends one per item)


@dataclass(slots=True)
class PredictResult:
    prediction: Prediction
    timing: Timing
    context: ApiContext
    enriched: dict[str, Any] | None = None  # the features the model saw, when the endpoint enriches


@dataclass(slots=True)
class PredictMultiResult:
    predictions: list[Prediction]
    timing: Timing
    context: ApiContext
    enriched: list[Any] | None = None  # one per item, when the endpoint enriches


@dataclass(slots=True)
class Columns:
    """Rows given column by column (the Open Inference Protocol's tensors): `columns[name]`
    holds the `n` values of one input, a numpy array or a list."""

    columns: dict[str, Any]
    n: int


@dataclass(slots=True)
class PredictRowsRequest:
    """A predict-multi whose rows come as columns, for an endpoint already resolved (see
    :meth:`~node.dataplane.DataPlane.predict_rows`). `items` replaces `rows` when the
    endpoint enriches: enrichment works on one feature mapping per row."""

    service: str
    endpoint: str
    rows: Columns | None = None
    items: list[PredictItem] | None = None


# ---- lookup, run, query ----------------------------------------------------------------
@dataclass(slots=True)
class LookupRequest:
    service: str
    endpoint: str
    items: list[Any]  # each a mapping of key column -> value (MISSING: not sent)
    dispatch: Dispatch | None = None


@dataclass(slots=True)
class LookupRow:
    data: dict[str, Any]
    ignored: bool = False
    ignore_reason: str | None = None
    matches: int | None = None  # rows that matched, when several did and the first answered

    def as_dict(self) -> dict[str, Any]:
        """The Dataiku API's lookup result (its JSON API and the query log)."""
        out: dict[str, Any] = {"data": self.data}
        if self.ignored:
            out["ignored"] = True
            out["ignoreReason"] = self.ignore_reason
        if self.matches is not None:
            out["matches"] = self.matches
        return out


@dataclass(slots=True)
class LookupResult:
    results: list[LookupRow]
    timing: Timing
    context: ApiContext


@dataclass(slots=True)
class RunRequest:
    service: str
    endpoint: str
    arguments: dict[str, Any]
    dispatch: Dispatch | None = None


@dataclass(slots=True)
class RunResult:
    response: bytes  # the function's return value, as JSON serialised by the worker
    timing: Timing
    context: ApiContext


@dataclass(slots=True)
class QueryRequest:
    service: str
    endpoint: str
    parameters: dict[str, Any]
    dispatch: Dispatch | None = None
    dry_run: bool = False  # rolled back (the test queries of a deploy write nothing)


@dataclass(slots=True)
class QueryResult:
    """Rows (`columns`, `rows`) for a statement that returns some, else `updated_rows`."""

    timing: Timing
    context: ApiContext
    columns: list[str] | None = None
    rows: list[list[Any]] | None = None
    updated_rows: int | None = None


Request = PredictRequest | PredictMultiRequest | PredictRowsRequest | LookupRequest | RunRequest | QueryRequest
Result = PredictResult | PredictMultiResult | LookupResult | RunResult | QueryResult
