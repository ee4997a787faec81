"""The container image, built with podman from the Dockerfile (`make image`, on a Python 3.11
base made from Debian 12 by debootstrap: no registry is reachable here), run as Kubernetes
runs it (read-only root filesystem, /data and /tmp writable, a non-root user), serving the
fraud example compiled by the real compiler and mounted read-only: predictions over HTTP (the
Dataiku client) and gRPC (the generated stubs) agree with scikit-learn; SIGTERM (`podman stop`)
ends it cleanly with exit code 0. Prints the image's size and the time from `podman run` to
ready. The build takes minutes on a new machine (tests/setup_services.sh starts it early, in
the background); the image tests run last and in one xdist group (conftest.py).
"""

from __future__ import annotations

import hashlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dataikuapi
import grpc
import joblib
import pandas as pd
import pytest
import requests

from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg
from tests.node.fraudpkg import build_fraud

ROOT = Path(__file__).resolve().parents[2]
# tests/image/build.sh's default: one tag per checkout, so that two checkouts never swap images
IMAGE = "localhost/apinode:test-" + hashlib.sha256(f"{ROOT}\n".encode()).hexdigest()[:12]
TXN: dict[str, Any] = {
    "amount": 1899.0,
    "merchant_category": "electronics",
    "hour": 3,
    "distance_from_home": 240.0,
    "card_present": False,
}
CUSTOMER = ("C00123", {"age": 0, "account_age_days": 0, "country": ""})  # filled from customers.csv
READY_DEADLINE = 240.0  # seconds: a loaded 2-core machine, a cold start of every worker

pytestmark = [pytest.mark.xdist_group("image"), pytest.mark.timeout(2400)]


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert out.returncode == 0, f"podman {' '.join(args)}: {out.stderr}"
    return out


@pytest.fixture(scope="module")
def image() -> str:
    """tests/image/build.sh: waits for the build setup_services.sh started, or builds."""
    start = time.monotonic()
    out = subprocess.run(
        ["bash", str(ROOT / "tests" / "image" / "build.sh"), IMAGE], capture_output=True, text=True, timeout=2000
    )
    assert out.returncode == 0, out.stdout + out.stderr
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    print(f"\nimage {IMAGE}: {size / 1e6:.0f} MB; build (or wait for it) {time.monotonic() - start:.0f} s")
    return IMAGE


