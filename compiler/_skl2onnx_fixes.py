"""Converters that wrap skl2onnx's own to get exact, loadable graphs from today's versions.

They are passed to each `convert_sklearn` call as `custom_conversion_functions`, so nothing
global in skl2onnx changes. Each wraps the registered converter and only touches the nodes
it adds, through :class:`_Container`:

* Tree ensembles (`TreeEnsembleClassifier`/`Regressor`). skl2onnx 1.20 hands onnx 1.23 a
  Python bool in an int list (`nodes_missing_value_tracks_true` of HistGradientBoosting),
  which `onnx.helper.make_node` now refuses ("Unable to create node 'TreeEnsemble...'"): we
  cast those lists to ints. With double inputs, skl2onnx also declares double scores while
  ai.onnx.ml TreeEnsemble* always emit float, and stores thresholds as float32, so a double
  input near a split can go the wrong way: we ask the converter for double attributes
  (`op_version=3`), store them as ai.onnx.ml v3 `*_as_tensor` doubles (exact splits, double
  sums in onnxruntime) and cast the float scores to double where the graph declares double.
* Trees fitted on data with missing values hold infinite thresholds, on which skl2onnx's
  double-precision threshold adjustment (`sklearn_threshold`) loops forever: while
  converting, :func:`patched` makes it return non-finite thresholds unchanged.
* XGBoost reads float32 features: with double inputs, the features are rounded to float32
  (Cast to float and back) just before its trees, after scaling in double as scikit-learn
  does; fed to the trees unrounded, a double near a float32 split would go the other way.
* FunctionTransformer: skl2onnx converts only the identity; the numpy functions of
  `schema.FUNCTIONS` become their ONNX operators.
* VotingClassifier(flatten_transform=True), the default, is refused by skl2onnx although the
  flag only shapes `transform`, never `predict_proba`: converted as if it were False.
* OneHotEncoder with NaN among a string column's categories (a missing value kept as a
  category): the node feeds "" for a null string, so "" is that category in the graph.
* SimpleImputer. onnxruntime has no double `Imputer` kernel: for double inputs we impute
  with `Where(IsNaN(x), statistics, x)`. For strings skl2onnx needs a string
  `missing_values`; the node sends "" for a null string, so "" is what we impute.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from onnx import TensorProto, numpy_helper
from skl2onnx._supported_operators import sklearn_operator_name_map
from skl2onnx.common import tree_ensemble
from skl2onnx.common._registration import get_converter
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType
from skl2onnx.operator_converters.common import concatenate_variables

Converter = Callable[[Any, Any, Any], None]

_TREES = (
    "DecisionTreeClassifier",
    "DecisionTreeRegressor",
    "RandomForestClassifier",
    "RandomForestRegressor",
    "ExtraTreesClassifier",
    "ExtraTreesRegressor",
    "GradientBoostingClassifier",
    "GradientBoostingRegressor",
    "HistGradientBoostingClassifier",
    "HistGradientBoostingRegressor",
)
# ai.onnx.ml v3 attributes that may hold doubles as `<name>_as_tensor`.
_AS_TENSOR = ("nodes_values", "nodes_hitrates", "class_weights", "target_weights", "base_values")


class _Container:
    """Delegates to skl2onnx's container; repairs the tree-ensemble nodes on their way in."""

    def __init__(self, inner: Any, double: bool, float_outputs: set[str], round_float: bool = False) -> None:
        self._inner = inner
        self._double = double
        self._float_outputs = float_outputs  # the operator's outputs declared float
        self._round_float = round_float  # features rounded to float32 before the trees

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def add_node(self, op_type: str, inputs: Any, outputs: Any, *args: Any, **attrs: Any) -> Any:
        for key, value in attrs.items():
            if isinstance(value, list | tuple) and any(isinstance(v, bool | np.bool_) for v in value):
                attrs[key] = [int(v) for v in value]
        if not (self._double and op_type in ("TreeEnsembleClassifier", "TreeEnsembleRegressor")):
            return self._inner.add_node(op_type, inputs, outputs, *args, **attrs)
        for key in _AS_TENSOR:
            if key in attrs:
                values = np.asarray(attrs.pop(key), dtype=np.float64).ravel()
                if self._round_float and key == "nodes_values":
                    # XGBoost's float32 splits, read from its text dump: the float32 itself
                    values = values.astype(np.float32).astype(np.float64)
                attrs[f"{key}_as_tensor"] = numpy_helper.from_array(values)
        attrs["op_version"] = 3
        if self._round_float:
            inputs = [inputs] if isinstance(inputs, str) else list(inputs)
            as_float, rounded = f"{inputs[0]}_as_float", f"{inputs[0]}_float32"
            self._inner.add_node("Cast", [inputs[0]], [as_float], name=f"{as_float}_cast", to=TensorProto.FLOAT)
            self._inner.add_node("Cast", [as_float], [rounded], name=f"{rounded}_cast", to=TensorProto.DOUBLE)
            inputs[0] = rounded
        outputs = [outputs] if isinstance(outputs, str) else list(outputs)
        score = 1 if op_type == "TreeEnsembleClassifier" else 0
        declared = outputs[score]
        if declared in self._float_outputs:
            return self._inner.add_node(op_type, inputs, outputs, *args, **attrs)
        outputs[score] = f"{declared}_float"
        self._inner.add_node(op_type, inputs, outputs, *args, **attrs)
        self._inner.add_node(
            "Cast",
            [outputs[score]],
            [declared],
            name=f"{declared}_to_double",
            to=TensorProto.DOUBLE,
        )


