"""The model zoo (tests/compiler/zoo.py), compiled, served and called like a team would.

Cases are grouped by task and kind; each group is ONE service (one endpoint per case, one
package, one node): fitted on the zoo's small DataFrame, compiled (one group with the real
`apinode compile` CLI, the others with `compile_service`), served by `apinode serve`, called
with `dataikuapi.APINodeClient` on the 60 held-out rows (nulls included, unseen categories
and words), and compared with scikit-learn: classes identical, probabilities within 1e-4,
regressions within 1e-4 relative. Every endpoint is also asked for explanations on a few
held-out rows (see `_check_explanations`). Refused cases must fail at compile time with a message
naming what is unsupported and what to do. The README's support matrix must be what
`python -m tests.compiler.zoo --write-readme` writes.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import dataikuapi
import joblib
import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from compiler import CompileError, compile_service
from tests.compiler import zoo
from tests.compiler.helpers import write_service
from tests.nodeproc import run_node

# The "step" groups run from tests/compiler/test_zoo_steps.py: a module of their own, so that
# `--dist loadscope` gives them to another worker (each group takes 30-60 s).
GROUPS = [(task, "estimator") for task in zoo.TASKS]
STEP_GROUPS = [(task, "step") for task in zoo.TASKS]
CLI_GROUP = ("regression", "step")  # compiled by the real `apinode compile` in a subprocess
# Workers start on the first call and retire when idle: one node holds ~20 endpoints.
POOL = {"floor": 0, "cruise": 0, "ceil": 1, "idle_grace_ms": 200}
# Explanations: a small background and a step count that is a multiple of it, so SHAPLEY's
# efficiency is exact up to floating point (EFFICIENCY_TOL, probability or prediction units).
BACKGROUND_ROWS = 10
MC_STEPS = 20
EXPLAINED_ROWS = (2, 7, 19, 34)  # held-out rows: null a (2), NaN cat (7), NaN a (19), unseen cat (34)
EFFICIENCY_TOL = 1e-5  # absolute; relative for a regression's value above 1


def _slug(i: int, name: str) -> str:
    return f"e{i:02d}_" + re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")[:40]


def _group(task: str, kind: str) -> list[zoo.Case]:
    return [c for c in zoo.cases() if c.kind == kind and task in c.tasks and c.expect(task) == "works"]


def _records(held: pd.DataFrame) -> list[dict[str, Any]]:
    """Held-out rows as callers send them: a missing value is null in even rows, and in odd
    rows float('nan'), which dataikuapi sends as a bare NaN (the node reads it as null)."""
    out = []
    for i, row in enumerate(held.to_dict("records")):
        out.append({k: (None if i % 2 == 0 and isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    for row in out:  # numpy scalars as plain JSON values
        for k, v in row.items():
            if hasattr(v, "item"):
                row[k] = v.item()
    return out


def _write_group(folder: Path, task: str, cases: list[zoo.Case]) -> dict[str, tuple[Any, pd.DataFrame]]:
    folder.mkdir(parents=True)
    endpoints: dict[str, Any] = {}
    fitted: dict[str, tuple[Any, pd.DataFrame]] = {}
    for i, case in enumerate(cases):
        eid = _slug(i, case.name)
        model, _, held = case.fit(task)
        joblib.dump(model, folder / f"{eid}.joblib")
        held.to_csv(folder / f"{eid}.csv", index=False)
        endpoints[eid] = {
            "type": "prediction",
            "model": f"{eid}.joblib",
            "sample": f"{eid}.csv",
            "pool": POOL,
            "explanations": {"background_rows": BACKGROUND_ROWS},
        }
        fitted[eid] = (model, held)
    doc = {"service": "zoo", "version": "v1", "endpoints": endpoints}
    (folder / "service.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return fitted


def _compile_cli(folder: Path, out: Path) -> None:
    apinode = Path(sys.executable).parent / "apinode"
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    run = subprocess.run(
        [str(apinode), "compile", str(folder), "-o", str(out)], capture_output=True, text=True, timeout=600, env=env
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def _check(eid: str, task: str, model: Any, held: pd.DataFrame, answers: list[dict[str, Any]]) -> None:
    assert len(answers) == len(held), eid
    assert all(not a.get("ignored") for a in answers), (eid, answers[:2])
    got = [a["prediction"] for a in answers]
    if task == "regression":
        expected = np.asarray(model.predict(held), dtype=np.float64)
        np.testing.assert_allclose(np.asarray(got, dtype=np.float64), expected, rtol=1e-4, atol=1e-9, err_msg=eid)
        return
    expected_classes = [c.item() if hasattr(c, "item") else c for c in model.predict(held)]
    assert got == expected_classes, eid
    classes = [c.item() if hasattr(c, "item") else c for c in model.classes_]
    probas = np.array([[a["probas"][str(c)] for c in classes] for a in answers], dtype=np.float64)
    np.testing.assert_allclose(probas, model.predict_proba(held), rtol=0, atol=1e-4, err_msg=eid)


def _manifest(pkg: Path) -> dict[str, Any]:
    with zipfile.ZipFile(pkg) as z:
        return dict(json.loads(z.read("manifest.json")))


def _background(pkg: Path, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The endpoint's stored background rows, as feature dicts a client can send."""
    names = [f["name"] for f in entry["features"]]
    with zipfile.ZipFile(pkg) as z:
        rows = json.loads(z.read(entry["explanations"]["background"]))
    assert len(rows) == BACKGROUND_ROWS
    return [dict(zip(names, r, strict=True)) for r in rows]


def _target(answer: dict[str, Any], cls: Any) -> float:
    """What explanations explain: the value, or the probability of class `cls`."""
    return float(answer["prediction"] if cls is None else answer["probas"][str(cls)])


