"""What a prediction endpoint looks like as an OIP model: its name, metadata and config,
how input tensors become the rows of a predict-multi call, and how results become outputs.

Every prediction endpoint of a service is the model `<service>.<endpoint>` (ids hold no
dot, so the name splits one way). Its inputs are either one tensor `input` of shape
`[N, features]` in the manifest's feature order, or one tensor per feature, named like it,
of shape `[N]` or `[N, 1]`. The metadata advertises the matrix when every feature is
numeric and the per-feature form when some feature is a string (a category); both forms are
accepted either way. Values go through the endpoint's :class:`~node.features.FeatureCodec`
like any JSON feature, so every check of the Dataiku API applies unchanged.

Outputs: a classifier answers `label` ([N]: BYTES, INT64 or BOOL like its classes) and
`probabilities` ([N, classes], FP64, in the order of `parameters.classes` of the HTTP
metadata); a regression answers `prediction` ([N], FP64).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from node.errors import BadRequest, NotFound
from node.oip.tensors import Tensor
from node.package import EndpointSpec

MATRIX_INPUT = "input"
PLATFORM = "onnxruntime_onnx"
_FEATURE_DATATYPE = {"float": "FP64", "int": "INT64", "string": "BYTES", "bool": "BOOL"}


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


def inputs_of(spec: EndpointSpec) -> list[dict[str, Any]]:
    if uses_matrix(spec):
        return [{"name": MATRIX_INPUT, "datatype": _matrix_datatype(spec), "shape": [-1, len(spec.features)]}]
    return [{"name": f.name, "datatype": _FEATURE_DATATYPE[f.type], "shape": [-1, 1]} for f in spec.features]


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


def metadata(name: str, versions: list[str], spec: EndpointSpec) -> dict[str, Any]:
    params: dict[str, Any] = {"task": spec.task, "features": [f.name for f in spec.features]}
    if spec.task != "regression":
        params["classes"] = list(spec.classes or ())
    return {
        "name": name,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": inputs_of(spec),
        "outputs": outputs_of(spec),
        "parameters": params,
    }


def config(name: str, spec: EndpointSpec, max_batch: int, instances: int) -> dict[str, Any]:
    """Triton's model configuration (proto field names): batched, so dims leave out N."""

    def dims(shape: list[int]) -> list[int]:
        return shape[1:] or [1]

    return {
        "name": name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "max_batch_size": max_batch,
        "input": [
            {
                "name": t["name"],
                "data_type": "TYPE_" + t["datatype"].replace("BYTES", "STRING"),
                "dims": dims(t["shape"]),
            }
            for t in inputs_of(spec)
        ],
        "output": [
            {
                "name": t["name"],
                "data_type": "TYPE_" + t["datatype"].replace("BYTES", "STRING"),
                "dims": dims(t["shape"]),
            }
            for t in outputs_of(spec)
        ],
        "instance_group": [{"name": name, "kind": "KIND_CPU", "count": instances}],
        "dynamic_batching": {},
    }


def _values(t: Tensor) -> list[Any]:
    if t.datatype != "BYTES":
        return t.data.tolist()  # type: ignore[no-any-return]
    try:
        return [v.decode() for v in t.data]
    except UnicodeDecodeError:
        raise BadRequest(f"tensor {t.name!r}: BYTES values must be UTF-8 text") from None


def items(spec: EndpointSpec, tensors: list[Tensor]) -> list[dict[str, Any]]:
    """The predict-multi items (`{"features": {...}}`) of the input tensors."""
    names = spec.feature_names
    if not tensors:
        raise BadRequest("the request has no input tensor")
    if len(tensors) == 1 and (tensors[0].name not in names or (len(names) == 1 and len(tensors[0].shape) == 2)):
        t = tensors[0]
        width = len(names)
        if len(t.shape) != 2 or t.shape[1] != width:
            raise BadRequest(
                f"input {t.name!r} must have the shape [N, {width}] (the features {', '.join(names)}), got {t.shape}"
            )
        flat = _values(t)
        return [{"features": dict(zip(names, flat[i : i + width], strict=True))} for i in range(0, len(flat), width)]
    known = set(names)
    columns: dict[str, list[Any]] = {}
    n = None
    for t in tensors:
        if t.name not in known:
            raise BadRequest(
                f"the model has no input {t.name!r}: send one tensor {MATRIX_INPUT!r} [N, {len(names)}] "
                f"or one tensor per feature ({', '.join(names)})"
            )
        if t.name in columns:
            raise BadRequest(f"input {t.name!r} is given twice")
        if not (len(t.shape) == 1 or (len(t.shape) == 2 and t.shape[1] == 1)):
            raise BadRequest(f"input {t.name!r} must have the shape [N] or [N, 1], got {t.shape}")
        if n is not None and t.shape[0] != n:
            raise BadRequest(f"the inputs have different numbers of rows ({n} and {t.shape[0]} for {t.name!r})")
        n = t.shape[0]
        columns[t.name] = _values(t)
    given = list(columns)
    return [{"features": {k: columns[k][i] for k in given}} for i in range(n or 0)]


def outputs(spec: EndpointSpec, class_keys: list[str], results: list[dict[str, Any]]) -> list[Tensor]:
    n = len(results)
    if spec.task == "regression":
        return [Tensor("prediction", "FP64", [n], np.array([r["prediction"] for r in results], dtype="<f8"))]
    classes = spec.classes or ()
    datatype = _label_datatype(classes)
    labels = [r["prediction"] for r in results]
    if datatype == "BYTES":
        label = np.array([str(v).encode() for v in labels] or [], dtype=object)
    else:
        label = np.array(labels, dtype={"BOOL": "?", "INT64": "<i8", "FP64": "<f8"}[datatype])
    probas = np.array([[r["probas"][k] for k in class_keys] for r in results], dtype="<f8").reshape(n, len(classes))
    return [
        Tensor("label", datatype, [n], label),
        Tensor("probabilities", "FP64", [n, len(classes)], probas.ravel()),
    ]
