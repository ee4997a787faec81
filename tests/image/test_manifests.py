"""The Kubernetes manifests (kubernetes/): every kustomization renders with the real
`kubectl kustomize`, every rendered document validates in strict mode against the schemas of
Kubernetes 1.30 and 1.37 (kubernetes-validate, offline; a kind without a schema fails), and the
pieces agree with each other and with the image: selectors, probe paths, the shutdown
arithmetic, the uid, the in-flight metric's name in the HPA and in the adapter rule.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kv

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "kubernetes"
KUSTOMIZATIONS = sorted(p.parent for p in KUBE.rglob("kustomization.yaml"))
VERSIONS = ("1.30", "1.37")
OVERLAYS = ("volume", "http", "inflight")

Doc = dict[str, Any]


@functools.cache  # kubectl takes a second or so a call
def render(directory: Path) -> list[Doc]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the manifests"
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def validate(doc: Doc, version: str) -> None:
    """Strict validation against exactly `version`'s schema; raises on any problem."""
    used = kv.validate(doc, version, strict=True)
    assert used == version, f"{doc['kind']}: validated against {used}, not {version}"


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def container(docs: list[Doc]) -> Doc:
    c: Doc = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return c


def flag(args: list[str], name: str) -> str:
    assert args.count(name) == 1, f"{name} in {args}"
    return args[args.index(name) + 1]


def test_the_expected_kustomizations_exist() -> None:
    assert [p.relative_to(KUBE).as_posix() for p in KUSTOMIZATIONS] == [
        "base",
        *(f"overlays/{o}" for o in sorted(OVERLAYS)),
    ]


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.relative_to(KUBE).as_posix())
@pytest.mark.parametrize("version", VERSIONS)
def test_every_rendered_document_validates_strictly(directory: Path, version: str) -> None:
    docs = render(directory)
    kinds = sorted(d["kind"] for d in docs)
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= set(kinds)
    for doc in docs:
        validate(doc, version)


def test_the_validation_is_strict_and_a_missing_schema_fails() -> None:
    """The checks above can fail: an unknown field, a wrong type, a kind with no schema."""
    deployment = one(render(KUBE / "overlays" / "volume"), "Deployment")
    validate(deployment, "1.30")
    unknown_field = {**deployment, "spec": {**deployment["spec"], "maxUnavaliable": 0}}
    with pytest.raises(kv.ValidationError):
        validate(unknown_field, "1.30")
    wrong_type = {**deployment, "spec": {**deployment["spec"], "minReadySeconds": "5"}}
    with pytest.raises(kv.ValidationError):
        validate(wrong_type, "1.37")
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "x"}}
    with pytest.raises(kv.SchemaNotFoundError):
        validate(monitor, "1.37")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pieces_agree(overlay: str) -> None:
    docs = render(KUBE / "overlays" / overlay)
    deployment = one(docs, "Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert "replicas" not in spec  # the HPA owns the count
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    service, headless = one(docs, "Service", "apinode"), one(docs, "Service", "apinode-nodes")
    for svc in (service, headless):
        assert svc["spec"]["selector"].items() <= labels.items()
        ports = {p["name"]: p for p in svc["spec"]["ports"]}
        assert (ports["http"]["port"], ports["grpc"]["port"]) == (12000, 12001)
        assert ports["grpc"]["appProtocol"] == "grpc"
    assert service["spec"]["type"] == "ClusterIP"
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True  # deploy --wait sees nodes that fail

    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = one(docs, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])

    c = container(docs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 12000, "grpc": 12001}
    assert c["startupProbe"]["httpGet"]["path"] == "/isAlive/"
    assert c["livenessProbe"]["httpGet"]["path"] == "/isAlive/"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"

    env = {e["name"]: e for e in c["env"]}
    assert flag(c["args"], "--repository") == "$(APINODE_REPOSITORY)"  # Kubernetes expands it from env
    repository = env["APINODE_REPOSITORY"]["value"]
    if overlay == "http":
        assert re.match(r"https?://", repository)
    else:
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert mounts["repository"]["mountPath"] == repository and mounts["repository"]["readOnly"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        claim = volumes["repository"]["persistentVolumeClaim"]["claimName"]
        assert one(docs, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]
    assert env["APINODE_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "apinode-admin"
    connections = Path(flag(c["args"], "--connections"))
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == str(connections.parent))
    secret = next(v for v in pod["volumes"] if v["name"] == mount["name"])["secret"]
    assert secret["secretName"] == "apinode-connections"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_shutdown_fits_in_the_termination_grace_period(overlay: str) -> None:
    """preStop, then SIGTERM: --drain-seconds of serving while not ready, then up to
    --shutdown-grace for in-flight requests; all of it before Kubernetes' SIGKILL, with margin."""
    docs = render(KUBE / "overlays" / overlay)
    c = container(docs)
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    total = float(command[1]) + float(flag(c["args"], "--drain-seconds")) + float(flag(c["args"], "--shutdown-grace"))
    period = one(docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert total + 5 <= period, f"preStop + drain + grace = {total} s, SIGKILL at {period} s"
    # the drain outlasts the readiness probe's period: the pod is seen unready before it stops accepting
    probe = c["readinessProbe"]
    assert float(flag(c["args"], "--drain-seconds")) > probe["periodSeconds"] * probe["failureThreshold"]


def test_the_pod_runs_as_the_images_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    m = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    assert m, "the Dockerfile names a numeric USER"
    pod = one(render(KUBE / "base"), "Deployment")["spec"]["template"]["spec"]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (int(m[1]), int(m[2]))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "/data" in {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}  # APINODE_DATA_DIR
    assert re.search(r"APINODE_DATA_DIR=/data\b", dockerfile)


def test_the_inflight_hpa_reads_what_the_adapter_rule_exposes() -> None:
    hpa = one(render(KUBE / "overlays" / "inflight"), "HorizontalPodAutoscaler")
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    name = metrics["Pods"]["pods"]["metric"]["name"]
    values = yaml.safe_load((KUBE / "overlays" / "inflight" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    assert rule["name"]["as"] == name == "apinode_inflight_requests"
    assert re.match(rule["name"]["matches"], name)
    assert rule["seriesQuery"].startswith(name + "{")
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert 'endpoint=""' in rule["metricsQuery"]  # the node-wide series only, not the per-endpoint ones


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_deployment_arguments_are_options_apinode_serve_takes(overlay: str) -> None:
    """The container's arguments, appended to the image's `apinode serve --host 0.0.0.0`,
    parse with the node's own parser: a renamed or mistyped flag fails here, not in a pod."""
    from node.cli import build_parser

    c = container(render(KUBE / "overlays" / overlay))
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", *c.get("args", [])])
    assert args.repository and args.poll_seconds == 5
    assert args.drain_seconds > 0 and args.shutdown_grace > 0
