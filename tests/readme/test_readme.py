"""The README is a test: every command it shows in Quick start, gRPC API, Deploying, CLI, Load
testing, Open Inference Protocol and Running on Kubernetes runs, as written, on the shipped
example.

The commands come from the README's fenced blocks (tests/readme/extract.py), and REGISTRY
names the test that runs each one: a test of this module; `tests/...py::test_x`, a test of
another module that runs it (the container image is built and run by tests/image, once); or
`not run: REASON` for the commands of a block the README marks `# REASON: not run by the
tests` (those that need a Kubernetes cluster), each still listed. A command added to the README
without an entry, or an entry left for a command that is gone, fails
`test_every_readme_command_has_a_test`. A test runs the
README's text through `readme_command(...)`, replacing only addresses, ports and keys (each
replacement must match, so a changed command fails loudly) and adding harness flags (short
durations, a JSON result file) at the end.

`make run` itself starts the node most tests use: in a scratch copy of the Makefile and the
example (its `.venv` the running one), it trains `examples/fraud/train.py`, compiles with
`apinode compile` and serves with `--print-usage`, on ports chosen by the system. The whole
module runs in one xdist worker, in file order: the Deploying commands change the node's
state one after the other, as they would for a reader.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
import yaml

from tests.node.test_tls import make_pki
from tests.nodeproc import NodeProc, start_node
from tests.readme.extract import README, blocks, commands, not_run

pytestmark = pytest.mark.xdist_group("readme")

ROOT = README.parent
VENV_BIN = Path(sys.executable).parent
RISK_KEY = "risk-readme-key-0123"
EXPORT = "export APINODE_DATA_DIR=build/data"  # Deploying: where `apinode deploy` finds the key
TLS_LIST = "apinode deploy list --node 10.0.0.5:12001 --tls-ca ca.crt"
MTLS_LIST = f"{TLS_LIST} --tls-cert me.crt --tls-key me.key"
CLUSTER = "not run: needs a Kubernetes cluster"
# `deploy publish --repository` is being built (branch h-repo): then run it against a local
# directory repository, here
PUBLISH = CLUSTER  # the same commands run on a local directory repository in test_deploy_repository
IMAGE_TESTS = "tests/image/test_image.py"

# README command -> the test that runs it. Long lines: each key is the README's text.
REGISTRY: dict[str, str] = {
    # Quick start
    "make run": "test_make_run_trains_compiles_and_serves",
    'curl -s http://127.0.0.1:12000/public/api/v1/fraud/score/predict -d \'{"features": {"customer_id": "C00000", "amount": 42.5, "merchant_category": "grocery", "hour": 14, "distance_from_home": 3.2, "card_present": true}}\'': "test_quick_start_curl_predict",
    'curl -s http://127.0.0.1:12000/public/api/v1/fraud/customer/lookup -d \'{"data": {"customer_id": "C00042"}}\'': "test_quick_start_curl_lookup",
    'grpcurl -plaintext -d \'{"service": "fraud", "endpoint": "score", "features": {"customer_id": {"text": "C00000"},\n  "amount": {"number": 42.5}, "merchant_category": {"text": "grocery"}, "hour": {"integer": 14},\n  "distance_from_home": {"number": 3.2}, "card_present": {"flag": true}}}\' 127.0.0.1:12001 apinode.v1.ApiNode/Predict': "test_quick_start_grpcurl_predict",
    'import dataikuapi\nclient = dataikuapi.APINodeClient("http://127.0.0.1:12000", "fraud")\nclient.predict_record("score", {"customer_id": "C00000", "amount": 42.5, "merchant_category": "grocery",\n                                "hour": 14, "distance_from_home": 3.2, "card_present": True})\n# {"result": {"prediction": "OK", "probas": {...}, "ignored": False}, "timing": {...}, "apiContext": {...}}\nclient.lookup_record("customer", {"customer_id": "C00042"})   # {"data": {...}}: the client returns results[0]': "test_quick_start_python_client",
    # gRPC API
    'grpcurl -plaintext -d \'{"service": "fraud", "endpoint": "customer", "items": [{"data": {"customer_id": {"text": "C00042"}}}]}\' 127.0.0.1:12001 apinode.v1.ApiNode/Lookup': "test_grpc_api_grpcurl_lookup",
    # Open Inference Protocol
    'import numpy as np, tritonclient.http as httpclient   # or tritonclient.grpc, on port 12001\nc = httpclient.InferenceServerClient("localhost:12000")\nx = np.array([[120.5, 3, 12.0]])\nt = httpclient.InferInput("input", list(x.shape), "FP64"); t.set_data_from_numpy(x)\nr = c.infer("risk.score", [t], headers={"Authorization": "Bearer KEY"})   # KEY: one of the service\'s api_keys\nr.as_numpy("label"), r.as_numpy("probabilities")': "test_oip_python_tritonclient",
    'curl -s localhost:12000/v2/models/risk.score/infer -H \'Authorization: Bearer KEY\' -d \'{"inputs": [{"name": "input",\n  "datatype": "FP64", "shape": [1, 3], "data": [120.5, 3, 12.0]}]}\'': "test_oip_curl_infer",
    'echo \'{"data": [{"input": {"content": [120.5, 3.0, 12.0], "shape": [3]}}]}\' > rows.json': "test_oip_perf_analyzer",
    "LD_LIBRARY_PATH=$(.venv/bin/python -c 'import nvidia.cuda_runtime as m; print(m.__path__[0])')/lib .venv/bin/perf_analyzer -m risk.score -u localhost:12000 --input-data rows.json --concurrency-range 1:2 -H 'Authorization:Bearer KEY'": "test_oip_perf_analyzer",
    # Deploying
    EXPORT: "test_deploy_push_activate",
    "apinode deploy push build/fraud.apz --node 127.0.0.1:12001 --activate": "test_deploy_push_activate",
    "apinode deploy push build/fraud-v2.apz --node ... --mapping v1=0.9,v2=0.1": "test_deploy_push_mapping",
    "apinode deploy list --node ...": "test_deploy_list",
    "apinode deploy status --node ...": "test_deploy_status",
    "apinode deploy mapping fraud v1=0.5,v2=0.5 --node ...": "test_deploy_mapping",
    "apinode deploy activate fraud v2 --node ...": "test_deploy_activate",
    "apinode deploy rollback fraud --node ...": "test_deploy_rollback",
    "apinode deploy tune fraud score floor=2 ceil=4 --node ...": "test_deploy_tune",
    "apinode deploy test build/fraud.apz --node ...": "test_deploy_test",
    TLS_LIST: "test_deploy_list_tls_nodes",
    MTLS_LIST: "test_deploy_list_tls_nodes",
    "apinode deploy push build/fraud.apz --infra prod.yaml --rollback-on-failure": "test_deploy_infra_three_nodes",
    # Running on Kubernetes: tests/image builds the image with `make image` (build.sh) and runs
    # it with the fraud example mounted at /packages (read-only root, as the Deployment does)
    "make image": f"{IMAGE_TESTS}::test_the_image_runs_as_a_non_root_user_without_the_optional_extras",
    'podman run --rm -p 12000:12000 -p 12001:12001 -v "$PWD/build:/packages:ro" apinode:0.1.0 /packages/fraud.apz': f"{IMAGE_TESTS}::test_predictions_over_http_and_grpc",
    "kubectl kustomize kubernetes/overlays/volume": "test_kubectl_kustomize_volume_overlay",
    "kubectl create namespace apinode": CLUSTER,
    'kubectl -n apinode create secret generic apinode-admin --from-literal=admin-key="$(openssl rand -hex 32)"': CLUSTER,
    "kubectl -n apinode create secret generic apinode-connections --from-file=connections.json": CLUSTER,
    "podman tag apinode:0.1.0 registry.example.com/apinode:0.1.0 && podman push registry.example.com/apinode:0.1.0": CLUSTER,
    "kubectl apply -k my-overlay": CLUSTER,
    "apinode deploy publish build/fraud.apz --repository /mnt/apinode-repository --activate --wait --nodes-dns apinode-nodes.apinode.svc:12001": PUBLISH,
    "kubectl -n apinode rollout status deployment/apinode": CLUSTER,
    "kubectl -n apinode get hpa apinode": CLUSTER,
    'kubectl -n apinode patch hpa apinode -p \'{"spec": {"minReplicas": 4, "maxReplicas": 20}}\'': CLUSTER,
    "apinode deploy publish build/fraud-v2.apz --repository /mnt/apinode-repository --activate --wait --nodes-dns apinode-nodes.apinode.svc:12001": PUBLISH,
    "kubectl -n apinode set image deployment/apinode apinode=registry.example.com/apinode:0.2.0": CLUSTER,
    "kubectl -n apinode rollout undo deployment/apinode": CLUSTER,
    "apinode deploy publish build/fraud.apz --repository /mnt/repo --activate": "test_deploy_repository",
    "apinode serve --repository /mnt/repo --poll-seconds 5": "test_deploy_repository",
    "apinode deploy publish build/fraud-v2.apz --repository /mnt/repo --mapping v1=0.9,v2=0.1": "test_deploy_repository",
    "apinode deploy activate fraud v2 --repository /mnt/repo --wait --nodes 10.0.0.5:12001,10.0.0.6:12001": "test_deploy_repository",
    "apinode deploy rollback fraud --repository /mnt/repo --wait --nodes-dns apinode-headless.prod.svc:12001": "test_deploy_repository",
    "apinode deploy tune fraud score floor=2 ceil=4 --repository /mnt/repo": "test_deploy_repository",
    "apinode deploy keys add --service fraud --id team-a --repository /mnt/repo": "test_deploy_repository",
    # Load testing
    "apinode loadtest --url http://127.0.0.1:12000 --payload build/fraud.apz --endpoint score -c 16 -d 10s": "test_loadtest_each_endpoint_kind",
    "apinode loadtest --grpc 127.0.0.1:12001 --mode grpc-stream --payload rows.csv --service fraud --endpoint score --rate 5000 --poisson --procs 2 --json -": "test_loadtest_grpc_stream_open_loop",
    "apinode loadtest --url ... --service fraud --endpoint score --payload q.jsonl --sweep 1,4,16,64 --slo-p99 5ms --plot sweep.png": "test_loadtest_sweep",
}

RAN: set[str] = set()  # README commands run so far
EXECUTED: set[str] = set()  # tests of this module that ran


@pytest.fixture(autouse=True)
def _executed(request: pytest.FixtureRequest) -> None:
    EXECUTED.add(request.node.originalname)


def readme_command(text: str, replace: dict[str, str] | None = None, append: str = "") -> str:
    """The README's `text` (it must be one of its commands), with `replace` applied (each must
    match) and harness flags appended."""
    assert text in commands(), f"not a command of the README (changed?): {text!r}"
    RAN.add(text)
    for old, new in (replace or {}).items():
        assert old in text, f"{old!r} is not in the README command {text!r}"
        text = text.replace(old, new)
    return f"{text} {append}" if append else text


def _env(work: Path) -> dict[str, str]:
    # no admin key nor data dir from the caller's environment: the README says what to set
    env = {k: v for k, v in os.environ.items() if k not in ("APINODE_ADMIN_KEY", "APINODE_DATA_DIR")}
    return {
        **env,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # apinode, grpcurl, perf_analyzer
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
    }


def sh(
    work: Path, command: str, *, timeout: float = 120, ok: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs `command` with bash in the scratch folder, as a reader would in the repository."""
    run = subprocess.run(
        ["bash", "-c", command],
        cwd=work,
        env={**_env(work), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if ok:
        assert run.returncode == 0, f"{command}\nexit {run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run


def sh_json(work: Path, command: str) -> Any:
    run = sh(work, command)
    try:
        return json.loads(run.stdout)
    except ValueError:
        raise AssertionError(f"{command}\ndid not print JSON:\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}") from None


def python_snippet(work: Path, snippet: str) -> list[Any]:
    """Runs a README Python snippet in a fresh interpreter; the values of its expressions."""
    path = work / "snippet.py"
    path.write_text(snippet)
    run = subprocess.run(
        [sys.executable, "-m", "tests.readme.pyrun", str(path)],
        cwd=work,
        env=_env(work),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"{snippet}\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    values: list[Any] = json.loads(run.stdout.splitlines()[-1])
    return values


# --- the scratch repository and `make run` ----------------------------------------------------


@dataclass
class Quick:
    work: Path
    node: NodeProc
    stdout: Path  # what `make run` printed: the node's --print-usage calls

    @property
    def printed(self) -> str:
        return self.stdout.read_text(errors="replace")

    def ports(self, text: str) -> dict[str, str]:
        """Replacements of the README's default addresses by this node's."""
        out = {}
        for old, new in (
            ("http://127.0.0.1:12000", self.node.http),
            ("127.0.0.1:12001", self.node.grpc),
            ("10.0.0.5:12001", self.node.grpc),
            ("--node ...", f"--node {self.node.grpc}"),
            ("--url ...", f"--url {self.node.http}"),
        ):
            if old in text:
                out[old] = new
        return out


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch copy of what `make run` reads, so the example trains outside the repository."""
    work = tmp_path_factory.mktemp("readme")
    shutil.copy(ROOT / "Makefile", work / "Makefile")
    shutil.copytree(
        ROOT / "examples" / "fraud",
        work / "examples" / "fraud",
        ignore=shutil.ignore_patterns("__pycache__", "model.joblib", "data"),
    )
    (work / "pyproject.toml").touch()
    os.utime(work / "pyproject.toml", (0, 0))  # older than the venv: make installs nothing
    (work / ".venv").symlink_to(VENV_BIN.parent)  # .venv/bin/... in the README's commands
    return work


@pytest.fixture(scope="module")
def quick(work: Path) -> Iterator[Quick]:
    ports = work / "build" / "ports.json"
    out = work / "make-run.out"
    serve_args = f"--http-port 0 --grpc-port 0 --ports-file {ports}"
    command = readme_command("make run", append=f"STAMP=.venv/bin/python SERVE_ARGS='{serve_args}'")
    with out.open("wb") as f:
        # a session of its own: stopping it stops make and the node it started, and only those
        proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=work,
            env=_env(work),
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 240
        while not (ports.exists() and "Ctrl-C stops the node." in out.read_text(errors="replace")):
            assert proc.poll() is None, f"make run exited {proc.returncode}:\n{out.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"make run did not serve:\n{out.read_text()[-4000:]}"
            time.sleep(0.1)
        p = json.loads(ports.read_text())
        node = NodeProc(proc, work / "build" / "data", out, p["http"], p["grpc"])
        _compile_v2(work)
        yield Quick(work, node, out)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _compile_v2(work: Path) -> None:
    """build/fraud-v2.apz, which the Deploying section pushes: the example as version v2."""
    folder = work / "fraud-v2"
    shutil.copytree(work / "examples" / "fraud", folder, ignore=shutil.ignore_patterns("__pycache__"))
    spec = folder / "service.yaml"
    spec.write_text(spec.read_text().replace("version: v1", "version: v2", 1))
    sh(work, f"apinode compile {folder} -o build/fraud-v2.apz")


def test_make_run_trains_compiles_and_serves(quick: Quick) -> None:
    assert (quick.work / "build" / "fraud.apz").is_file()
    assert (quick.work / "examples" / "fraud" / "model.joblib").is_file()
    printed = quick.printed
    assert f"Serving fraud v1: HTTP {quick.node.http}" in printed
    for verb in ("score/predict", "customer/lookup", "explain/run"):
        assert f"{quick.node.http}/public/api/v1/fraud/{verb}" in printed, printed


def _usage_calls(printed: str) -> list[str]:
    return [line.strip() for line in printed.splitlines() if line.strip().startswith(("curl ", "grpcurl "))]


def test_print_usage_calls_all_work(quick: Quick) -> None:
    """Every call `serve --print-usage` printed, pasted as printed."""
    calls = _usage_calls(quick.printed)
    assert len(calls) >= 5, quick.printed  # three endpoints, gRPC for the prediction, admin status
    for call in calls:
        answer = json.loads(sh(quick.work, call).stdout)
        assert "errorType" not in answer and "error" not in answer, (call, answer)
        route = call.lower()  # HTTP verbs are lower case, gRPC methods capitalised
        if "/predict" in route:
            assert answer["result"]["probas"], (call, answer)
        elif "/lookup" in route:
            assert answer["results"][0]["data"]["customer_id"] in ("C00042", {"text": "C00042"}), (call, answer)
        elif "/run" in route:
            assert answer["response"], (call, answer)
        else:
            assert "/admin/status" in route and "fraud" in answer["services"], (call, answer)


# --- Quick start ----------------------------------------------------------------------------

C00042 = {"customer_id": "C00042", "age": 48, "account_age_days": 3149, "country": "FR"}  # as the README shows


def test_quick_start_curl_predict(quick: Quick) -> None:
    text = next(c for c in REGISTRY if c.startswith("curl -s http://127.0.0.1:12000/public/api/v1/fraud/score/"))
    answer = sh_json(quick.work, readme_command(text, quick.ports(text)))
    # the README shows this answer: OK, P(FRAUD) 0.004 (train.py is deterministic)
    assert answer["result"]["prediction"] == "OK" and answer["result"]["ignored"] is False
    assert answer["result"]["probas"]["FRAUD"] == pytest.approx(0.004, abs=0.001)
    assert {"preProcessing", "enrich"} <= set(answer["timing"])
    assert answer["apiContext"]["serviceId"] == "fraud"


def test_quick_start_curl_lookup(quick: Quick) -> None:
    text = next(c for c in REGISTRY if c.startswith("curl -s http://127.0.0.1:12000/public/api/v1/fraud/customer/"))
    answer = sh_json(quick.work, readme_command(text, quick.ports(text)))
    assert answer["results"] == [{"data": C00042}]
    assert set(answer["timing"]) >= {"lookup"}


def test_quick_start_grpcurl_predict(quick: Quick) -> None:
    text = next(c for c in REGISTRY if c.startswith("grpcurl") and c.endswith("ApiNode/Predict"))
    answer = sh_json(quick.work, readme_command(text, quick.ports(text)))
    assert answer["result"]["prediction"] == {"text": "OK"}
    assert answer["result"]["probas"]["FRAUD"] == pytest.approx(0.004, abs=0.001)
    assert answer["api_context"]["service_id"] == "fraud"


def test_quick_start_python_client(quick: Quick) -> None:
    text = next(c for c in REGISTRY if c.startswith("import dataikuapi"))
    predicted, looked_up = python_snippet(quick.work, readme_command(text, quick.ports(text)))[-2:]
    assert predicted["result"]["prediction"] == "OK" and predicted["result"]["ignored"] is False
    assert set(predicted["result"]["probas"]) == {"FRAUD", "OK"}
    assert looked_up == {"data": C00042}


def test_grpc_api_grpcurl_lookup(quick: Quick) -> None:
    text = next(c for c in REGISTRY if c.startswith("grpcurl") and c.endswith("ApiNode/Lookup"))
    answer = sh_json(quick.work, readme_command(text, quick.ports(text)))
    data = answer["results"][0]["data"]
    # grpcurl prints int64 as strings, as protobuf's JSON mapping says
    assert data == {
        "customer_id": {"text": "C00042"},
        "age": {"integer": "48"},
        "account_age_days": {"integer": "3149"},
        "country": {"text": "FR"},
    }


def test_cli_table_commands_have_help(quick: Quick) -> None:
    """The CLI section's table: each command answers --help."""
    lines = README.read_text().split("\n## CLI\n", 1)[1].split("\n## ", 1)[0].splitlines()
    names = [line.split("`")[1].split()[1] for line in lines if line.startswith("| `apinode ")]
    assert names == ["compile", "serve", "deploy", "dev", "loadtest"], names
    for name in names:
        assert sh(quick.work, f"apinode {name} --help").stdout.startswith(f"usage: apinode {name}")


# --- Deploying ------------------------------------------------------------------------------


def _deploy(quick: Quick, text: str) -> subprocess.CompletedProcess[str]:
    """`text` after the section's `export`, in one shell, as a reader types them."""
    return sh(quick.work, f"{readme_command(EXPORT)} && {readme_command(text, quick.ports(text))}")


def _mapping(node: NodeProc) -> dict[str, float]:
    entries = node.status()["services"]["fraud"]["mapping"]["entries"]
    return {e["generation"]: e["proba"] for e in entries}


def test_deploy_push_activate(quick: Quick) -> None:
    _deploy(quick, "apinode deploy push build/fraud.apz --node 127.0.0.1:12001 --activate")
    assert _mapping(quick.node) == {"v1": 1.0}


def test_deploy_push_mapping(quick: Quick) -> None:
    _deploy(quick, "apinode deploy push build/fraud-v2.apz --node ... --mapping v1=0.9,v2=0.1")
    assert _mapping(quick.node) == {"v1": 0.9, "v2": 0.1}


def test_deploy_list(quick: Quick) -> None:
    out = _deploy(quick, "apinode deploy list --node ...").stdout
    assert "fraud" in out and "v1" in out and "v2" in out and "90%" in out and "10%" in out, out


def test_deploy_status(quick: Quick) -> None:
    out = _deploy(quick, "apinode deploy status --node ...").stdout
    for endpoint in ("score", "customer", "explain"):
        assert endpoint in out, out


def test_deploy_mapping(quick: Quick) -> None:
    _deploy(quick, "apinode deploy mapping fraud v1=0.5,v2=0.5 --node ...")
    assert _mapping(quick.node) == {"v1": 0.5, "v2": 0.5}


def test_deploy_activate(quick: Quick) -> None:
    _deploy(quick, "apinode deploy activate fraud v2 --node ...")
    assert _mapping(quick.node) == {"v2": 1.0}


def test_deploy_rollback(quick: Quick) -> None:
    _deploy(quick, "apinode deploy rollback fraud --node ...")
    assert _mapping(quick.node) == {"v1": 0.5, "v2": 0.5}


def test_deploy_tune(quick: Quick) -> None:
    _deploy(quick, "apinode deploy tune fraud score floor=2 ceil=4 --node ...")
    for gen in ("v1", "v2"):
        pool = quick.node.pool("fraud", "score", gen)["pool"]
        assert (pool["floor"], pool["ceil"]) == (2, 4), (gen, pool)


def test_deploy_test(quick: Quick) -> None:
    out = _deploy(quick, "apinode deploy test build/fraud.apz --node ...").stdout
    for endpoint in ("score", "customer", "explain"):
        assert endpoint in out, out


def test_deploy_list_tls_nodes(quick: Quick, tmp_path: Path) -> None:
    """The two TLS commands, against an empty node on another machine (for the deployer: it is
    given the key by $APINODE_ADMIN_KEY, as the README says), first with TLS, then also asking
    for a client certificate; each refused without the options it shows."""
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    for name, to in (("ca.crt", "ca.crt"), ("client.crt", "me.crt"), ("client.key", "me.key")):
        shutil.copy(pki / name, quick.work / to)
    tls = ["--tls-cert", str(pki / "server.crt"), "--tls-key", str(pki / "server.key")]
    for text, args, without in (
        (TLS_LIST, tls, "--tls-ca ca.crt"),
        (MTLS_LIST, [*tls, "--tls-client-ca", str(pki / "ca.crt")], "--tls-cert me.crt --tls-key me.key"),
    ):
        node = start_node(tmp_path / "data", args=args)
        try:
            env = {"APINODE_ADMIN_KEY": node.admin_key() or ""}
            command = readme_command(text, {"10.0.0.5:12001": f"localhost:{node.grpc_port}"})
            run = sh(quick.work, command, env=env)
            assert f"no services on localhost:{node.grpc_port}" in run.stdout + run.stderr, run
            refused = sh(quick.work, command.replace(f" {without}", ""), env=env, ok=False)
            assert refused.returncode == 3, (command, refused.stdout, refused.stderr)
        finally:
            node.stop()


def test_deploy_repository(quick: Quick, tmp_path: Path) -> None:
    """Repository mode: the README's node serves from a directory repository that the
    deployer changes; `--wait` follows it, by address and through DNS (localhost)."""
    repo, key = tmp_path / "repo", "readme-repository-admin-key"
    repo.mkdir()
    at = {"/mnt/repo": str(repo)}
    sh(quick.work, readme_command("apinode deploy publish build/fraud.apz --repository /mnt/repo --activate", at))
    ports, log = tmp_path / "ports.json", open(tmp_path / "node.log", "wb")
    serve = readme_command(
        "apinode serve --repository /mnt/repo --poll-seconds 5",
        at,
        append=f"--data-dir {tmp_path / 'data'} --http-port 0 --grpc-port 0 --ports-file {ports} --admin-key {key}",
    )
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {serve}"], cwd=quick.work, env=_env(quick.work), stdout=log, stderr=log
    )
    log.close()
    try:
        deadline = time.monotonic() + 120
        while not ports.exists():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "node.log").read_text()[-3000:]
            time.sleep(0.1)
        p = json.loads(ports.read_text())
        grpc, http = f"127.0.0.1:{p['grpc']}", f"http://127.0.0.1:{p['http']}"
        while (ready := requests.get(http + "/ready", timeout=10)).status_code != 200:
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.2)
        wait = f"--admin-key {key} --json"
        cmd = "apinode deploy publish build/fraud-v2.apz --repository /mnt/repo --mapping v1=0.9,v2=0.1"
        sh(quick.work, readme_command(cmd, at))
        cmd = "apinode deploy activate fraud v2 --repository /mnt/repo --wait --nodes 10.0.0.5:12001,10.0.0.6:12001"
        done = sh_json(quick.work, readme_command(cmd, {**at, "10.0.0.5:12001,10.0.0.6:12001": grpc}, wait))
        assert [(n["target"], n["status"]) for n in done["nodes"]] == [(grpc, "ok")], done
        r = requests.post(http + "/public/api/v1/fraud/customer/lookup", json={"data": {"customer_id": "C00042"}})
        assert r.json()["apiContext"]["serviceGeneration"] == "v2", r.text
        cmd = "apinode deploy rollback fraud --repository /mnt/repo --wait --nodes-dns apinode-headless.prod.svc:12001"
        dns = {**at, "apinode-headless.prod.svc:12001": f"localhost:{p['grpc']}"}
        done = sh_json(quick.work, readme_command(cmd, dns, wait))
        assert [(n["target"], n["status"], n["serving"]) for n in done["nodes"]] == [
            (grpc, "ok", "v1=0.9, v2=0.1 (random)")
        ], done
        cmd = "apinode deploy tune fraud score floor=2 ceil=4 --repository /mnt/repo"
        sh(quick.work, readme_command(cmd, at, f"--wait --nodes {grpc} {wait}"))
        assert json.loads((repo / "state.json").read_text())["services"]["fraud"]["tuning"] == {
            "score": {"floor": 2, "ceil": 4}
        }
        # The service's keys in the state: the node converges at its next poll (no restart).
        cmd = "apinode deploy keys add --service fraud --id team-a --repository /mnt/repo"
        team = sh(quick.work, readme_command(cmd, at)).stdout.strip().splitlines()[-1]
        lookup = http + "/public/api/v1/fraud/customer/lookup"
        body = {"data": {"customer_id": "C00042"}}
        while requests.post(lookup, json=body, timeout=30).status_code != 401:
            assert time.monotonic() < deadline + 120, "the node never required the repository's key"
            time.sleep(0.2)
        assert requests.post(lookup, json=body, headers={"Authorization": f"Bearer {team}"}, timeout=30).ok
    finally:
        proc.terminate()
        proc.wait(60)


