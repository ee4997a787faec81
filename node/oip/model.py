"""What a prediction endpoint looks like as an OIP model: its name, metadata and config,
how input tensors become the columns (or, for an endpoint that enriches, the items) of a
predict-multi call, and how results become outputs.

Every prediction endpoint of a service is the model `<service>.<endpoint>` (ids hold no
dot, so the name splits one way). Its inputs are either one tensor `input` of shape
`[N, features]` in the manifest's feature order, or one tensor per input, named like it,
of shape `[N]` or `[N, 1]`. The metadata advertises the matrix when every feature is
numeric and the endpoint does not enrich, and the per-feature form otherwise; both forms
are accepted either way. Values go through the endpoint's
:class:`~node.features.FeatureCodec` like any JSON feature, so every check of the Dataiku
API applies unchanged.

An endpoint with `enrich:` takes, in the per-feature form, the features its caller sends
(:func:`signature`): the enrichment keys (`customer_id`, typed like the key column of the
dataset; BYTES for a table, whose column types the node does not know), then the model's
features. The keys are required (unless the source's `on_missing_key` is `continue`); a
feature that enrichment fills, or that is nullable, is optional, and when a caller sends
it, its value or the looked-up one wins by the source's `override`, as in the Dataiku API.
The matrix form holds the model's features only, no key, so it is never enriched: the
endpoint's `on_missing_key` decides (`fail`: 400, `ignore`: an error, `continue`: the model
runs on the matrix as sent). OIP has no per-row status, so a row that enrichment ignores
fails the whole call (:func:`refuse_ignored`).

Outputs: a classifier answers `label` ([N]: BYTES, INT64 or BOOL like its classes) and
`probabilities` ([N, classes], FP64, in the order of `parameters.classes` of the HTTP
metadata); a regression answers `prediction` ([N], FP64).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from apz.specs import EndpointSpec
from node.errors import BadRequest, NotFound
from node.features import VECTOR_MIN
from node.lookup import Enricher
from node.oip.tensors import Tensor
from node.ops import Columns, Prediction, PredictItem

MATRIX_INPUT = "input"
PLATFORM = "onnxruntime_onnx"
_FEATURE_DATATYPE = {"float": "FP64", "int": "INT64", "string": "BYTES", "bool": "BOOL"}
# a key column's type in a bundled dataset -> the datatype of the key input
_KEY_DATATYPE = {**_FEATURE_DATATYPE, "date": "BYTES", "datetime": "BYTES"}
_SHOWN_IGNORED = 5  # rows named in the error of a call with ignored rows


def split_name(model: str) -> tuple[str, str]:
    service, dot, endpoint = model.partition(".")
    if not dot or not service or not endpoint or "." in endpoint:
        raise NotFound(f"unknown model {model!r}: models are named <service>.<endpoint>")
    return service, endpoint


def model_name(service: str, endpoint: str) -> str:
    return f"{service}.{endpoint}"


def uses_matrix(spec: EndpointSpec) -> bool:
    return all(f.type != "string" for f in spec.features)


def _matrix_datatype(spec: EndpointSpec) -> str:
    return "FP32" if spec.features and all(f.onnx_type == "float" for f in spec.features) else "FP64"


@dataclass(frozen=True, slots=True)
class Input:
    """One tensor of the per-feature form."""

    name: str
    datatype: str
    optional: bool


@dataclass(frozen=True, slots=True)
class Signature:
    """What a caller of the model sends, and the datatype of the label it gets back."""

    matrix: bool  # the metadata advertises the [N, features] matrix (numeric features, no enrichment)
    inputs: tuple[Input, ...]  # the per-feature form: enrichment keys first, then the model's features
    names: frozenset[str]  # of `inputs`
    required: tuple[str, ...] = ()  # the inputs that are not optional
    label: str = ""  # the datatype of a classifier's `label` output


def signature(spec: EndpointSpec, enricher: Enricher | None = None) -> Signature:
    features = set(spec.feature_names)
    keys: dict[str, str] = {}  # key inputs that are not model features -> datatype
    required: set[str] = set()  # keys without which the row is refused or ignored
    filled: set[str] = set()  # features that enrichment looks up
    for source in enricher.sources if enricher is not None else ():
        types = source.index.types if source.index is not None else ("",) * len(source.key_features)
        for feature, column_type in zip(source.key_features, types, strict=True):
            if feature not in features and feature not in keys:
                keys[feature] = _KEY_DATATYPE.get(column_type, "BYTES")
            if source.on_missing_key != "continue" and feature not in filled:  # an earlier source may fill it
                required.add(feature)
        filled.update(feature for _, feature in source.columns)
    inputs = [Input(k, datatype, k not in required) for k, datatype in keys.items()]
    inputs += [
        Input(f.name, _FEATURE_DATATYPE[f.type], f.name not in required and (f.nullable or f.name in filled))
        for f in spec.features
    ]
    return Signature(
        enricher is None and uses_matrix(spec),
        tuple(inputs),
        frozenset(i.name for i in inputs),
        tuple(i.name for i in inputs if not i.optional),
        _label_datatype(spec.classes or ()) if spec.task != "regression" else "",
    )


def inputs_of(spec: EndpointSpec, sig: Signature) -> list[dict[str, Any]]:
    if sig.matrix:
        return [{"name": MATRIX_INPUT, "datatype": _matrix_datatype(spec), "shape": [-1, len(spec.features)]}]
    return [{"name": i.name, "datatype": i.datatype, "shape": [-1, 1]} for i in sig.inputs]


def _label_datatype(classes: tuple[Any, ...]) -> str:
    if all(type(c) is bool for c in classes):
        return "BOOL"
    if all(type(c) is int for c in classes):
        return "INT64"
    if all(type(c) is int or type(c) is float for c in classes):
        return "FP64"
    return "BYTES"


def outputs_of(spec: EndpointSpec) -> list[dict[str, Any]]:
    if spec.task == "regression":
        return [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
    classes = spec.classes or ()
    return [
        {"name": "label", "datatype": _label_datatype(classes), "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(classes)]},
    ]


def metadata(name: str, versions: list[str], spec: EndpointSpec, sig: Signature) -> dict[str, Any]:
    params: dict[str, Any] = {"task": spec.task, "features": [f.name for f in spec.features]}
    if spec.task != "regression":
        params["classes"] = list(spec.classes or ())
    if not sig.matrix:
        params["optional_inputs"] = [i.name for i in sig.inputs if i.optional]
    return {
        "name": name,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": inputs_of(spec, sig),
        "outputs": outputs_of(spec),
        "parameters": params,
    }


def _config_type(datatype: str) -> str:
    return "TYPE_" + datatype.replace("BYTES", "STRING")


def config(name: str, spec: EndpointSpec, sig: Signature, max_batch: int, instances: int) -> dict[str, Any]:
    """Triton's model configuration (proto field names): batched, so dims leave out N."""

    def dims(shape: list[int]) -> list[int]:
        return shape[1:] or [1]

    optional = {i.name for i in sig.inputs if i.optional} if not sig.matrix else set()
    return {
        "name": name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "max_batch_size": max_batch,
        "input": [
            {
                "name": t["name"],
                "data_type": _config_type(t["datatype"]),
                "dims": dims(t["shape"]),
                **({"optional": True} if t["name"] in optional else {}),
            }
            for t in inputs_of(spec, sig)
        ],
        "output": [
            {"name": t["name"], "data_type": _config_type(t["datatype"]), "dims": dims(t["shape"])}
            for t in outputs_of(spec)
        ],
        "instance_group": [{"name": name, "kind": "KIND_CPU", "count": instances}],
        "dynamic_batching": {},
    }


