"""Explanations and probaPercentile: service folder -> real compiler -> real node -> the
official Dataiku client (and gRPC stubs), compared with values computed here exactly.

- A linear regression: Shapley values are known in closed form against the background,
  phi_i = w_i (x_i - mean_background x_i), and ICE gives the same. Monte Carlo SHAPLEY is
  exact here (each step's marginal contribution of feature i is w_i (x_i - z_i) whatever
  the order), so the tolerance is floating point: 1e-6 relative.
- A 6-feature random forest classifier (one string feature one-hot encoded inside the
  pipeline, explained as one feature): exact Shapley values by enumerating all 64
  coalitions against the package's background (20 rows); Monte Carlo with 1000 steps
  lands within 0.02 (probability units) of them for every feature. Efficiency: the six
  contributions plus the background's mean prediction equal the prediction within 1e-6
  (1000 steps is a multiple of the background size: every background row is used equally).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dataikuapi
import grpc
import joblib
import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from compiler import compile_service
from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg
from tests.inproc import InProcNode, run_node

LIN = ["a", "b", "c", "d"]
TREE_NUM = ["n1", "n2", "n3", "n4", "n5"]
TREE = [*TREE_NUM, "cat"]
MC_TOLERANCE = 0.02


def _write_service(folder: Path, service: str, endpoints: dict[str, Any]) -> None:
    (folder / "service.yaml").write_text(
        yaml.safe_dump({"service": service, "version": "v1", "endpoints": endpoints}, sort_keys=False)
    )


def _linear(tmp: Path) -> tuple[Path, Any]:
    rng = np.random.default_rng(3)
    x = pd.DataFrame(rng.normal(size=(300, 4)) * [1.0, 2.0, 0.5, 3.0] + [0.0, 1.0, -2.0, 5.0], columns=LIN)
    y = x @ [1.5, -2.0, 4.0, 0.25] + 7.0
    model = LinearRegression().fit(x, y)
    folder = tmp / "lin"
    folder.mkdir()
    joblib.dump(model, folder / "model.joblib")
    x.head(150).to_csv(folder / "sample.csv", index=False)
    base = {"type": "prediction", "model": "model.joblib", "features": dict.fromkeys(LIN, "float")}
    base["sample"] = "sample.csv"
    _write_service(
        folder,
        "lin",
        {
            "score": base,
            "off": {**base, "explanations": {"enabled": False}},
            "auto": {**base, "explanations": {"by_default": True, "method": "ICE", "n_explanations": 2}},
            "nosample": {
                **{k: v for k, v in base.items() if k != "sample"},
                "test_queries": [{"features": dict.fromkeys(LIN, 0.5)}],
                "explanations": {"by_default": True},
            },
        },
    )
    return compile_service(folder, tmp / "lin.apz", progress=False).out, model


def _tree(tmp: Path) -> tuple[Path, Any]:
    rng = np.random.default_rng(4)
    n = 1200
    x = pd.DataFrame(rng.normal(size=(n, 5)), columns=TREE_NUM)
    x["cat"] = rng.choice(["red", "green", "blue"], n)
    score = x["n1"] * 1.5 - x["n2"] + x["n3"] * x["n4"] + (x["cat"] == "red") * 1.2
    y = np.where(score + rng.normal(0, 0.5, n) > 0.5, "yes", "no")
    prep = ColumnTransformer([("num", "passthrough", TREE_NUM), ("cat", OneHotEncoder(), ["cat"])])
    clf = RandomForestClassifier(n_estimators=25, max_depth=5, random_state=0)
    model = Pipeline([("prep", prep), ("rf", clf)]).fit(x.head(900), y[:900])
    folder = tmp / "tree"
    folder.mkdir()
    joblib.dump(model, folder / "model.joblib")
    x.tail(300).to_csv(folder / "sample.csv", index=False)
    feats = {**dict.fromkeys(TREE_NUM, "float"), "cat": "string"}
    ep = {"type": "prediction", "model": "model.joblib", "features": feats, "sample": "sample.csv"}
    ep["explanations"] = {"background_rows": 20, "max_mc_steps": 1000}
    _write_service(folder, "tree", {"score": ep, "neg": {**ep, "positive_class": "no"}})
    return compile_service(folder, tmp / "tree.apz", progress=False).out, model


def _multiclass(tmp: Path) -> tuple[Path, Any]:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(5)
    x = pd.DataFrame(rng.normal(size=(400, 3)), columns=["p", "q", "r"])
    y = np.argmax(x.to_numpy() @ [[1, -1, 0], [0, 1, -1], [1, 0, 1]] + rng.normal(0, 0.3, (400, 3)), axis=1)
    model = LogisticRegression(max_iter=500).fit(x, y)
    folder = tmp / "multi"
    folder.mkdir()
    joblib.dump(model, folder / "model.joblib")
    x.head(100).to_csv(folder / "sample.csv", index=False)
    ep = {"type": "prediction", "model": "model.joblib", "sample": "sample.csv"}
    _write_service(folder, "multi", {"score": ep})
    return compile_service(folder, tmp / "multi.apz", progress=False).out, model


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("explain")
    lin_pkg, lin = _linear(tmp)
    tree_pkg, tree = _tree(tmp)
    multi_pkg, _ = _multiclass(tmp)
    with run_node(tmp / "data", lin_pkg, tree_pkg, multi_pkg) as node:
        yield {"node": node, "lin": lin, "tree": tree, "lin_pkg": lin_pkg, "tree_pkg": tree_pkg, "multi_pkg": multi_pkg}


def _member(pkg: Path, name: str) -> Any:
    with zipfile.ZipFile(pkg) as z:
        return json.loads(z.read(name))


def _background(pkg: Path, names: list[str]) -> pd.DataFrame:
    return pd.DataFrame(_member(pkg, "models/score.background.json"), columns=names)


def _client(node: InProcNode, service: str) -> dataikuapi.APINodeClient:
    return dataikuapi.APINodeClient(node.http, service)


def test_linear_shapley_and_ice_equal_the_closed_form(served: dict[str, Any]) -> None:
    node, model = served["node"], served["lin"]
    bg = _background(served["lin_pkg"], LIN)
    assert len(bg) == 100  # the default background size, from a 150-row sample
    client = _client(node, "lin")
    rows = np.random.default_rng(9).normal(size=(3, 4)) * 2
    for r in rows:
        features = dict(zip(LIN, r.tolist(), strict=True))
        exact = model.coef_ * (r - bg.to_numpy(dtype=float).mean(axis=0))
        for method, steps in (("SHAPLEY", 100), ("SHAPLEY", 300), ("ICE", None)):
            res = client.predict_record(
                "score",
                features,
                with_explanations=True,
                explanation_method=method,
                n_explanations=4,
                n_explanations_mc_steps=steps,
            )["result"]
            assert res["explanationMethod"] == method
            got = np.array([res["explanations"][f] for f in LIN])
            assert np.abs(got - exact).max() <= 1e-6 * max(1.0, np.abs(exact).max()), (method, got, exact)
            # the k strongest, strongest first
            two = client.predict_record(
                "score", features, with_explanations=True, explanation_method=method, n_explanations=2
            )["result"]["explanations"]
            assert list(two) == [LIN[j] for j in np.argsort(-np.abs(exact))[:2]]


def _exact_shapley(model: Any, x: pd.Series, bg: pd.DataFrame) -> tuple[np.ndarray, float, float]:
    """Exact interventional Shapley values of P(yes) against `bg`, by enumerating every
    coalition: v(S) = mean_b f(x on S, background row b elsewhere)."""
    n = len(TREE)
    coalitions = list(itertools.product([False, True], repeat=n))
    frames = []
    for mask in coalitions:
        f = bg.copy()
        for j, name in enumerate(TREE):
            if mask[j]:
                f[name] = x[name]
        frames.append(f)
    p = model.predict_proba(pd.concat(frames, ignore_index=True))[:, 1].reshape(len(coalitions), len(bg))
    v = dict(zip(coalitions, p.mean(axis=1), strict=True))
    phi = np.zeros(n)
    for mask, value in v.items():
        size = sum(mask)
        for i in range(n):
            if mask[i]:
                without = tuple(m and j != i for j, m in enumerate(mask))
                weight = math.factorial(size - 1) * math.factorial(n - size) / math.factorial(n)
                phi[i] += weight * (value - v[without])
    return phi, v[(True,) * n], v[(False,) * n]


def test_tree_ensemble_monte_carlo_converges_to_exact_shapley(served: dict[str, Any]) -> None:
    node, model = served["node"], served["tree"]
    bg = _background(served["tree_pkg"], TREE)
    assert len(bg) == 20
    client = _client(node, "tree")
    rng = np.random.default_rng(11)
    probe = pd.DataFrame(rng.normal(size=(3, 5)), columns=TREE_NUM)
    probe["cat"] = ["red", "blue", "green"]
    # the background's mean prediction (by the node: the model the contributions come from)
    bg_items = [{"features": dict(zip(TREE, row, strict=True))} for row in bg.itertuples(index=False)]
    expected = np.mean([r["probas"]["yes"] for r in client.predict_records("score", bg_items)["results"]])
    worst = 0.0
    for _, x in probe.iterrows():
        exact, fx, _ = _exact_shapley(model, x, bg)
        features = {k: (v if k == "cat" else float(v)) for k, v in x.items()}
        res = client.predict_record(
            "score", features, with_explanations=True, n_explanations=6, n_explanations_mc_steps=1000
        )["result"]
        assert res["explanationMethod"] == "SHAPLEY" and set(res["explanations"]) == set(TREE)
        got = np.array([res["explanations"][f] for f in TREE])
        worst = max(worst, float(np.abs(got - exact).max()))
        assert np.abs(got - exact).max() <= MC_TOLERANCE, (got, exact)
        # efficiency: contributions + expected value = the prediction (of the positive class)
        assert got.sum() + expected == pytest.approx(res["probas"]["yes"], abs=1e-6)
        assert res["probas"]["yes"] == pytest.approx(fx, abs=1e-5)
        # deterministic: the same request, alone or in a batch, gets the same explanations
        again = client.predict_records(
            "score",
            [{"features": dict(features, n1=0.0)}, {"features": features}],
            with_explanations=True,
            n_explanations=6,
            n_explanations_mc_steps=1000,
        )["results"][1]
        assert again["explanations"] == res["explanations"]
        # ICE, exact: f(x) - mean_b f(x with feature j from background row b)
        ice = client.predict_record("score", features, with_explanations=True, explanation_method="ICE")["result"]
        want = {}
        for name in TREE:
            f = pd.DataFrame([x] * len(bg)).reset_index(drop=True)
            f[name] = bg[name].to_numpy()
            want[name] = fx - model.predict_proba(f[TREE])[:, 1].mean()
        assert len(ice["explanations"]) == 3  # the endpoint's default k
        for name, value in ice["explanations"].items():
            assert value == pytest.approx(want[name], abs=1e-5)
    print(f"largest |Monte Carlo - exact| over 3 rows x 6 features, 1000 steps: {worst:.4f}")


def test_multiclass_explains_the_predicted_class(served: dict[str, Any]) -> None:
    """Efficiency against the predicted class's probability (100 steps over a 100-row
    background: exact), for rows predicted as each of the three classes; no probaPercentile."""
    client = _client(served["node"], "multi")
    bg = _background(served["multi_pkg"], ["p", "q", "r"])
    items = [{"features": dict(zip("pqr", row, strict=True))} for row in bg.itertuples(index=False)]
    bg_probas = client.predict_records("score", items)["results"]
    seen = set()
    for row in ([2, -1, 0], [-1, 2, -2], [0, -2, 2], [0.1, 0.2, 0.3]):
        res = client.predict_record(
            "score", dict(zip("pqr", map(float, row), strict=True)), with_explanations=True, n_explanations=3
        )["result"]
        label = str(res["prediction"])
        seen.add(label)
        expected = np.mean([r["probas"][label] for r in bg_probas])
        assert sum(res["explanations"].values()) + expected == pytest.approx(res["probas"][label], abs=1e-6)
        assert "probaPercentile" not in res
    assert seen == {"0", "1", "2"}


def test_proba_percentile_ranks_among_the_sample(served: dict[str, Any]) -> None:
    node = served["node"]
    sample = pd.read_csv(served["tree_pkg"].parent / "tree" / "sample.csv")
    items = [{"features": f} for f in sample.to_dict(orient="records")]
    results = _client(node, "tree").predict_records("score", items)["results"]
    probas = np.array([r["probas"]["yes"] for r in results])
    stored = _member(served["tree_pkg"], "manifest.json")["endpoints"]["score"]["proba_percentiles"]
    assert len(stored) == len(sample) and stored == sorted(stored)
    for r, p in zip(results, probas, strict=True):
        below, equal = (probas < p - 1e-6).sum(), (np.abs(probas - p) <= 1e-6).sum()
        assert r["probaPercentile"] == round(100 * (below + equal / 2) / len(probas))
    assert results[int(probas.argmax())]["probaPercentile"] >= 99
    assert results[int(probas.argmin())]["probaPercentile"] <= 1
    # a regression has none
    lin = _client(node, "lin").predict_record("score", dict.fromkeys(LIN, 1.0))["result"]
    assert "probaPercentile" not in lin and "explanations" not in lin


def test_positive_class_chooses_what_is_explained_and_ranked(served: dict[str, Any]) -> None:
    """`positive_class: "no"`: the same model explained and ranked by P(no) = 1 - P(yes)."""
    client = _client(served["node"], "tree")
    features = {"n1": 1.3, "n2": -0.2, "n3": 0.1, "n4": -1.5, "n5": 0.4, "cat": "green"}
    ask = {"with_explanations": True, "n_explanations": 6, "n_explanations_mc_steps": 200}
    yes = client.predict_record("score", features, **ask)["result"]
    no = client.predict_record("neg", features, **ask)["result"]
    assert set(no["explanations"]) == set(TREE)
    for name, value in yes["explanations"].items():
        assert no["explanations"][name] == pytest.approx(-value, abs=1e-6)
    stored = _member(served["tree_pkg"], "manifest.json")["endpoints"]
    assert stored["neg"]["positive_class"] == "no"
    flipped = sorted(1 - p for p in stored["score"]["proba_percentiles"])
    assert np.allclose(stored["neg"]["proba_percentiles"], flipped, atol=1e-6)
    assert abs(no["probaPercentile"] - (100 - yes["probaPercentile"])) <= 1


def test_endpoint_settings_and_refusals(served: dict[str, Any]) -> None:
    node = served["node"]
    client = _client(node, "lin")
    features = dict.fromkeys(LIN, 1.0)
    # by_default: explanations without asking (the client's nulls), with the endpoint's method and k
    auto = client.predict_record("auto", features)["result"]
    assert auto["explanationMethod"] == "ICE" and len(auto["explanations"]) == 2
    assert "explanations" not in client.predict_record("auto", features, with_explanations=False)["result"]
    # not by default elsewhere
    assert "explanations" not in client.predict_record("score", features)["result"]
    with pytest.raises(dataikuapi.utils.DataikuException, match="NOT_SUPPORTED: explanations are disabled"):
        client.predict_record("off", features, with_explanations=True)
    with pytest.raises(dataikuapi.utils.DataikuException, match=r"BAD_REQUEST: explanations\.nMonteCarloSteps is 1001"):
        client.predict_record("score", features, with_explanations=True, n_explanations_mc_steps=1001)
    ice = client.predict_record(
        "score", features, with_explanations=True, explanation_method="ICE", n_explanations_mc_steps=1001
    )["result"]
    assert ice["explanationMethod"] == "ICE"  # ICE takes no steps: the cap does not apply
    with pytest.raises(dataikuapi.utils.DataikuException, match=r"BAD_REQUEST: explanations\.method must be one of"):
        client.predict_record("score", features, with_explanations=True, explanation_method="LIME")
    for bad in ({"enabled": True, "nExplanations": 0}, {"enabled": "yes"}, [1]):
        r = requests.post(node.url("lin", "score", "predict"), json={"features": features, "explanations": bad})
        assert r.status_code == 400 and r.json()["errorType"] == "BAD_REQUEST", r.text
    # compiled without a sample: no background; by_default cannot apply, asking is refused
    assert "explanations" not in client.predict_record("nosample", features)["result"]
    with pytest.raises(
        dataikuapi.utils.DataikuException, match="NOT_SUPPORTED: endpoint 'nosample' has no explanation"
    ):
        client.predict_record("nosample", features, with_explanations=True)
    # the node still answers
    assert client.predict_record("score", features)["result"]["prediction"] == pytest.approx(
        float(served["lin"].predict(pd.DataFrame([features]))[0]), rel=1e-6
    )


def test_grpc_carries_explanations_and_proba_percentile(served: dict[str, Any]) -> None:
    node = served["node"]
    features = {"n1": 0.3, "n2": -1.0, "n3": 0.5, "n4": 1.5, "n5": 0.0, "cat": "red"}
    http = _client(node, "tree").predict_record(
        "score", features, with_explanations=True, n_explanations=4, n_explanations_mc_steps=200
    )["result"]
    value = {k: pb.Value(text=v) if isinstance(v, str) else pb.Value(number=v) for k, v in features.items()}
    ask = pb.Explanations(enabled=True, n_explanations=4, n_monte_carlo_steps=200)
    with grpc.insecure_channel(node.grpc) as ch:
        stub = pbg.ApiNodeStub(ch)
        one = stub.Predict(pb.PredictRequest(service="tree", endpoint="score", features=value, explanations=ask))
        many = stub.PredictMulti(
            pb.PredictMultiRequest(
                service="tree", endpoint="score", items=[pb.PredictItem(features=value)], explanations=ask
            )
        )
        plain = stub.Predict(pb.PredictRequest(service="tree", endpoint="score", features=value))
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(
                pb.PredictRequest(
                    service="tree",
                    endpoint="score",
                    features=value,
                    explanations=pb.Explanations(enabled=True, n_monte_carlo_steps=5000),
                )
            )
    for got in (one.result, many.results[0]):
        assert dict(got.explanations) == http["explanations"]
        assert got.explanation_method == "SHAPLEY"
        assert got.HasField("proba_percentile") and got.proba_percentile == http["probaPercentile"]
    assert not plain.result.explanations and plain.result.explanation_method == ""
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nMonteCarloSteps is 5000" in (err.value.details() or "")


def test_positive_class_must_be_a_label_of_a_binary_model(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    from compiler.errors import CompileError

    x = pd.DataFrame(np.random.default_rng(0).normal(size=(60, 2)), columns=["u", "v"])
    folder = tmp_path / "svc"
    folder.mkdir()
    joblib.dump(LogisticRegression().fit(x, np.where(x["u"] > 0, "up", "down")), folder / "model.joblib")
    ep = {"type": "prediction", "model": "model.joblib", "positive_class": "sideways"}
    _write_service(folder, "svc", {"score": ep})
    with pytest.raises(CompileError, match=r"positive_class: 'sideways' is not one of the model's classes"):
        compile_service(folder, tmp_path / "svc.apz", progress=False)
    joblib.dump(LinearRegression().fit(x, x["u"]), folder / "model.joblib")
    with pytest.raises(CompileError, match="only a binary classifier has one"):
        compile_service(folder, tmp_path / "svc.apz", progress=False)


CUSTOM_CODE = """
import pandas as pd


