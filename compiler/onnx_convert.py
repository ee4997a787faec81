"""A fitted estimator -> ONNX bytes the node can run, in double or float precision.

The inputs are laid out exactly as the node will feed them (see apz/specs.py, ModelSpec): in
"columns" mode one `[N, 1]` input per feature named like it (strings as strings, every
numeric feature in the chosen precision), in "matrix" mode one `input` of `[N, n_features]`.
Classifiers are converted without ZipMap, so the probabilities are a plain `[N, n_classes]`
tensor in `classes_` order. The graph is loaded once in onnxruntime before it is accepted:
a graph skl2onnx writes but onnxruntime cannot run is a failed conversion, not a package.
"""

from __future__ import annotations

import re
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
    label_output: str | None  # the graph's label output (the class comes from it only if label_class)
    proba_output: str | None
    value_output: str | None
    label_class: bool = False  # True: the class is the label output, not the first maximum of the probabilities


def precisions(info: ModelInfo) -> tuple[str, ...]:
    """Precisions to try, best first. Double first for every model, XGBoost included: its
    trees read float32 features, so the graph scales (or imputes) in double as scikit-learn
    does and rounds to float32 just before the trees (compiler/_skl2onnx_fixes.py)."""
    return PRECISIONS


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def convert(info: ModelInfo, features: list[Feature], precision: str) -> Converted:
    from skl2onnx import convert_sklearn

    from compiler._skl2onnx_fixes import custom_converters, custom_shape_calculators, patched
    from compiler.diagnose import initial_types

    initial = initial_types(features, precision, info.input_mode, INPUT_NAME)
    options = vectorizer_options(info.estimator)
    if info.task != "regression":
        options[id(info.final)] = {"zipmap": False}
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
                options=options or None,
                custom_conversion_functions=custom_converters(),
                custom_shape_calculators=custom_shape_calculators(),
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
    from compiler.schema import LABEL_FROM_MODEL

    return Converted(
        precision=precision,
        onnx=data,
        session=session,
        input_mode=info.input_mode,
        input_name=INPUT_NAME,
        label_output=label,
        proba_output=proba,
        value_output=value,
        label_class=type(info.final).__name__ in LABEL_FROM_MODEL,
    )


# onnxruntime's Tokenizer runs RE2, where \w and \b are ASCII only ("très" would split at
# "è") and "(?u)" is an error. Python's \w (str patterns are Unicode) is a letter, a digit
# or "_": [\p{L}\p{N}_] in RE2. A run of word characters between word boundaries, as the
# default r"(?u)\b\w\w+\b", is a maximal run, so the boundaries can go; any other \b stays
# ASCII, and the parity check (with compiler/diagnose.py naming the step) has the last word.
_WORD = r"[\p{L}\p{N}_]"
_RUN = re.compile(r"\\b((?:\\w(?:[+*]|\{\d+,\})?)+)\\b")


def tokenexp(vectorizer: Any) -> str:
    pattern = str(vectorizer.token_pattern)
    if pattern.startswith("(?u)"):
        pattern = pattern[4:]
    run = _RUN.fullmatch(pattern)
    if run is not None:
        pattern = run.group(1)
    return pattern.replace("\\w", _WORD).replace("\\W", "[^\\p{L}\\p{N}_]").replace("\\d", "\\p{Nd}")


def vectorizer_options(est: Any) -> dict[int, dict[str, Any]]:
    # The graph's StringNormalizer (lowercase) needs a locale; C.UTF-8 is on every glibc
    # system and lowercases beyond ASCII ("É" -> "é") as Python's str.lower does.
    return {id(step): {"tokenexp": tokenexp(step), "locale": "C.UTF-8"} for step in _vectorizers(est)}


def _vectorizers(est: Any) -> list[Any]:
    """Every TfidfVectorizer / CountVectorizer inside a Pipeline / ColumnTransformer."""
    from compiler.schema import VECTORIZERS

    out: list[Any] = []
    if type(est).__name__ in VECTORIZERS:
        return [est]
    for _, step in getattr(est, "steps", []):
        out += _vectorizers(step)
    for _, trans, _ in getattr(est, "transformers_", []):
        out += _vectorizers(trans)
    return out


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
