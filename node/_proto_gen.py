"""Generates the gRPC stubs from `proto/` into `node/_proto/` (run by `make proto`).

protoc writes absolute imports (`from apinode.v1 import x_pb2`); they are rewritten to
`node._proto.apinode.v1` so the stubs live inside the `node` package. The Open Inference
Protocol's stubs build their messages in a descriptor pool of their own (`private_pool`).
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
    private_pool(OUT / "inference")
    print(f"generated stubs for {len(files)} proto files into {OUT.relative_to(ROOT)}")
    return 0


_POOL_MODULE = '''"""The descriptor pool of the Open Inference Protocol's messages (written by node/_proto_gen.py).

Triton's `tritonclient.grpc` registers its own `inference` package (a superset of ours, from
other files) in protobuf's default pool, and one pool cannot hold both: apart, a process (a
test, a tool) may use Triton's client and a node together.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
'''


def private_pool(package: Path) -> None:
    """The stubs of `package` build their messages in its own descriptor pool (`_pool.POOL`)
    instead of protobuf's default one. Idempotent."""
    (package / "_pool.py").write_text(_POOL_MODULE)
    anchor = "from google.protobuf.internal import builder as _builder\n"
    for path in package.glob("*_pb2.py"):
        text = path.read_text()
        if "_descriptor_pool.Default()" not in text:
            continue
        text = text.replace(anchor, anchor + f"from node._proto.{package.name} import _pool\n", 1)
        path.write_text(text.replace("_descriptor_pool.Default()", "_pool.POOL"))


if __name__ == "__main__":
    raise SystemExit(main())
