"""Service folders and packages for the compiler tests: real models, real files, tmp_path only."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnxruntime as ort
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[2]
NP_TYPES: dict[str, Any] = {
    "float": np.float32,
    "double": np.float64,
    "int64": np.int64,
    "string": object,
    "bool": np.bool_,
}


def write_service(
    folder: Path,
    model: Any,
    *,
    features: dict[str, Any] | None = None,
    sample: pd.DataFrame | None = None,
    test_queries: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    endpoint: str = "score",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / "model.joblib")
    ep: dict[str, Any] = {"type": "prediction", "model": "model.joblib"}
    if features is not None:
        ep["features"] = features
    if sample is not None:
        sample.to_csv(folder / "sample.csv", index=False)
        ep["sample"] = "sample.csv"
    if test_queries is not None:
        ep["test_queries"] = test_queries
    ep.update(extra or {})
    doc = {"service": "svc", "version": "v1", "endpoints": {endpoint: ep}}
    (folder / "service.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder


class Package:
    """A compiled package opened the way the node opens it (feeding included)."""

    def __init__(self, path: Path) -> None:
        with zipfile.ZipFile(path) as z:
            self.manifest: dict[str, Any] = json.loads(z.read("manifest.json"))
            self.members = {n: z.read(n) for n in z.namelist()}

    def endpoint(self, eid: str = "score") -> dict[str, Any]:
        entry: dict[str, Any] = self.manifest["endpoints"][eid]
        return entry

    def session(self, eid: str = "score") -> ort.InferenceSession:
        model = self.endpoint(eid)["model"]
        return ort.InferenceSession(self.members[model["path"]], providers=["CPUExecutionProvider"])

    def feed(self, df: pd.DataFrame, eid: str = "score") -> dict[str, np.ndarray]:
        """Rows of `df` as node/worker/runtime.py feeds them: NaN for null numbers, "" for strings."""
        ep = self.endpoint(eid)
        feats = ep["features"]
        n = len(df)
        if ep["model"]["input_mode"] == "matrix":
            dt = NP_TYPES[feats[0]["onnx_type"]]
            cols = [df[f["name"]].astype(np.float64).to_numpy() for f in feats]
            return {ep["model"]["input_name"]: np.stack(cols, axis=1).astype(dt)}
        out = {}
        for f in feats:
            col = df[f["name"]]
            if f["onnx_type"] == "string":
                values = np.array([("" if pd.isna(v) else str(v)) for v in col], dtype=object)
            else:
                values = col.astype(np.float64).to_numpy().astype(NP_TYPES[f["onnx_type"]])
            out[f["name"]] = values.reshape(n, 1)
        return out

    def predict(self, df: pd.DataFrame, eid: str = "score") -> list[np.ndarray]:
        ep = self.endpoint(eid)
        m = ep["model"]
        if ep["task"] == "regression":
            return list(self.session(eid).run([m["value_output"]], self.feed(df, eid)))
        if m["label_output"] is not None:
            return list(self.session(eid).run([m["label_output"], m["proba_output"]], self.feed(df, eid)))
        # as the node does: the class is the first maximum of the probabilities
        (probas,) = self.session(eid).run([m["proba_output"]], self.feed(df, eid))
        labels = np.array(ep["classes"], dtype=object)[np.asarray(probas).argmax(axis=1)]
        return [labels, probas]


def run_compiler(*args: str | Path, cwd: Path | None = None, apinode: bool = False) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess: `python -m compiler compile ...` or `apinode compile ...`."""
    if apinode:
        cmd = [str(Path(sys.executable).parent / "apinode"), "compile", *map(str, args)]
    else:
        cmd = [sys.executable, "-m", "compiler", "compile", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd or ROOT, capture_output=True, text=True, timeout=120, env=_env())


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("COLUMNS", "100")
    return env
