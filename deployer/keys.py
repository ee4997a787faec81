"""`apinode deploy keys list|add|delete`: admin keys, or with `--service S` that service's
API keys, managed over the node's gRPC Admin API (applied at once, no restart).

With `--repository DIR|URL` (and `--service`), the keys are those of a package
repository's desired state, which every node of the repository converges to
(:mod:`deployer.repokeys`).

A new key is printed once, by `add` (the node keeps only its sha256); `list` shows ids,
labels and where each key is kept, never a key.
"""

from __future__ import annotations

import argparse
from typing import Any

from google.protobuf.json_format import MessageToDict
from rich.markup import escape
from rich.table import Table

from deployer.errors import EXIT_OK, UsageError
from deployer.output import Output
from deployer.publish import add_wait_args
from deployer.repokeys import cmd_repository_keys
from node._proto.apinode.v1 import admin_pb2


def _client(args: argparse.Namespace) -> Any:
    from deployer.commands import client_of  # commands imports this module's handlers

    return client_of(args)


def _keys(msg: admin_pb2.KeyList) -> list[dict[str, Any]]:
    return [_key(k) for k in msg.keys]


def _key(k: admin_pb2.KeyInfo) -> dict[str, Any]:
    doc: dict[str, Any] = MessageToDict(k, preserving_proto_field_name=False, always_print_fields_with_no_presence=True)
    if not k.key:
        doc.pop("key", None)
    if not k.service:
        doc.pop("service", None)
    return doc


def _table(keys: list[dict[str, Any]], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("id", "label", "source", "created on", "created by"):
        t.add_column(col)
    for k in keys:
        row = (k["id"], k["label"], k["source"], k["createdOn"], k["createdBy"])
        t.add_row(*(escape(str(v)) for v in row))
    return t


def _what(args: argparse.Namespace) -> str:
    return f"API keys of service {args.service}" if args.service else "admin keys"


def cmd_keys_list(args: argparse.Namespace, out: Output) -> int:
    with _client(args) as client:
        if args.service:
            keys = _keys(client.rpc("list keys", "ListServiceKeys", admin_pb2.ListKeysRequest(service=args.service)))
        else:
            keys = _keys(client.rpc("list keys", "ListAdminKeys", admin_pb2.ListKeysRequest()))
    if out.json_mode:
        out.json({"node": args.node, "service": args.service, "keys": keys})
    else:
        out.show(_table(keys, f"{_what(args)} on {args.node}"))
    return EXIT_OK


def cmd_keys_add(args: argparse.Namespace, out: Output) -> int:
    req = admin_pb2.AddKeyRequest(
        service=args.service or "",
        id=args.id or "",
        label=args.label or "",
        description=args.description or "",
        created_by=args.created_by or "",
    )
    if args.id and not args.service:
        raise UsageError("--id names a service key: admin keys get a random id")
    with _client(args) as client:
        key = _key(client.rpc("add key", "AddServiceKey" if args.service else "AddAdminKey", req))
    if out.json_mode:
        out.json({"node": args.node, **key})
        return EXIT_OK
    out.note(
        f"added {'API key of service ' + escape(args.service) if args.service else 'admin key'} {escape(key['id'])}"
    )
    out.note("the key (shown once, the node keeps only its digest):")
    out.out.print(key["key"], markup=False, highlight=False)
    return EXIT_OK


def cmd_keys_delete(args: argparse.Namespace, out: Output) -> int:
    with _client(args) as client:
        if args.service:
            req = admin_pb2.DeleteKeyRequest(service=args.service, id=args.key_id)
            keys = _keys(client.rpc("revoke key", "RevokeServiceKey", req))
        else:
            keys = _keys(client.rpc("delete key", "DeleteAdminKey", admin_pb2.DeleteKeyRequest(id=args.key_id)))
    if out.json_mode:
        out.json({"node": args.node, "service": args.service, "deleted": args.key_id, "keys": keys})
        return EXIT_OK
    out.note(f"{'revoked' if args.service else 'deleted'} {escape(args.key_id)}; {len(keys)} {_what(args)} left")
    return EXIT_OK


def _node_handler(handler: Any) -> Any:
    def run(args: argparse.Namespace, out: Output) -> int:
        if getattr(args, "wait", False):
            raise UsageError("--wait goes with --repository (a node applies a key at once)")
        code: int = handler(args, out)
        return code

    return run


def add_parsers(dsub: Any, run: Any, common: Any) -> None:
    """`apinode deploy keys list|add|delete` (`run(handler, args)` runs a handler, `common(p)`
    adds the node options)."""
    keys = dsub.add_parser("keys", help="admin keys, and services' API keys (--service)", description=__doc__)
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    for name, handler, help in (
        ("list", cmd_keys_list, "list admin keys, or a service's API keys (--service); never the keys"),
        ("add", cmd_keys_add, "add an admin key, or a service API key (--service); prints it once"),
        ("delete", cmd_keys_delete, "delete an admin key, or revoke a service API key (--service), by id"),
    ):
        p = ksub.add_parser(name, help=help, description=help)
        node_handler = _node_handler(handler)
        p.set_defaults(func=lambda args, h=node_handler: run(cmd_repository_keys if args.repository else h, args))
        p.add_argument("--service", metavar="SERVICE", help="a service's API keys instead of the admin keys")
        p.add_argument(
            "--repository",
            metavar="DIR|URL",
            help="with --service: the keys in a package repository's state, which its nodes converge to",
        )
        if name == "add":
            p.add_argument("--id", metavar="ID", help="the new service key's id (default: random)")
            p.add_argument("--label", metavar="TEXT")
            p.add_argument("--description", metavar="TEXT")
            p.add_argument("--created-by", metavar="WHO")
        if name == "delete":
            p.add_argument("key_id", metavar="ID", help="the key's id (see keys list)")
        if name != "list":
            add_wait_args(p.add_argument_group("with --repository"))
        common(p)