class Doubler:
    def predict(self, df):
        return (df["a"] * 2).tolist()
"""


def test_custom_prediction_refuses_explanations_plainly(tmp_path: Path) -> None:
    folder = tmp_path / "svc"
    (folder / "code").mkdir(parents=True)
    (folder / "code" / "m.py").write_text(CUSTOM_CODE)
    ep = {"type": "custom-prediction", "file": "code/m.py", "class": "Doubler", "features": {"a": "float"}}
    _write_service(folder, "custom", {"double": ep})
    pkg = compile_service(folder, tmp_path / "custom.apz", progress=False).out
    with run_node(tmp_path / "data", pkg) as node:
        client = _client(node, "custom")
        with pytest.raises(
            dataikuapi.utils.DataikuException,
            match="NOT_SUPPORTED: explanations are not supported for custom-prediction endpoints",
        ):
            client.predict_record("double", {"a": 2.0}, with_explanations=True)
        with pytest.raises(dataikuapi.utils.DataikuException, match="NOT_SUPPORTED"):
            client.predict_records("double", [{"features": {"a": 1.0}}], with_explanations=True)
        # the client's nulls: answered as usual
        assert client.predict_record("double", {"a": 2.0})["result"]["prediction"] == 4.0


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"explanations": {"background": "models/elsewhere.json"}}, "explanations.background 'models/elsewhere.json'"),
        ({"explanations": {"max_mc_steps": 0}}, "explanations.max_mc_steps"),
        ({"explanations": {"method": "LIME"}}, "explanations.method 'LIME'"),
        ({"proba_percentiles": [0.5, 0.1]}, "proba_percentiles must be sorted"),
        ({"proba_percentiles": []}, "proba_percentiles must be a non-empty list"),
        ({"positive_class": "maybe"}, "positive_class 'maybe' is not one of classes"),
    ],
)
def test_the_node_refuses_bad_explanation_fields(served: dict[str, Any], change: dict[str, Any], expected: str) -> None:
    from apz.manifest import parse_manifest
    from apz.vocab import MANIFEST, PackageError

    with zipfile.ZipFile(served["tree_pkg"]) as z:
        manifest = json.loads(z.read(MANIFEST))
    score = manifest["endpoints"]["score"]
    for key, value in change.items():
        score[key] = {**score[key], **value} if isinstance(value, dict) else value
    with pytest.raises(PackageError, match=re.escape(expected)):
        parse_manifest(manifest)


def _peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


def test_a_large_explained_batch_is_computed_in_bounded_memory(served: dict[str, Any]) -> None:
    """3000 items x 1000 SHAPLEY steps is 9M perturbed rows: the worker runs them in groups
    of at most MAX_RUN_ROWS and keeps only one group's rows at a time. Planned all at once
    (as they once were), the worker's peak memory grew by 562 MB for this 200 kB request
    (some 2 GB at --max-items 10000); one group at a time it grew by 24 MB."""
    node = served["node"]
    pids = node.pool("lin", "score")["workers"]["pids"]
    before = {pid: _peak_rss_mb(pid) for pid in pids}
    rows = np.random.default_rng(11).normal(size=(3000, 4))
    items = [{"features": dict(zip(LIN, r.tolist(), strict=True))} for r in rows]
    body = {"items": items, "explanations": {"enabled": True, "method": "SHAPLEY", "nMonteCarloSteps": 1000}}
    r = requests.post(node.url("lin", "score", "predict-multi"), json=body, timeout=600)
    assert r.status_code == 200, r.text[:500]
    results = r.json()["results"]
    assert len(results) == 3000 and all(len(res["explanations"]) == 3 for res in results)
    # the same explanations as asked one by one (the grouping changes nothing)
    one = requests.post(
        node.url("lin", "score", "predict"), json={**items[1234], "explanations": body["explanations"]}, timeout=60
    ).json()["result"]["explanations"]
    assert results[1234]["explanations"] == pytest.approx(one, rel=1e-9, abs=1e-12)
    assert node.pool("lin", "score")["workers"]["pids"] == pids  # no worker died (or grew) meanwhile
    growth = max(_peak_rss_mb(pid) - before[pid] for pid in pids)
    assert growth < 150, f"the worker's peak memory grew by {growth:.0f} MB"


def test_an_explained_request_past_the_cost_cap_is_refused_before_it_runs(served: dict[str, Any]) -> None:
    """6000 items x 1000 SHAPLEY steps x 4 features is 24M model rows, past the 20M a request
    may cost: refused at once (413), and the same items with fewer steps are answered."""
    node = served["node"]
    items = [{"features": dict.fromkeys(LIN, float(i % 7))} for i in range(6000)]
    ask = {"enabled": True, "method": "SHAPLEY", "nMonteCarloSteps": 1000}
    r = requests.post(node.url("lin", "score", "predict-multi"), json={"items": items, "explanations": ask}, timeout=60)
    assert r.status_code == 413 and r.json()["errorType"] == "PAYLOAD_TOO_LARGE", r.text[:300]
    assert "24,000,000 model rows" in r.json()["message"] and "fewer nMonteCarloSteps" in r.json()["message"]
    ask["nMonteCarloSteps"] = 10
    r = requests.post(
        node.url("lin", "score", "predict-multi"), json={"items": items, "explanations": ask}, timeout=300
    )
    assert r.status_code == 200 and len(r.json()["results"]) == 6000, r.text[:300]
