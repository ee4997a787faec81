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

import numpy as np

from compiler.errors import CompileError
from compiler.spec import FeatureDecl

SCALERS = ("StandardScaler", "MinMaxScaler", "RobustScaler", "MaxAbsScaler")
IMPUTERS = ("SimpleImputer", "KNNImputer")
ENCODERS = ("OneHotEncoder", "OrdinalEncoder", "TargetEncoder")  # string or number categories
VECTORIZERS = ("TfidfVectorizer", "CountVectorizer")  # a text column: one string per row
TRANSFORMERS = (
    *SCALERS,
    *IMPUTERS,
    *ENCODERS,
    *VECTORIZERS,
    "KBinsDiscretizer",
    "PolynomialFeatures",
    "PCA",
    "TruncatedSVD",
    "SelectKBest",
    "VarianceThreshold",
    "FunctionTransformer",
)
CLASSIFIERS = (
    "LogisticRegression",
    "SGDClassifier",
    "DecisionTreeClassifier",
    "RandomForestClassifier",
    "ExtraTreesClassifier",
    "GradientBoostingClassifier",
    "HistGradientBoostingClassifier",
    "AdaBoostClassifier",
    "BaggingClassifier",
    "SVC",
    "KNeighborsClassifier",
    "MLPClassifier",
    "GaussianNB",
    "BernoulliNB",
    "CalibratedClassifierCV",
    "VotingClassifier",
    "StackingClassifier",
    "LinearSVC",  # refused with a way to get probabilities (no predict_proba)
)
REGRESSORS = (
    "LinearRegression",
    "Ridge",
    "Lasso",
    "ElasticNet",
    "SGDRegressor",
    "DecisionTreeRegressor",
    "RandomForestRegressor",
    "ExtraTreesRegressor",
    "GradientBoostingRegressor",
    "HistGradientBoostingRegressor",
    "AdaBoostRegressor",
    "BaggingRegressor",
    "SVR",
    "KNeighborsRegressor",
    "MLPRegressor",
    "VotingRegressor",
    "StackingRegressor",
)
BOOSTERS = ("XGBClassifier", "XGBRegressor", "LGBMClassifier", "LGBMRegressor")
NAN_NATIVE = ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")
# Whose `predict` is not the first maximum of `predict_proba` (SVC votes one-vs-one on its
# decision function; SGDClassifier takes the largest decision, and with modified_huber its
# clipped probabilities tie where the decisions do not): the node answers the ONNX label.
LABEL_FROM_MODEL = ("SVC", "SGDClassifier")
# numpy functions a FunctionTransformer may apply (compiler/_skl2onnx_fixes.py converts them)
FUNCTIONS = ("log1p", "log", "exp", "expm1", "sqrt", "abs")
_NAN_KEEPING = (*SCALERS, "SimpleImputer", "FunctionTransformer")
NO_CONVERTER = {
    "IsotonicRegression": "it has no ONNX converter",
}
SUPPORTED_TEXT = (
    f"Pipeline, ColumnTransformer, {', '.join(TRANSFORMERS)}; {', '.join(CLASSIFIERS)}, "
    f"{', '.join(REGRESSORS)}; with apinode[boosters]: {', '.join(BOOSTERS)}"
)
OTHERWISE = "to serve it anyway, use a custom-prediction endpoint (your class loads the model and calls predict)"


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
    why = NO_CONVERTER.get(_name(est))
    if why is not None:
        return CompileError(f"{where}: {_name(est)} cannot be compiled: {why}; {OTHERWISE}")
    return CompileError(
        f"{where}: unsupported estimator {_name(est)} ({type(est).__module__}); supported: {SUPPORTED_TEXT}; "
        f"{OTHERWISE}"
    )


