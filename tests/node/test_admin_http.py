"""The Dataiku-style admin HTTP API, driven by `dataikuapi.APINodeAdminClient`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import dataikuapi
import pytest
import requests

from tests.inproc import run_node
from tests.packages import function_package

CODE = "def who(**kwargs):\n    return '{v}'\n"


def test_admin_client_lists_switches_and_maps(tmp_path: Path) -> None:
    pkgs = [
        function_package(tmp_path, {"who": {"function": "who"}}, version=v, code=CODE.format(v=v)) for v in ("v1", "v2")
    ]
    with run_node(tmp_path / "data", *pkgs, args=["--admin-key", "root-key"]) as node:
        admin = dataikuapi.APINodeAdminClient(node.http, "root-key")
        services = admin.list_services()
        assert [s["id"] for s in services] == ["svc"]
        svc = admin.service("svc")
        assert svc.list_generations() == ["v1", "v2"]
        url = node.url("svc", "who", "run")

        def who() -> str:
            return str(requests.post(url).json()["response"])

        assert who() == "v2"  # the last package given is active
        svc.switch_to_single_generation("v1")
        assert who() == "v1"
        svc.preload_generation("v2")  # stored: nothing more to do (it loads, tested, when activated)
        with pytest.raises(dataikuapi.utils.DataikuException, match="no generation 'v9'"):
            svc.preload_generation("v9")
        svc.switch_to_newest()
        assert who() == "v2"
        svc.switch_to_single_generation("v1")
        assert who() == "v1"
        admin.create_service("empty")
        assert [s["id"] for s in admin.list_services()] == ["empty", "svc"]
        with pytest.raises(dataikuapi.utils.DataikuException, match="has no generation"):
            admin.service("empty").switch_to_newest()
        admin.service("empty").delete()
        svc.set_generations_mapping(
            {"entries": [{"generation": "v1", "proba": 0.5}, {"generation": "v2", "proba": 0.5}]}
        )
        seen = Counter(who() for _ in range(200))
        assert seen["v1"] > 50 and seen["v2"] > 50
        svc.disable()
        assert requests.post(url).status_code == 404
        svc.enable()
        assert requests.post(url).status_code == 200
        with pytest.raises(dataikuapi.utils.DataikuException):
            svc.set_generations_mapping({"entries": [{"generation": "v1", "proba": 0.7}]})  # does not sum to 1
        with pytest.raises(dataikuapi.utils.DataikuException):
            dataikuapi.APINodeAdminClient(node.http, "wrong-key").list_services()
        assert requests.get(node.http + "/admin/status").status_code == 401
        assert requests.get(node.http + "/admin/status", auth=("root-key", "")).status_code == 200
