"""Predictions on a resolved endpoint: features -> enrichment -> the codec's rows -> the
pool (one batch per call) -> typed results. :class:`~node.dataplane.DataPlane` wraps each in
its instrumentation; the deploy's test queries run them directly.

The rows of a call travel together and batch with everything else queued for the endpoint;
a row that enrichment ignores is answered without reaching the model.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from node import errors, ops
from node import explanations as expl
from node.registry import Endpoint, Generation

_NO_EXPLANATIONS = ops.Explanations(enabled=False)  # for rows as columns: OIP outputs have no place for them


def api_context(gen: Generation, ep: Endpoint) -> ops.ApiContext:
    return ops.ApiContext(gen.service, ep.spec.id, gen.version)


async def predict(gen: Generation, ep: Endpoint, req: ops.PredictRequest, *, max_string: int) -> ops.PredictResult:
    t0 = time.perf_counter_ns()
    codec = _codec(gen, ep)
    task = expl.job(ep.spec, req.explanations)
    if req.features is ops.MISSING:
        raise errors.BadRequest("the body needs 'features': an object of feature name -> value")
    features, ignored, enrich_us = await _enrich(ep, req.features)
    if ignored is None:
        row = codec.row(features, max_string=max_string)
        t1 = time.perf_counter_ns()
        assert ep.pool is not None
        out = await ep.pool.submit([expl.wrap(row, task)], 1)
        t2 = time.perf_counter_ns()
        prediction = codec.results(out.result)[0]
        wait, compute = out.wait_us, out.compute_us
    else:
        t1 = t2 = time.perf_counter_ns()
        prediction, wait, compute = ops.Prediction.ignored_for(ignored), 0, 0
    if ep.enricher is not None and req.return_enriched:
        prediction.enriched_features = features
    timing = _timing(t0, t1, t2, time.perf_counter_ns(), wait, compute)
    if ep.enricher is not None:
        timing.enrich = enrich_us
    return ops.PredictResult(prediction, timing, api_context(gen, ep), features if ep.enricher is not None else None)


async def predict_multi(
    gen: Generation, ep: Endpoint, req: ops.PredictMultiRequest, *, max_string: int, max_items: int
) -> ops.PredictMultiResult:
    t0 = time.perf_counter_ns()
    codec = _codec(gen, ep)
    task = expl.job(ep.spec, req.explanations)
    items = req.items
    check_items(len(items), max_items)
    expl.check_cost(ep.spec, task, len(items))
    rows = []
    enricher = ep.enricher
    ignored: dict[int, str] = {}
    enriched: list[Any] = []
    enrich_us = 0.0
    if enricher is not None:
        t = time.perf_counter_ns()
        enrichments = (_enrich(ep, _given(it.features), f"items[{i}]: ") for i, it in enumerate(items))
        if enricher.local:  # index lookups: nothing to wait for, so no task per row
            done = [await e for e in enrichments]
        else:  # concurrently: a table lookup waits for its database
            done = await asyncio.gather(*enrichments)
        enrich_us = (time.perf_counter_ns() - t) / 1000
    for i, item in enumerate(items):
        features = _given(item.features)
        if enricher is not None:
            features, reason, _ = done[i]
            enriched.append(features)
            if reason is not None:
                ignored[i] = reason
                continue
        rows.append(expl.wrap(codec.row(features, where=f"items[{i}]: ", max_string=max_string), task))
    t1 = time.perf_counter_ns()
    predictions, wait, compute = await _submit(ep, codec, rows)
    t2 = time.perf_counter_ns()
    if ignored:
        predicted = iter(predictions)
        predictions = [
            ops.Prediction.ignored_for(ignored[i]) if i in ignored else next(predicted) for i in range(len(items))
        ]
    if enricher is not None and req.return_enriched:
        for prediction, features in zip(predictions, enriched, strict=True):
            prediction.enriched_features = features
    timing = _timing(t0, t1, t2, time.perf_counter_ns(), wait, compute)
    if enricher is not None:
        timing.enrich = enrich_us
    return ops.PredictMultiResult(predictions, timing, api_context(gen, ep), enriched if enricher is not None else None)


async def predict_rows(
    gen: Generation, ep: Endpoint, req: ops.PredictRowsRequest, *, max_string: int, max_items: int
) -> ops.PredictMultiResult:
    """Rows as columns go to the codec whole: no feature mapping per row. An endpoint
    that enriches gets items instead (enrichment completes one mapping per row)."""
    if req.rows is None:
        multi = ops.PredictMultiRequest(req.service, req.endpoint, req.items or [], explanations=_NO_EXPLANATIONS)
        return await predict_multi(gen, ep, multi, max_string=max_string, max_items=max_items)
    t0 = time.perf_counter_ns()
    codec = _codec(gen, ep)
    check_items(req.rows.n, max_items)
    rows = codec.rows_of_columns(req.rows.columns, req.rows.n, max_string=max_string)
    t1 = time.perf_counter_ns()
    predictions, wait, compute = await _submit(ep, codec, rows)
    t2 = time.perf_counter_ns()
    return ops.PredictMultiResult(
        predictions, _timing(t0, t1, t2, time.perf_counter_ns(), wait, compute), api_context(gen, ep)
    )


async def _submit(ep: Endpoint, codec: Any, rows: list[Any]) -> tuple[list[ops.Prediction], int, int]:
    if not rows:
        return [], 0, 0
    assert ep.pool is not None
    out = await ep.pool.submit(rows, len(rows))
    return codec.results(out.result), out.wait_us, out.compute_us


def check_items(n: int, limit: int) -> None:
    """Refuses more items than `--max-items` in one call."""
    if n > limit:
        raise errors.PayloadTooLarge(f"{n} items in one call; the limit is {limit} (--max-items)")


def _given(x: Any) -> Any:
    """A field the caller left out is null to the checks (which name what they expected)."""
    return None if x is ops.MISSING else x


def _codec(gen: Generation, ep: Endpoint) -> Any:
    if ep.codec is None:
        raise errors.BadRequest(f"endpoint {gen.service}/{ep.spec.id} is a {ep.spec.type} endpoint, not a prediction")
    return ep.codec


async def _enrich(ep: Endpoint, features: Any, where: str = "") -> tuple[Any, str | None, float]:
    """The features completed by the endpoint's enrichment, the reason to ignore the row,
    and the time it took (µs)."""
    if ep.enricher is None:
        return features, None, 0.0
    t0 = time.perf_counter_ns()
    out, reason = await ep.enricher.apply(features, where)
    return out, reason, (time.perf_counter_ns() - t0) / 1000


def _timing(t0: int, t1: int, t2: int, t3: int, wait_us: int, compute_us: int) -> ops.Timing:
    return ops.Timing(
        pre_processing=(t1 - t0) / 1000,
        wait=float(wait_us),
        prediction=float(compute_us),
        post_processing=(t3 - t2) / 1000,
        total=(t3 - t0) / 1000,
    )
