"""Runs a README Python snippet as a reader pasting it into `python` would, and prints the
value of each top-level expression that is not None (what the interactive prompt would show)
as one JSON list on the last line of stdout, so that a test can check what the snippet
answered. Values JSON cannot hold are shown by their repr.

    python -m tests.readme.pyrun SNIPPET.py
"""

from __future__ import annotations

import ast
import json
import sys
from typing import Any


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _plain(value.tolist())
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def run(source: str) -> list[Any]:
    tree = ast.parse(source)
    scope: dict[str, Any] = {"__name__": "__main__"}
    shown: list[Any] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr):
            code = compile(ast.Expression(stmt.value), "<readme>", "eval")
            value = eval(code, scope)
            if value is not None:
                shown.append(_plain(value))
        else:
            exec(compile(ast.Module([stmt], []), "<readme>", "exec"), scope)
    return shown


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        values = run(f.read())
    print(json.dumps(values))
