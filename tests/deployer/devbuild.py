"""A stand-in compiler for dev-loop tests: `python -m tests.deployer.devbuild SRC OUT`.

SRC holds service.json ({"service", "version"}), funcs.py (a function `version`) and
tests.json (its test queries). A syntax error in funcs.py fails the build, as a compile
error would.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from apz.archive import write_package


def main(src: Path, out: Path) -> int:
    meta = json.loads((src / "service.json").read_text())
    code = (src / "funcs.py").read_text()
    try:
        compile(code, str(src / "funcs.py"), "exec")
    except SyntaxError as exc:
        print(f"error: {src / 'funcs.py'}:{exc.lineno}: {exc.msg}", file=sys.stderr)
        return 1
    manifest = {
        "service": meta["service"],
        "version": meta["version"],
        "endpoints": {
            "ver": {
                "type": "function",
                "code": {"path": "code/funcs.py", "root": "code", "function": "version"},
                "pool": {"floor": 1, "ceil": 2},
                "test_queries": "tests/ver.json",
            }
        },
    }
    files: dict[str, bytes | Path] = {
        "code/funcs.py": code.encode(),
        "tests/ver.json": (src / "tests.json").read_bytes(),
    }
    write_package(out, manifest, files)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