def _check_explanations(
    client: dataikuapi.APINodeClient, pkg: Path, eid: str, task: str, records: list[dict[str, Any]]
) -> None:
    """SHAPLEY with every feature asked: k names among the endpoint's inputs, the method, and
    efficiency (the contributions plus the background's mean prediction, predicted by the
    node, equal the explained value). ICE: the same names and method, and each contribution
    exactly f(x) - mean_b f(x with the feature from background row b), also predicted here."""
    entry = _manifest(pkg)["endpoints"][eid]
    names = [f["name"] for f in entry["features"]]
    background = _background(pkg, entry)
    bg_answers = client.predict_records(eid, [{"features": r} for r in background])["results"]
    for i in EXPLAINED_ROWS:
        x = records[i]
        shap = client.predict_record(
            eid,
            x,
            with_explanations=True,
            explanation_method="SHAPLEY",
            n_explanations=len(names),
            n_explanations_mc_steps=MC_STEPS,
        )["result"]
        assert shap["explanationMethod"] == "SHAPLEY", (eid, shap)
        phi = shap["explanations"]
        assert sorted(phi) == sorted(names), (eid, phi)
        # binary: the second class (no zoo endpoint sets positive_class); multiclass: x's class
        cls = None if task == "regression" else entry["classes"][1] if task == "binary" else shap["prediction"]
        fx = _target(shap, cls)
        expected = float(np.mean([_target(b, cls) for b in bg_answers]))
        tol = EFFICIENCY_TOL * max(1.0, abs(fx))
        assert abs(sum(phi.values()) + expected - fx) <= tol, (eid, i, phi, expected, fx)

        ice = client.predict_record(eid, x, with_explanations=True, explanation_method="ICE", n_explanations=3)[
            "result"
        ]
        assert ice["explanationMethod"] == "ICE", (eid, ice)
        assert len(ice["explanations"]) == min(3, len(names)) and set(ice["explanations"]) <= set(names), (eid, ice)
        for name, value in ice["explanations"].items():
            moved = client.predict_records(eid, [{"features": {**x, name: b[name]}} for b in background])["results"]
            mean = float(np.mean([_target(m, cls) for m in moved]))
            assert abs(fx - mean - value) <= tol, (eid, i, name, value, fx - mean)


@pytest.mark.parametrize(("task", "kind"), GROUPS, ids=[f"{t}-{k}" for t, k in GROUPS])
def test_zoo_group_served_matches_sklearn(tmp_path: Path, task: str, kind: str) -> None:
    served_group_matches_sklearn(tmp_path, task, kind)


def served_group_matches_sklearn(tmp_path: Path, task: str, kind: str) -> None:
    cases = _group(task, kind)
    folder, out = tmp_path / "zoo", tmp_path / "zoo.apz"
    fitted = _write_group(folder, task, cases)
    if (task, kind) == CLI_GROUP:
        _compile_cli(folder, out)
    else:
        compile_service(folder, out, progress=False)

    with run_node(tmp_path / "node", out) as node:
        client = dataikuapi.APINodeClient(node.http, "zoo")
        for eid, (model, held) in fitted.items():
            records = _records(held)
            answers = client.predict_records(eid, [{"features": r} for r in records])["results"]
            _check(eid, task, model, held, answers)
            _check_explanations(client, out, eid, task, records)
        # a bare NaN is a missing value; Infinity is no number a model can take
        eid = next(iter(fitted))
        body = b'{"features": {"a": Infinity, "b": 1.0, "age": 30, "cat": "x"}}'
        r = requests.post(node.url("zoo", eid, "predict"), data=body, timeout=30)
        assert r.status_code == 400 and r.json()["errorType"] == "BAD_REQUEST", r.text
        assert "Infinity is not a number JSON can carry" in r.json()["message"], r.text


REFUSED = [(c, t) for c in zoo.cases() for t in c.tasks if c.expect(t) == "refused"]


@pytest.mark.parametrize(("case", "task"), REFUSED, ids=[f"{c.name}-{t}" for c, t in REFUSED])
def test_zoo_refused_at_compile_time(tmp_path: Path, case: zoo.Case, task: str) -> None:
    model, _, held = case.fit(task)
    folder = write_service(tmp_path / "svc", model, sample=held)
    with pytest.raises(CompileError) as err:
        compile_service(folder, tmp_path / "svc.apz", progress=False)
    assert case.refusal(task) in str(err.value)


def test_readme_support_matrix_is_generated_from_the_zoo() -> None:
    """Run `python -m tests.compiler.zoo --write-readme` after changing the zoo."""
    assert zoo.readme_block(zoo.README.read_text()) == zoo.matrix()


def test_parity_failure_names_the_step_and_what_to_change(tmp_path: Path) -> None:
    """A token_pattern with \\b: RE2's word boundary is ASCII, so "cassé" splits in ONNX."""
    train, held, y = zoo.make_data("binary")
    cols = ["a", "b", "age", "cat", "text"]
    text = TfidfVectorizer(token_pattern=r"(?u)\b\w\w+\b|!")
    model = Pipeline([("prepare", zoo.prepare(text=text)), ("model", LogisticRegression(max_iter=500))])
    folder = write_service(tmp_path / "svc", model.fit(train[cols], y), sample=held[cols])
    with pytest.raises(CompileError) as err:
        compile_service(folder, tmp_path / "svc.apz", progress=False)
    message = str(err.value)
    assert "parity check failed" in message
    assert "diverges from scikit-learn at 'prepare' -> 'text' (TfidfVectorizer)" in message
    assert "token_pattern without \\b" in message
