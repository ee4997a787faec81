"""The command line, end to end: `python -m loadtest` in a subprocess against a real server."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from loadtest.cli import register
from tests.loadtest.servers import Behaviour, grpc_server, http_server
from tests.loadtest.test_payloads import make_package

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtest",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_single_run_writes_json_and_png(tmp_path: Path) -> None:
    apz = make_package(tmp_path / "fraud.apz")
    b = Behaviour(delay=0.002)
    async with http_server(b) as url:
        code, out, err = await _cli(
            "--url",
            url,
            "--payload",
            str(apz),
            "-c",
            "2",
            "-n",
            "60",
            "--json",
            str(tmp_path / "r.json"),
            "--plot",
            str(tmp_path / "r.png"),
            "--quiet",
        )
    assert code == 0, err
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["sent"] == data["ok"] == 60 == b.seen
    assert data["latency_ms"]["p50"] >= 2.0
    assert (tmp_path / "r.png").read_bytes().startswith(PNG)
    # The package named the service and endpoint, and gave the bodies.
    assert b.bodies[0] == {"features": {"amount": 1.5}}
    assert "p99 ms" in out and "/public/api/v1/fraud/score/predict" in out


async def test_sweep_with_objective_json_to_stdout_and_plot(tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("amount,country\n10,FR\n20,DE\n")
    async with grpc_server(Behaviour(delay=0.010)) as address:
        code, out, err = await _cli(
            "loadtest",
            "--grpc",
            address,
            "--service",
            "fraud",
            "--endpoint",
            "score",
            "--payload",
            str(rows),
            "--sweep",
            "1,4",
            "--slo-p99",
            "5ms",
            "-d",
            "0.3s",
            "--json",
            "-",
            "--plot",
            str(tmp_path / "s.png"),
        )
    assert code == 3, err  # no step met the objective
    data = json.loads(out)
    assert data["knob"] == "concurrency" and data["stopped_early"] is True
    assert len(data["steps"]) == 1 and data["steps"][0]["passed"] is False
    assert data["slo"]["p99_ms"] == 5.0
    assert "no step met the objective" in err  # the table went to stderr
    assert (tmp_path / "s.png").read_bytes().startswith(PNG)


async def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    code, _, err = await _cli("--url", "http://127.0.0.1:1", "-n", "1")
    assert code == 2 and "--service" in err
    code, _, err = await _cli("--path", "/x", "--payload", str(tmp_path / "none.jsonl"))
    assert code == 2 and "cannot read payload" in err


def test_register_adds_the_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="apinode")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(
        [
            "loadtest",
            "--url",
            "http://h:1",
            "--path",
            "/p",
            "--rate",
            "50",
            "--poisson",
            "--sweep",
            "10,20",
            "--slo-p99",
            "5",
            "--max-errors",
            "1%",
            "-d",
            "2s",
            "--cpus",
            "0-1",
        ]
    )
    assert callable(args.func)
    from loadtest.cli import config_from_args

    config = config_from_args(args)
    assert config.open_loop and config.poisson and config.rate == 50.0
    assert config.duration == 2.0 and config.cpus == (0, 1)
    assert args.slo_p99 == 0.005 and args.max_errors == 0.01


async def test_nothing_served_exits_1() -> None:
    async with http_server(Behaviour()) as url:
        pass  # closed again
    code, out, _ = await _cli("--url", url, "--path", "/echo", "-n", "3", "-q")
    assert code == 1
    assert "conn ConnectionRefusedError: 3" in out


async def test_each_endpoint_kind_gets_its_verb_over_http_and_grpc(tmp_path: Path) -> None:
    """`--endpoint customer` (a lookup) of a package sends lookups, `--endpoint echo` runs:
    every request answered 200 / OK by a real node, over HTTP and gRPC."""
    from tests.deployer.kinds import kinds_package
    from tests.nodeproc import run_node

    apz = kinds_package(tmp_path)
    with run_node(tmp_path / "data", apz) as node:
        for endpoint in ("customer", "echo"):
            for target in (["--url", node.http], ["--grpc", node.grpc]):
                code, out, err = await _cli(
                    *target, "--payload", str(apz), "--endpoint", endpoint, "-n", "20", "--json", "-", "--quiet"
                )
                assert code == 0, err
                data = json.loads(out)
                assert data["sent"] == data["ok"] == 20, (endpoint, target, data)
        code, _, err = await _cli(
            "--grpc", node.grpc, "--mode", "grpc-stream", "--payload", str(apz), "--endpoint", "customer", "-n", "1"
        )
        assert code == 2 and "grpc-stream mode only streams predictions" in err and "lookup" in err
