"""The repository's state file (node/repostate.py): what it refuses, and what it keeps."""

from __future__ import annotations

import orjson
import pytest

from node.repostate import RepoGeneration, RepoService, RepoState, StateError, loads

SHA = "a" * 64


def _doc(**service: object) -> bytes:
    svc = {"generations": {"v1": {"file": "packages/svc/v1-aaaaaaaaaaaa.apz", "sha256": SHA}}, **service}
    return orjson.dumps({"format": 1, "serial": 3, "services": {"svc": svc}})


def test_a_state_round_trips() -> None:
    state = RepoState(services={"svc": RepoService({"v1": RepoGeneration("packages/svc/v1.apz", SHA)})})
    state.services["svc"].set_mapping({"entries": [{"generation": "v1", "proba": 1}]})
    state.services["svc"].tuning = {"ver": {"ceil": 3}}
    state.bump()
    again = loads(state.dumps())
    assert again.serial == 1 and again.updated_at == state.updated_at
    assert again.services["svc"].mapping == {"mode": "random", "entries": [{"generation": "v1", "proba": 1.0}]}
    assert again.services["svc"].tuning == {"ver": {"ceil": 3}}
    assert again.services["svc"].api_keys is None


def test_api_keys_round_trip() -> None:
    state = loads(_doc(api_keys=[{"id": "team.a", "sha256": SHA, "label": "A"}]))
    keys = [{"id": "team.a", "sha256": SHA, "label": "A", "description": "", "createdBy": "", "createdOn": ""}]
    assert state.services["svc"].api_keys == keys
    assert loads(state.dumps()).services["svc"].api_keys == keys


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "not JSON"),
        (b"[]", "must be a JSON object"),
        (orjson.dumps({"format": 2}), "unknown state format 2"),
        (orjson.dumps({"format": 1, "serial": -1}), "serial must be a non-negative integer"),
        (orjson.dumps({"format": 1, "services": {"bad id": {}}}), "bad service id"),
        (_doc(generations={"v1": {"file": "../../etc/passwd", "sha256": SHA}}), "relative path inside"),
        (_doc(generations={"v1": {"file": "/etc/passwd", "sha256": SHA}}), "relative path inside"),
        (_doc(generations={"v1": {"file": "p/v1.apz", "sha256": "abc"}}), "64 lowercase hex"),
        (_doc(mapping={"entries": [{"generation": "v9", "proba": 1}]}), "does not store"),
        (_doc(mapping={"entries": [{"generation": "v1", "proba": 0.5}]}), "sum to 1"),
        (_doc(mapping={"mode": "sticky", "entries": [{"generation": "v1", "proba": 1}]}), "'random' or 'hash'"),
        (_doc(enabled="yes"), "enabled must be true or false"),
        (_doc(tuning={"ver": {"ceil": "3"}}), "tuning must map endpoints"),
        (_doc(tuning={"../ver": {"ceil": 3}}), "not an endpoint id"),
        (_doc(tuning={"ver": {"cieling": 3}}), "unknown pool setting 'cieling'"),
        (_doc(tuning={"ver": {"floor": 4, "ceil": 2}}), "tuning of ver"),
        (_doc(api_keys=[]), "api_keys must be null or a non-empty list"),
        (_doc(api_keys=[{"id": "a\nb", "sha256": SHA}]), "a key id is"),
        (_doc(api_keys=[{"id": "a", "sha256": "ABC"}]), "key a: sha256 must be 64"),
        (_doc(api_keys=[{"id": "a", "sha256": SHA, "key": "clear"}]), "digests only"),
        (_doc(api_keys=[{"id": "a", "sha256": SHA}, {"id": "a", "sha256": SHA}]), "appears twice"),
        (_doc(api_keys=[{"id": "a", "sha256": SHA, "label": 3}]), "must be strings"),
    ],
)
def test_a_bad_state_is_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(StateError, match=message):
        loads(data)


def test_history_keeps_the_last_twenty_mappings() -> None:
    svc = RepoService({f"v{i}": RepoGeneration(f"p/v{i}.apz", SHA) for i in range(30)})
    for i in range(30):
        svc.set_mapping({"entries": [{"generation": f"v{i}", "proba": 1.0}]})
    assert len(svc.history) == 20 and svc.history[-1]["entries"][0]["generation"] == "v28"
