"""The words of the package format: its constants, its error, and the checks every part of
the manifest's reader shares (a package path that stays inside the package, a digest).

:mod:`apz.manifest` and :mod:`apz.endpoints` read the manifest with these; the compiler
(`compiler/spec.py`) checks service.yaml against the same vocabulary, so a service it
accepts is one the node reads.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import PurePosixPath
from typing import Any, NoReturn

FORMAT = "apinode-package"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# Always `fullmatch`: a `$` would match before a final newline ("evil\n")
ID_RE = re.compile(r"[A-Za-z0-9_-]+")
TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
FEATURE_TYPES = ("float", "int", "string", "bool")
ONNX_TYPES = ("float", "double", "int64", "string", "bool")
ENDPOINT_TYPES = ("prediction", "function", "lookup", "custom-prediction", "sql")
COLUMN_TYPES = ("int", "float", "string", "bool", "date", "datetime")  # of a bundled dataset's columns
DATASET_FORMATS = ("csv", "parquet")
INPUT_MODES = ("columns", "matrix")
EXPLANATION_METHODS = ("SHAPLEY", "ICE")
# Policies of lookup endpoints and enrichment (the first is the default; node/lookup.py says what they do)
LOOKUP_POLICIES = {"on_no_match": ("null", "fail"), "on_multiple": ("first", "null", "fail")}
ENRICH_POLICIES = {
    "on_missing_key": ("fail", "ignore", "continue"),
    "on_no_match": ("ignore", "fail", "continue"),
    "on_multiple": ("ignore", "fail", "first"),
}
TASKS = ("binary", "multiclass", "regression")
MAX_FILES = 100_000
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class PackageError(ValueError):
    """A package that cannot be used, with a message that says why."""


def refuse(message: str) -> NoReturn:
    raise PackageError(f"manifest.json: {message}")


def require(cond: bool, message: str) -> None:
    if not cond:
        refuse(message)


def safe_member(name: Any) -> str:
    """A relative path that stays inside the package, or PackageError."""
    if not isinstance(name, str) or not name:
        raise PackageError(f"package path {name!r} is not a file name")
    p = PurePosixPath(name)
    if name.startswith("/") or "\\" in name or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise PackageError(f"package path {name!r} points outside the package")
    if not p.parts or _BAD_CHARS.search(name):
        raise PackageError(f"package path {name!r} is not a valid file name")
    if len(name) > 1024 or any(len(part.encode("utf-8", "surrogatepass")) > 255 for part in p.parts):
        raise PackageError(f"package path {name[:64]!r}... is too long")
    return str(p)


def column_type_of(t: Any) -> str:
    """The manifest's column type (`COLUMN_TYPES`) of an Arrow data type."""
    import pyarrow as pa

    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "datetime"
    return "string"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
