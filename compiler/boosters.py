"""XGBoost and LightGBM estimators, converted by onnxmltools (the `boosters` extra).

Imported only when a model ends with one of them. skl2onnx learns their converters through
`update_registered_converter`, the documented way to put them inside a Pipeline.
"""

from __future__ import annotations

import copy
from typing import Any

from compiler.errors import CompileError
from compiler.inputs import BOOSTERS_HINT

_done: set[type] = set()


def _unnamed(converter: Any) -> Any:
    """onnxmltools reads XGBoost's splits by feature name and expects f0, f1, ...: a model
    fitted on a DataFrame (feature names "age", "amount") is converted from a copy whose
    booster has no names, so its splits read f<position>, the column order the graph feeds."""

    def convert(scope: Any, operator: Any, container: Any) -> None:
        raw = operator.raw_operator
        names = raw.get_booster().feature_names
        if names is None:
            converter(scope, operator, container)
            return
        plain = copy.deepcopy(raw)
        plain.get_booster().feature_names = None
        operator.raw_operator = plain
        try:
            converter(scope, operator, container)
        finally:
            operator.raw_operator = raw

    return convert


def register_boosters(final: Any) -> None:
    cls = type(final)
    if cls in _done:
        return
    try:
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    except ImportError:
        raise CompileError(
            f"{cls.__name__} models are converted by onnxmltools, which is not installed: {BOOSTERS_HINT}"
        ) from None
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    table: dict[str, tuple[str, Any, Any, dict[str, Any] | None]] = {
        "XGBClassifier": (
            "XGBoostXGBClassifier",
            calculate_linear_classifier_output_shapes,
            convert_xgboost,
            classifier_options,
        ),
        "XGBRegressor": (
            "XGBoostXGBRegressor",
            calculate_linear_regressor_output_shapes,
            convert_xgboost,
            None,
        ),
        "LGBMClassifier": (
            "LightGbmLGBMClassifier",
            calculate_linear_classifier_output_shapes,
            convert_lightgbm,
            classifier_options,
        ),
        "LGBMRegressor": (
            "LightGbmLGBMRegressor",
            calculate_linear_regressor_output_shapes,
            convert_lightgbm,
            {"split": None},
        ),
    }
    from compiler._skl2onnx_fixes import wrap_tree_converter

    alias, shapes, converter, options = table[cls.__name__]
    xgb = cls.__name__.startswith("XGB")
    wrapped = wrap_tree_converter(_unnamed(converter) if xgb else converter, op_version=False, round_float=xgb)
    update_registered_converter(cls, alias, shapes, wrapped, options=options)
    _done.add(cls)
