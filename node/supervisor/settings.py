"""Pool settings of one endpoint, and where they come from.

Precedence, key by key: `DATA_DIR/config/services/<SERVICE>/<ENDPOINT>.json`
(`{"pool": {...}}`, the Dataiku API node's layout), else `pool:` in the package's
`service.yaml`, else the defaults below. Invalid settings are refused with the file and
field named.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import orjson

from node.errors import BadRequest


class PoolConfigError(BadRequest):
    pass


@dataclass(frozen=True, slots=True)
class PoolSettings:
    floor: int = 1  # workers started when the endpoint loads
    ceil: int = 8  # most workers at once
    cruise: int = 2  # idle workers above this are retired after `idle_grace_ms`
    queue: int = 16  # requests that may wait when `ceil` workers are busy
    timeout: int = 10000  # ms a request may wait in the queue
    max_run_ms: int = 0  # run time limit per request or batch (0: off)
    max_batch: int = 64  # rows coalesced into one model run (prediction endpoints)
    # How long a worker above `cruise` stays idle before retiring: long enough that a bursty
    # load (a pause between runs) finds its workers still there, not respawning them.
    idle_grace_ms: int = 30000
    start_timeout_ms: int = 60000  # how long a worker may take to load its endpoint
    # Grow only once a request has waited this long. None: 0 for functions (one request per
    # worker), 10 for predictions, whose batching drains short queues better than a new
    # process competing for the same cores would.
    grow_after_ms: int | None = None

    def to_json(self) -> dict[str, int | None]:
        return asdict(self)


FIELDS = {f.name for f in fields(PoolSettings)}
_DEFAULTS = PoolSettings()


def _check(values: dict[str, Any], origin: dict[str, str]) -> PoolSettings:
    for key, value in values.items():
        where = origin.get(key, "defaults")
        if key == "grow_after_ms" and value is None:
            continue
        if key not in FIELDS:
            raise PoolConfigError(f"{where}: unknown pool setting {key!r} (known: {', '.join(sorted(FIELDS))})")
        if not isinstance(value, int) or isinstance(value, bool):
            raise PoolConfigError(f"{where}: pool.{key} must be an integer, got {value!r}")
        if value < 0:
            raise PoolConfigError(f"{where}: pool.{key} must not be negative, got {value}")
    values = dict(values)
    # Defaults bend to the bounds a user did give: {"floor": 1, "ceil": 1} means cruise 1,
    # {"floor": 12} means ceil 12; only explicit values are held to floor <= cruise <= ceil.
    if "ceil" not in values and isinstance(values.get("floor"), int):
        values["ceil"] = max(_DEFAULTS.ceil, values["floor"])
    if "cruise" not in values:
        floor, ceil = values.get("floor", _DEFAULTS.floor), values.get("ceil", _DEFAULTS.ceil)
        if isinstance(floor, int) and isinstance(ceil, int):
            values["cruise"] = min(max(_DEFAULTS.cruise, floor), ceil)
    s = PoolSettings(**values)
    for key, ok in (("ceil", s.ceil >= 1), ("max_batch", s.max_batch >= 1)):
        if not ok:
            raise PoolConfigError(f"{origin.get(key, 'defaults')}: pool.{key} must be at least 1")
    if not s.floor <= s.cruise <= s.ceil:
        bad = "floor" if s.floor > s.cruise else "cruise"
        raise PoolConfigError(
            f"{origin.get(bad, 'defaults')}: pool.{bad}: need floor <= cruise <= ceil, "
            f"got floor={s.floor} cruise={s.cruise} ceil={s.ceil}"
        )
    return s


def config_path(data_dir: Path, service: str, endpoint: str) -> Path:
    return data_dir / "config" / "services" / service / f"{endpoint}.json"


def read_override(data_dir: Path, service: str, endpoint: str) -> dict[str, Any]:
    path = config_path(data_dir, service, endpoint)
    if not path.exists():
        return {}
    try:
        doc = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise PoolConfigError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("pool", {}), dict):
        raise PoolConfigError(f'{path}: expected {{"pool": {{...}}}}')
    return dict(doc.get("pool", {}))


def resolve(data_dir: Path | None, service: str, endpoint: str, package_pool: dict[str, Any]) -> PoolSettings:
    """Merges file > package > defaults and validates the result."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, value in package_pool.items():
        values[key] = value
        origin[key] = f"service.yaml endpoints.{endpoint}"
    if data_dir is not None:
        path = config_path(data_dir, service, endpoint)
        for key, value in read_override(data_dir, service, endpoint).items():
            values[key] = value
            origin[key] = str(path)
    return _check(values, origin)


def validate(values: dict[str, Any], where: str) -> PoolSettings:
    return _check(values, dict.fromkeys(values, where))