def _check_options(est: Any, where: str) -> None:
    """Options of supported steps that ONNX cannot reproduce: refused here, with the fix."""
    name = _name(est)
    if name == "SimpleImputer" and getattr(est, "add_indicator", False):
        raise CompileError(
            f"{where}: SimpleImputer(add_indicator=True) cannot be converted to ONNX (the missing-value "
            "indicator columns have no converter); refit with add_indicator=False"
        )
    if name == "OneHotEncoder" and (
        getattr(est, "min_frequency", None) is not None or getattr(est, "max_categories", None) is not None
    ):
        raise CompileError(
            f"{where}: OneHotEncoder(min_frequency=..., max_categories=...) groups infrequent categories, "
            "which the ONNX converter does not reproduce; refit without min_frequency/max_categories "
            "(handle_unknown='ignore' still maps unseen values to zeros), or group rare categories in the data"
        )
    if name == "FunctionTransformer":
        func = getattr(est, "func", None)
        fname = getattr(func, "__name__", repr(func))
        if func is not None and (getattr(func, "__module__", None) != "numpy" or fname not in FUNCTIONS):
            raise CompileError(
                f"{where}: FunctionTransformer(func={fname}) cannot be converted to ONNX; supported functions: "
                f"{', '.join('np.' + f for f in FUNCTIONS)} (or func=None); compute other columns before "
                "calling the endpoint"
            )
        if getattr(est, "kw_args", None):
            raise CompileError(f"{where}: FunctionTransformer with kw_args cannot be converted to ONNX")
    if name == "TargetEncoder" and getattr(est, "target_type_", "") == "multiclass":
        raise CompileError(
            f"{where}: TargetEncoder on a multi-class target has no ONNX converter (one encoding per class); "
            "use it for binary or regression targets, or encode with OneHotEncoder or OrdinalEncoder"
        )
    if name in VECTORIZERS:
        bad = [
            f"{opt}={getattr(est, opt)!r}"
            for opt, ok in (
                ("analyzer", "word"),
                ("strip_accents", None),
                ("preprocessor", None),
                ("tokenizer", None),
            )
            if getattr(est, opt, ok) != ok
        ]
        if bad:
            raise CompileError(
                f"{where}: {name}({', '.join(bad)}) cannot be converted to ONNX, whose tokenizer splits "
                "words with a regular expression only; refit with analyzer='word', strip_accents=None, "
                "no preprocessor and no tokenizer (token_pattern may change)"
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
    else:
        _check_options(est, where)


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
    task, classes = _task(final, where)
    # (MLPClassifier's n_outputs_ counts its output units: a classifier is multi-output
    # when its classes_ is a list, one array per output)
    multi = getattr(final, "n_outputs_", 1) != 1 if task == "regression" else isinstance(final.classes_, list)
    if multi:
        raise CompileError(f"{where}: multi-output models are not supported")
    if task != "regression" and not hasattr(final, "predict_proba"):
        raise CompileError(f"{where}: {_no_proba(final)}")
    if task == "multiclass" and _name(final) == "SGDClassifier" and final.loss == "modified_huber":
        raise CompileError(
            f"{where}: SGDClassifier(loss='modified_huber') on more than 2 classes cannot be converted "
            "exactly (its clipped probabilities tie where predict, on the decision function, does not); "
            "fit it with loss='log_loss'"
        )
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


def _no_proba(final: Any) -> str:
    """A classifier without predict_proba: the node answers probabilities, so say how to get them."""
    name = _name(final)
    if name == "SGDClassifier":
        how = "fit it with loss='log_loss' or loss='modified_huber'"
    elif name == "SVC":
        how = "fit it with probability=True"
    elif name == "VotingClassifier":
        how = "use voting='soft'"
    else:
        how = "wrap it in sklearn.calibration.CalibratedClassifierCV"
    return f"{name} has no predict_proba (the node answers class probabilities); {how}"


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
    return any(_is_sklearn(s, IMPUTERS) and _is_nan_marker(s.missing_values) for s in steps)


def nan_native(final: Any) -> bool:
    """Routes NaN itself: HistGradientBoosting, XGBoost, LightGBM."""
    return _is_sklearn(final, NAN_NATIVE) or is_booster(final)


def _nan_flows(steps: list[Any], final: Any) -> bool:
    """True when NaN reaches an estimator that handles it, through steps that keep it."""
    if not nan_native(final):
        return False
    return all(_is_sklearn(s, _NAN_KEEPING) for s in steps)


def _ohe_takes_null(step: Any, j: int) -> bool:
    """A null string (fed as "") is a category of its own (NaN among the categories, as
    Dataiku's "treat as a regular value"), or an unknown value mapped to zeros."""
    cats = step.categories_[j] if j < len(step.categories_) else None
    if cats is not None and any(_is_nan_marker(c) for c in cats):
        return True
    return step.handle_unknown in ("ignore", "infrequent_if_exist", "warn")


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
                if _is_sklearn(step, IMPUTERS):
                    imputed = imputed or _is_nan_marker(step.missing_values)
                    if getattr(getattr(step, "statistics_", None), "dtype", np.dtype(float)).kind in "OUS":
                        kind = "string"
                elif _is_sklearn(step, ENCODERS):
                    cats = step.categories_[j] if j < len(step.categories_) else None
                    if cats is not None and cats.dtype.kind in "OUS":
                        kind = "string"
                    if _is_sklearn(step, ("OneHotEncoder",)) and kind == "string" and _ohe_takes_null(step, j):
                        imputed = True
                    passes = False  # the column is encoded: NaN no longer flows as NaN
                    break
                elif _is_sklearn(step, VECTORIZERS):
                    kind, passes = "string", False  # free text: "" for null would be an empty text
                    break
                elif not _is_sklearn(step, _NAN_KEEPING):
                    passes = False
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