def test_deploy_infra_three_nodes(quick: Quick, tmp_path: Path) -> None:
    """A rolling push over three local nodes, with the README's infrastructure file as the
    template of each node's entry."""
    infra = next(yaml.safe_load(b.text) for b in blocks() if b.section == "Deploying" and b.lang == "yaml")
    template = infra["nodes"][0]
    # these nodes speak plaintext and their service has no API key: of the README's node entry,
    # the keys that apply to them (TLS and API key entries are for nodes that have those)
    used = ("name", "grpc", "http", "admin_key")
    assert set(used) <= set(template), template
    with ThreadPoolExecutor(3) as pool:  # three node starts at once: most of it is waiting
        starts = [pool.submit(start_node, tmp_path / name) for name in ("a", "b", "c")]
    nodes = [f.result() for f in starts if f.exception() is None]
    try:
        assert len(nodes) == 3, [f.exception() for f in starts]
        entries = []
        for name, node in zip("abc", nodes, strict=True):
            entry = {key: template[key] for key in used} | {"name": name, "grpc": node.grpc, "http": node.http}
            keys = node.data_dir / "admin-keys.txt"  # a node that made itself a key says it there
            if keys.exists():
                entry["admin_key"] = next(k for k in keys.read_text().split("\n") if k and not k.startswith("#"))
            else:
                del entry["admin_key"]
            entries.append(entry)
        (quick.work / "prod.yaml").write_text(yaml.safe_dump({"nodes": entries}))
        text = "apinode deploy push build/fraud.apz --infra prod.yaml --rollback-on-failure"
        run = sh(quick.work, readme_command(text), timeout=300)
        for node in nodes:
            status = node.status()["services"]["fraud"]
            assert status["mapping"]["entries"] == [{"generation": "v1", "proba": 1.0}], (run.stdout, status)
    finally:
        for node in nodes:
            node.stop()


