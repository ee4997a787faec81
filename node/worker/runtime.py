"""What a worker runs: an ONNX prediction model, a user's Python function, a user's
prediction class (custom-prediction), or SQL statements (:mod:`node.worker.sql`).

`load_runtime(spec)` builds the runtime of the spec's endpoint type once, at worker start
(this is where heavy things load); `handle(op, payload)` then serves one request or one
batch. Errors a caller should see are raised as
:class:`~node.worker.protocol.WorkerError`, with a kind the front maps to its error.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import traceback
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from apz.specs import CodeSpec, EndpointSpec
from node.worker import protocol as p
from node.worker.protocol import WorkerError
from node.worker.spec import WorkerSpec

_NP_TYPES: dict[str, Any] = {
    "float": np.float32,
    "double": np.float64,
    "int64": np.int64,
    "string": object,
    "bool": np.bool_,
}


MAX_RUN_ROWS = 100_000  # perturbed rows of explanations in one model run (memory bound)


class Runtime(Protocol):
    def handle(self, op: str, payload: Any) -> Any: ...

    def describe(self) -> dict[str, Any]: ...


class PredictionRuntime:
    """Runs an ONNX model on a batch of validated rows (lists in feature order)."""

    def __init__(self, package_dir: Path, endpoint: EndpointSpec, threads: int) -> None:
        import onnxruntime as ort

        model = endpoint.model
        if model is None:
            raise WorkerError(p.ERR_INTERNAL, f"endpoint {endpoint.id!r} has no model")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        path = package_dir / model.path
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise WorkerError(p.ERR_INTERNAL, f"cannot load ONNX model {model.path}: {exc}") from exc
        self.features = endpoint.features
        self.mode = model.input_mode
        self.input_name = model.input_name
        self.dtypes = [_NP_TYPES[f.onnx_type] for f in self.features]
        self.names = [f.name for f in self.features]
        classes = endpoint.classes
        self.class_index = {c: i for i, c in enumerate(classes)} if classes is not None else None
        # binary: the class explanations are about (`positive_class`, else the second)
        self.positive = endpoint.positive
        # Without a label output the class is the first maximum of the probabilities, as
        # scikit-learn's predict takes it (ties included); the compiler keeps the label only
        # for models whose predict is something else (SVC).
        self.outputs = [model.label_output, model.proba_output]
        if classes is None:
            self.outputs = [model.value_output]
        elif self.outputs[0] is None:
            self.outputs = [model.proba_output]
        self.numeric = [j for j, f in enumerate(self.features) if f.onnx_type != "string"]
        background = endpoint.explanations.background if endpoint.explanations else None
        self.background, self.bg_out = self._background(package_dir, background)
        self._warm()

    def _background(self, package_dir: Path, background: str | None) -> tuple[Any, Any]:
        """The explanation background (rows of the sample) and the model's outputs on it:
        every SHAPLEY step starts from one of them, so they are predicted once, here."""
        if not background:
            return None, None
        rows = orjson.loads((package_dir / background).read_bytes())
        matrix = self._matrix(rows)
        return matrix, self._outputs(matrix)

    def _matrix(self, rows: list[list[Any]]) -> np.ndarray:
        """Rows as an object array, nulls of numeric features as NaN (what the model sees)."""
        m = np.empty((len(rows), len(self.names)), dtype=object)
        m[:] = rows
        for j in self.numeric:
            m[:, j] = np.array(m[:, j].tolist(), dtype=np.float64)
        return m

    def _outputs(self, matrix: np.ndarray) -> np.ndarray:
        """The model's raw outputs on an object matrix: values (n,) or probabilities (n, C)."""
        n = matrix.shape[0]
        if self.mode == "matrix":
            feed = {self.input_name: matrix.astype(self.dtypes[0])}
        else:
            feed = {
                name: matrix[:, j].astype(dt).reshape(n, 1)
                for j, (name, dt) in enumerate(zip(self.names, self.dtypes, strict=True))
            }
        out = self.session.run([self.outputs[-1]], feed)[0]
        return (
            np.asarray(out, dtype=np.float64).reshape(n, -1)
            if self.class_index
            else np.asarray(out, dtype=np.float64).reshape(-1)
        )

    def _warm(self) -> None:
        blank = {np.float32: 0.0, np.float64: 0.0, np.int64: 0, object: "", np.bool_: False}
        try:
            self.run([[blank[t] for t in self.dtypes]])
        except Exception:  # a model may reject blank rows; warming is only an optimisation
            pass

    def _inputs(self, rows: list[list[Any]]) -> dict[str, np.ndarray]:
        if self.mode == "matrix":
            return {self.input_name: np.array(rows, dtype=self.dtypes[0])}
        n = len(rows)
        return {
            name: np.array([r[j] for r in rows], dtype=dt).reshape(n, 1)
            for j, (name, dt) in enumerate(zip(self.names, self.dtypes, strict=True))
        }

    def run(self, rows: list[list[Any]]) -> tuple[list[Any], ...]:
        """Predictions as plain lists: `(values,)` for a regression, `(class indexes,
        probabilities)` for a classifier. Lists, not arrays, because they cross the process
        boundary: pickling a small ndarray costs some 15 µs each way, a list of floats 1."""
        out = self.session.run(self.outputs, self._inputs(rows))
        if self.class_index is None:
            return (np.asarray(out[0], dtype=np.float64).reshape(-1).tolist(),)
        if len(out) == 1:
            probas = np.asarray(out[0], dtype=np.float64)
            return probas.argmax(axis=1).tolist(), probas.tolist()
        labels, probas = out
        probas = np.asarray(probas, dtype=np.float64)
        get = self.class_index.get
        idx = [get(v, -1) for v in np.asarray(labels).reshape(-1).tolist()]
        if -1 in idx:  # a label the manifest does not know: trust the probabilities
            best = probas.argmax(axis=1).tolist()
            idx = [b if i < 0 else i for i, b in zip(idx, best, strict=True)]
        return idx, probas.tolist()

    def explain(self, rows: list[Any]) -> tuple[list[Any], ...]:
        """A batch where some rows ask for explanations (`{"row", "method", "k", "steps"}`
        in place of the row). The rows are predicted as `run` predicts them (the same
        answer as without explanations); every perturbed row of the batch goes to the
        model in ONE more run. The answer is `run`'s with one more list, the explanations
        (None for plain rows)."""
        from node.worker import explain as ex

        if self.background is None:
            raise WorkerError(p.ERR_BAD_REQUEST, "this model was compiled without a sample: no explanation background")
        plain = [r["row"] if isinstance(r, dict) else r for r in rows]
        answer = self.run(plain)
        x = self._matrix(plain)
        # One model run for the batch's perturbed rows, unless together they exceed
        # MAX_RUN_ROWS: then one run per group of whole requests (never a request split).
        # Each group is planned, run and reduced before the next is planned: the perturbed
        # rows of a whole batch (up to max_items x steps x features) would not fit in memory.
        explanations: list[Any] = [None] * len(rows)
        group: list[tuple[int, ex.Plan]] = []
        size = 0
        for i, r in enumerate(rows):
            if not isinstance(r, dict):
                continue
            pl = ex.plan(x[i], ex.Job(r["method"], int(r["k"]), int(r["steps"])), self.background)
            if size + len(pl.rows) > MAX_RUN_ROWS and group:
                self._explain_group(group, answer, explanations)
                group, size = [], 0
            group.append((i, pl))
            size += len(pl.rows)
        if group:
            self._explain_group(group, answer, explanations)
        return (*answer, explanations)

    def _explain_group(self, group: list[tuple[int, Any]], answer: tuple[list[Any], ...], into: list[Any]) -> None:
        """One model run for the perturbed rows of `group` ((row index, plan)), their
        explanations written into `into`."""
        from node.worker import explain as ex

        out = self._outputs(np.concatenate([pl.rows for _, pl in group]))
        start = 0
        for i, pl in group:
            values = out[start : start + pl.rows.shape[0]]
            start += pl.rows.shape[0]
            if self.class_index is None:
                fx, target, bg = float(answer[0][i]), values, self.bg_out
            else:  # binary: the positive class; multiclass: the predicted one
                probas = answer[1][i]
                c = self.positive if len(probas) == 2 else int(answer[0][i])
                fx, target, bg = float(probas[c]), values[:, c], self.bg_out[:, c]
            phi = ex.contributions(pl, fx, target, bg)
            into[i] = {"explanations": ex.strongest(self.names, phi, pl.job.k), "method": pl.job.method}

    def handle(self, op: str, payload: Any) -> Any:
        if op != p.OP_PREDICT:
            raise WorkerError(p.ERR_INTERNAL, f"prediction worker cannot {op!r}")
        try:
            if any(isinstance(r, dict) for r in payload):
                return self.explain(payload)
            return self.run(payload)
        except WorkerError:
            raise
        except Exception as exc:
            raise WorkerError(p.ERR_INTERNAL, f"ONNX inference failed: {exc}") from exc

    def describe(self) -> dict[str, Any]:
        return {"kind": "prediction", "inputs": [i.name for i in self.session.get_inputs()]}