@pytest.fixture(scope="module")
def fraud(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The example trained and compiled on the host, in a directory the container's user can read."""
    tmp = tmp_path_factory.mktemp("fraud")
    packages = tmp / "packages"
    packages.mkdir()
    pkg = build_fraud(tmp, packages / "fraud.apz")
    folder = tmp / "fraud"
    packages.chmod(0o755)
    pkg.chmod(0o644)
    row = pd.read_csv(folder / "data" / "customers.csv").set_index("customer_id").loc[CUSTOMER[0]]
    CUSTOMER[1].update(age=int(row["age"]), account_age_days=int(row["account_age_days"]), country=row["country"])
    return packages, joblib.load(folder / "model.joblib")


@dataclass
class Container:
    name: str
    http: str
    grpc: str
    ready_seconds: float

    def logs(self) -> str:
        out = podman("logs", self.name)
        return out.stdout + out.stderr


def _wait_ready(http: str, name: str) -> None:
    deadline = time.monotonic() + READY_DEADLINE
    while time.monotonic() < deadline:
        try:
            if requests.get(http + "/ready", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        assert state == "running", f"the container is {state}: " + podman("logs", name).stderr[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"not ready after {READY_DEADLINE:.0f} s: " + podman("logs", name).stderr[-3000:])


@pytest.fixture(scope="module")
def container(image: str, fraud: tuple[Path, Any]) -> Iterator[Container]:
    packages, _ = fraud
    name = f"apinode-test-{uuid.uuid4().hex[:8]}"
    start = time.monotonic()
    podman(
        "run",
        "--detach",
        "--name",
        name,
        # as the Deployment runs it: read-only root, writable /data (a volume, as the emptyDir)
        # and /tmp
        "--read-only",
        "--volume",
        f"{name}-data:/data",
        "--tmpfs",
        "/tmp:rw,size=256m",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--volume",
        f"{packages}:/packages:ro",
        # loopback only, on free ports of the host
        "--publish",
        "127.0.0.1::12000",
        "--publish",
        "127.0.0.1::12001",
        image,
        "/packages/fraud.apz",
    )
    try:
        http_port = podman("port", name, "12000/tcp").stdout.strip().rsplit(":", 1)[1]
        grpc_port = podman("port", name, "12001/tcp").stdout.strip().rsplit(":", 1)[1]
        http = f"http://127.0.0.1:{http_port}"
        _wait_ready(http, name)
        c = Container(name, http, f"127.0.0.1:{grpc_port}", time.monotonic() - start)
        print(f"\n{name}: ready {c.ready_seconds:.1f} s after podman run")
        yield c
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)
        podman("volume", "rm", "--force", f"{name}-data", check=False)


def _sklearn(model: Any) -> tuple[str, float]:
    row = pd.DataFrame([{**TXN, **CUSTOMER[1]}])[list(model.feature_names_in_)]
    proba = dict(zip(model.classes_, model.predict_proba(row)[0], strict=True))
    return str(model.predict(row)[0]), float(proba["FRAUD"])


def _value(v: Any) -> pb.Value:
    if isinstance(v, bool):
        return pb.Value(flag=v)
    if isinstance(v, int):
        return pb.Value(integer=v)
    return pb.Value(number=v) if isinstance(v, float) else pb.Value(text=v)


def test_the_image_runs_as_a_non_root_user_without_the_optional_extras(image: str) -> None:
    config = podman("image", "inspect", "--format", "{{.Config.User}} {{.Config.Entrypoint}}", image).stdout
    assert config.split(" ", 1) == ["10001:10001", "[apinode serve --host 0.0.0.0]\n"]
    probe = "import importlib.util as u; print([m for m in ('matplotlib', 'pytest', 'xgboost') if u.find_spec(m)])"
    out = podman("run", "--rm", "--entrypoint", "python3", image, "-c", probe)
    assert out.stdout.strip() == "[]"  # neither the plot, the dev nor the boosters extra


def test_predictions_over_http_and_grpc(container: Container, fraud: tuple[Path, Any]) -> None:
    _, model = fraud
    label, p_fraud = _sklearn(model)
    client = dataikuapi.APINodeClient(container.http + "/", "fraud")
    out = client.predict_record("score", {**TXN, "customer_id": CUSTOMER[0]})["result"]
    assert out["ignored"] is False
    assert out["prediction"] == label and out["probas"]["FRAUD"] == pytest.approx(p_fraud, abs=1e-4)

    features = {k: _value(v) for k, v in {**TXN, "customer_id": CUSTOMER[0]}.items()}
    with grpc.insecure_channel(container.grpc) as ch:
        got = pbg.ApiNodeStub(ch).Predict(pb.PredictRequest(service="fraud", endpoint="score", features=features))
    assert got.result.prediction.text == label
    assert got.result.probas["FRAUD"] == pytest.approx(p_fraud, abs=1e-4)


def test_loadtest_plot_without_matplotlib_says_so(container: Container) -> None:
    """matplotlib is the extra `plot`, absent from the image: --plot fails before the run, clearly."""
    out = podman(
        "exec",
        container.name,
        "apinode",
        "loadtest",
        "--url",
        "http://127.0.0.1:12000",
        "--service",
        "fraud",
        "--endpoint",
        "score",
        "--requests",
        "1",
        "--plot",
        "/tmp/run.png",
        check=False,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "--plot needs matplotlib, which is not installed: pip install 'apinode[plot]'" in out.stderr


def test_sigterm_stops_it_cleanly(container: Container) -> None:
    """Last in the module: `podman stop` sends SIGTERM, then SIGKILL after 30 s."""
    client = dataikuapi.APINodeClient(container.http + "/", "fraud")
    assert client.predict_record("score", {**TXN, "customer_id": CUSTOMER[0]})["result"]["ignored"] is False
    start = time.monotonic()
    podman("stop", "--time", "30", container.name, timeout=90)
    stopped = time.monotonic() - start
    code = podman("inspect", "--format", "{{.State.ExitCode}}", container.name).stdout.strip()
    logs = container.logs()
    assert code == "0", logs[-3000:]  # 137 would be SIGKILL: the node did not stop within 30 s
    assert stopped < 30, logs[-3000:]
    assert "stopping" in logs and "Traceback" not in logs, logs[-3000:]
    print(f"\n{container.name}: stopped {stopped:.1f} s after SIGTERM")
