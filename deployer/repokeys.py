"""`apinode deploy keys list|add|delete --service S --repository DIR|URL`: a service's API
keys in a package repository's desired state, which every node of the repository converges
to at its next poll (written to its api_keys.json, applied without a restart).

The state keeps sha256 digests only; `add` prints the new key once. The first `add` copies
the keys of the packages the service serves into the state, so they stay valid (as a node's
own key management does); delete them by id to retire them. Admin keys are not in the
state: they are how the deployer reaches each node, and stay per node.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import time
from typing import Any

from rich.markup import escape

from apz.archive import read_manifest
from apz.vocab import PackageError
from deployer.errors import EXIT_OK, DeployError, UsageError
from deployer.output import Output
from deployer.publish import _service, _Store, store_of
from node.repostate import KEY_ID_RE, RepoService

_SHOWN = ("id", "label", "description", "createdBy", "createdOn")


def _shown(entry: dict[str, str]) -> dict[str, str]:
    return {k: entry.get(k, "") for k in _SHOWN}


def _package_keys(store: _Store, svc: RepoService) -> list[dict[str, str]]:
    """The keys of the packages the service serves (all it stores when nothing is active)."""
    versions = svc.serving() or list(svc.generations)
    keys: dict[str, dict[str, str]] = {}
    for version in versions:
        file = svc.generations[version].file
        try:
            manifest = read_manifest(store.get(file))
        except PackageError as exc:
            raise DeployError(f"{store.where}/{file}: {exc}") from None
        for k in manifest.api_keys:
            keys.setdefault(k.id, {"id": k.id, "sha256": k.sha256})
    return [{**_shown(k), "sha256": k["sha256"]} for k in keys.values()]


def cmd_repository_keys(args: argparse.Namespace, out: Output) -> int:
    if not args.service:
        raise UsageError("a repository holds services' API keys (--service S); admin keys stay per node (use --node)")
    store = store_of(args.repository, args.timeout)
    action = args.keys_command
    if action == "list":
        svc = _service(store.read(), args.service)
        keys = [_shown(k) for k in svc.api_keys or []]
        if out.json_mode:
            out.json(
                {"repository": store.where, "service": args.service, "managed": svc.api_keys is not None, "keys": keys}
            )
        elif svc.api_keys is None:
            out.note(f"{store.where} does not hold keys of {escape(args.service)}: each node keeps its own")
        else:
            out.note(
                f"API keys of service {escape(args.service)} in {store.where}: " + ", ".join(k["id"] for k in keys)
            )
        return EXIT_OK
    key = None
    with store.lock():
        state = store.read()
        svc = _service(state, args.service)
        if action == "add":
            entries = svc.api_keys if svc.api_keys is not None else _package_keys(store, svc)
            key_id = args.id or secrets.token_hex(6)
            if not KEY_ID_RE.fullmatch(key_id):
                raise UsageError(f"a key id is 1-64 letters, digits, '_', '.', '-': got {key_id!r}")
            if any(k["id"] == key_id for k in entries):
                raise DeployError(f"service {args.service!r} already has a key {key_id!r}", code="ALREADY_EXISTS")
            key = secrets.token_hex(32)
            entry = {
                "id": key_id,
                "label": args.label or "",
                "description": args.description or "",
                "createdBy": args.created_by or "",
                "createdOn": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "sha256": hashlib.sha256(key.encode()).hexdigest(),
            }
            svc.api_keys = [*entries, entry]
        else:
            if svc.api_keys is None:
                raise DeployError(
                    f"{store.where} does not hold keys of {args.service!r}: revoke on each node (--node)",
                    code="NOT_FOUND",
                )
            kept = [k for k in svc.api_keys if k["id"] != args.key_id]
            if len(kept) == len(svc.api_keys):
                raise DeployError(f"service {args.service!r} has no key {args.key_id!r}", code="NOT_FOUND")
            if not kept:
                raise DeployError(
                    f"{args.key_id!r} is the last key of service {args.service!r}: a service without keys is "
                    "public; add another first",
                    code="FAILED_PRECONDITION",
                )
            svc.api_keys = kept
        state.bump()
        store.write(state)
    doc = _report(args, out, store.where, state.serial, svc, key)
    if getattr(args, "wait", False):
        from deployer.converge import wait_for_nodes

        return wait_for_nodes(args, out, state, args.service, extra=doc)
    if out.json_mode:
        out.json(doc)
    return EXIT_OK


def _report(
    args: argparse.Namespace, out: Output, where: str, serial: int, svc: RepoService, key: str | None
) -> dict[str, Any]:
    """Says what changed (the new key at once: it is shown only here); returns the JSON
    document of `--json`, printed by the caller (after `--wait`, merged with its own)."""
    keys = svc.api_keys or []
    doc: dict[str, Any] = {"repository": where, "serial": serial, "service": args.service}
    if key is not None:
        added = _shown(keys[-1])
        if not out.json_mode:
            out.note(f"{where}: state {serial}: added API key {escape(added['id'])} of service {escape(args.service)}")
            out.note("the key (shown once, the repository keeps only its digest):")
            out.out.print(key, markup=False, highlight=False)
        return {**doc, **added, "key": key, "source": "repository"}
    if not out.json_mode:
        out.note(
            f"{where}: state {serial}: revoked {escape(args.key_id)}; {len(keys)} API keys of {escape(args.service)} left"
        )
    return {**doc, "deleted": args.key_id, "keys": [_shown(k) for k in keys]}