def _import_user_module(package_dir: Path, code: CodeSpec, folders: list[str]) -> Any:
    """Imports the endpoint's module once; its top-level code sees the global `folders`."""
    root = package_dir / code.root
    path = package_dir / code.path
    sys.path.insert(0, str(root))
    name = ".".join(path.relative_to(root).with_suffix("").parts)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise WorkerError(p.ERR_USER, f"cannot import {code.path}")
    module = importlib.util.module_from_spec(spec)
    module.folders = folders  # type: ignore[attr-defined]
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        detail = traceback.format_exc()
        sys.stderr.write(f"error importing {code.path}:\n{detail}")
        raise WorkerError(p.ERR_USER, f"importing {code.path} failed: {type(exc).__name__}: {exc}", detail) from exc
    return module


class FunctionRuntime:
    """Calls a user's Python function with the request's keyword arguments."""

    def __init__(self, package_dir: Path, endpoint: EndpointSpec, folders: list[str]) -> None:
        code = _code(endpoint)
        module = _import_user_module(package_dir, code, folders)
        fn = getattr(module, code.name, None)
        if not callable(fn):
            raise WorkerError(p.ERR_USER, f"{code.path} has no function {code.name!r}")
        self.fn = fn
        self.signature = inspect.signature(fn)
        self.label = f"{code.path}:{code.name}"

    def handle(self, op: str, payload: Any) -> Any:
        if op != p.OP_CALL:
            raise WorkerError(p.ERR_INTERNAL, f"function worker cannot {op!r}")
        try:
            self.signature.bind(**payload)
        except TypeError as exc:
            raise WorkerError(p.ERR_BAD_REQUEST, f"bad arguments for {self.label}: {exc}") from None
        try:
            result = self.fn(**payload)
        except Exception as exc:
            detail = traceback.format_exc()
            sys.stderr.write(f"error in {self.label}:\n{detail}")
            raise WorkerError(p.ERR_USER, f"{type(exc).__name__}: {exc}", detail) from None
        try:
            return orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            raise WorkerError(
                p.ERR_USER, f"{self.label} returned a value that is not JSON-serialisable: {exc}"
            ) from None

    def describe(self) -> dict[str, Any]:
        return {"kind": "function", "function": self.label}


