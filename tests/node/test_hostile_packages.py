"""Hostile packages: path traversal, zip bombs, manifests pointing outside the package,
unlisted members, size and sha256 mismatches, corrupt streams.

Each crafted package is refused by `extract_package` with a precise message and nothing
written outside the destination; pushed to a live node through the admin gRPC
`PushPackage` it is refused with INVALID_ARGUMENT and that message, nothing lands outside
the data dir, and the node goes on serving what it served. A generation whose manifest
was tampered with in the data dir is refused when the node loads it. Garbage uploads and
mutated manifests are fuzzed through `PushPackage` too.
"""

from __future__ import annotations

import hashlib
import io
import json
import textwrap
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apz.archive import extract_package
from apz.vocab import PackageError
from node._proto.apinode.v1 import admin_pb2 as apb
from node._proto.apinode.v1 import admin_pb2_grpc as apbg
from tests.nodeproc import NodeProc, run_node, start_node
from tests.packages import function_package

MARK = "hostile-evil"  # every file a crafted package tries to write outside has this in its name
CODE = b"def echo(**kwargs):\n    return kwargs\n"
EVIL_CODE = textwrap.dedent(
    """
    import pathlib
    pathlib.Path(__file__).with_name("evil-code-ran.txt").write_text("ran")

    def echo(**kwargs):
        return {"evil": True}
    """
).encode()
ZEROS_32M = bytes(32 * 1024**2)
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_for(members: dict[str, bytes], **changes: Any) -> dict[str, Any]:
    """The manifest of a valid one-function package (service `fn`), with `changes` on top."""
    doc: dict[str, Any] = {
        "format": "apinode-package",
        "format_version": 1,
        "service": "fn",
        "version": "v2",
        "endpoints": {
            "echo": {"type": "function", "code": {"path": "code/funcs.py", "root": "code", "function": "echo"}}
        },
        "files": {name: {"sha256": sha(data), "size": len(data)} for name, data in members.items()},
    }
    doc.update(changes)
    return doc


def make_zip(
    members: dict[str, bytes], manifest: dict[str, Any] | bytes | None, *, method: int = zipfile.ZIP_DEFLATED
) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        if manifest is not None:
            z.writestr("manifest.json", manifest if isinstance(manifest, bytes) else json.dumps(manifest))
        for name, data in members.items():
            z.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return buf.getvalue()


def package(members: dict[str, bytes], **changes: Any) -> bytes:
    """A zip of `members` whose manifest lists them all honestly (plus `changes`)."""
    return make_zip(members, manifest_for(members, **changes))


def corrupt_stream() -> bytes:
    """A package whose code member has a flipped byte in its deflate stream."""
    data = bytearray(package({"code/funcs.py": CODE * 50}))
    at = data.index(b"code/funcs.py") + len("code/funcs.py") + 10  # inside the first member's data
    data[at] ^= 0xFF
    return bytes(data)


def code_outside(**code: Any) -> dict[str, Any]:
    entry = {"path": "code/funcs.py", "root": "code", "function": "echo", **code}
    return {"echo": {"type": "function", "code": entry}}


def prediction_pointing(path: str) -> dict[str, Any]:
    return {
        "score": {
            "type": "prediction",
            "task": "binary",
            "features": [{"name": "x", "type": "float", "onnx_type": "double"}],
            "classes": ["a", "b"],
            "model": {"path": path, "input_mode": "matrix", "proba_output": "probabilities"},
        }
    }


