"""`apinode dev DIR`: first deploy, hot swap on save, broken edits keep the last good
generation serving, Ctrl-C stops the node."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from tests.deployer.conftest import deploy_json

REPO = Path(__file__).resolve().parents[2]
BUILD = f"{sys.executable} -m tests.deployer.devbuild {{src}} {{out}}"


def _ctrl_c() -> None:
    """As in a terminal, Ctrl-C reaches `apinode dev`. A shell starts a background job with
    SIGINT ignored, and a process that starts so keeps ignoring it (Python included): a test
    suite run in the background would otherwise send its SIGINT into the void."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _write_funcs(folder: Path, answer: str) -> None:
    (folder / "funcs.py").write_text(f"def version(**kwargs):\n    return {{'version': {answer!r}}}\n")


def _wait(predicate: Callable[[], Any], what: str, log: Path, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; dev output:\n{log.read_text()[-4000:]}")


def test_dev_loop(tmp_path: Path) -> None:
    folder = tmp_path / "svc"
    folder.mkdir()
    (folder / "service.json").write_text(json.dumps({"service": "live", "version": "v1"}))
    (folder / "tests.json").write_text(json.dumps([{"probe": 1}]))
    _write_funcs(folder, "one")
    ports_file = tmp_path / "ports.json"
    log = tmp_path / "dev.log"
    cmd = [sys.executable, "-m", "deployer", "dev", str(folder), "--http-port", "0", "--grpc-port", "0"]
    cmd += ["--ports-file", str(ports_file), "--build-cmd", BUILD, "--interval", "0.2"]
    cmd += ["--data-dir", str(tmp_path / "data")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("APINODE_")}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env, preexec_fn=_ctrl_c)
    try:
        ports = _wait(lambda: ports_file.exists() and json.loads(ports_file.read_text()), "the node", log)
        url = f"http://127.0.0.1:{ports['http']}/public/api/v1/live/ver/run"

        def answer() -> tuple[str, str] | None:
            try:
                r = requests.post(url, json={}, timeout=10)
            except requests.RequestException:
                return None
            if r.status_code != 200:
                return None
            body = r.json()
            return body["apiContext"]["serviceGeneration"], body["response"]["version"]

        _wait(lambda: answer() == ("v1-dev1", "one"), "the first deploy", log)
        _wait(lambda: "serving live v1-dev1" in log.read_text(), "the deploy message", log)
        _wait(lambda: "test queries of v1-dev1" in log.read_text(), "the test results", log)

        _write_funcs(folder, "two")
        _wait(lambda: answer() == ("v1-dev2", "two"), "the hot swap", log)

        (folder / "funcs.py").write_text("def version(**kwargs):\n    return {'version': \n")
        _wait(lambda: "build failed" in log.read_text(), "the build error", log)
        assert "funcs.py:2" in log.read_text()
        assert answer() == ("v1-dev2", "two")

        (folder / "funcs.py").write_text("def version(**kwargs):\n    raise RuntimeError('oops')\n")
        _wait(lambda: "oops" in log.read_text(), "the failed test query", log)
        _wait(lambda: "still serving v1-dev2" in log.read_text(), "the keep-serving message", log)
        assert answer() == ("v1-dev2", "two")

        (folder / "__pycache__").mkdir()
        (folder / "__pycache__" / "junk.pyc").write_bytes(b"x")  # ignored: no rebuild
        _write_funcs(folder, "three")
        generation, _ = _wait(lambda: (a := answer()) and a[1] == "three" and a, "the fix", log)
        assert generation.startswith("v1-dev") and generation not in ("v1-dev1", "v1-dev2")
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "node stopped" in text
    assert "deployer/" not in text  # no traceback of ours (the worker's, of user code, is fine)
    node_pid = ports["pid"]
    _wait(lambda: not _alive(node_pid), "the node to exit", log, timeout=10)


EXAMPLE = REPO / "examples" / "fraud"


def test_dev_loop_with_the_compiler(tmp_path: Path) -> None:
    """The real compiler (`python -m compiler compile`) on the fraud example, then a hot swap."""
    folder = tmp_path / "fraud"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__", "model.joblib", "data"))
    subprocess.run([sys.executable, str(folder / "train.py")], check=True, capture_output=True)  # trains the copy
    ports_file, log = tmp_path / "ports.json", tmp_path / "dev.log"
    cmd = [sys.executable, "-m", "deployer", "dev", str(folder), "--http-port", "0", "--grpc-port", "0"]
    cmd += ["--ports-file", str(ports_file), "--interval", "0.2", "--data-dir", str(tmp_path / "data")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("APINODE_")}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=env, preexec_fn=_ctrl_c)
    try:
        ports = _wait(lambda: ports_file.exists() and json.loads(ports_file.read_text()), "the node", log)
        grpc_target = f"127.0.0.1:{ports['grpc']}"

        def serving() -> list[str]:  # the CLI on the same machine, with the key the node generated
            services = deploy_json("list", "--node", grpc_target, "--data-dir", tmp_path / "data")["services"]
            return [e["generation"] for s in services for e in s["mapping"]["entries"]]

        _wait(lambda: "serving fraud v1-dev1" in log.read_text(), "the first deploy", log, timeout=120)
        assert serving() == ["v1-dev1"]
        base = f"POST http://127.0.0.1:{ports['http']}/public/api/v1/fraud"
        text = log.read_text()  # each endpoint's URL with the verb of its kind
        for url in ("score/predict", "customer/lookup", "explain/run"):
            assert f"{base}/{url}" in text, text
        with open(folder / "code" / "rules.py", "a") as f:
            f.write("\n# an edit\n")
        _wait(lambda: "serving fraud v1-dev2" in log.read_text(), "the hot swap", log, timeout=120)
        assert serving() == ["v1-dev2"]
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    assert code == 0, log.read_text()[-3000:]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
