"""The Dataiku JSON codec: typed results encode to the Dataiku API node's bytes (keys in its
order), and bodies decode to typed requests, with the structural errors the API had."""

from __future__ import annotations

import orjson
import pytest

from node import errors, ops
from node.http import codec

CTX = ops.ApiContext("fraud", "score", "v1")


def _bytes(result: ops.Result) -> bytes:
    return orjson.dumps(codec.encode(result))


def test_predictions_encode_in_the_dataiku_order() -> None:
    timing = ops.Timing(pre_processing=1.5, wait=2.0, prediction=3.0, post_processing=0.5, total=7.0, enrich=0.25)
    p = ops.Prediction(
        "FRAUD",
        {"FRAUD": 0.75, "OK": 0.25},
        proba_percentile=91,
        explanations={"amount": 0.5},
        explanation_method="SHAPLEY",
        enriched_features={"amount": 1.0, "age": 3},
    )
    assert _bytes(ops.PredictResult(p, timing, CTX)) == (
        b'{"result":{"prediction":"FRAUD","probas":{"FRAUD":0.75,"OK":0.25},"ignored":false,"probaPercentile":91,'
        b'"explanations":{"amount":0.5},"explanationMethod":"SHAPLEY","enrichedFeatures":{"amount":1.0,"age":3}},'
        b'"timing":{"preProcessing":1.5,"wait":2.0,"prediction":3.0,"postProcessing":0.5,"total":7.0,"enrich":0.25},'
        b'"apiContext":{"serviceId":"fraud","endpointId":"score","serviceGeneration":"v1"}}'
    )
    ignored = ops.Prediction.ignored_for("NO_LOOKUP_MATCH")
    regression = ops.Prediction(2.5)
    multi = ops.PredictMultiResult([regression, ignored], ops.Timing(total=1.0), CTX)
    assert _bytes(multi).startswith(
        b'{"results":[{"prediction":2.5,"ignored":false},{"ignored":true,"ignoreReason":"NO_LOOKUP_MATCH"}],'
        b'"timing":{"total":1.0},"apiContext":'
    )


def test_run_lookup_and_query_encode() -> None:
    run = ops.RunResult(b'{"sum":3}', ops.Timing(wait=4, execution=5), CTX)
    assert _bytes(run).startswith(b'{"response":{"sum":3},"timing":{"wait":4,"execution":5},"apiContext":')
    rows = [ops.LookupRow({"age": 34}), ops.LookupRow({"age": 45}, matches=2), ops.LookupRow({"age": None}, True, "X")]
    assert _bytes(ops.LookupResult(rows, ops.Timing(lookup=1.0), CTX)).startswith(
        b'{"results":[{"data":{"age":34}},{"data":{"age":45},"matches":2},'
        b'{"data":{"age":null},"ignored":true,"ignoreReason":"X"}],"timing":{"lookup":1.0}'
    )
    table = ops.QueryResult(ops.Timing(wait=1, execution=2), CTX, columns=["a"], rows=[[1]])
    assert _bytes(table).startswith(b'{"columns":["a"],"rows":[[1]],"timing":')
    updated = ops.QueryResult(ops.Timing(wait=1, execution=2), CTX, updated_rows=3)
    assert _bytes(updated).startswith(b'{"updatedRows":3,"timing":')


def test_bodies_decode_to_typed_requests() -> None:
    body = {
        "items": [{"features": {"a": 1}, "context": {"u": 1}}, {}],
        "dispatch": {"dispatchKey": "k"},
        "returnEnriched": True,
    }
    req = codec.VERBS["predict-multi"].decode("s", "e", body, None)
    assert req == ops.PredictMultiRequest(
        "s", "e", [ops.PredictItem({"a": 1}, {"u": 1}), ops.PredictItem()], ops.Dispatch(None, "k"), True
    )
    assert codec.VERBS["predict"].decode("s", "e", {}, None).features is ops.MISSING
    asked = {"features": {}, "explanations": {"enabled": True, "nMonteCarloSteps": 9}}
    assert codec.VERBS["predict"].decode("s", "e", asked, None).explanations == ops.Explanations(
        enabled=True, n_monte_carlo_steps=9
    )
    headers = {"X-Dispatch-Key": "k", "X-Dispatch-Forced-Generation": ""}
    assert codec.VERBS["run"].decode("s", "e", {"a": 1}, headers) == ops.RunRequest(
        "s", "e", {"a": 1}, ops.Dispatch(None, "k")
    )
    assert codec.VERBS["lookup-multi"].decode("s", "e", {"items": [{"data": {"k": 1}}]}, None).items == [{"k": 1}]


@pytest.mark.parametrize(
    ("verb", "body", "message"),
    [
        ("predict-multi", {}, "the body needs 'items': a list of {\"features\": {...}}"),
        ("predict-multi", {"items": [1]}, "items[0] must be an object with 'features'"),
        ("lookup-multi", {"items": {}}, "the body needs 'items': a list of {\"data\": {...}}"),
        ("predict", {"dispatch": 3}, "'dispatch' must be an object"),
        ("predict-multi", {"items": [], "explanations": [1]}, "explanations must be an object, got list"),
    ],
)
def test_malformed_bodies(verb: str, body: dict[str, object], message: str) -> None:
    with pytest.raises(errors.BadRequest) as err:
        codec.VERBS[verb].decode("s", "e", body, None)
    assert err.value.message == message


def test_verbs_apinode_lacks() -> None:
    assert isinstance(codec.refuse_verb("forecast"), errors.NotSupported)
    unknown = codec.refuse_verb("explode")
    assert isinstance(unknown, errors.NotFound) and unknown.message.startswith(
        "unknown verb 'explode' (known: predict,"
    )
