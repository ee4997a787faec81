"""The body of a JSON request: parsed once, with the node's limits on nesting and string size.

Every JSON route of the node reads its body here (the Dataiku API, the admin API, the Open
Inference Protocol's JSON header), so the limits and their error messages are the same.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from node import errors
from node.dataplane import MAX_JSON_DEPTH_CAP, Limits

_DEFAULT_LIMITS = Limits()


def loads_body(raw: bytes, limits: Limits = _DEFAULT_LIMITS) -> dict[str, Any]:
    """Parses a JSON request body; an empty body is `{}` (the Dataiku client sends none).

    Refuses bodies nested deeper than `limits.max_json_depth` and strings (values or keys)
    longer than `limits.max_string_chars`. Only a body holding more brackets than the depth
    limit can nest past it, and only one longer than the string limit can hold a longer
    string, so the walk runs on big bodies only: a small body pays two `bytes.count`.
    """
    if not raw or raw.isspace():
        return {}
    depth, chars = limits.max_json_depth, limits.max_string_chars
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):  # orjson's own, at 1024
            raise errors.BadRequest(
                f"the JSON body is nested more than {depth} levels deep; the limit is {depth} (--max-json-depth)"
            ) from None
        body = _loads_nan(raw) if b"NaN" in raw or b"Infinity" in raw else None
        if body is None:
            raise errors.BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise errors.BadRequest(f"the body must be a JSON object, got {type(body).__name__}")
    deep = len(raw) > 2 * depth and raw.count(b"[") + raw.count(b"{") > depth
    long = len(raw) > chars
    if (deep or long) and _too_big(body, depth if deep else MAX_JSON_DEPTH_CAP, chars if long else len(raw)):
        what, size, where = _find(body, depth, chars)
        if what == "depth":
            raise errors.BadRequest(
                f"the JSON body is nested more than {depth} levels deep (at {where}); "
                f"the limit is {depth} (--max-json-depth)"
            )
        raise errors.BadRequest(
            f"the {what} at {where} is {size} characters long; the limit is {chars} (--max-string-chars)"
        )
    return body


def _loads_nan(raw: bytes) -> Any:
    """dataikuapi sends float('nan') (what `df.to_dict('records')` holds for a missing value)
    as a bare `NaN`, which is not JSON and which orjson refuses: read it as null, a missing
    value. Infinity stays refused. None when the body is invalid for another reason."""

    def constant(name: str) -> None:
        if name != "NaN":
            raise errors.BadRequest(f"the body is not valid JSON: {name} is not a number JSON can carry")

    try:
        return json.loads(raw, parse_constant=constant)
    except (ValueError, RecursionError):
        return None


def _too_big(obj: dict[str, Any] | list[Any], depth_left: int, max_chars: int) -> bool:
    """Whether `obj` holds a container more than `depth_left - 1` levels below it, or a
    string or key longer than `max_chars`. The fast pass: where is `_find`'s job."""
    if type(obj) is dict:
        if obj and max(map(len, obj)) > max_chars:
            return True
        values: Any = obj.values()
    else:
        values = obj
    for v in values:
        t = type(v)
        if t is str:
            if len(v) > max_chars:
                return True
        elif t is dict or t is list:
            if depth_left <= 1 or _too_big(v, depth_left - 1, max_chars):
                return True
    return False


def _find(obj: Any, depth_left: int, max_chars: int) -> tuple[str, int, str]:
    """What `_too_big` found and where: `("depth" | "string" | "key", length, path)`."""
    path: list[str | int] = []
    while True:
        items = obj.items() if type(obj) is dict else enumerate(obj)
        for k, v in items:
            if isinstance(k, str) and len(k) > max_chars:
                return "key", len(k), _path([*path, k])
            if type(v) is str and len(v) > max_chars:
                return "string", len(v), _path([*path, k])
            if (type(v) is dict or type(v) is list) and (depth_left <= 1 or _too_big(v, depth_left - 1, max_chars)):
                path.append(k)
                if depth_left <= 1:
                    return "depth", 0, _path(path)
                obj, depth_left = v, depth_left - 1
                break
        else:
            raise AssertionError("_find called on a body _too_big accepts")


def _path(parts: list[str | int], shown: int = 6) -> str:
    """`items[3].features.name`; long names shortened, deep paths cut."""
    out = ""
    for part in parts[:shown]:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if len(part) <= 40 else part[:40] + "..."
            out += ("." if out else "") + (name if name.isidentifier() else repr(name))
    if len(parts) > shown:
        out += f"... ({len(parts) - shown} more levels)"
    return out or "the top level"