class CustomPredictionRuntime:
    """A user's class: `predict(df)` on the stacked rows of a batch, returning predictions,
    or `(predictions, probas)` with probas a DataFrame of one column per class. Its
    constructor receives the first managed folder's path, if the endpoint has folders."""

    def __init__(self, package_dir: Path, endpoint: EndpointSpec, folders: list[str]) -> None:
        code = _code(endpoint)
        module = _import_user_module(package_dir, code, folders)
        cls = getattr(module, code.name, None)
        self.label = f"{code.path}:{code.name}"
        if not isinstance(cls, type):
            raise WorkerError(p.ERR_USER, f"{code.path} has no class {code.name!r}")
        try:
            self.model = cls(folders[0]) if folders else cls()
        except Exception as exc:
            detail = traceback.format_exc()
            sys.stderr.write(f"error creating {self.label}:\n{detail}")
            raise WorkerError(p.ERR_USER, f"{self.label}(): {type(exc).__name__}: {exc}", detail) from exc
        if not callable(getattr(self.model, "predict", None)):
            raise WorkerError(p.ERR_USER, f"{self.label} has no predict(df) method")
        self.names = [f.name for f in endpoint.features]

    def handle(self, op: str, payload: Any) -> Any:
        import pandas as pd

        if op != p.OP_PREDICT:
            raise WorkerError(p.ERR_INTERNAL, f"custom-prediction worker cannot {op!r}")
        df = pd.DataFrame(payload, columns=self.names) if self.names else pd.DataFrame.from_records(payload)
        try:
            out = self.model.predict(df)
        except Exception as exc:
            detail = traceback.format_exc()
            sys.stderr.write(f"error in {self.label}.predict:\n{detail}")
            raise WorkerError(p.ERR_USER, f"{type(exc).__name__}: {exc}", detail) from None
        return (self._results(out, len(payload)),)

    def _results(self, out: Any, n: int) -> list[dict[str, Any]]:
        probas = None
        if isinstance(out, tuple) and len(out) == 2:
            out, probas = out
        preds = _plain(np.asarray(out).reshape(-1).tolist() if not isinstance(out, list) else out)
        if len(preds) != n:
            raise WorkerError(p.ERR_USER, f"{self.label}.predict returned {len(preds)} predictions for {n} rows")
        results: list[dict[str, Any]] = [{"prediction": v, "ignored": False} for v in preds]
        if probas is not None:
            frame = probas if hasattr(probas, "columns") else None
            if frame is None or len(frame) != n:
                raise WorkerError(
                    p.ERR_USER,
                    f"{self.label}.predict must return probas as a DataFrame of {n} rows, one column per class",
                )
            keys = [_label_key(c) for c in frame.columns]
            for result, row in zip(results, frame.to_numpy(dtype=np.float64).tolist(), strict=True):
                result["probas"] = dict(zip(keys, row, strict=True))
        try:
            orjson.dumps(results)
        except TypeError as exc:
            raise WorkerError(p.ERR_USER, f"{self.label}.predict returned values that are not JSON: {exc}") from None
        return results

    def describe(self) -> dict[str, Any]:
        return {"kind": "custom-prediction", "class": self.label}


