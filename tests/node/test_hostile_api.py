"""Hostile input against a live node, over every HTTP route and gRPC method.

One node (module-scoped) serves a prediction package (`fraud`: float and int features, a
double model), a second one with a string, an int64 and a float32 input (`tags`), and a
function package (`fn`: `echo(**kwargs)` and `pair(a, b=1)`), with a 1 MiB body limit and
the query log on. Property-based tests throw malformed JSON, wrong types, huge numbers,
NaN and Infinity, unicode (lone surrogates included), empty and enormous bodies and random
bytes at it. Whatever they send, a client error is never answered 5xx over HTTP nor
INTERNAL / UNKNOWN / UNAVAILABLE over gRPC, the node stays up, and a valid request sent
right after is answered correctly. Each limit answers with an error of its own that names it.
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import orjson
import pytest
import requests
from google.protobuf import struct_pb2
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from apz.archive import write_package
from apz.vocab import ID_RE
from node._proto.apinode.v1 import admin_pb2 as apb
from node._proto.apinode.v1 import admin_pb2_grpc as apbg
from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg
from tests.inproc import InProcNode, run_node
from tests.packages import function_package, logistic_package

FN_CODE = """
def echo(**kwargs):
    return kwargs

def pair(a, b=1):
    return [a, b]
"""
ONE_WORKER = {"floor": 1, "cruise": 1, "ceil": 1, "queue": 64}
MIB = 1024**2
FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
    ],
)
FRAUD_ROW = {"amount": 1.5, "hour": 3, "distance": -0.25}
TAGS_ROW = {"merchant": "travel", "count": 2, "score": 0.5}
SERVICES = {"fraud", "tags", "fn"}
BAD_GRPC = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}


def tags_package(out_dir: Path) -> tuple[Path, Any]:
    """A classifier over a string (one-hot), an int64 and a float32 input, columns mode."""
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    n = 300
    x = pd.DataFrame(
        {
            "merchant": rng.choice(["grocery", "travel", "online"], n),
            "count": rng.integers(0, 10, n),
            "score": rng.normal(size=n).astype(np.float32),
        }
    )
    y = np.where((x.merchant == "travel") | (x["count"] > 7), "HIGH", "LOW")
    columns = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), ["merchant"]), ("num", "passthrough", ["count", "score"])]
    )
    model = Pipeline([("ct", columns), ("lr", LogisticRegression())]).fit(x, y)
    onx = convert_sklearn(
        model,
        initial_types=[
            ("merchant", StringTensorType([None, 1])),
            ("count", Int64TensorType([None, 1])),
            ("score", FloatTensorType([None, 1])),
        ],
        options={id(model.steps[-1][1]): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    features = [
        {"name": "merchant", "type": "string", "onnx_type": "string", "nullable": False},
        {"name": "count", "type": "int", "onnx_type": "int64", "nullable": False},
        {"name": "score", "type": "float", "onnx_type": "float", "nullable": False},
    ]
    manifest = {
        "service": "tags",
        "version": "v1",
        "endpoints": {
            "tag": {
                "type": "prediction",
                "task": "binary",
                "features": features,
                "classes": model.classes_.tolist(),
                "model": {
                    "path": "models/tag.onnx",
                    "input_mode": "columns",
                    "label_output": "label",
                    "proba_output": "probabilities",
                },
                "pool": ONE_WORKER,
            }
        },
    }
    out = out_dir / "tags-v1.apz"
    write_package(out, manifest, {"models/tag.onnx": onx.SerializeToString()})
    return out, model


@dataclass(repr=False)
class Served:
    node: InProcNode
    http: requests.Session
    channel: grpc.Channel
    api: pbg.ApiNodeStub
    admin: apbg.AdminStub
    fraud_expected: str
    tags_expected: str
    tmp: Path
    started: float  # files made under /tmp since are this run's

    def url(self, path: str) -> str:
        return self.node.http + path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    import pandas as pd

    tmp = tmp_path_factory.mktemp("hostile-api")
    fraud_pkg, fraud = logistic_package(tmp)
    tags_pkg, tags = tags_package(tmp)
    fn_pkg = function_package(
        tmp,
        {"echo": {"function": "echo", "pool": ONE_WORKER}, "pair": {"function": "pair", "pool": ONE_WORKER}},
        service="fn",
        code=FN_CODE,
    )
    args = ["--max-body-mb", "1", "--query-log", str(tmp / "querylog")]
    with (
        run_node(tmp / "data", fraud_pkg, tags_pkg, fn_pkg, args=args) as node,
        requests.Session() as http,
        grpc.insecure_channel(node.grpc, options=[("grpc.max_send_message_length", 64 * MIB)]) as raw_channel,
    ):
        http.headers.update(node.admin_headers())  # the admin routes are fuzzed past authorisation
        channel = node.admin_channel(raw_channel)
        yield Served(
            node,
            http,
            channel,
            pbg.ApiNodeStub(channel),
            apbg.AdminStub(channel),
            str(fraud.predict(np.array([list(FRAUD_ROW.values())]))[0]),
            str(tags.predict(pd.DataFrame([TAGS_ROW]))[0]),
            tmp,
            time.time() - 1,
        )


# ---- checks -----------------------------------------------------------------------------------


def check_http(r: requests.Response, what: Any = "") -> None:
    assert r.status_code < 500, f"{r.status_code} for {str(what)[:300]!r}: {r.text[:500]}"
    if r.status_code >= 400 and r.request.method != "HEAD":
        assert r.headers["Content-Type"].startswith("application/json"), r.text[:300]
        doc = r.json()
        assert doc["errorType"] and doc["message"], doc


def check_grpc(err: grpc.RpcError, what: Any = "") -> None:
    assert err.code() not in BAD_GRPC, f"{err.code()} for {str(what)[:300]!r}: {err.details()}"


def still_serving(s: Served, service: str = "fraud") -> None:
    """The node is up and answers a valid request correctly."""
    assert s.node.running(), f"the node died:\n{s.node.log()[-3000:]}"
    if service == "fn":
        r = s.http.post(s.url("/public/api/v1/fn/echo/run"), json={"x": [1, "two"]}, timeout=30)
        assert r.status_code == 200 and r.json()["response"] == {"x": [1, "two"]}, r.text
    elif service == "tags":
        r = s.http.post(s.url("/public/api/v1/tags/tag/predict"), json={"features": TAGS_ROW}, timeout=30)
        assert r.status_code == 200 and r.json()["result"]["prediction"] == s.tags_expected, r.text
    else:
        r = s.http.post(s.url("/public/api/v1/fraud/score/predict"), json={"features": FRAUD_ROW}, timeout=30)
        assert r.status_code == 200 and r.json()["result"]["prediction"] == s.fraud_expected, r.text


def still_serving_grpc(s: Served) -> None:
    assert s.node.running(), f"the node died:\n{s.node.log()[-3000:]}"
    feats = {k: pb.Value(number=v) if isinstance(v, float) else pb.Value(integer=v) for k, v in FRAUD_ROW.items()}
    out = s.api.Predict(pb.PredictRequest(service="fraud", endpoint="score", features=feats), timeout=30)
    assert out.result.prediction.text == s.fraud_expected


# ---- strategies -------------------------------------------------------------------------------

_ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=8)  # lone surrogates included
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=16), _ANY_TEXT
)  # unbounded ints, NaN, Infinity
JSON = st.recursive(
    _SCALARS,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8) | _ANY_TEXT, kids, max_size=4),
    max_leaves=10,
)
_SPECIAL_VALUES = st.sampled_from(
    [
        2**63,
        -(2**63) - 1,
        2**64 - 1,
        2**64,
        10**30,
        -(10**300),
        1e308,
        -1e308,
        3.5e38,
        5e-324,
        -0.0,
        "1e400",
        "-1e400",
        "nan",
        "NaN",
        "-Infinity",
        "inf",
        "1e19",
        "9223372036854775808",
        "0x10",
        "1_000",
        " 12 ",
        "",
        "\x00",
        "a\x00b",
        "true",
        "yes",
        "\ufeff1",
        "١٢",
        "x" * 70_000,
    ]
)
VALUES = st.one_of(_SCALARS, _SPECIAL_VALUES, JSON)
FEATURE_NAMES = st.sampled_from([*FRAUD_ROW, *TAGS_ROW]) | st.text(max_size=8)


def _weighted(strategy: Any, weight: int) -> list[Any]:
    # one_of draws its branches evenly, and counts a strategy given twice once: copies weigh
    return [strategy.map(lambda x: x) for _ in range(weight)]


# Complete rows with a value or two replaced: these reach the coercion and the models.
ROWS = st.builds(
    lambda row, changes: {**row, **changes},
    st.sampled_from([FRAUD_ROW, TAGS_ROW]),
    st.dictionaries(st.sampled_from([*FRAUD_ROW, *TAGS_ROW]), VALUES, max_size=2),
)
FEATURES = st.one_of(*_weighted(ROWS, 6), st.dictionaries(FEATURE_NAMES, VALUES, max_size=6), JSON)
DISPATCH = JSON | st.fixed_dictionaries(
    {}, optional={"forcedGeneration": st.sampled_from(["v1", "v0", ""]) | JSON, "dispatchKey": JSON}
)
PREDICT = st.one_of(
    *_weighted(st.fixed_dictionaries({"features": FEATURES}, optional={"dispatch": DISPATCH, "context": JSON}), 4),
    st.fixed_dictionaries({}, optional={"features": FEATURES, "dispatch": DISPATCH, "context": JSON}),
)
MULTI = st.fixed_dictionaries(
    {"items": st.lists(PREDICT, max_size=5) | st.lists(PREDICT | JSON, max_size=3) | JSON},
    optional={"dispatch": DISPATCH},
)
RUN = st.dictionaries(st.sampled_from(["a", "b", "kwargs", "dispatch"]) | st.text(max_size=8), VALUES, max_size=5)


def _dumps(value: Any, ascii_only: bool) -> bytes:
    # json, not orjson: it writes NaN, Infinity, lone surrogates and ints of any size
    return json.dumps(value, allow_nan=True, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _encoded(values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.builds(_dumps, values, st.booleans())


def _deep(n: int, array: bool) -> bytes:
    return (b"[" * n + b"]" * n) if array else (b'{"a":' * n + b"1" + b"}" * n)


SPECIAL_BODIES = st.sampled_from(
    [
        b"",
        b"  \n",
        b"{",
        b"}",
        b"[]",
        b"null",
        b"0",
        b'"x"',
        b"{}",
        b'{"features":NaN}',
        b'{"a":Infinity}',
        b'{"a":-Infinity}',
        b'{"a":1e400}',
        b"\xef\xbb\xbf{}",
        b'{"a":"\\ud800"}',
        b'{"a":"\xed\xa0\x80"}',
        b"\xff\xfe{\x00}\x00",
        b'{"a":1,"a":2}',
        b'{"features":{"amount":1,"amount":"x"}}',
        _deep(65, array=False),
        _deep(5000, array=True),
        b'{"features":' + _deep(100, array=True) + b"}",
        b'{"items":[' + b",".join([b'{"features":{}}'] * 10_001) + b"]}",
        b'{"features":{"merchant":"' + b"x" * 70_000 + b'"}}',
        b'{"' + b"k" * 70_000 + b'":1}',
        b"1" * (MIB + 1),
        b'{"features":{"amount":"' + b"1" * (2 * MIB) + b'"}}',
    ]
)


def bodies(shaped: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """Anything, but mostly bodies shaped for the verb."""
    return st.one_of(st.binary(max_size=300), SPECIAL_BODIES, _encoded(JSON), *_weighted(_encoded(shaped), 5))


BODIES = {"predict": bodies(PREDICT), "predict-multi": bodies(MULTI), "run": bodies(RUN)}
ROUTES = [
    ("fraud", "score", "predict"),
    ("fraud", "score", "predict-multi"),
    ("tags", "tag", "predict"),
    ("tags", "tag", "predict-multi"),
    ("fn", "echo", "run"),
    ("fn", "pair", "run"),
    ("fraud", "score", "run"),
    ("fn", "echo", "predict"),
]
HEADERS = st.dictionaries(
    st.sampled_from(["X-Dispatch-Forced-Generation", "X-Dispatch-Key", "Authorization", "Content-Type"]),
    # latin-1 bytes that are not UTF-8 arrive as lone surrogates in aiohttp
    st.text(st.sampled_from([chr(c) for c in [*range(0x21, 0x7F), *range(0xC0, 0x100)]]), max_size=12),
    max_size=2,
)


# ---- HTTP: the user API -----------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES, ids=["/".join(r) for r in ROUTES])
@FUZZ
@given(data=st.data(), headers=HEADERS, slashes=st.sampled_from(["/", "//"]))
def test_fuzz_http_user_api(
    served: Served, route: tuple[str, str, str], data: st.DataObject, headers: dict[str, str], slashes: str
) -> None:
    service, endpoint, verb = route
    body = data.draw(BODIES[verb], label="body")
    r = served.http.post(
        served.url(f"{slashes}public/api/v1/{service}/{endpoint}/{verb}"), data=body, headers=headers, timeout=60
    )
    check_http(r, body)
    if r.status_code == 200 and (service, endpoint) == ("fn", "echo") and "X-Dispatch-Forced-Generation" not in headers:
        assert r.json()["response"] == (orjson.loads(body) if body.strip() else {})  # the arguments travel intact
    still_serving(served, service)


@FUZZ
@given(
    service=st.sampled_from(["fraud", "tags"]) | st.text(max_size=8),
    params=st.dictionaries(FEATURE_NAMES, st.text(max_size=20) | _SPECIAL_VALUES.map(str), max_size=6),
    raw=st.binary(max_size=60),
)
def test_fuzz_http_predict_simple(served: Served, service: str, params: dict[str, str], raw: bytes) -> None:
    endpoint = {"fraud": "score", "tags": "tag"}.get(service, "score")
    path = f"/public/api/v1/{urllib.parse.quote(service, safe='')}/{endpoint}/predict-simple"
    query = urllib.parse.urlencode(params) + "&" + urllib.parse.quote_from_bytes(raw, safe="=&")
    r = served.http.get(served.url(path) + "?" + query[:6000], timeout=30)
    check_http(r, params)
    still_serving(served)


# ---- HTTP: operational and admin routes, and made-up ones -------------------------------------

_NAMES = (st.text(max_size=12) | st.sampled_from(["..", ".", "%2e%2e", "a/../b", "\x00"])).filter(
    lambda s: s not in SERVICES
)
_OPERATIONAL = [
    "/isAlive/",
    "/isAlive",
    "/ready",
    "/metrics",
    "/admin/status",
    "/admin/api/services",
    "/admin/api/services/fn/generations",
]


@FUZZ
@given(
    path=st.sampled_from(_OPERATIONAL) | st.lists(_NAMES, min_size=1, max_size=4).map(lambda p: "/" + "/".join(p)),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    params=st.dictionaries(st.text(max_size=8), st.text(max_size=16), max_size=3),
    body=st.binary(max_size=100),
)
def test_fuzz_http_other_routes(served: Served, path: str, method: str, params: dict[str, str], body: bytes) -> None:
    if path not in _OPERATIONAL:
        path = "/" + "/".join(urllib.parse.quote(p, safe="") for p in path[1:].split("/"))
    elif method not in ("GET", "HEAD"):
        method = "GET"  # no DELETE on real services
    r = served.http.request(method, served.url(path), params=params, data=body, timeout=30)
    check_http(r, (method, path))
    if path in ("/isAlive/", "/ready"):
        assert r.status_code == 200, r.text
    still_serving(served)


_SERVICE_IDS = st.text(max_size=12) | st.sampled_from(["../../hostile-x", "/tmp/hostile-x", "a/b", "..", "x\x00y"])
_MAPPINGS = st.fixed_dictionaries(
    {},
    optional={
        "mode": JSON | st.sampled_from(["random", "hash"]),
        "hashBased": JSON,
        "entries": JSON
        | st.lists(JSON | st.fixed_dictionaries({}, optional={"generation": JSON | st.just("v1"), "proba": VALUES}))
        | st.lists(st.fixed_dictionaries({"generation": st.just("v1") | JSON, "proba": VALUES}), max_size=3),
    },
)
ADMIN_BODIES = {
    "create": st.one_of(BODIES["predict"], *_weighted(_encoded(st.fixed_dictionaries({"serviceId": _SERVICE_IDS})), 3)),
    "setMapping": st.one_of(BODIES["predict"], *_weighted(_encoded(_MAPPINGS), 3)),
}


@FUZZ
@given(
    action=st.sampled_from(["create", "setMapping", "switchTo", "enable", "disable", "delete", "import", "newest"]),
    name=_NAMES,
    data=st.data(),
)
def test_fuzz_http_admin_api(served: Served, action: str, name: str, data: st.DataObject) -> None:
    body = data.draw(ADMIN_BODIES.get(action, st.just(b"")), label="body")
    base = "/admin/api/services"
    quoted = urllib.parse.quote(name, safe="")
    if action == "create":
        r = served.http.post(served.url(base), data=body, timeout=30)
    elif action == "setMapping":  # on a real service: the only generation it has may serve again
        r = served.http.post(served.url(f"{base}/fn/actions/setMapping"), data=body, timeout=60)
    elif action == "switchTo":
        r = served.http.post(served.url(f"{base}/fn/actions/switchTo/{quoted}"), timeout=60)
    elif action == "import":
        r = served.http.post(
            served.url(f"{base}/fn/generations/actions/importFromArchive"), params={"filePath": name}, timeout=60
        )
    elif action == "newest":
        r = served.http.post(served.url(f"{base}/{quoted}/actions/switchToNewest"), timeout=60)
    elif action == "delete":
        r = served.http.delete(served.url(f"{base}/{quoted}"), timeout=30)
    else:
        r = served.http.post(served.url(f"{base}/{quoted}/actions/{action}"), timeout=30)
    check_http(r, (action, name, body[:100]))
    assert_services_in_place(served)
    still_serving(served, "fn")


def assert_services_in_place(served: Served) -> None:
    """Every service the admin API created is one folder of `services/`, named by a valid id."""
    for d in (served.node.data_dir / "services").iterdir():
        assert ID_RE.fullmatch(d.name) and (d / "state.json").is_file(), d
    outside = [*served.tmp.parent.glob("*hostile-x*"), *served.tmp.glob("**/*hostile-x*")]
    outside += [p for p in Path("/tmp").glob("*hostile-x*") if p.stat().st_mtime >= served.started]
    assert outside == []


# ---- gRPC -------------------------------------------------------------------------------------

_API_METHODS = ["/apinode.v1.ApiNode/Predict", "/apinode.v1.ApiNode/PredictMulti", "/apinode.v1.ApiNode/Run"]
# Admin methods a random message cannot make destructive (no service name it decodes to is served).
_ADMIN_METHODS = [
    "/apinode.v1.Admin/ListServices",
    "/apinode.v1.Admin/ListGenerations",
    "/apinode.v1.Admin/GetTuning",
    "/apinode.v1.Admin/Enable",
    "/apinode.v1.Admin/Status",
]


def _ident(x: bytes) -> bytes:
    return x


@FUZZ
@given(method=st.sampled_from(_API_METHODS + _ADMIN_METHODS), raw=st.binary(max_size=200))
def test_fuzz_grpc_random_bytes(served: Served, method: str, raw: bytes) -> None:
    call = served.channel.unary_unary(method, request_serializer=_ident, response_deserializer=_ident)
    try:
        call(raw, timeout=30)
    except grpc.RpcError as err:
        check_grpc(err, raw)
    still_serving_grpc(served)


@FUZZ
@given(
    method=st.sampled_from(["/apinode.v1.ApiNode/PredictStream", "/apinode.v1.Admin/PushPackage"]),
    raws=st.lists(st.binary(max_size=100), max_size=4),
)
def test_fuzz_grpc_random_byte_streams(served: Served, method: str, raws: list[bytes]) -> None:
    call = served.channel.stream_stream(method, request_serializer=_ident, response_deserializer=_ident)
    try:
        list(call(iter(raws), timeout=30))
    except grpc.RpcError as err:
        check_grpc(err, raws)
    still_serving_grpc(served)


_INT64 = st.integers(-(2**63), 2**63 - 1)
PB_VALUES = st.one_of(
    st.builds(pb.Value, number=st.floats()),
    st.builds(pb.Value, integer=_INT64),
    st.builds(pb.Value, text=st.text(max_size=20) | _SPECIAL_VALUES.map(str)),
    st.builds(pb.Value, flag=st.booleans()),
    st.just(pb.Value(null=struct_pb2.NULL_VALUE)),
    st.just(pb.Value()),
)
_PB_ROWS = [
    {"amount": pb.Value(number=1.5), "hour": pb.Value(integer=3), "distance": pb.Value(text="-0.25")},
    {"merchant": pb.Value(text="travel"), "count": pb.Value(integer=2), "score": pb.Value(number=0.5)},
]
PB_FEATURES = st.one_of(
    *_weighted(
        st.builds(
            lambda row, changes: {**row, **changes},
            st.sampled_from(_PB_ROWS),
            st.dictionaries(st.sampled_from([*FRAUD_ROW, *TAGS_ROW]), PB_VALUES, max_size=2),
        ),
        4,
    ),
    st.dictionaries(FEATURE_NAMES, PB_VALUES, max_size=6),
)
PB_DISPATCH = st.none() | st.builds(
    pb.Dispatch, forced_generation=st.sampled_from(["v1", "v0", ""]) | st.text(max_size=8), dispatch_key=st.text()
)
TARGETS = st.sampled_from([("fraud", "score"), ("tags", "tag"), ("fn", "echo"), ("fn", "pair")]) | st.tuples(
    st.text(max_size=8), st.text(max_size=8)
)


def _predict_request(target: tuple[str, str], features: dict[str, Any], dispatch: Any, rid: str) -> pb.PredictRequest:
    req = pb.PredictRequest(service=target[0], endpoint=target[1], features=features, request_id=rid)
    if dispatch is not None:
        req.dispatch.CopyFrom(dispatch)
    return req


PREDICT_REQUESTS = st.builds(_predict_request, TARGETS, PB_FEATURES, PB_DISPATCH, st.text(max_size=8))


@FUZZ
@given(request=PREDICT_REQUESTS)
def test_fuzz_grpc_predict(served: Served, request: pb.PredictRequest) -> None:
    try:
        served.api.Predict(request, timeout=30)
    except grpc.RpcError as err:
        check_grpc(err, request)
    still_serving_grpc(served)


@FUZZ
@given(target=TARGETS, items=st.lists(PB_FEATURES, max_size=6), dispatch=PB_DISPATCH)
def test_fuzz_grpc_predict_multi(served: Served, target: tuple[str, str], items: list[Any], dispatch: Any) -> None:
    req = pb.PredictMultiRequest(
        service=target[0], endpoint=target[1], items=[pb.PredictItem(features=f) for f in items]
    )
    if dispatch is not None:
        req.dispatch.CopyFrom(dispatch)
    try:
        served.api.PredictMulti(req, timeout=30)
    except grpc.RpcError as err:
        check_grpc(err, req)
    still_serving_grpc(served)


@FUZZ
@given(requests_=st.lists(PREDICT_REQUESTS, max_size=6))
def test_fuzz_grpc_predict_stream(served: Served, requests_: list[pb.PredictRequest]) -> None:
    try:
        answers = list(served.api.PredictStream(iter(requests_), timeout=30))
    except grpc.RpcError as err:
        check_grpc(err, requests_)
    else:
        assert [a.request_id for a in answers] == [r.request_id for r in requests_]
        for a in answers:
            if a.HasField("error"):
                assert a.error.code not in {c.name for c in BAD_GRPC}, a.error
    still_serving_grpc(served)


_STRUCT_SCALARS = st.one_of(
    st.none(), st.booleans(), st.floats(), st.integers(-(2**53), 2**53), st.text(max_size=16), _SPECIAL_VALUES
)
STRUCT_JSON = st.recursive(
    _STRUCT_SCALARS,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
    max_leaves=8,
)


@FUZZ
@given(
    target=TARGETS,
    arguments=st.dictionaries(st.sampled_from(["a", "b"]) | st.text(max_size=8), STRUCT_JSON, max_size=4),
    dispatch=PB_DISPATCH,
)
def test_fuzz_grpc_run(served: Served, target: tuple[str, str], arguments: dict[str, Any], dispatch: Any) -> None:
    s = struct_pb2.Struct()
    try:
        s.update({k: (float(v) if isinstance(v, int) and not isinstance(v, bool) else v) for k, v in arguments.items()})
    except (ValueError, TypeError, OverflowError):
        assume(False)  # not a Struct the client can build
    req = pb.RunRequest(service=target[0], endpoint=target[1], arguments=s)
    if dispatch is not None:
        req.dispatch.CopyFrom(dispatch)
    try:
        out = served.api.Run(req, timeout=30)
    except grpc.RpcError as err:
        check_grpc(err, arguments)
    else:
        if target == ("fn", "echo"):
            assert out.response.struct_value == s  # the arguments travel intact
    still_serving_grpc(served)


@FUZZ
@given(
    method=st.sampled_from(
        [
            "ListGenerations",
            "Activate",
            "SetMapping",
            "Rollback",
            "Enable",
            "Disable",
            "DeleteGeneration",
            "DeleteService",
            "GetTuning",
            "SetTuning",
            "Status",
        ]
    ),
    name=_NAMES,
    generation=st.text(max_size=8) | st.just("v1"),
    endpoint=st.text(max_size=8) | st.sampled_from(["echo", "pair"]),
    pool=st.dictionaries(st.text(max_size=12) | st.sampled_from(["floor", "queue", "timeout"]), _INT64, max_size=3),
    mapping=st.builds(
        apb.Mapping,
        mode=st.text(max_size=6) | st.sampled_from(["random", "hash"]),
        entries=st.lists(
            st.builds(apb.MappingEntry, generation=st.just("v1") | st.text(max_size=4), proba=st.floats()), max_size=3
        ),
    ),
)
def test_fuzz_grpc_admin(
    served: Served, method: str, name: str, generation: str, endpoint: str, pool: dict[str, int], mapping: Any
) -> None:
    a = served.admin
    calls = {
        "ListGenerations": lambda: a.ListGenerations(apb.ServiceRequest(service=name)),
        # on the real service: its only generation may serve again, nothing else can
        "Activate": lambda: a.Activate(apb.GenerationRequest(service="fn", generation=generation)),
        "SetMapping": lambda: a.SetMapping(apb.SetMappingRequest(service="fn", mapping=mapping)),
        "Rollback": lambda: a.Rollback(apb.ServiceRequest(service=name)),
        "Enable": lambda: a.Enable(apb.ServiceRequest(service=name)),
        "Disable": lambda: a.Disable(apb.ServiceRequest(service=name)),
        "DeleteGeneration": lambda: a.DeleteGeneration(apb.GenerationRequest(service=name, generation=generation)),
        "DeleteService": lambda: a.DeleteService(apb.ServiceRequest(service=name)),
        "GetTuning": lambda: a.GetTuning(apb.TuningRequest(service="fn", endpoint=endpoint)),
        "SetTuning": lambda: a.SetTuning(apb.SetTuningRequest(service=name, endpoint=endpoint, pool=pool)),
        "Status": lambda: a.Status(apb.StatusRequest()),
    }
    try:
        calls[method]()
    except grpc.RpcError as err:
        check_grpc(err, (method, name))
    still_serving_grpc(served)
    still_serving(served, "fn")


# ---- the limits, each with its own error ------------------------------------------------------


def post(s: Served, path: str, body: bytes | dict[str, Any], **kw: Any) -> requests.Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return s.http.post(s.url("/public/api/v1/" + path), data=data, timeout=60, **kw)


def expect(r: requests.Response, status: int, error_type: str, *fragments: str) -> None:
    assert r.status_code == status, r.text[:500]
    doc = r.json()
    assert doc["errorType"] == error_type, doc
    for f in fragments:
        assert f in doc["message"], doc["message"]


def test_body_over_the_limit(served: Served) -> None:
    for path in ("fraud/score/predict", "fn/echo/run"):
        r = post(served, path, b'{"a":"' + b"x" * (MIB + 10) + b'"}')
        expect(r, 413, "PAYLOAD_TOO_LARGE", "limit of 1048576 bytes (--max-body-mb)")
    r = served.http.post(served.url("/admin/api/services/fn/actions/setMapping"), data=b" " * (2 * MIB), timeout=60)
    expect(r, 413, "PAYLOAD_TOO_LARGE", "--max-body-mb")
    still_serving(served)


def test_items_over_the_limit(served: Served) -> None:
    items = [{"features": FRAUD_ROW}] * 10_001
    expect(post(served, "fraud/score/predict-multi", {"items": items}), 413, "PAYLOAD_TOO_LARGE", "10001 items")
    r = post(served, "fraud/score/predict-multi", {"items": items[:10_000]})
    assert r.status_code == 200 and len(r.json()["results"]) == 10_000
    feats = {k: pb.Value(number=float(v)) for k, v in FRAUD_ROW.items()}
    req = pb.PredictMultiRequest(service="fraud", endpoint="score", items=[pb.PredictItem(features=feats)] * 10_001)
    with pytest.raises(grpc.RpcError) as err:
        served.api.PredictMulti(req, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "10001 items in one call; the limit is 10000 (--max-items)"


def test_json_nesting_limit(served: Served) -> None:
    expect(
        post(served, "fn/echo/run", _deep(65, array=False)),
        400,
        "BAD_REQUEST",
        "nested more than 64 levels deep (at a.a.a.a.a.a... (",
        "the limit is 64 (--max-json-depth)",
    )
    r = post(served, "fn/echo/run", _deep(64, array=False))  # at the limit: served
    assert r.status_code == 200, r.text
    deep_feature = b'{"features":{"amount":' + _deep(70, array=True) + b',"hour":1,"distance":0}}'
    expect(post(served, "fraud/score/predict", deep_feature), 400, "BAD_REQUEST", "(at features.amount[0][0]")
    expect(post(served, "fn/echo/run", _deep(3000, array=True)), 400, "BAD_REQUEST", "nested more than 64 levels")


def test_string_limit(served: Served) -> None:
    feats = {**TAGS_ROW, "merchant": "x" * 65_537}
    expect(
        post(served, "tags/tag/predict", {"features": feats}),
        400,
        "BAD_REQUEST",
        "the string at features.merchant is 65537 characters long; the limit is 65536 (--max-string-chars)",
    )
    assert post(served, "tags/tag/predict", {"features": {**feats, "merchant": "x" * 65_536}}).status_code == 200
    expect(
        post(served, "tags/tag/predict-multi", {"items": [{"features": TAGS_ROW}, {"features": feats}]}),
        400,
        "BAD_REQUEST",
        "the string at items[1].features.merchant is 65537 characters long",
    )
    expect(post(served, "fn/echo/run", {"a": ["y" * 70_000]}), 400, "BAD_REQUEST", "the string at a[0] is 70000")
    expect(post(served, "fn/echo/run", {"k" * 70_000: 1}), 400, "BAD_REQUEST", "the key at 'kkkk", "is 70000")
    values = {k: pb.Value(text=str(v)) for k, v in feats.items()}  # over gRPC: the feature codec says it
    with pytest.raises(grpc.RpcError) as err:
        served.api.Predict(pb.PredictRequest(service="tags", endpoint="tag", features=values), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "feature 'merchant' is 65537 characters long; the limit is 65536 (--max-string-chars)"


@pytest.mark.parametrize(
    ("feature", "value", "message"),
    [
        ("count", 2**63, "feature 'count' is out of the int64 range, got 9223372036854775808"),
        ("count", 2**64 - 1, "feature 'count' is out of the int64 range"),
        ("count", -(2**63) - 1.0e4, "feature 'count' is out of the int64 range"),
        ("count", 1e19, "feature 'count' is out of the int64 range, got 1e+19"),
        ("count", "9223372036854775808", "feature 'count' is out of the int64 range"),
        ("count", "1e400", "feature 'count' must be a finite number (int), got '1e400'"),
        ("count", 1.5, "feature 'count' must be an integer (int), got 1.5"),
        ("count", [1, 2], "feature 'count' must be a number (int), got a JSON array"),
        ("score", 1e39, "feature 'score' is out of the model's float32 range"),
        ("score", "nan", "feature 'score' must be a finite number (float), got 'nan'"),
        ("merchant", {"a": 1}, "feature 'merchant' must be a string, got a JSON object"),
        ("merchant", None, "feature 'merchant' is null and the model cannot impute it"),
    ],
)
def test_values_no_model_input_can_hold(served: Served, feature: str, value: Any, message: str) -> None:
    r = post(served, "tags/tag/predict", {"features": {**TAGS_ROW, feature: value}})
    expect(r, 400, "BAD_REQUEST", message)
    # the same row among valid ones: refused before it travels, so it fails nobody else
    r = post(
        served,
        "tags/tag/predict-multi",
        {"items": [{"features": TAGS_ROW}, {"features": {**TAGS_ROW, feature: value}}]},
    )
    expect(r, 400, "BAD_REQUEST", "items[1]: " + message)
    still_serving(served, "tags")


def test_int64_and_float32_edges_are_served(served: Served) -> None:
    for count in (2**63 - 1, -(2**63), "9223372036854775807"):
        assert post(served, "tags/tag/predict", {"features": {**TAGS_ROW, "count": count}}).status_code == 200
    assert post(served, "tags/tag/predict", {"features": {**TAGS_ROW, "score": 3.4e38}}).status_code == 200
    with pytest.raises(grpc.RpcError) as err:
        values = {"merchant": pb.Value(text="a"), "count": pb.Value(number=1e19), "score": pb.Value(number=1)}
        served.api.Predict(pb.PredictRequest(service="tags", endpoint="tag", features=values), timeout=30)
    assert err.value.details() == "feature 'count' is out of the int64 range, got 1e+19"


def test_nan_and_infinity_are_refused(served: Served) -> None:
    for literal in (b"Infinity", b"-Infinity", b"1e400"):
        r = post(served, "fraud/score/predict", b'{"features":{"amount":' + literal + b',"hour":1,"distance":0}}')
        expect(r, 400, "BAD_REQUEST", "the body is not valid JSON")
    # a bare NaN (dataikuapi's float('nan')) is read as null: refused only where null is
    r = post(served, "fraud/score/predict", b'{"features":{"amount":NaN,"hour":1,"distance":0}}')
    expect(r, 400, "BAD_REQUEST", "feature 'amount' is null and the model cannot impute it")
    s = struct_pb2.Struct()
    s.update({"a": math.nan})
    with pytest.raises(grpc.RpcError) as err:
        served.api.Run(pb.RunRequest(service="fn", endpoint="echo", arguments=s), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the arguments are not JSON" in err.value.details()


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_grpc_non_finite_features_are_refused(served: Served, number: float) -> None:
    """JSON cannot carry NaN, a gRPC Value can: it must not reach the model as a value."""
    for service, endpoint, feature in (
        ("fraud", "score", "amount"),
        ("fraud", "score", "hour"),
        ("tags", "tag", "score"),
    ):
        row = _PB_ROWS[0] if service == "fraud" else _PB_ROWS[1]
        req = pb.PredictRequest(service=service, endpoint=endpoint, features={**row, feature: pb.Value(number=number)})
        with pytest.raises(grpc.RpcError) as err:
            served.api.Predict(req, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"feature {feature!r} must be a finite number" in err.value.details(), err.value.details()


def test_grpc_undecodable_is_invalid_argument(served: Served) -> None:
    for method in _API_METHODS:
        call = served.channel.unary_unary(method, request_serializer=_ident, response_deserializer=_ident)
        for raw in (b"\xff\xff\xff\xff\x0f", b"\x0a\x02\xff\xfe"):  # corrupt, then a string that is not UTF-8
            with pytest.raises(grpc.RpcError) as err:
                call(raw, timeout=30)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            assert "the request cannot be decoded" in err.value.details()
    still_serving_grpc(served)


def test_dispatch_of_the_wrong_type(served: Served) -> None:
    for forced in ([1], {"a": 1}, 3):
        body = {"features": FRAUD_ROW, "dispatch": {"forcedGeneration": forced}}
        expect(
            post(served, "fraud/score/predict", body), 400, "BAD_REQUEST", "dispatch.forcedGeneration must be a string"
        )
    r = post(
        served, "fn/echo/run", {}, headers={"X-Dispatch-Forced-Generation": "v\xff"}
    )  # a lone surrogate in aiohttp
    expect(r, 404, "NOT_FOUND", "generation 'v\\udcff' of service 'fn' is not loaded")


def test_admin_names_stay_in_the_data_dir(served: Served) -> None:
    for sid in ("../../../hostile-x", "a/b", "x\x00y", "..", "", "evil\n"):
        r = served.http.post(served.url("/admin/api/services"), json={"serviceId": sid}, timeout=30)
        expect(r, 400, "BAD_REQUEST")
    assert_services_in_place(served)
    for entries in ([1, 2], [{"generation": [1], "proba": 1}], [{"generation": {}, "proba": 1}]):
        r = served.http.post(served.url("/admin/api/services/fn/actions/setMapping"), json={"entries": entries})
        expect(r, 400, "BAD_REQUEST", "a mapping entry must be")
    still_serving(served, "fn")


def test_metrics_do_not_grow_with_made_up_names(served: Served) -> None:
    for i in range(20):
        post(served, f"made-up-{i}/x/predict", {})
        post(served, f"fn/made-up-{i}/run", {})
    text = served.http.get(served.url("/metrics"), timeout=30).text
    assert "made-up" not in text
    assert 'service="(unknown)"' in text and 'endpoint="(unknown)",generation="",outcome="NOT_FOUND"' in text


def test_error_bodies_survive_text_that_is_not_unicode() -> None:
    """A caller's lone surrogate in an error message must not turn a 4xx into a bare 500."""
    from node import errors
    from node.http.app import error_response

    r = error_response(errors.NotFound("no generation v\udcff"))
    assert r.status == 404 and r.body is not None
    assert json.loads(bytes(r.body))["message"] == "no generation v\\udcff"
