"""Batching across the process boundary: coalesced requests each get their own answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import numpy as np

from tests.inproc import run_node
from tests.packages import logistic_package


async def test_concurrent_predictions_are_batched_and_each_caller_gets_its_own(tmp_path: Path) -> None:
    pkg, model = logistic_package(tmp_path)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 3))
    x[:, 1] = np.round(x[:, 1] * 3)
    expected = model.predict_proba(x)[:, 0]
    with run_node(tmp_path / "data", pkg) as node:
        url = node.url("fraud", "score", "predict")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

            async def one(i: int) -> float:
                body = {"features": {"amount": x[i, 0], "hour": int(x[i, 1]), "distance": x[i, 2]}}
                async with session.post(url, json=body) as r:
                    assert r.status == 200, await r.text()
                    return float((await r.json())["result"]["probas"]["FRAUD"])

            got = await asyncio.gather(*(one(i) for i in range(len(x))))
            # predict-multi items travel with single predictions in the same batches
            multi_body = {"items": [{"features": {"amount": a, "hour": int(h), "distance": d}} for a, h, d in x[:50]]}
            async with session.post(node.url("fraud", "score", "predict-multi"), json=multi_body) as r:
                multi = [m["probas"]["FRAUD"] for m in (await r.json())["results"]]
        assert np.abs(np.array(got) - expected).max() < 1e-9
        assert np.abs(np.array(multi) - expected[:50]).max() < 1e-9
        pool = node.pool("fraud", "score")
        assert pool["batches"] > 0 and pool["batched_rows"] > pool["batches"], pool
        assert pool["served"] == len(x) + 1 + 1  # + the multi call + the package's test query at load
