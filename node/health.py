"""Liveness, decided once for every transport.

A node is alive unless its operator says otherwise: `DATA_DIR/apinode-not-alive.txt`
present makes HTTP `GET /isAlive/` answer 503 and the gRPC health service NOT_SERVING
(node.grpc.health), to take a node out before a rolling upgrade. Readiness (serving what it
was told to serve) is the data plane's `readiness()`; gRPC health reports both at once.
"""

from __future__ import annotations

from pathlib import Path

NOT_ALIVE_FILE = "apinode-not-alive.txt"


def not_alive(data_dir: Path) -> str | None:
    """Why the node is not alive, or None when it is."""
    if (data_dir / NOT_ALIVE_FILE).exists():
        return f"{NOT_ALIVE_FILE} present"
    return None