def _is_double(operator: Any) -> bool:
    return isinstance(operator.inputs[0].type, DoubleTensorType)


def wrap_tree_converter(
    original: Callable[..., None], *, op_version: bool = True, round_float: bool = False
) -> Converter:
    """`original` with its TreeEnsemble nodes repaired; `op_version`: it takes that keyword;
    `round_float`: the trees compare float32 features (XGBoost)."""

    def convert(scope: Any, operator: Any, container: Any) -> None:
        double = _is_double(operator)
        floats = {v.full_name for v in operator.outputs if type(v.type) is FloatTensorType}
        proxy = _Container(container, double, floats, round_float and double)
        if double and op_version:
            original(scope, operator, proxy, op_version=3)  # keeps double attributes
        else:
            original(scope, operator, proxy)

    return convert


def _tree_converter(alias: str) -> Converter:
    registered = get_converter(alias)
    return wrap_tree_converter(getattr(registered, "_fct", registered))


def _imputer_converter() -> Converter:
    registered = get_converter("SklearnSimpleImputer")

    def convert(scope: Any, operator: Any, container: Any) -> None:
        op = operator.raw_operator
        missing = op.missing_values
        nan_missing = missing is None or (isinstance(missing, float) and math.isnan(missing))
        in_type = operator.inputs[0].type
        if nan_missing and isinstance(in_type, StringTensorType):
            patched = copy.copy(op)
            patched.missing_values = ""
            operator.raw_operator = patched
            try:
                registered(scope, operator, container)
            finally:
                operator.raw_operator = op
            return
        if not (nan_missing and isinstance(in_type, DoubleTensorType)):
            registered(scope, operator, container)
            return
        if all(isinstance(v.type, DoubleTensorType) for v in operator.inputs):
            names = [v.full_name for v in operator.inputs]
            if len(names) == 1:
                x = names[0]
            else:
                x = scope.get_unique_variable_name("imputer_in")
                container.add_node("Concat", names, [x], name=scope.get_unique_operator_name("Concat"), axis=1)
        else:
            x = concatenate_variables(scope, operator.inputs, container)
        fill = scope.get_unique_variable_name("imputer_fill")
        stats = np.asarray(op.statistics_, dtype=np.float64)
        container.add_initializer(fill, TensorProto.DOUBLE, [1, stats.size], stats.tolist())
        isnan = scope.get_unique_variable_name("imputer_isnan")
        container.add_node("IsNaN", [x], [isnan], name=scope.get_unique_operator_name("IsNaN"))
        container.add_node(
            "Where",
            [isnan, fill, x],
            [operator.outputs[0].full_name],
            name=scope.get_unique_operator_name("Where"),
        )

    return convert


_UNARY: dict[str, list[tuple[str, float | None]]] = {
    # numpy function -> ONNX operators applied in turn (with a constant operand, if any)
    "log1p": [("Add", 1.0), ("Log", None)],
    "log": [("Log", None)],
    "exp": [("Exp", None)],
    "expm1": [("Exp", None), ("Sub", 1.0)],
    "sqrt": [("Sqrt", None)],
    "abs": [("Abs", None)],
}


