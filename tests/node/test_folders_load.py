"""A 50 MB managed folder on a real node: unpacked once per generation, off the event loop,
read in place by its own endpoint's workers only.

How it works (node/admin.py `push`, node/storage.py `unpack`, apz/archive.py
`extract_package`): the front process verifies and unpacks the package once, in a thread,
into `generations/<service>/<version>-<sha12>/`; a worker gets only that directory's path
and its endpoint's entry, and `folders` points into it. So the folder costs other services
nothing while it unpacks, and the endpoints that do not declare it never see it.
"""

from __future__ import annotations

import hashlib
import os
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from compiler.build import compile_service
from tests.inproc import InProcNode, run_node
from tests.packages import function_package

BIG = 50 * 1024 * 1024

CODE = """
import hashlib
import os
import time


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def blob(hold=0.0):
    files = {}
    for name in sorted(os.listdir(folders[0])):
        path = os.path.join(folders[0], name)
        st = os.stat(path)
        files[name] = {"size": st.st_size, "sha256": _sha256(path), "inode": st.st_ino, "mtime": st.st_mtime_ns}
    time.sleep(hold)  # busy: a concurrent call goes to the other worker
    return {"pid": os.getpid(), "folders": folders, "files": files}


def light():
    return {"pid": os.getpid(), "folders": folders}
"""

SERVICE = """
service: heavy
version: v1
endpoints:
  blob:
    type: function
    file: code/funcs.py
    function: blob
    folders: [big]
    pool: {floor: 2, cruise: 2, ceil: 2}
  light:
    type: function
    file: code/funcs.py
    function: light
    pool: {floor: 1, cruise: 1, ceil: 1}
    test_queries: [{}]
"""


def _heavy_package(tmp: Path) -> tuple[Path, str]:
    folder = tmp / "heavy"
    (folder / "code").mkdir(parents=True)
    (folder / "big").mkdir()
    (folder / "code" / "funcs.py").write_text(textwrap.dedent(CODE))
    (folder / "service.yaml").write_text(SERVICE)
    data = os.urandom(BIG)  # incompressible: the package is as big as the folder
    (folder / "big" / "blob.bin").write_bytes(data)
    (folder / "big" / "note.txt").write_text("hello")
    pkg = compile_service(folder, tmp / "heavy.apz", progress=False).out
    assert pkg.stat().st_size > BIG
    return pkg, hashlib.sha256(data).hexdigest()


def _push(node: InProcNode, pkg: Path) -> dict[str, Any]:
    r = requests.post(
        f"{node.http}/admin/api/services/heavy/generations/actions/importFromArchive",
        params={"filePath": str(pkg)},
        headers=node.admin_headers(),
        timeout=120,
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _answered_while_unpacking(node: InProcNode, pkg: Path) -> tuple[dict[str, Any], int, list[int]]:
    """Pushes `pkg` in a thread and, while the node's extraction directory exists, calls
    another service: a call sent after the extraction began and answered before it ended
    proves the front process kept serving meanwhile."""
    pushed: dict[str, Any] = {}
    failure: list[BaseException] = []

    def push() -> None:
        try:
            pushed.update(_push(node, pkg))
        except BaseException as exc:  # re-raised in the test's thread
            failure.append(exc)

    heavy_dir = node.data_dir / "generations" / "heavy"
    url = node.url("svc", "echo", "run")
    proofs, statuses = 0, list[int]()
    thread = threading.Thread(target=push)
    with requests.Session() as session:
        thread.start()
        while thread.is_alive():
            if not (heavy_dir.is_dir() and any(heavy_dir.glob(".extract-*"))):
                time.sleep(0.002)
                continue
            statuses.append(session.post(url, json={"n": len(statuses)}, timeout=30).status_code)
            if any(heavy_dir.glob(".extract-*")):
                proofs += 1
        thread.join()
    if failure:
        raise failure[0]
    return pushed, proofs, statuses


def test_a_50mb_folder_is_unpacked_once_off_the_loop_and_seen_only_by_its_endpoint(tmp_path: Path) -> None:
    pkg, digest = _heavy_package(tmp_path)
    other = function_package(tmp_path, {"echo": {"function": "echo"}})
    with run_node(tmp_path / "data", other) as node:
        pushed, proofs, statuses = _answered_while_unpacking(node, pkg)
        assert pushed["new"] is True and pushed["tests"] and all(t["ok"] for t in pushed["tests"])
        # another service kept answering while the 50 MB were being unpacked
        assert statuses and set(statuses) == {200}
        assert proofs >= 1, f"no call was answered during the extraction ({len(statuses)} calls sent)"

        r = requests.post(
            f"{node.http}/admin/api/services/heavy/actions/switchTo/v1", headers=node.admin_headers(), timeout=60
        )
        assert r.status_code == 200, r.text

        # unpacked once, in the data dir: one copy of the file for the generation
        copies = list((node.data_dir / "generations").rglob("blob.bin"))
        assert len(copies) == 1, copies
        unpacked = copies[0].parent
        assert unpacked.parent.name == "folders" and unpacked.parent.parent.parent.name == "heavy"
        assert not list(node.data_dir.rglob(".extract-*"))

        # both workers of the endpoint read that one copy in place, with the right content
        with ThreadPoolExecutor(2) as ex:
            calls = [
                ex.submit(requests.post, node.url("heavy", "blob", "run"), json={"hold": 1.0}, timeout=60)
                for _ in range(2)
            ]
            answers = [c.result().json()["response"] for c in calls]
        pids = {a["pid"] for a in answers}
        assert pids == set(node.pool("heavy", "blob")["workers"]["pids"]) and len(pids) == 2
        on_disk = copies[0].stat()
        for a in answers:
            assert a["folders"] == [str(unpacked)]
            assert a["files"]["blob.bin"]["size"] == BIG
            assert a["files"]["blob.bin"]["sha256"] == digest
            assert a["files"]["blob.bin"]["inode"] == on_disk.st_ino
            assert a["files"]["note.txt"]["size"] == 5

        # the endpoint without folders has none and is its own process
        light = requests.post(node.url("heavy", "light", "run"), json={}, timeout=30).json()["response"]
        assert light["folders"] == [] and light["pid"] not in pids

        # pushing the same package again unpacks nothing: the same file, untouched
        again = _push(node, pkg)
        assert again["new"] is False
        after = copies[0].stat()
        assert (after.st_ino, after.st_mtime_ns) == (on_disk.st_ino, on_disk.st_mtime_ns)
        assert len(list((node.data_dir / "generations").rglob("blob.bin"))) == 1
