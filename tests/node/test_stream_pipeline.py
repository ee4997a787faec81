"""PredictStream is pipelined: a stream's messages are in flight together, batch with each
other, come back in order with their request_id, and a bad one gets its own error."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np

from node._proto.apinode.v1 import apinode_pb2 as pb
from node._proto.apinode.v1 import apinode_pb2_grpc as pbg
from tests.nodeproc import run_node
from tests.packages import logistic_package

N = 400


def _values(row: np.ndarray) -> dict[str, pb.Value]:
    return {
        "amount": pb.Value(number=row[0]),
        "hour": pb.Value(integer=int(row[1])),
        "distance": pb.Value(number=row[2]),
    }


def test_one_streams_messages_batch_together_in_order(tmp_path: Path) -> None:
    pkg, model = logistic_package(tmp_path, pool={"floor": 1, "cruise": 1, "ceil": 1})
    rng = np.random.default_rng(3)
    x = rng.normal(size=(N, 3))
    x[:, 1] = np.round(x[:, 1] * 3)
    bad = {7, 250}
    with run_node(tmp_path / "data", pkg) as node:
        before = node.pool("fraud", "score")

        def messages() -> Iterator[pb.PredictRequest]:
            for i, row in enumerate(x):
                f = _values(row) if i not in bad else {"amount": pb.Value(text="not a number")}
                yield pb.PredictRequest(service="fraud", endpoint="score", features=f, request_id=f"m{i}")

        with grpc.insecure_channel(node.grpc) as ch:
            answers = list(pbg.ApiNodeStub(ch).PredictStream(messages(), timeout=120))
        after = node.pool("fraud", "score")

    assert [a.request_id for a in answers] == [f"m{i}" for i in range(N)]
    for i in bad:
        assert answers[i].error.code == "INVALID_ARGUMENT" and "amount" in answers[i].error.message
    expected = model.predict(x).tolist()
    assert [a.result.prediction.text for i, a in enumerate(answers) if i not in bad] == [
        e for i, e in enumerate(expected) if i not in bad
    ]
    served = after["served"] - before["served"]
    assert served == N - len(bad)
    # Model runs: multi-request batches, plus requests that ran alone.
    batches = after["batches"] - before["batches"]
    runs = batches + served - (after["batched_rows"] - before["batched_rows"])
    assert runs * 2 < served, (runs, served)  # one at a time, it would be one run per message


def test_a_full_window_holds_the_client_and_resumes(tmp_path: Path) -> None:
    """A stopped worker: the stream's window fills (at most 64 queued), the rest wait in the
    client (flow control), nothing is refused; all are answered once the worker goes on."""
    import os
    import signal

    pkg, _ = logistic_package(tmp_path, pool={"floor": 1, "cruise": 1, "ceil": 1})
    row = np.array([1.5, 3.0, 0.2])
    with run_node(tmp_path / "data", pkg, args=["--ping-timeout", "300"]) as node:
        (worker,) = node.pool("fraud", "score")["workers"]["pids"]
        os.kill(worker, signal.SIGSTOP)
        answers: list[pb.PredictResponse] = []
        sent = 0

        def messages() -> Iterator[pb.PredictRequest]:
            nonlocal sent
            for i in range(300):
                sent += 1
                yield pb.PredictRequest(service="fraud", endpoint="score", features=_values(row), request_id=str(i))

        def run() -> None:
            with grpc.insecure_channel(node.grpc) as ch:
                answers.extend(pbg.ApiNodeStub(ch).PredictStream(messages(), timeout=120))

        t = threading.Thread(target=run, daemon=True)
        try:
            t.start()
            node.wait_for(lambda: node.pool("fraud", "score")["queueDepth"] >= 60, what="the window to fill")
            depth = node.pool("fraud", "score")["queueDepth"]
            assert depth <= 64, depth  # the window bounds what one stream puts in flight
        finally:
            os.kill(worker, signal.SIGCONT)
        t.join(120)
        assert [a.request_id for a in answers] == [str(i) for i in range(300)]
        assert all(not a.HasField("error") for a in answers)
        assert node.pool("fraud", "score")["rejected"] == 0