GOOD = {"code/funcs.py": CODE}
# (case id, package bytes, what the refusal says)
CASES: list[tuple[str, Any, str]] = [
    (
        "member-dotdot",
        lambda: make_zip({**GOOD, f"../{MARK}.py": EVIL_CODE}, manifest_for(GOOD)),
        f"package path '../{MARK}.py' points outside the package",
    ),
    (
        "member-absolute",
        lambda: make_zip({**GOOD, f"/tmp/{MARK}.py": EVIL_CODE}, manifest_for(GOOD)),
        f"package path '/tmp/{MARK}.py' points outside the package",
    ),
    (
        "member-deep-dotdot",
        lambda: package({**GOOD, f"code/../../{MARK}.py": EVIL_CODE}),
        f"package path 'code/../../{MARK}.py' points outside the package",
    ),
    (
        "member-backslash",
        lambda: package({**GOOD, f"..\\{MARK}.py": EVIL_CODE}),
        "points outside the package",
    ),
    (
        "member-unlisted",
        lambda: make_zip({**GOOD, "code/extra.py": b"x = 1\n"}, manifest_for(GOOD)),
        "package holds files the manifest does not list: ['code/extra.py']",
    ),
    (
        "member-missing",
        lambda: make_zip({}, manifest_for(GOOD)),
        "package lacks code/funcs.py, listed in its manifest",
    ),
    (
        "size-mismatch",
        lambda: make_zip(GOOD, manifest_for(GOOD, files={"code/funcs.py": {"sha256": sha(CODE), "size": 7}})),
        f"code/funcs.py: size {len(CODE)} != 7 in the manifest",
    ),
    (
        "sha-mismatch",
        lambda: make_zip(GOOD, manifest_for(GOOD, files={"code/funcs.py": {"sha256": sha(b"x"), "size": len(CODE)}})),
        "code/funcs.py: sha256 mismatch (package corrupted or tampered with)",
    ),
    (
        "zip-bomb-member",
        lambda: package({**GOOD, "data/zeros.bin": ZEROS_32M}),
        "data/zeros.bin: inflates 33554432 bytes from",
    ),
    (
        "zip-bomb-package",
        lambda: package({**GOOD, **{f"data/z{i}.bin": bytes(1024**2) for i in range(24)}}),
        "package inflates 25165",
    ),
    (
        "corrupt-stream",
        corrupt_stream,
        "code/funcs.py: cannot be unpacked",
    ),
    (
        "model-path-outside",
        lambda: package(GOOD, endpoints=prediction_pointing("../../etc/passwd")),
        "manifest.json: endpoints.score.model.path '../../etc/passwd' is not a file of the package",
    ),
    (
        "files-entry-outside",
        lambda: make_zip(
            GOOD,
            manifest_for(GOOD, files={"../../etc/passwd": {"sha256": sha(b""), "size": 0}}),
        ),
        "package path '../../etc/passwd' points outside the package",
    ),
    (
        "code-path-outside",
        lambda: package(GOOD, endpoints=code_outside(path=f"../../{MARK}.py")),
        f"manifest.json: endpoints.echo.code.path '../../{MARK}.py' is not a .py file of the package",
    ),
    (
        "code-root-outside",
        lambda: package(GOOD, endpoints=code_outside(root="/tmp")),
        "manifest.json: endpoints.echo.code.root: package path '/tmp' points outside the package",
    ),
    (
        "code-not-under-root",
        lambda: package({**GOOD, "lib/x.py": CODE}, endpoints=code_outside(root="lib")),
        "manifest.json: endpoints.echo.code.path 'code/funcs.py' is not under its root 'lib'",
    ),
    (
        "folders-outside",
        lambda: package(GOOD, endpoints={"echo": {**code_outside()["echo"], "folders": ["../../"]}}),
        "manifest.json: endpoints.echo.folders: package path '../../' points outside the package",
    ),
    (
        "file-and-folder",
        lambda: package({**GOOD, "code": b"x"}),
        "manifest.json: 'code' is both a file and a folder of the package",
    ),
    (
        "dot-member",
        lambda: make_zip({**GOOD, "./": b""}, manifest_for(GOOD)),
        "package path './' is not a valid file name",
    ),
    (
        "control-char-name",
        lambda: package({**GOOD, "code/a\nb.py": b""}),
        "package path 'code/a\\nb.py' is not a valid file name",
    ),
    (  # `$` matches before a final newline: ids are checked with fullmatch
        "service-id-newline",
        lambda: package(GOOD, service="evil\n"),
        "manifest.json: bad service id 'evil\\n'",
    ),
    ("version-newline", lambda: package(GOOD, version="v2\n"), "manifest.json: bad version 'v2\\n'"),
    (
        "endpoint-id-newline",
        lambda: package(GOOD, endpoints={"echo\n": code_outside()["echo"]}),
        "bad endpoint id 'echo\\n'",
    ),
    (
        "api-keys-garbage",
        lambda: package(GOOD, api_keys=[{"id": "k", "sha256": "zz"}]),
        "manifest.json: api_keys[0] must be {id, sha256 (64 hex digits)}",
    ),
    (
        "not-a-zip",
        lambda: b"PK\x03\x04 this is not a zip at all",
        "not a package: corrupt zip",
    ),
    (
        "manifest-not-json",
        lambda: make_zip(GOOD, b"{not json"),
        "manifest.json is not valid JSON",
    ),
]
IDS = [c[0] for c in CASES]


