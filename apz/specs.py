"""The manifest, typed: what :func:`apz.manifest.parse_manifest` builds from `manifest.json`.

Every value here was validated when the manifest was read, so a reader (the registry, a
lookup, a worker) trusts its types and never looks at the JSON again. The classes are
frozen dataclasses of plain values: they pickle, so a worker receives its endpoint's spec
as it is (:class:`node.worker.spec.WorkerSpec`).

One :class:`EndpointSpec` per endpoint; what only some kinds have is a part of its own,
None (or empty) for the other kinds:

    prediction          task, features, classes, model, explanations, proba_percentiles, positive, enrich
    custom-prediction   code, folders, features (optional), task, classes, enrich
    function            code, folders
    lookup              lookup
    sql                 sql
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from apz.sqlparams import Statement


@dataclass(frozen=True, slots=True)
class FileEntry:
    sha256: str  # 64 hex digits
    size: int  # bytes


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    name: str
    type: str  # one of COLUMN_TYPES


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """A bundled dataset: a csv or parquet file of the package."""

    name: str
    path: str
    format: str  # csv | parquet
    schema: tuple[ColumnSpec, ...] | None  # the column types the node reads the file with (None: inferred)
    columns: tuple[str, ...] | None  # the column names (the schema's, else `columns`; None: unknown)

    def column_types(self) -> dict[str, str]:
        return {c.name: c.type for c in self.schema or ()}


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    name: str
    type: str  # float | int | string | bool: what callers send
    onnx_type: str  # float | double | int64 | string | bool: the ONNX input's element type ("none": no model)
    nullable: bool  # null is a missing value the model imputes


@dataclass(frozen=True, slots=True)
class ModelSpec:
    path: str
    # "columns": one ONNX input [N,1] per feature, named like it;
    # "matrix": one input `input_name` [N, n_features] of `onnx_type` of the first feature.
    input_mode: str
    input_name: str
    label_output: str | None
    proba_output: str | None
    value_output: str | None


@dataclass(frozen=True, slots=True)
class ExplanationSpec:
    """A prediction endpoint's explanation settings (service.yaml `explanations:`)."""

    enabled: bool
    by_default: bool
    method: str  # SHAPLEY | ICE
    n_explanations: int
    mc_steps: int
    max_mc_steps: int
    background: str | None  # the package file of sample rows explained against (None: no sample)


@dataclass(frozen=True, slots=True)
class EnrichmentSpec:
    """One `enrich:` entry: features completed from a bundled dataset or, through the
    node's SQL connection `connection`, a database table."""

    keys: dict[str, str]  # source column -> the request feature holding the key
    columns: dict[str, str]  # source column -> the feature it becomes
    dataset: str | None = None
    table: str | None = None  # [schema.]name
    connection: str | None = None
    on_missing_key: str = "fail"
    on_no_match: str = "ignore"
    on_multiple: str = "ignore"
    override: bool = False  # looked-up values replace values the caller sent

    @property
    def source(self) -> str:
        """For messages: dataset 'x' or table 'y'."""
        return f"dataset {self.dataset!r}" if self.dataset is not None else f"table {self.table!r}"


@dataclass(frozen=True, slots=True)
class LookupSpec:
    dataset: str
    keys: tuple[str, ...]
    columns: tuple[str, ...] | None  # None: every column of the dataset
    on_no_match: str = "null"
    on_multiple: str = "first"


@dataclass(frozen=True, slots=True)
class SqlSpec:
    """Statements with `:name` parameters, parsed once (:mod:`apz.sqlparams`), on the
    package's SQLite file `database` or the node's connection `connection` (one of them)."""

    statements: tuple[Statement, ...]
    database: str | None = None
    connection: str | None = None

    @property
    def parameters(self) -> list[str]:
        """Every parameter the statements name, in order of first use."""
        return list(dict.fromkeys(n for s in self.statements for n in s.names))


@dataclass(frozen=True, slots=True)
class CodeSpec:
    path: str  # the .py file, under `root`
    root: str  # the folder on sys.path: the module is named by its path under it
    name: str  # the function (function endpoints) or class (custom-prediction) it names


@dataclass(frozen=True, slots=True)
class ApiKeySpec:
    id: str  # "" when the package names none
    sha256: str  # of the key: a package never holds a key itself


@dataclass(frozen=True, slots=True)
class QueryLogSpec:
    """How a service's queries go to the node's query log."""

    enabled: bool = True
    sample_rate: float = 1.0
    exclude: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    id: str
    type: str
    task: str | None = None
    features: tuple[FeatureSpec, ...] = ()
    classes: tuple[Any, ...] | None = None
    model: ModelSpec | None = None
    test_queries: str | None = None
    # pool settings of service.yaml: the node's pool settings (node.supervisor.settings)
    # validate and merge them with its own overrides
    pool: dict[str, Any] = field(default_factory=dict)
    # prediction: the explanation settings (None: a package from before explanations)
    explanations: ExplanationSpec | None = None
    # binary classifier: sorted positive-class probabilities over the sample rows
    proba_percentiles: tuple[float, ...] | None = None
    # binary: the index in `classes` of the class probaPercentile and explanations are about
    positive: int = 1
    enrich: tuple[EnrichmentSpec, ...] = ()
    code: CodeSpec | None = None
    folders: tuple[str, ...] = ()  # package paths of managed folders
    lookup: LookupSpec | None = None
    sql: SqlSpec | None = None

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


@dataclass(frozen=True, slots=True)
class Manifest:
    service: str
    version: str
    endpoints: dict[str, EndpointSpec]
    files: dict[str, FileEntry]
    datasets: dict[str, DatasetSpec] = field(default_factory=dict)
    api_keys: tuple[ApiKeySpec, ...] = ()  # empty: the package declares none (the service is public)
    query_log: QueryLogSpec | None = None  # None: the node's default policy
