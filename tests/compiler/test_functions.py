"""Function endpoints: code checked with ast (never imported) and packed with its folder."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from compiler import compile_service
from compiler.errors import CompileError
from tests.compiler.helpers import Package

RULES = """
raise SystemExit("the compiler must never import user code")

from lib.helpers import note

def flag(amount, country="FR", **extra):
    return {"flag": amount > 100, "note": note(country)}

async def later(x):
    return x

def strict(a, *, b, c=1):
    return a
"""


def make(tmp_path: Path, endpoint: str, code: str = RULES) -> Path:
    folder = tmp_path / "svc"
    (folder / "code" / "lib").mkdir(parents=True)
    (folder / "code" / "rules.py").write_text(textwrap.dedent(code))
    (folder / "code" / "lib" / "__init__.py").write_text("")
    (folder / "code" / "lib" / "helpers.py").write_text("def note(c):\n    return c.lower()\n")
    (folder / "code" / "__pycache__").mkdir()
    (folder / "code" / "__pycache__" / "rules.cpython-311.pyc").write_bytes(b"\0")
    (folder / "code" / ".secret").write_text("no")
    (folder / "service.yaml").write_text(
        "service: svc\nversion: v2\nendpoints:\n" + textwrap.indent(textwrap.dedent(endpoint), "  ")
    )
    return folder


def test_function_endpoint_is_packed_with_its_folder(tmp_path: Path) -> None:
    folder = make(
        tmp_path,
        """
        flag:
          type: function
          file: code/rules.py
          function: flag
          test_queries:
            - {amount: 250, country: DE}
            - {amount: 3, anything: [1, 2]}
          pool: {floor: 0, ceil: 2, cruise: 1, max_run_ms: 500}
        """,
    )
    report = compile_service(folder, tmp_path / "out.apz", progress=False)

    pkg = Package(report.out)
    assert pkg.endpoint("flag") == {
        "type": "function",
        "code": {"path": "code/rules.py", "root": "code", "function": "flag"},
        "test_queries": "tests/flag.json",
        "pool": {"floor": 0, "ceil": 2, "cruise": 1, "max_run_ms": 500},
    }
    assert sorted(n for n in pkg.manifest["files"] if n.startswith("code/")) == [
        "code/lib/__init__.py",
        "code/lib/helpers.py",
        "code/rules.py",
    ]
    assert json.loads(pkg.members["tests/flag.json"]) == [
        {"amount": 250, "country": "DE"},
        {"amount": 3, "anything": [1, 2]},
    ]
    assert pkg.manifest["datasets"] == {}
    assert report.parity == {}


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        (
            "e: {type: function, file: code/rules.py, function: missing}",
            "defines no top-level function 'missing' (it defines: flag, strict)",
        ),
        ("e: {type: function, file: code/rules.py, function: later}", "'later' in "),
        ("e: {type: function, file: code/nope.py, function: flag}", "file not found: "),
        ("e: {type: function, file: code/lib/helpers.py}", "a function endpoint needs 'function:'"),
        (
            "e: {type: function, file: code/rules.py, function: strict, test_queries: [{a: 1}]}",
            "endpoints.e.test_queries[0]: missing argument(s) 'b' for strict()",
        ),
        (
            "e: {type: function, file: code/rules.py, function: strict, test_queries: [{a: 1, b: 2, d: 3}]}",
            "unexpected argument(s) 'd' for strict()",
        ),
    ],
)
def test_function_mistakes(tmp_path: Path, endpoint: str, expected: str) -> None:
    with pytest.raises(CompileError) as info:
        compile_service(make(tmp_path, endpoint), tmp_path / "out.apz", progress=False)
    assert expected in str(info.value)
    assert not (tmp_path / "out.apz").exists()


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    folder = make(tmp_path, "e: {type: function, file: code/rules.py, function: f}", "x = 1\ndef f(:\n")
    with pytest.raises(CompileError, match=r"rules.py: line 2: syntax error"):
        compile_service(folder, tmp_path / "out.apz", progress=False)


def test_code_must_live_in_a_folder(tmp_path: Path) -> None:
    folder = make(tmp_path, "e: {type: function, file: top.py, function: f}")
    (folder / "top.py").write_text("def f():\n    return 1\n")
    with pytest.raises(CompileError, match=r"put the code in a folder of the service"):
        compile_service(folder, tmp_path / "out.apz", progress=False)