def _outside_marks(*roots: Path) -> list[Path]:
    found: list[Path] = []
    for root in roots:
        if root.is_dir():
            found += [p for p in root.rglob(f"*{MARK}*")]
    return found + [p for p in Path("/tmp").glob(f"*{MARK}*")]


@pytest.mark.parametrize(("case", "build", "message"), CASES, ids=IDS)
def test_extract_package_refuses(tmp_path: Path, case: str, build: Any, message: str) -> None:
    pkg = tmp_path / "pkg.apz"
    pkg.write_bytes(build())
    dest = tmp_path / "out" / "gen"
    with pytest.raises(PackageError) as err:
        extract_package(pkg, dest)
    assert message in str(err.value), str(err.value)
    assert not dest.exists()
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    assert _outside_marks(tmp_path) == []


def test_extract_package_accepts_the_honest_one(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg.apz"
    pkg.write_bytes(package({**GOOD, "data/small-zeros.bin": bytes(1024**2)}))  # compressible, but small
    manifest = extract_package(pkg, tmp_path / "gen")
    assert manifest.service == "fn" and (tmp_path / "gen" / "code" / "funcs.py").read_bytes() == CODE


# ---- through PushPackage, on a live node --------------------------------------------------------


@dataclass(repr=False)
class Live:
    node: NodeProc
    channel: grpc.Channel
    admin: apbg.AdminStub
    tmp: Path


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("hostile-packages")
    pkg = function_package(
        tmp, {"echo": {"function": "echo", "pool": {"floor": 1, "cruise": 1, "ceil": 1}}}, service="fn"
    )
    with run_node(tmp / "data", pkg) as node, grpc.insecure_channel(node.grpc) as channel:
        yield Live(node, channel, apbg.AdminStub(node.admin_channel(channel)), tmp)


def push(live: Live, data: bytes, *, activate: bool = True, chunk: int = 64 * 1024) -> Any:
    def chunks() -> Iterator[apb.PushChunk]:
        yield apb.PushChunk(header=apb.PushHeader(size=len(data), sha256=sha(data), activate=activate))
        for i in range(0, len(data), chunk):
            yield apb.PushChunk(data=data[i : i + chunk])

    return live.admin.PushPackage(chunks(), timeout=60)


def assert_still_serving(live: Live) -> None:
    assert live.node.proc.poll() is None, f"the node died:\n{live.node.log()[-3000:]}"
    r = requests.post(live.node.url("fn", "echo", "run"), json={"hello": "world"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["response"] == {"hello": "world"}
    assert r.json()["apiContext"]["serviceGeneration"] == "v1"


def assert_nothing_left(live: Live) -> None:
    data = live.node.data_dir
    assert list((data / "tmp").iterdir()) == []
    generations = [p.name for p in (data / "generations" / "fn").iterdir()]
    assert len(generations) == 1 and generations[0].startswith("v1-"), generations
    assert [p.name for p in (data / "packages" / "fn").iterdir()] == ["v1.apz"]
    assert _outside_marks(live.tmp) == []


@pytest.mark.parametrize(("case", "build", "message"), CASES, ids=IDS)
def test_push_refuses(live: Live, case: str, build: Any, message: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        push(live, build())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert err.value.details().startswith("package refused: "), err.value.details()
    assert message in err.value.details(), err.value.details()
    assert_still_serving(live)
    assert_nothing_left(live)


def test_push_garbage_uploads(live: Live) -> None:
    """Upload framing the node must refuse before it reads a byte of the package."""
    stub = live.admin
    cases: list[tuple[list[apb.PushChunk], str]] = [
        ([], "PushPackage: no header received"),
        ([apb.PushChunk(data=b"PK")], "PushPackage: the first message must be the header"),
        ([apb.PushChunk(header=apb.PushHeader(size=3)), apb.PushChunk(data=b"PK\x03\x04")], "more data than"),
        ([apb.PushChunk(header=apb.PushHeader(size=9)), apb.PushChunk(data=b"PK")], "upload cut short: 2 of 9"),
        (
            [apb.PushChunk(header=apb.PushHeader(size=2, sha256="00" * 32)), apb.PushChunk(data=b"PK")],
            "sha256 mismatch",
        ),
        ([apb.PushChunk(header=apb.PushHeader(size=-5))], "header.size"),
        (
            [apb.PushChunk(header=apb.PushHeader(size=1)), apb.PushChunk(header=apb.PushHeader(size=1))],
            "a second header",
        ),
    ]
    for chunks, message in cases:
        with pytest.raises(grpc.RpcError) as err:
            stub.PushPackage(iter(chunks), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (message, err.value.details())
        assert message in err.value.details(), err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.PushPackage(iter([apb.PushChunk(header=apb.PushHeader(size=10 * 1024**4))]), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "over this node's limit" in err.value.details()
    assert_still_serving(live)
    assert_nothing_left(live)


# ---- fuzzed uploads -------------------------------------------------------------------------------

_BAD_PATHS = st.sampled_from(
    [f"../{MARK}.py", f"/tmp/{MARK}.py", "code/../../x.py", "C:/x.py", ".", "", "code", "code/", "a\x00b"]
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | _BAD_PATHS,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
    max_leaves=8,
)
# Values that keep some mutated manifests valid, so that fuzzed packages get loaded too.
_FINE = st.sampled_from([None, 1, "fuzzsvc", "f2", "code", "code/funcs.py", "echo", "function", []])
# Where a mutation lands in the fuzzed manifest (never `pool`: a valid package is served).
_SPOTS = st.sampled_from(
    [
        ("format_version",),
        ("service",),
        ("version",),
        ("files",),
        ("files", "code/funcs.py"),
        ("files", "code/funcs.py", "size"),
        ("files", "code/funcs.py", "sha256"),
        ("endpoints",),
        ("endpoints", "echo"),
        ("endpoints", "echo", "type"),
        ("endpoints", "echo", "code"),
        ("endpoints", "echo", "code", "path"),
        ("endpoints", "echo", "code", "root"),
        ("endpoints", "echo", "code", "function"),
        ("endpoints", "echo", "folders"),
        ("endpoints", "echo", "test_queries"),
        ("datasets",),
        ("api_keys",),
    ]
)


@st.composite
def _mutated_packages(draw: st.DrawFn) -> bytes:
    members = dict(GOOD)
    if draw(st.integers(0, 3)) == 0:
        members[draw(_BAD_PATHS | st.text(max_size=12))] = draw(st.binary(max_size=64))
    doc = manifest_for(GOOD, service="fuzzsvc", version="f1")
    for _ in range(draw(st.integers(1, 2))):
        spot = draw(_SPOTS)
        target = doc
        for key in spot[:-1]:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        target[spot[-1]] = draw(st.one_of(_FINE, _FINE, _FINE, _JSON, _BAD_PATHS))
    raw = draw(st.binary(max_size=200)) if draw(st.integers(0, 5)) == 0 else json.dumps(doc, allow_nan=True).encode()
    try:
        return make_zip(members, raw)
    except ValueError:  # zipfile refuses some names itself
        return make_zip(GOOD, raw)


@FUZZ
@given(data=_mutated_packages() | st.binary(max_size=512), activate=st.booleans())
def test_fuzz_push_mutated_packages(live: Live, data: bytes, activate: bool) -> None:
    try:
        push(live, data, activate=activate)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    assert_still_serving(live)
    assert _outside_marks(live.tmp) == []


@FUZZ
@given(
    header=st.builds(
        apb.PushHeader,
        size=st.integers(-(2**63), 2**63 - 1) | st.integers(0, 64),
        sha256=st.text(max_size=70),
        filename=st.text(max_size=20),
        activate=st.booleans(),
    ),
    chunks=st.lists(st.binary(max_size=40), max_size=4),
    header_first=st.booleans(),
)
def test_fuzz_push_garbage_chunks(live: Live, header: apb.PushHeader, chunks: list[bytes], header_first: bool) -> None:
    msgs = [apb.PushChunk(data=c) for c in chunks]
    msgs.insert(0 if header_first else len(msgs), apb.PushChunk(header=header))
    with pytest.raises(grpc.RpcError) as err:
        live.admin.PushPackage(iter(msgs), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.value.code(), err.value.details())
    assert_still_serving(live)


# ---- at load: a data dir tampered with while the node was down -----------------------------------


def test_tampered_generation_is_refused_at_load(tmp_path: Path) -> None:
    pkg = function_package(
        tmp_path, {"echo": {"function": "echo", "pool": {"floor": 1, "cruise": 1, "ceil": 1}}}, service="fn"
    )
    data = tmp_path / "data"
    with run_node(data, pkg) as node:
        assert requests.post(node.url("fn", "echo", "run"), json={}, timeout=30).status_code == 200
    (gen,) = (data / "generations" / "fn").iterdir()  # data/generations/fn/v1-<sha12>
    evil = tmp_path / "tampered-code.py"  # beside the data dir: four levels up from the generation
    evil.write_bytes(EVIL_CODE)
    manifest = json.loads((gen / "manifest.json").read_text())
    manifest["endpoints"]["echo"]["code"] = {
        "path": "../../../../tampered-code.py",
        "root": "../../../..",
        "function": "echo",
    }
    (gen / "manifest.json").write_text(json.dumps(manifest))
    try:
        node = start_node(data)
    except RuntimeError as exc:  # refusing to start on a tampered data dir is a refusal too
        log = str(exc)
    else:
        try:
            r = requests.post(node.url("fn", "echo", "run"), json={}, timeout=30)
            assert r.status_code in (404, 503), r.text  # not served, and certainly not by the evil code
            log = node.log()
        finally:
            node.stop()
    assert "endpoints.echo.code.path '../../../../tampered-code.py' is not a .py file of the package" in log, log[
        -3000:
    ]
    assert not (tmp_path / "evil-code-ran.txt").exists()


def _worker_pids(node: NodeProc) -> set[int]:
    """The node's child processes (its workers), read from /proc."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if int(fields[1]) == node.proc.pid:
            pids.add(int(stat.parent.name))
    return pids


def test_a_push_its_client_gave_up_on_leaves_no_worker_behind(tmp_path: Path) -> None:
    """A push whose client leaves while the generation loads (here a gRPC deadline) is
    cancelled by gRPC. The load must not stop halfway with its pools running unowned: its
    workers stayed alive, loaded, and held slots of --max-workers until the node exited."""
    slow = function_package(
        tmp_path,
        {"e": {"function": "echo", "pool": {"floor": 2, "cruise": 2, "ceil": 2}}},
        service="slow",
        code="import time\ntime.sleep(4)  # a slow load\n\ndef echo(**kw):\n    return kw\n",
    )
    data = slow.read_bytes()

    def chunks() -> Iterator[apb.PushChunk]:
        yield apb.PushChunk(header=apb.PushHeader(size=len(data), sha256=sha(data), activate=True))
        yield apb.PushChunk(data=data)

    with run_node(tmp_path / "data", args=["--allow-empty"]) as node, grpc.insecure_channel(node.grpc) as channel:
        admin = apbg.AdminStub(node.admin_channel(channel))
        with pytest.raises(grpc.RpcError) as err:
            admin.PushPackage(chunks(), timeout=1.5)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        node.wait_for(lambda: not _worker_pids(node), timeout=60, what="the abandoned load's workers to exit")
        status = node.status()
        assert status["services"] == {} and status["supervisor"]["workers"] == 0
        admin.PushPackage(chunks(), timeout=120)  # the same push, waited for, serves
        assert len(_worker_pids(node)) == 2 == node.status()["supervisor"]["workers"]
        r = requests.post(node.url("slow", "e", "run"), json={"a": 1}, timeout=30)
        assert r.status_code == 200 and r.json()["response"] == {"a": 1}
