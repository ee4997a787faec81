"""Request bodies: where they come from and in which order they are sent.

Three sources, picked by file suffix:

- ``.apz``: the package's own test queries. ``manifest.json`` names, per endpoint, a
  member (``endpoints.<id>.test_queries``) holding a JSON list of request bodies.
- ``.jsonl``: one JSON request body per line.
- ``.csv``: one feature row per line, sent as ``{"features": {...}}``; cells that read as
  numbers become numbers, empty cells become null.

Bodies are loaded once, then each transport encodes them once (JSON bytes, or protobuf);
the hot loop only picks an index with :class:`Picker`, cycling or sampling.
"""

from __future__ import annotations

import csv
import io
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from loadtest.config import ConfigError

# The verb of each endpoint kind, as the node routes it (node.dataplane.TEST_VERB)
_VERB_OF_TYPE = {
    "prediction": "predict",
    "custom-prediction": "predict",
    "function": "run",
    "lookup": "lookup",
    "sql": "query",
}


@dataclass(frozen=True, slots=True)
class PackageInfo:
    """What a package tells the CLI about its endpoint, to fill in missing target fields."""

    service: str
    endpoint: str
    verb: str | None


def load_bodies(path: str | Path, endpoint: str | None = None) -> list[Any]:
    """Reads the request bodies of a payload file (see the module docstring)."""
    p = Path(path)
    suffix = p.suffix.lower()
    try:
        if suffix == ".apz":
            return _apz_bodies(p, endpoint)
        if suffix in (".jsonl", ".ndjson"):
            return _jsonl_bodies(p)
        if suffix == ".csv":
            return _csv_bodies(p)
    except OSError as exc:
        raise ConfigError(f"cannot read payload {p}: {exc.strerror or exc}") from exc
    raise ConfigError(f"payload {p}: expected a .apz, .jsonl or .csv file")


def package_info(path: str | Path, endpoint: str | None = None) -> PackageInfo:
    """The service id, the endpoint (the only one, unless named) and its verb."""
    manifest = _read_manifest(Path(path))
    eid, entry = _endpoint_entry(manifest, endpoint, Path(path))
    return PackageInfo(
        service=str(manifest.get("service")),
        endpoint=eid,
        verb=_VERB_OF_TYPE.get(str(entry.get("type"))),
    )


class Picker:
    """Chooses the next body: in turn (each process starting at its own offset) or at random."""

    __slots__ = ("_i", "_n", "_rng", "_sample")

    def __init__(self, n: int, *, sample: bool, seed: int | None, offset: int = 0) -> None:
        if n < 1:
            raise ConfigError("no request bodies to send")
        self._n = n
        self._i = offset % n
        self._sample = sample
        self._rng = random.Random(seed)

    def next(self) -> int:
        if self._sample:
            return self._rng.randrange(self._n)
        i = self._i
        self._i = i + 1 if i + 1 < self._n else 0
        return i


def _read_manifest(p: Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(p) as z:
            data = orjson.loads(z.read("manifest.json"))
    except (zipfile.BadZipFile, KeyError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"payload {p}: not a readable package ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("endpoints"), dict):
        raise ConfigError(f"payload {p}: manifest.json has no endpoints")
    return data


def _endpoint_entry(manifest: dict[str, Any], endpoint: str | None, p: Path) -> tuple[str, dict[str, Any]]:
    eps: dict[str, Any] = manifest["endpoints"]
    if endpoint is None:
        if len(eps) != 1:
            raise ConfigError(f"package {p} has endpoints {', '.join(eps)}: pick one with --endpoint")
        endpoint = next(iter(eps))
    entry = eps.get(endpoint)
    if not isinstance(entry, dict):
        raise ConfigError(f"package {p} has no endpoint {endpoint!r} (it has {', '.join(eps)})")
    return endpoint, entry


def _apz_bodies(p: Path, endpoint: str | None) -> list[Any]:
    manifest = _read_manifest(p)
    eid, entry = _endpoint_entry(manifest, endpoint, p)
    member = entry.get("test_queries")
    if not member:
        raise ConfigError(f"package {p}: endpoint {eid!r} has no test queries")
    try:
        with zipfile.ZipFile(p) as z:
            bodies = orjson.loads(z.read(member))
    except (KeyError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"package {p}: cannot read test queries {member!r} ({exc})") from exc
    if not isinstance(bodies, list) or not bodies:
        raise ConfigError(f"package {p}: {member} is not a non-empty JSON list of bodies")
    return bodies


def _jsonl_bodies(p: Path) -> list[Any]:
    bodies = []
    for n, line in enumerate(p.read_bytes().splitlines(), 1):
        if line.strip():
            try:
                bodies.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"{p}:{n}: not JSON ({exc})") from exc
    if not bodies:
        raise ConfigError(f"{p}: no request bodies")
    return bodies


def _csv_bodies(p: Path) -> list[Any]:
    reader = csv.DictReader(io.StringIO(p.read_text(encoding="utf-8-sig"), newline=""))
    bodies = [{"features": {k: _cell(v) for k, v in row.items()}} for row in reader]
    if not bodies:
        raise ConfigError(f"{p}: no rows")
    return bodies


def _cell(text: str | None) -> Any:
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    # "nan"/"inf" are words a category may legitimately use; only plain numbers convert.
    return value if value == value and abs(value) != float("inf") else text
