"""Function endpoints: check the user's code without running it, and collect its folder.

User code is never imported by the compiler: the file is parsed with `ast` to check that it
is valid Python defining the named top-level function, and that each test query binds to
its parameters. The function's folder (the first folder under the service folder, e.g.
`code/`) is packed whole under `code/`, so the function may import its neighbours.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.errors import CompileError
from compiler.spec import CustomPredictionEndpoint, FunctionEndpoint

CODE_DIR = "code"
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = {".pyc", ".pyo"}


@dataclass(frozen=True, slots=True)
class FunctionCode:
    root: Path  # the folder packed under code/
    path: str  # the file inside the package: code/...
    function: str


def _parse(file: Path, folder: Path, where: str) -> tuple[Path, ast.Module]:
    try:
        rel = file.resolve().relative_to(folder.resolve())
    except ValueError:
        raise CompileError(f"{where}: {file} is outside the service folder {folder}") from None
    if len(rel.parts) < 2:
        raise CompileError(
            f"{where}: put the code in a folder of the service (e.g. code/{rel.name}); that folder is packed whole"
        )
    try:
        source = file.read_text(encoding="utf-8")
        return rel, ast.parse(source, filename=str(file))
    except SyntaxError as exc:
        raise CompileError(f"{file}: line {exc.lineno}: syntax error: {exc.msg}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CompileError(f"{where}: cannot read {file}: {exc}") from None


def check_class(ep: CustomPredictionEndpoint, folder: Path) -> FunctionCode:
    """A custom-prediction class: defined at the top level, with a `predict` method."""
    rel, tree = _parse(ep.file, folder, f"endpoints.{ep.id}.file")
    found = None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == ep.cls:
            found = node
    if found is None:
        defined = sorted(n.name for n in tree.body if isinstance(n, ast.ClassDef))
        raise CompileError(
            f"endpoints.{ep.id}.class: {ep.file} defines no top-level class {ep.cls!r} "
            f"(it defines: {', '.join(defined) or 'none'})"
        )
    methods = {n.name for n in found.body if isinstance(n, ast.FunctionDef)}
    inherits = bool(found.bases)  # predict() may come from a base class: the node checks at load
    if "predict" not in methods and not inherits:
        raise CompileError(f"endpoints.{ep.id}.class: {ep.cls} in {ep.file} has no predict(self, df) method")
    return FunctionCode(root=folder / rel.parts[0], path="/".join((CODE_DIR, *rel.parts[1:])), function=ep.cls)


def check_function(ep: FunctionEndpoint, folder: Path) -> FunctionCode:
    rel, tree = _parse(ep.file, folder, f"endpoints.{ep.id}.file")
    fn = _find(tree, ep.function)
    if fn is None:
        defined = sorted(n.name for n in tree.body if isinstance(n, ast.FunctionDef))
        raise CompileError(
            f"endpoints.{ep.id}.function: {ep.file} defines no top-level function "
            f"{ep.function!r} (it defines: {', '.join(defined) or 'none'})"
        )
    if isinstance(fn, ast.AsyncFunctionDef):
        raise CompileError(
            f"endpoints.{ep.id}.function: {ep.function!r} in {ep.file} is async; endpoints call plain functions"
        )
    for i, query in enumerate(ep.test_queries or []):
        problem = _binding_problem(fn, query)
        if problem:
            raise CompileError(f"endpoints.{ep.id}.test_queries[{i}]: {problem} for {ep.function}()")
    return FunctionCode(
        root=folder / rel.parts[0],
        path="/".join((CODE_DIR, *rel.parts[1:])),
        function=ep.function,
    )


def _find(tree: ast.Module, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    found = None
    for node in tree.body:  # the last definition wins, as at import time
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            found = node
    return found


def _binding_problem(fn: ast.FunctionDef | ast.AsyncFunctionDef, query: dict[str, Any]) -> str:
    """Would `fn(**query)` bind? Checked on the signature alone."""
    a = fn.args
    positional = [*a.posonlyargs, *a.args]
    named = {p.arg for p in (*a.args, *a.kwonlyargs)}
    if a.kwarg is None:
        unknown = [k for k in query if k not in named]
        if unknown:
            return f"unexpected argument(s) {', '.join(map(repr, unknown))}"
    first_default = len(positional) - len(a.defaults)
    required = [p.arg for i, p in enumerate(positional) if i >= len(a.posonlyargs) and i < first_default]
    required += [p.arg for p, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is None]
    if a.posonlyargs[: max(first_default, 0)]:
        return "positional-only parameters without defaults cannot be passed by name"
    missing = [r for r in required if r not in query]
    if missing:
        return f"missing argument(s) {', '.join(map(repr, missing))}"
    return ""


def collect_code(codes: list[tuple[str, FunctionCode]]) -> dict[str, Path]:
    """Package path -> file for the one code folder all function endpoints share."""
    roots = {c.root for _, c in codes}
    if len(roots) > 1:
        listed = ", ".join(f"{eid}: {c.root.name}/" for eid, c in codes)
        raise CompileError(f"function and custom-prediction endpoints must share one code folder, got {listed}")
    files: dict[str, Path] = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if not path.is_file() or path.suffix in _SKIP_SUFFIXES:
                continue
            if any(p in _SKIP_DIRS or p.startswith(".") for p in rel.parts):
                continue
            files["/".join((CODE_DIR, *rel.parts))] = path
    return files


FOLDERS_DIR = "folders"


def collect_folders(folders: list[Path], service_folder: Path) -> tuple[dict[str, Path], dict[Path, str]]:
    """Package path -> file for every managed folder, and each folder's package path
    (`folders/<its path in the service folder>`)."""
    files: dict[str, Path] = {}
    where: dict[Path, str] = {}
    base = service_folder.resolve()
    for folder in dict.fromkeys(folders):
        target = "/".join((FOLDERS_DIR, *folder.relative_to(base).parts))
        where[folder] = target
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if path.is_file() and "__pycache__" not in rel.parts:
                files["/".join((target, *rel.parts))] = path
    return files, where
