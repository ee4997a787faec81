"""Generates the gRPC stubs from `proto/` into `node/_proto/` (run by `make proto`).

protoc writes absolute imports (`from apinode.v1 import x_pb2`); they are rewritten to
`node._proto.apinode.v1` so the stubs live inside the `node` package.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
OUT = ROOT / "node" / "_proto"


def main() -> int:
    files = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO}",
        f"-I{include}",
        f"--python_out={OUT}",
        f"--grpc_python_out={OUT}",
        f"--pyi_out={OUT}",
        *files,
    ]
    if protoc.main(args) != 0:
        print("protoc failed", file=sys.stderr)
        return 1
    pattern = re.compile(r"^from (apinode|inference)(\.[\w.]+)? import", re.MULTILINE)
    for path in OUT.rglob("*.py*"):
        text = path.read_text()
        new = pattern.sub(lambda m: f"from node._proto.{m.group(1)}{m.group(2) or ''} import", text)
        if new != text:
            path.write_text(new)
    for d in [OUT, *[p for p in OUT.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()
    print(f"generated stubs for {len(files)} proto files into {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