def _function_converter() -> Converter:
    registered = get_converter("SklearnFunctionTransformer")

    def convert(scope: Any, operator: Any, container: Any) -> None:
        func = operator.raw_operator.func
        if func is None:
            registered(scope, operator, container)
            return
        ops = _UNARY[func.__name__]  # schema.py refused any other function
        x = concatenate_variables(scope, operator.inputs, container) if len(operator.inputs) > 1 else None
        current = x or operator.inputs[0].full_name
        double = isinstance(operator.inputs[0].type, DoubleTensorType)
        for i, (op_type, const) in enumerate(ops):
            last = i == len(ops) - 1
            out = operator.outputs[0].full_name if last else scope.get_unique_variable_name("fn")
            inputs = [current]
            if const is not None:
                c = scope.get_unique_variable_name("fn_const")
                container.add_initializer(c, TensorProto.DOUBLE if double else TensorProto.FLOAT, [], [const])
                inputs.append(c)
            container.add_node(op_type, inputs, [out], name=scope.get_unique_operator_name(op_type))
            current = out

    return convert


def _onehot_converter() -> Converter:
    registered = get_converter("SklearnOneHotEncoder")

    def convert(scope: Any, operator: Any, container: Any) -> None:
        op = operator.raw_operator
        cats = op.categories_
        if not any(c.dtype.kind == "O" and any(_is_nan(v) for v in c) for c in cats):
            registered(scope, operator, container)
            return
        patched = copy.copy(op)
        patched.categories_ = [
            np.array(["" if _is_nan(v) else v for v in c], dtype=object) if c.dtype.kind == "O" else c for c in cats
        ]
        operator.raw_operator = patched
        try:
            registered(scope, operator, container)
        finally:
            operator.raw_operator = op

    return convert


def _voting_converter() -> Converter:
    registered = get_converter("SklearnVotingClassifier")

    def convert(scope: Any, operator: Any, container: Any) -> None:
        op = operator.raw_operator
        patched = copy.copy(op)
        patched.flatten_transform = False
        operator.raw_operator = patched
        try:
            registered(scope, operator, container)
        finally:
            operator.raw_operator = op

    return convert


def _function_shape(operator: Any) -> None:
    """Element-wise: the output has the (concatenated) input's type and width."""
    n = operator.inputs[0].get_first_dimension()
    widths = [v.type.shape[1] for v in operator.inputs]
    operator.outputs[0].type = copy.deepcopy(operator.inputs[0].type)
    operator.outputs[0].type.shape = [n, None if None in widths else sum(widths)]


def custom_shape_calculators() -> dict[type, Callable[[Any], None]]:
    from sklearn.preprocessing import FunctionTransformer

    return {FunctionTransformer: _function_shape}


def _is_nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def custom_converters() -> dict[type, Converter]:
    """Estimator class -> converter, for `convert_sklearn(custom_conversion_functions=...)`."""
    out: dict[type, Converter] = {}
    for cls, alias in sklearn_operator_name_map.items():
        if not isinstance(cls, type):
            continue
        if cls.__name__ in _TREES and cls.__module__.startswith("sklearn."):
            out[cls] = _tree_converter(alias)
        elif cls.__name__ == "SimpleImputer" and cls.__module__.startswith("sklearn."):
            out[cls] = _imputer_converter()
        elif cls.__name__ == "FunctionTransformer" and cls.__module__.startswith("sklearn."):
            out[cls] = _function_converter()
        elif cls.__name__ == "OneHotEncoder" and cls.__module__.startswith("sklearn."):
            out[cls] = _onehot_converter()
        elif cls.__name__ == "VotingClassifier" and cls.__module__.startswith("sklearn."):
            out[cls] = _voting_converter()
    return out


@contextlib.contextmanager
def patched() -> Iterator[None]:
    """For the duration of one conversion: thresholds that are not finite stay as they are."""
    original = tree_ensemble.sklearn_threshold

    def sklearn_threshold(dy: Any, dtype: Any, mode: str) -> Any:
        if not np.isfinite(dy):
            return np.float64(dy)
        return original(dy, dtype, mode)

    tree_ensemble.sklearn_threshold = sklearn_threshold
    try:
        yield
    finally:
        tree_ensemble.sklearn_threshold = original
