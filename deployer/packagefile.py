"""A package file on the deployer's side: its manifest, digest, and test queries.

Only reads: the node verifies packages itself. Reading here gives early, local errors
(exit 2 for a file that is no package) and the test queries that `deploy test` plays.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apz.archive import read_manifest
from apz.specs import Manifest
from apz.vocab import PackageError
from deployer.errors import UsageError

CHUNK = 1 << 20  # upload chunks: 1 MiB (the node takes up to 4 MiB)
# The public verb that calls an endpoint of each kind (POST .../{endpoint}/{verb})
VERB_OF_KIND = {
    "prediction": "predict",
    "custom-prediction": "predict",
    "function": "run",
    "lookup": "lookup",
    "sql": "query",
}


def verb_of(kind: str) -> str:
    return VERB_OF_KIND.get(kind, "predict")


@dataclass(frozen=True, slots=True)
class TestQuery:
    endpoint: str
    type: str  # the endpoint's kind: prediction, custom-prediction, function, lookup, sql
    index: int
    body: dict[str, Any]

    @property
    def verb(self) -> str:
        """The public verb that plays this query (predict-multi / lookup-multi for `items`)."""
        verb = verb_of(self.type)
        if verb in ("predict", "lookup") and "items" in self.body:
            return f"{verb}-multi"
        return verb


@dataclass(frozen=True, slots=True)
class LocalPackage:
    path: Path
    manifest: Manifest
    size: int

    @property
    def service(self) -> str:
        return self.manifest.service

    @property
    def version(self) -> str:
        return self.manifest.version

    def sha256(self) -> str:
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                h.update(chunk)
        return h.hexdigest()

    def test_queries(self) -> list[TestQuery]:
        """Every endpoint's test queries, in manifest order."""
        out: list[TestQuery] = []
        try:
            with zipfile.ZipFile(self.path) as z:
                for eid, ep in self.manifest.endpoints.items():
                    if not ep.test_queries:
                        continue
                    try:
                        queries = json.loads(z.read(ep.test_queries))
                    except (KeyError, ValueError) as exc:
                        raise UsageError(
                            f"{self.path}: test queries {ep.test_queries} of {eid} unreadable: {exc}"
                        ) from None
                    if not isinstance(queries, list):
                        raise UsageError(f"{self.path}: {ep.test_queries} must be a JSON list of request bodies")
                    for i, body in enumerate(queries):
                        if not isinstance(body, dict):
                            raise UsageError(f"{self.path}: {ep.test_queries}[{i}] is not a JSON object")
                        out.append(TestQuery(eid, ep.type, i, body))
        except (zipfile.BadZipFile, OSError) as exc:
            raise UsageError(f"{self.path}: cannot read the package: {exc}") from None
        return out


def open_package(path: Path) -> LocalPackage:
    """Reads a package's manifest; UsageError (exit 2) when it is missing or no package."""
    if not path.is_file():
        raise UsageError(f"no such package file: {path}")
    try:
        manifest = read_manifest(path)
    except PackageError as exc:
        raise UsageError(f"{path}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc}") from None
    return LocalPackage(path, manifest, path.stat().st_size)
