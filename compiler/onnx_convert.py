"""A fitted estimator -> ONNX bytes the node can run, in double or float precision.

The inputs are laid out exactly as the node will feed them (see node/package.py): in
"columns" mode one `[N, 1]` input per feature named like it (strings as strings, every
numeric feature in the chosen precision), in "matrix" mode one `input` of `[N, n_features]`.
Classifiers are converted without ZipMap, so the probabilities are a plain `[N, n_classes]`
tensor in `classes_` order. The graph is loaded once in onnxruntime before it is accepted:
a graph skl2onnx writes but onnxruntime cannot run is a failed conversion, not a package.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from compiler.schema import Feature, ModelInfo

PRECISIONS = ("double", "float")  # preferred first; the parity check has the last word
TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}
INPUT_NAME = "input"


class ConversionFailed(Exception):
    """skl2onnx or onnxruntime refused the model in one precision."""


@dataclass(frozen=True, slots=True)
class Converted:
    precision: str  # double | float: the onnx_type of every numeric input
    onnx: bytes
    session: Any  # onnxruntime.InferenceSession, for the parity check
    input_mode: str
    input_name: str
    label_output: str | None
    proba_output: str | None
    value_output: str | None


def precisions(info: ModelInfo) -> tuple[str, ...]:
    """Precisions to try, best first. XGBoost compares float32 features with float32
    thresholds: float inputs reproduce it, doubles near a threshold would not."""
    if type(info.final).__name__ in ("XGBClassifier", "XGBRegressor"):
        return ("float", "double")
    return PRECISIONS


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def convert(info: ModelInfo, features: list[Feature], precision: str) -> Converted:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

    from compiler._skl2onnx_fixes import custom_converters, patched

    number = DoubleTensorType if precision == "double" else FloatTensorType
    if info.input_mode == "columns":
        initial = [(f.name, StringTensorType([None, 1]) if f.type == "string" else number([None, 1])) for f in features]
    else:
        initial = [(INPUT_NAME, number([None, len(features)]))]
    options = None
    if info.task != "regression":
        options = {id(info.final): {"zipmap": False}}
    if info.booster:
        from compiler.boosters import register_boosters

        register_boosters(info.final)
    try:
        with warnings.catch_warnings(), patched():
            warnings.simplefilter("ignore")
            onx = convert_sklearn(
                info.estimator,
                initial_types=initial,
                target_opset=TARGET_OPSET,
                options=options,
                custom_conversion_functions=custom_converters(),
            )
    except Exception as exc:  # skl2onnx raises anything from anywhere
        raise ConversionFailed(f"skl2onnx: {_first_line(exc)}") from exc
    onx.producer_name = "apinode-compiler"
    onx.doc_string = info.description
    data = onx.SerializeToString()
    session = _session(data)
    outputs = [o.name for o in session.get_outputs()]
    if info.task == "regression":
        if not outputs:
            raise ConversionFailed("the ONNX graph has no output")
        label, proba, value = None, None, outputs[0]
    else:
        if len(outputs) < 2:
            raise ConversionFailed(f"expected label and probabilities outputs, got {outputs}")
        label, proba, value = outputs[0], outputs[1], None
    return Converted(
        precision=precision,
        onnx=data,
        session=session,
        input_mode=info.input_mode,
        input_name=INPUT_NAME,
        label_output=label,
        proba_output=proba,
        value_output=value,
    )


def _session(data: bytes) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ConversionFailed(f"onnxruntime cannot load the graph: {_first_line(exc)}") from exc