def _plain(values: list[Any]) -> list[Any]:
    """numpy scalars and NaN as JSON-ready Python values."""
    out = []
    for v in values:
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, float) and v != v:
            v = None
        out.append(v)
    return out


def _label_key(label: Any) -> str:
    if hasattr(label, "item"):
        label = label.item()
    if isinstance(label, bool):
        return "true" if label else "false"
    return str(label)


def _code(endpoint: EndpointSpec) -> CodeSpec:
    if endpoint.code is None:
        raise WorkerError(p.ERR_INTERNAL, f"endpoint {endpoint.id!r} has no code")
    return endpoint.code


def load_runtime(spec: WorkerSpec) -> Runtime:
    package_dir = Path(spec.package_dir)
    endpoint = spec.endpoint
    kind = endpoint.type
    if kind == "prediction":
        return PredictionRuntime(package_dir, endpoint, spec.onnx_threads)
    folders = [str(package_dir / f) for f in endpoint.folders]
    for f in folders:  # a package holds files only: an empty managed folder exists too
        Path(f).mkdir(parents=True, exist_ok=True)
    if kind == "function":
        return FunctionRuntime(package_dir, endpoint, folders)
    if kind == "custom-prediction":
        return CustomPredictionRuntime(package_dir, endpoint, folders)
    if kind == "sql":
        from node.worker.sql import SqlRuntime

        return SqlRuntime(package_dir, endpoint, spec.dsn)
    raise WorkerError(p.ERR_INTERNAL, f"unknown endpoint type {kind!r}")