def _values(t: Tensor) -> list[Any]:
    data = t.data
    if t.datatype != "BYTES":
        return data if isinstance(data, list) else data.tolist()
    try:
        return [v.decode() for v in data]
    except UnicodeDecodeError:
        raise BadRequest(f"tensor {t.name!r}: BYTES values must be UTF-8 text") from None


def columns(spec: EndpointSpec, sig: Signature, tensors: list[Tensor]) -> Columns:
    """The input tensors as columns of the model's inputs (numpy arrays or lists; BYTES
    decoded to lists of str), with no dict per row: the codec checks them whole."""
    if not tensors:
        raise BadRequest("the request has no input tensor")
    known = sig.names
    if len(tensors) == 1 and (tensors[0].name not in known or (len(known) == 1 and len(tensors[0].shape) == 2)):
        t = tensors[0]
        names = spec.feature_names
        width = len(names)
        if len(t.shape) != 2 or t.shape[1] != width:
            raise BadRequest(
                f"input {t.name!r} must have the shape [N, {width}] (the features {', '.join(names)}), got {t.shape}"
            )
        n, data = t.shape[0], t.data
        if isinstance(data, list) or n < VECTOR_MIN:  # a few rows: lists cost less than numpy views
            flat = _values(t)
            return Columns({name: flat[j::width] for j, name in enumerate(names)}, n)
        matrix = data.reshape(n, width)
        return Columns({name: matrix[:, j] for j, name in enumerate(names)}, n)
    given: dict[str, Any] = {}
    rows = None
    for t in tensors:
        name, shape = t.name, t.shape
        if name not in known:
            raise BadRequest(
                f"the model has no input {name!r}: send one tensor per input "
                f"({', '.join(i.name for i in sig.inputs)}) or one tensor {MATRIX_INPUT!r} [N, {len(spec.features)}]"
            )
        if name in given:
            raise BadRequest(f"input {name!r} is given twice")
        dims = len(shape)
        if not (dims == 1 or (dims == 2 and shape[1] == 1)):
            raise BadRequest(f"input {name!r} must have the shape [N] or [N, 1], got {shape}")
        if rows is None:
            rows = shape[0]
        elif shape[0] != rows:
            raise BadRequest(f"the inputs have different numbers of rows ({rows} and {shape[0]} for {name!r})")
        given[name] = t.data if t.datatype != "BYTES" else _values(t)
    missing = [name for name in sig.required if name not in given]
    if missing:
        raise BadRequest(
            f"input {missing[0]!r} is missing: the model needs "
            f"{', '.join(i.name for i in sig.inputs if not i.optional)}"
        )
    return Columns(given, rows or 0)


