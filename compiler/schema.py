"""What a fitted estimator reads and predicts, and the endpoint's feature list.

:func:`analyze` walks a (Pipeline of) ColumnTransformer / transformers / final estimator:
it refuses anything outside the supported list, names the task and classes, picks the
input mode (one ONNX input per column when the model starts with a ColumnTransformer fitted
on a DataFrame, else one matrix), and finds, column by column, whether a null can be
imputed (a SimpleImputer covers it, or NaN flows untouched into an estimator that handles
it natively). :func:`resolve_features` then merges that with service.yaml's `features:`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from compiler.errors import CompileError
from compiler.spec import FeatureDecl

TRANSFORMERS = ("StandardScaler", "MinMaxScaler", "OneHotEncoder", "SimpleImputer")
CLASSIFIERS = (
    "LogisticRegression",
    "DecisionTreeClassifier",
    "RandomForestClassifier",
    "ExtraTreesClassifier",
    "GradientBoostingClassifier",
    "HistGradientBoostingClassifier",
)
REGRESSORS = (
    "LinearRegression",
    "Ridge",
    "DecisionTreeRegressor",
    "RandomForestRegressor",
    "ExtraTreesRegressor",
    "GradientBoostingRegressor",
    "HistGradientBoostingRegressor",
)
BOOSTERS = ("XGBClassifier", "XGBRegressor", "LGBMClassifier", "LGBMRegressor")
NAN_NATIVE = ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")
_SCALERS = ("StandardScaler", "MinMaxScaler")
SUPPORTED_TEXT = (
    f"Pipeline, ColumnTransformer, {', '.join(TRANSFORMERS)}; {', '.join(CLASSIFIERS)}, "
    f"{', '.join(REGRESSORS)}; with apinode[boosters]: {', '.join(BOOSTERS)}"
)


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    type: str  # float | int | string | bool
    nullable: bool


@dataclass(slots=True)
class ModelInfo:
    estimator: Any
    final: Any
    description: str
    task: str  # binary | multiclass | regression
    classes: list[Any] | None
    input_mode: str  # columns | matrix
    model_columns: list[str] | None  # feature_names_in_: what a DataFrame must hold
    n_features: int
    used: list[str] = field(default_factory=list)  # columns mode: columns the model reads
    kinds: dict[str, str] = field(default_factory=dict)  # column -> "string" | "numeric"
    consumers: dict[str, str] = field(default_factory=dict)  # column -> transformer name
    nullable: set[str] = field(default_factory=set)  # columns mode
    matrix_nullable: bool = False  # matrix mode: every column is imputed, or none
    booster: bool = False


def _name(est: Any) -> str:
    return type(est).__name__


def _is_sklearn(est: Any, names: tuple[str, ...]) -> bool:
    return _name(est) in names and type(est).__module__.startswith("sklearn.")


def is_booster(est: Any) -> bool:
    return _name(est) in BOOSTERS and type(est).__module__.split(".")[0] in ("xgboost", "lightgbm")


def _is_pipeline(est: Any) -> bool:
    return _is_sklearn(est, ("Pipeline",))


def _is_ct(est: Any) -> bool:
    return _is_sklearn(est, ("ColumnTransformer",))


def _steps(est: Any) -> list[Any]:
    """A pipeline flattened to its steps (nested pipelines inlined)."""
    if not _is_pipeline(est):
        return [est]
    out: list[Any] = []
    for _, step in est.steps:
        if step is None or step == "passthrough":
            continue
        out.extend(_steps(step))
    return out


def describe(est: Any) -> str:
    if est == "passthrough":
        return "passthrough"
    if _is_pipeline(est):
        inner = [describe(s) for _, s in est.steps if s is not None and s != "passthrough"]
        return f"Pipeline({', '.join(inner)})"
    if _is_ct(est):
        parts = [describe(t) for _, t, cols in _fitted_transformers(est) if t != "drop"]
        return f"ColumnTransformer({', '.join(parts)})"
    return _name(est)


def _is_identity(est: Any) -> bool:
    """A fitted ColumnTransformer holds "passthrough" as an identity FunctionTransformer."""
    return _is_sklearn(est, ("FunctionTransformer",)) and est.func is None and est.inverse_func is None


def _fitted_transformers(ct: Any) -> list[tuple[str, Any, list[Any]]]:
    out = []
    for name, trans, cols in getattr(ct, "transformers_", ct.transformers):
        if _is_identity(trans):
            trans = "passthrough"
        if isinstance(cols, str | int):
            cols = [cols]
        elif isinstance(cols, slice) or callable(cols):
            continue  # only unfitted transformers hold these
        else:
            cols = list(cols)
            if cols and all(isinstance(c, bool) for c in cols):
                cols = [i for i, keep in enumerate(cols) if keep]
        if cols:
            out.append((name, trans, cols))
    return out


def _unsupported(est: Any, where: str) -> CompileError:
    return CompileError(
        f"{where}: unsupported estimator {_name(est)} ({type(est).__module__}); supported: {SUPPORTED_TEXT}"
    )


def _check_transformer(est: Any, where: str) -> None:
    if est in ("passthrough", "drop") or est is None:
        return
    if _is_pipeline(est):
        for _, step in est.steps:
            _check_transformer(step, where)
    elif _is_ct(est):
        for _, trans, _cols in _fitted_transformers(est):
            _check_transformer(trans, where)
    elif not _is_sklearn(est, TRANSFORMERS):
        if _is_sklearn(est, CLASSIFIERS + REGRESSORS) or is_booster(est):
            raise CompileError(f"{where}: {_name(est)} may only be the last step of the model")
        raise _unsupported(est, where)


def analyze(model: Any, where: str) -> ModelInfo:
    steps = _steps(model)
    final = steps[-1] if steps else model
    if not (_is_sklearn(final, CLASSIFIERS + REGRESSORS) or is_booster(final)):
        if _is_sklearn(final, TRANSFORMERS) or _is_ct(final):
            raise CompileError(
                f"{where}: the model ends with {_name(final)}, a transformer; "
                "it must end with a classifier or a regressor"
            )
        raise _unsupported(final, where)
    for step in steps[:-1]:
        _check_transformer(step, where)
    if not hasattr(model, "n_features_in_"):
        raise CompileError(f"{where}: the model is not fitted (no n_features_in_)")
    categorical = getattr(final, "is_categorical_", None)
    if categorical is not None and any(bool(c) for c in categorical):
        raise CompileError(
            f"{where}: {_name(final)} with categorical_features cannot be converted to ONNX; "
            "one-hot encode the categories in a ColumnTransformer instead"
        )
    if getattr(final, "n_outputs_", 1) != 1 or isinstance(getattr(final, "classes_", None), list):
        raise CompileError(f"{where}: multi-output models are not supported")
    task, classes = _task(final, where)
    info = ModelInfo(
        estimator=model,
        final=final,
        description=describe(model),
        task=task,
        classes=classes,
        input_mode="matrix",
        model_columns=[str(c) for c in model.feature_names_in_] if hasattr(model, "feature_names_in_") else None,
        n_features=int(model.n_features_in_),
        booster=is_booster(final),
    )
    first = steps[0]
    if _is_ct(first) and info.model_columns is not None:
        info.input_mode = "columns"
        _analyze_columns(info, first, steps[1:-1])
    else:
        if any(_is_ct(step) for step in steps[1:-1]):
            raise CompileError(f"{where}: a ColumnTransformer must be the first step of the model")
        names = info.model_columns or [f"f{i}" for i in range(info.n_features)]
        info.kinds = dict.fromkeys(names, "numeric")
        info.matrix_nullable = _nan_flows(steps[:-1], final) or _imputes(steps[:-1])
    return info


def _task(final: Any, where: str) -> tuple[str, list[Any] | None]:
    from sklearn.base import is_classifier

    if is_classifier(final) or hasattr(final, "classes_"):
        if not hasattr(final, "classes_"):
            raise CompileError(f"{where}: the classifier is not fitted (no classes_)")
        classes = [_plain(c) for c in final.classes_]
        if len(classes) < 2:
            raise CompileError(f"{where}: a classifier needs at least 2 classes, got {classes}")
        return ("binary" if len(classes) == 2 else "multiclass"), classes
    return "regression", None


def _plain(value: Any) -> Any:
    """A class label as the JSON value the node will compare with (ints stay ints)."""
    item = value.item() if hasattr(value, "item") else value
    if isinstance(item, float) and item.is_integer():
        return int(item)
    return item


def _is_nan_marker(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _imputes(steps: list[Any]) -> bool:
    return any(_is_sklearn(s, ("SimpleImputer",)) and _is_nan_marker(s.missing_values) for s in steps)


def _nan_flows(steps: list[Any], final: Any) -> bool:
    """True when NaN reaches an estimator that handles it, through steps that keep it."""
    if not _is_sklearn(final, NAN_NATIVE):
        return False
    return all(_is_sklearn(s, (*_SCALERS, "SimpleImputer")) for s in steps)


def _analyze_columns(info: ModelInfo, ct: Any, after: list[Any]) -> None:
    names = list(info.model_columns or [])
    later_imputes = _imputes(after)
    nan_reaches_final = _nan_flows(after, info.final)
    for _, trans, cols in _fitted_transformers(ct):
        if trans == "drop":
            continue
        branch = _steps(trans) if trans != "passthrough" else []
        for j, col in enumerate(cols):
            name = names[col] if isinstance(col, int) else str(col)
            if name not in info.used:
                info.used.append(name)
            kind, imputed, passes, consumer = "numeric", False, True, "passthrough"
            for step in branch:
                consumer = _name(step)
                if _is_sklearn(step, ("SimpleImputer",)):
                    imputed = imputed or _is_nan_marker(step.missing_values)
                    if getattr(getattr(step.statistics_, "dtype", None), "kind", "") in ("O", "U", "S"):
                        kind = "string"
                elif _is_sklearn(step, ("OneHotEncoder",)):
                    cats = step.categories_[j] if j < len(step.categories_) else None
                    if cats is not None and cats.dtype.kind in "OUS":
                        kind = "string"
                    passes = False  # the column fans out: NaN no longer flows as NaN
                    break
            info.kinds[name] = "string" if info.kinds.get(name) == "string" else kind
            info.consumers.setdefault(name, consumer)
            if imputed or (passes and (later_imputes or nan_reaches_final)):
                info.nullable.add(name)
    info.used.sort(key=lambda c: names.index(c) if c in names else len(names))


_DTYPE_KINDS = {"b": "bool", "i": "int", "u": "int", "f": "float"}


def _sample_type(sample: Any, name: str) -> str | None:
    if sample is None or name not in sample.columns:
        return None
    return _DTYPE_KINDS.get(sample[name].dtype.kind, "string")


def resolve_features(
    info: ModelInfo, declared: tuple[FeatureDecl, ...] | None, sample: Any, where: str
) -> tuple[list[Feature], list[str]]:
    """The endpoint's ordered features, and warnings (declared features the model ignores)."""
    warnings: list[str] = []
    decl = {d.name: d for d in declared or ()}
    fw = f"{where}.features"
    if info.input_mode == "columns":
        model_cols = info.model_columns or []
        unknown = [n for n in decl if n not in model_cols]
        if unknown:
            raise CompileError(
                f"{fw}: the model has no feature {_names(unknown)} (it was fitted on: {', '.join(model_cols)})"
            )
        if declared is not None:
            missing = [c for c in info.used if c not in decl]
            if missing:
                raise CompileError(f"{fw}: the model reads {_names(missing)}, not listed")
            ignored = [n for n in decl if n not in info.used]
            if ignored:
                warnings.append(f"{fw}: the model ignores {_names(ignored)}; left out")
            order = [n for n in decl if n in info.used]
        else:
            order = list(info.used)
    else:
        order = _matrix_names(info, declared, fw)
    out = []
    for name in order:
        d = decl.get(name)
        kind = info.kinds.get(name, "numeric")
        if d is not None:
            ftype = d.type
        elif kind == "string":
            ftype = "string"
        else:  # the sample only tells which kind of number; its values are checked later
            ftype = _sample_type(sample, name) or "float"
            ftype = "float" if ftype == "string" else ftype
        if (ftype == "string") != (kind == "string"):
            how = "a string" if kind == "string" else "a number"
            via = info.consumers.get(name, "the estimator")
            if info.input_mode == "matrix":
                raise CompileError(
                    f"{fw}.{name}: declared {ftype}, but a model fitted on a numeric matrix reads numbers only"
                )
            raise CompileError(f"{fw}.{name}: declared {ftype}, but the model reads {how} ({via})")
        detected = info.matrix_nullable if info.input_mode == "matrix" else name in info.nullable
        nullable = d.nullable if d and d.nullable is not None else detected
        out.append(Feature(name, ftype, nullable))
    return out, warnings


def _matrix_names(info: ModelInfo, declared: tuple[FeatureDecl, ...] | None, fw: str) -> list[str]:
    n = info.n_features
    if info.model_columns is not None:
        if declared is not None:
            names = {d.name for d in declared}
            unknown = [d.name for d in declared if d.name not in info.model_columns]
            missing = [c for c in info.model_columns if c not in names]
            if unknown or missing:
                raise CompileError(
                    f"{fw}: does not match the model's features "
                    f"({', '.join(info.model_columns)}): "
                    + "; ".join(
                        p
                        for p in (
                            f"unknown {_names(unknown)}" if unknown else "",
                            f"missing {_names(missing)}" if missing else "",
                        )
                        if p
                    )
                )
        return list(info.model_columns)
    if declared is None:
        return [f"f{i}" for i in range(n)]
    if len(declared) != n:
        raise CompileError(
            f"{fw}: lists {len(declared)} features but the model takes {n} "
            "(n_features_in_; fitted on an array, so features are matched by position)"
        )
    return [d.name for d in declared]


def _names(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)
