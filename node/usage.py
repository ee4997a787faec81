"""What `apinode serve --print-usage` prints: a ready-to-paste call for each served endpoint.

Each call uses the verb of the endpoint's kind (`predict`, `run`, `lookup`, `query`) with
the body of its first test query, over JSON HTTP (curl) and gRPC (grpcurl, through server
reflection). A service that requires an API key gets its key from an environment variable
named after it (`FRAUD_API_KEY` for `fraud`), sent as `Authorization: Bearer`, as the node
takes service keys on both transports (:mod:`node.auth`).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

from node.grpc.values import value_json

# kind -> (HTTP verb, gRPC method, what it is)
_KINDS = {
    "prediction": ("predict", "Predict", "prediction"),
    "custom-prediction": ("predict", "Predict", "custom prediction"),
    "function": ("run", "Run", "Python function"),
    "lookup": ("lookup", "Lookup", "dataset lookup"),
    "sql": ("query", "Query", "SQL query"),
}


def key_variable(service: str) -> str:
    """The environment variable `--print-usage` reads a service's API key from."""
    name = re.sub(r"[^A-Za-z0-9]", "_", service).upper()
    return f"{name}_API_KEY" if name[:1].isalpha() else f"APINODE_{name}_API_KEY"


def usage(node: Any, host: str) -> str:
    if host in ("", "0.0.0.0", "::"):  # listening everywhere: call it on loopback
        host = "127.0.0.1"
    tls = node.settings.tls_cert is not None
    base = f"{'https' if tls else 'http'}://{host}:{node.http_port}"
    target = f"{host}:{node.grpc_port}"
    curl = f"curl -s --cacert {shlex.quote(str(node.settings.tls_cert))}" if tls else "curl -s"
    grpcurl = f"grpcurl -cacert {shlex.quote(str(node.settings.tls_cert))}" if tls else "grpcurl -plaintext"
    lines = [""]
    for sid, svc in node.registry.services.items():
        serving = node.registry.serving(svc)
        gen = svc.loaded.get(serving[0]) if serving else None
        if gen is None:
            continue
        lines.append(f"Serving {sid} {gen.version}: HTTP {base}  gRPC {target}")
        auth_http = auth_grpc = ""
        if node.registry.keys.requires_key(sid):
            var = key_variable(sid)
            lines.append(f"  # {sid} requires an API key: export {var}=<one of its keys>")
            auth_http = f' -H "Authorization: Bearer ${var}"'
            auth_grpc = f' -H "authorization: Bearer ${var}"'
        for eid, ep in gen.endpoints.items():
            kind = _KINDS.get(ep.spec.type)
            if kind is None:
                continue
            verb, method, what = kind
            body = _first_test_query(gen.path, ep.spec.test_queries)
            if verb == "predict":
                body = body or {"features": {f.name: None for f in ep.spec.features}}
            elif verb == "lookup":
                body = body or {"data": {}}
            else:
                body = body or {}
            url = f"{base}/public/api/v1/{sid}/{eid}/{verb}"
            lines.append(f"\n  # {eid}: {what} over JSON HTTP")
            lines.append(f"  {curl}{auth_http} {url} -d {shlex.quote(json.dumps(body))}")
            lines.append("  # ... and over gRPC (grpcurl: https://github.com/fullstorydev/grpcurl; reflection is on)")
            grpc_body = {"service": sid, "endpoint": eid, **grpc_request(verb, body)}
            lines.append(
                f"  {grpcurl}{auth_grpc} -d {shlex.quote(json.dumps(grpc_body))} {target} apinode.v1.ApiNode/{method}"
            )
    lines.append(f"\n  {curl}{_admin_header(node)} {base}/admin/status    # pools, queues, counters")
    lines.append("\nCtrl-C stops the node.")
    return "\n".join(lines)


def _admin_header(node: Any) -> str:
    """The curl option that authorises an admin call: the data dir's key file when the node
    has one (it is readable by whoever may deploy), else $APINODE_ADMIN_KEY."""
    if node.settings.admin_open_loopback and not node.auth.configured:
        return ""
    keys = node.settings.data_dir / "admin-keys.txt"
    if keys.exists():
        key = f"$(grep -m1 -v -e '^#' -e '^[[:space:]]*$' {shlex.quote(str(keys))})"  # as node.auth reads it: no comment, no blank
    else:
        key = "$APINODE_ADMIN_KEY"
    return f' -H "Authorization: Bearer {key}"'


def grpc_request(verb: str, body: dict[str, Any]) -> dict[str, Any]:
    """The JSON HTTP body of `verb` as the fields of its gRPC request (proto3 JSON)."""
    if verb == "predict":
        return {"features": {k: value_json(v) for k, v in (body.get("features") or {}).items()}}
    if verb == "lookup":
        return {"items": [{"data": {k: value_json(v) for k, v in (body.get("data") or {}).items()}}]}
    if verb == "query":
        return {"parameters": {k: value_json(v) for k, v in body.items()}}
    return {"arguments": body}  # run: a google.protobuf.Struct is plain JSON


def _first_test_query(path: Path, tq: str | None) -> Any:
    if not tq:
        return None
    try:
        queries = json.loads((path / tq).read_text())
        return queries[0] if queries else None
    except (OSError, ValueError):
        return None
