"""The node's database connections: names that SQL endpoints reference, mapped to DSNs.

A package names a connection (`connection: crm`); the node maps the name to a real
database in its own configuration, so a package never holds credentials and the same
package serves against each environment's database. The file is
`DATA_DIR/config/connections.json`, or the one `apinode serve --connections FILE` gives:

    {"crm": {"type": "postgresql", "dsn": "postgresql://user:password@host:5432/db"}}

It is read whenever a generation loads, so an edited file applies to the next push or
restart. A DSN travels only to the endpoint's workers: never to logs, status or errors
(the worker masks its password in a driver's message, should one ever quote it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from apz.vocab import ID_RE
from node import errors

TYPES = ("postgresql",)


def default_path(data_dir: Path) -> Path:
    return data_dir / "config" / "connections.json"


def resolve(path: Path, name: str, endpoint: str) -> dict[str, Any]:
    """The connection `name` of `path`, or a BadRequest naming the connection and the file."""
    where = f"endpoint {endpoint!r} references the database connection {name!r}"
    if not path.is_file():
        raise errors.BadRequest(f"{where}, but there is no connections file {path} (see --connections)")
    connections = load(path)
    entry = connections.get(name)
    if entry is None:
        known = ", ".join(sorted(connections)) or "none"
        raise errors.BadRequest(f"{where}, which {path} does not define (it defines: {known})")
    return entry


def load(path: Path) -> dict[str, dict[str, Any]]:
    try:
        doc = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise errors.BadRequest(f"cannot read the connections file {path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise errors.BadRequest(f"the connections file {path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise errors.BadRequest(f"the connections file {path} must hold an object of name -> {{type, dsn}}")
    out = {}
    for name, entry in doc.items():
        where = f"{path}: connection {name!r}"
        if not ID_RE.fullmatch(name):
            raise errors.BadRequest(f"{where}: a name is letters, digits, '_' and '-'")
        if not isinstance(entry, dict) or entry.get("type") not in TYPES or not isinstance(entry.get("dsn"), str):
            raise errors.BadRequest(f'{where}: expected {{"type": one of {", ".join(TYPES)}, "dsn": "..."}}')
        out[name] = {"type": entry["type"], "dsn": entry["dsn"]}
    return out