# --- Running on Kubernetes -------------------------------------------------------------------


def test_kubectl_kustomize_volume_overlay(work: Path) -> None:
    shutil.copytree(ROOT / "kubernetes", work / "kubernetes", dirs_exist_ok=True)
    text = "kubectl kustomize kubernetes/overlays/volume"
    docs = {d["kind"]: d for d in yaml.safe_load_all(sh(work, readme_command(text)).stdout) if d}
    assert {"Deployment", "Service", "PersistentVolumeClaim", "HorizontalPodAutoscaler"} <= set(docs), set(docs)
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    claims = [v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [{"claimName": docs["PersistentVolumeClaim"]["metadata"]["name"], "readOnly": True}], claims
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/repository"].get("readOnly") is True, mounts


# --- Load testing ---------------------------------------------------------------------------

VERBS = {"score": "predict", "customer": "lookup", "explain": "run"}


@pytest.mark.parametrize("endpoint", list(VERBS))
def test_loadtest_each_endpoint_kind(quick: Quick, endpoint: str) -> None:
    text = "apinode loadtest --url http://127.0.0.1:12000 --payload build/fraud.apz --endpoint score -c 16 -d 10s"
    result = quick.work / f"loadtest-{endpoint}.json"
    replace = {**quick.ports(text), "--endpoint score": f"--endpoint {endpoint}", "-d 10s": "-d 2s"}
    sh(quick.work, readme_command(text, replace, append=f"--json {result} -q"))
    out = json.loads(result.read_text())
    assert out["config"]["target"].endswith(f"/fraud/{endpoint}/{VERBS[endpoint]}"), out["config"]
    assert out["ok"] > 0 and out["error_count"] == 0 and out["ok"] == out["sent"], out["errors"]


def test_loadtest_grpc_stream_open_loop(quick: Quick) -> None:
    # rows.csv: feature rows with a header, as a reader would export them (customer_id included)
    sample = pd.read_csv(quick.work / "examples" / "fraud" / "data" / "sample.csv")
    sample.drop(columns=["label"]).head(20).to_csv(quick.work / "rows.csv", index=False)
    text = next(c for c in REGISTRY if "--mode grpc-stream" in c)
    # 5000/s for a real machine; 200/s keeps a shared test machine usable
    replace = {**quick.ports(text), "--rate 5000": "--rate 200"}
    out = sh_json(quick.work, readme_command(text, replace, append="-d 2s -q"))
    assert out["config"]["mode"] == "grpc-stream" and out["config"]["procs"] == 2
    assert out["ok"] > 0 and out["error_count"] == 0 and out["ok"] == out["sent"], out["errors"]


def test_loadtest_sweep(quick: Quick) -> None:
    import zipfile

    with zipfile.ZipFile(quick.work / "build" / "fraud.apz") as z:
        queries = json.loads(z.read("tests/score.json"))
    (quick.work / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    text = next(c for c in REGISTRY if "--sweep" in c)
    run = sh(quick.work, readme_command(text, quick.ports(text), append="-d 1s -q"), ok=False, timeout=180)
    # 0: done; 3: no step met the p99 objective (a timing, which a shared machine decides)
    assert run.returncode in (0, 3), run.stdout + run.stderr
    assert "c=1 " in run.stdout and "objective: p99 <= 5 ms" in run.stdout, run.stdout
    assert (quick.work / "sweep.png").stat().st_size > 0


# --- Open Inference Protocol: the README's model of three numeric features -------------------


@pytest.fixture(scope="module")
def risk(work: Path) -> Iterator[NodeProc]:
    """Service `risk` (version "1", as perf_analyzer needs), endpoint `score`: a logistic
    regression on amount, hour (int) and distance, compiled by `apinode compile`, with a key."""
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    folder = work / "risk"
    folder.mkdir()
    rng = np.random.default_rng(0)
    x = pd.DataFrame(
        {"amount": rng.gamma(2, 60, 300).round(2), "hour": rng.integers(0, 24, 300), "distance": rng.gamma(2, 5, 300)}
    )
    y = np.where(x["amount"] / 100 + (x["hour"] < 6) + x["distance"] / 20 > 2.5, "HIGH", "LOW")
    joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), folder / "model.joblib")
    x.assign(label=y).to_csv(folder / "sample.csv", index=False)
    spec = {
        "service": "risk",
        "version": "1",
        "api_keys": [RISK_KEY],
        "endpoints": {"score": {"type": "prediction", "model": "model.joblib", "sample": "sample.csv"}},
    }
    (folder / "service.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    sh(work, f"apinode compile {folder} -o risk.apz")
    node = start_node(work / "risk-data", work / "risk.apz")
    try:
        yield node
    finally:
        node.stop()


def _risk(node: NodeProc, text: str) -> dict[str, str]:
    return {"localhost:12000": f"localhost:{node.http_port}", "KEY": RISK_KEY}


def test_oip_python_tritonclient(work: Path, risk: NodeProc) -> None:
    text = next(c for c in REGISTRY if "tritonclient.http" in c)
    label, probas = python_snippet(work, readme_command(text, _risk(risk, text)))[-1]
    assert label in (["HIGH"], ["LOW"]) and len(probas) == 1 and sum(probas[0]) == pytest.approx(1.0)


def test_oip_curl_infer(work: Path, risk: NodeProc) -> None:
    text = next(c for c in REGISTRY if c.startswith("curl -s localhost:12000/v2/"))
    answer = sh_json(work, readme_command(text, _risk(risk, text)))
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["label"]["data"][0] in ("HIGH", "LOW") and outputs["probabilities"]["shape"] == [1, 2]


def test_oip_perf_analyzer(work: Path, risk: NodeProc) -> None:
    echo, perf = (c for c in REGISTRY if REGISTRY[c] == "test_oip_perf_analyzer")
    sh(work, readme_command(echo))
    # a 0.5 s measurement window instead of 5 s, and any latency counted as stable: the same
    # runs, sooner, and none refused because a shared machine made latencies wander
    run = sh(work, readme_command(perf, _risk(risk, perf), append="--measurement-interval 500 -s 100"), timeout=180)
    assert "Concurrency: 1, throughput:" in run.stdout and "Concurrency: 2, throughput:" in run.stdout, run.stdout
    assert risk.pool("risk", "score")["served"] >= 10  # the node served them (over the OIP)


# --- the registry is the README -------------------------------------------------------------


def _tests_of(path: Path) -> set[str]:
    """The test functions a module defines (read, not imported)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_every_readme_command_has_a_test() -> None:
    shown = commands()
    assert len(shown) == len(set(shown)), "a command appears twice in the README: key the registry otherwise"
    missing = [c for c in shown if c not in REGISTRY]
    stale = [c for c in REGISTRY if c not in shown]
    assert not missing, f"README commands without a test (add them to REGISTRY and test them): {missing}"
    assert not stale, f"REGISTRY entries the README no longer shows: {stale}"
    # not run: exactly the commands of the blocks the README marks so, for the reason it gives
    marked = not_run()
    skipped = {c for c, test in REGISTRY.items() if test.startswith("not run: ")}
    assert skipped == set(marked), f"not run but not in a marked block, or marked but run: {skipped ^ set(marked)}"
    wrong = {c: REGISTRY[c] for c in skipped if not REGISTRY[c].startswith(f"not run: {marked[c]}")}
    assert not wrong, f"the README gives another reason: {wrong}"
    tests = {name for name, value in globals().items() if name.startswith("test_") and callable(value)}
    for test in set(REGISTRY.values()) - {REGISTRY[c] for c in skipped}:
        module, _, name = test.rpartition("::")
        assert name in (_tests_of(ROOT / module) if module else tests), f"no test {test}"


def test_zz_every_command_of_the_tests_that_ran_was_run() -> None:
    """Each registered test runs its commands (kept last: the module runs in file order)."""
    not_run = [c for c, test in REGISTRY.items() if test in EXECUTED and c not in RAN]
    assert not not_run, f"these tests did not run their README command: {not_run}"
