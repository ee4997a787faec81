"""The admin key of a node on this machine, read from its data dir.

A node given no admin key generates one into `DATA_DIR/admin-keys.txt` (mode 0600; see
node/auth.py). Whoever can read that file may deploy to the node, so a deployer run by the
same user on the same machine finds the key there without being told. It is read only for
a loopback target: a local key is never sent to another machine.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from node.auth import KEYS_FILE, read_keys

DEFAULT_DATA_DIR = Path(os.environ.get("APINODE_DATA_DIR", "apinode-data"))  # as `apinode serve`


def is_local(target: str) -> bool:
    """Whether a HOST:PORT target is this machine (a loopback address or localhost)."""
    host = target.rsplit(":", 1)[0] if ":" in target else target
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_admin_key(data_dir: Path | None, target: str) -> str | None:
    """The first key of DATA_DIR/admin-keys.txt when `target` is local; None otherwise or
    when the file is absent or unreadable (the node then answers UNAUTHENTICATED)."""
    if data_dir is None or not is_local(target):
        return None
    try:
        keys = read_keys(data_dir / KEYS_FILE)  # as the node reads it
    except (OSError, UnicodeDecodeError):
        return None
    return keys[0] if keys else None
