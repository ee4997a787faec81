"""`--wait`: follow the nodes of a repository until each serves the state just written.

Nodes come from `--nodes host:port,...` or `--nodes-dns name:port` (every A record of the
name: a Kubernetes headless Service lists its ready and unready pods so), resolved again
at each round so that pods that come and go are followed. Over the admin gRPC API each
node is asked for its status document (its `repository` section: the serial it converged
to, the newest it read, its last error) and for the service's state. A node is

- ok:      it converged to the serial written (or a later one), and the service's mapping,
           sha256s and enabled flag are what the state says, every mapped generation loaded;
- failed:  it read that serial (or a later one) and reports an error for it;
- waiting: anything else, until `--wait-timeout` (then failed, with what was last seen).

Exit 0 when every node is ok, 1 as soon as every node has settled and one failed, or at
the timeout.
"""

from __future__ import annotations

import argparse
import socket
import time
from dataclasses import dataclass
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from deployer.client import AdminClient
from deployer.errors import EXIT_FAILED, EXIT_OK, DeployError, UsageError
from deployer.output import Output
from node.repostate import RepoState


@dataclass
class NodeWait:
    target: str
    status: str = "waiting"  # waiting | ok | failed
    serial: int | None = None
    serving: str = ""
    detail: str = ""
    seconds: float | None = None


def targets(args: argparse.Namespace) -> list[str]:
    """The nodes named by --nodes and --nodes-dns (resolved now)."""
    found: list[str] = []
    for part in (getattr(args, "nodes", None) or "").split(","):
        if part.strip():
            found.append(part.strip())
    dns = getattr(args, "nodes_dns", None)
    if dns:
        name, sep, port = dns.rpartition(":")
        if not sep or not name or not port.isdigit():
            raise UsageError(f"--nodes-dns wants NAME:PORT (the nodes' gRPC port), got {dns!r}")
        try:
            infos = socket.getaddrinfo(name, int(port), socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            raise DeployError(f"--nodes-dns: cannot resolve {name}: {exc}") from None
        for address in sorted({str(info[4][0]) for info in infos}):
            found.append(f"{address}:{port}")
    return list(dict.fromkeys(found))


def _check(client: AdminClient, state: RepoState, sid: str, node: NodeWait) -> None:
    doc = client.status().document
    repo = doc.get("repository")
    if not isinstance(repo, dict):
        node.status, node.detail = "failed", "this node does not serve from a repository (serve --repository)"
        return
    node.serial = repo.get("serial")
    seen, error = repo.get("seenSerial"), repo.get("lastError")
    if node.serial is not None and node.serial >= state.serial:
        want = state.services[sid]
        have = client.find_service(sid)
        if want.mapping is None:
            node.status, node.detail = "ok", "nothing to activate"
            return
        if have is None:
            node.detail = f"converged to {node.serial} but has no service {sid}"
            return
        node.serving = have.mapping.describe()
        wanted = {e["generation"]: e["proba"] for e in want.mapping["entries"]}
        mapped = {e.generation: e.proba for e in have.mapping.entries}
        stale = [
            v
            for v in wanted
            if (g := have.generation(v)) is None or not g.loaded or g.sha256 != want.generations[v].sha256
        ]
        if mapped != wanted or stale or have.enabled != want.enabled or have.mapping.mode != want.mapping["mode"]:
            node.detail = f"converged to {node.serial} but serves {node.serving}"
            return
        node.status, node.detail = "ok", ""
    elif seen is not None and seen >= state.serial and error:
        node.status, node.detail = "failed", str(error)
    else:
        node.detail = f"at serial {node.serial}, reading {seen}" + (f"; last error: {error}" if error else "")


def _client(args: argparse.Namespace, target: str) -> AdminClient:
    """A client of one node, with the key and TLS options as every deploy action takes them."""
    from deployer.commands import tls_of
    from deployer.localkey import local_admin_key

    key = args.admin_key or local_admin_key(args.data_dir, target)
    return AdminClient(target, key, timeout=10, connect_timeout=3, tls=tls_of(args))


def wait_for_nodes(
    args: argparse.Namespace, out: Output, state: RepoState, sid: str, extra: dict[str, Any] | None = None
) -> int:
    """Follows the nodes until each serves `state` (or the timeout); `extra`: more fields of
    the one JSON document `--json` prints (the action's own result)."""
    if not getattr(args, "nodes", None) and not getattr(args, "nodes_dns", None):
        raise UsageError("--wait needs the nodes: --nodes HOST:PORT,... or --nodes-dns NAME:PORT")
    t0 = time.monotonic()
    deadline = t0 + args.wait_timeout
    nodes: dict[str, NodeWait] = {}
    clients: dict[str, AdminClient] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=out.err, transient=True, disable=out.quiet) as bar:
            task = bar.add_task(f"nodes serving state {state.serial}", total=None)
            while True:
                current = targets(args)
                nodes = {t: nodes.get(t) or NodeWait(t) for t in current}
                for t, node in nodes.items():
                    if node.status != "waiting":
                        continue
                    client = clients.get(t) or clients.setdefault(t, _client(args, t))
                    try:
                        _check(client, state, sid, node)
                    except DeployError as exc:  # unreachable or refused: maybe starting, try again
                        node.detail = exc.message
                    if node.status != "waiting":
                        node.seconds = time.monotonic() - t0
                settled = sum(n.status != "waiting" for n in nodes.values())
                bar.update(task, total=len(nodes), completed=settled)
                if nodes and settled == len(nodes):
                    break
                if time.monotonic() >= deadline:
                    for n in nodes.values():
                        if n.status == "waiting":
                            n.status = "failed"
                            n.detail = f"timed out after {args.wait_timeout:g} s: {n.detail or 'no answer'}"
                    break
                time.sleep(0.2)
    finally:
        for c in clients.values():
            c.close()
    failed = [n for n in nodes.values() if n.status != "ok"]
    if out.json_mode:
        out.json(
            {
                **(extra or {}),
                "serial": state.serial,
                "service": sid,
                "ok": not failed and bool(nodes),
                "nodes": [vars(n) for n in nodes.values()],
            }
        )
    else:
        out.show(_table(list(nodes.values()), f"nodes after state {state.serial} of {sid}"))
    if not nodes:
        out.error("--wait: no node found")
        return EXIT_FAILED
    for n in failed:
        out.error(f"node {n.target} did not converge: {n.detail}")
    if not failed:
        out.note(f"{len(nodes)} nodes serve state {state.serial} ({time.monotonic() - t0:.1f} s)")
    return EXIT_FAILED if failed else EXIT_OK


def _table(nodes: list[NodeWait], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("node", "result", "serial", "serving", "s", "detail"):
        t.add_column(col, justify="right" if col == "s" else "left")
    for n in nodes:
        color = {"ok": "green", "failed": "red"}.get(n.status, "dim")
        t.add_row(
            escape(n.target),
            f"[{color}]{n.status}[/]",
            "" if n.serial is None else str(n.serial),
            escape(n.serving),
            "" if n.seconds is None else f"{n.seconds:.1f}",
            escape(n.detail),
        )
    return t