def items(spec: EndpointSpec, sig: Signature, tensors: list[Tensor]) -> list[PredictItem]:
    """The input tensors as one feature mapping per row (for an endpoint that enriches)."""
    cols = columns(spec, sig, tensors)
    if cols.n == 1:
        return [PredictItem({k: (c.tolist() if isinstance(c, np.ndarray) else c)[0] for k, c in cols.columns.items()})]
    lists = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in cols.columns.items()}
    return [PredictItem({k: c[i] for k, c in lists.items()}) for i in range(cols.n)]


def refuse_ignored(results: list[Prediction]) -> None:
    """OIP has no per-row status: a row that the endpoint's enrichment ignored (policy
    `ignore`: no key, no match, several matches) fails the call."""
    ignored = [(i, r.ignore_reason) for i, r in enumerate(results) if r.ignored]
    if not ignored:
        return
    shown = ", ".join(f"row {i}: {reason}" for i, reason in ignored[:_SHOWN_IGNORED])
    more = f" and {len(ignored) - _SHOWN_IGNORED} more" if len(ignored) > _SHOWN_IGNORED else ""
    raise BadRequest(
        f"{len(ignored)} of {len(results)} rows were not predicted ({shown}{more}): the endpoint's "
        "enrichment ignores such rows, and an Open Inference Protocol answer has no per-row status"
    )


def outputs(spec: EndpointSpec, sig: Signature, class_keys: list[str], results: list[Prediction]) -> list[Tensor]:
    """The output tensors, as lists (the answer's JSON or raw bytes are made from lists)."""
    n = len(results)
    if spec.task == "regression":
        return [Tensor("prediction", "FP64", [n], [float(r.prediction) for r in results])]
    datatype = sig.label
    label: list[Any]
    if datatype == "BYTES":
        label = [str(r.prediction).encode() for r in results]
    elif datatype == "FP64":
        label = [float(r.prediction) for r in results]
    else:  # BOOL, INT64: the classes are bools, ints
        label = [r.prediction for r in results]
    probas = [float(r.probas[k]) for r in results if r.probas is not None for k in class_keys]
    if len(probas) != n * len(class_keys):
        raise ValueError("a prediction without probabilities")  # a bug of ours: the codec gives every row some
    return [
        Tensor("label", datatype, [n], label),
        Tensor("probabilities", "FP64", [n, len(class_keys)], probas),
    ]
