"""The apinode compiler: a service folder -> a package (.apz) the node serves.

    service.yaml  ──spec.py──▶ ServiceSpec
    model.joblib  ──inputs.py, schema.py──▶ ModelInfo + features
                  ──onnx_convert.py (+ _skl2onnx_fixes.py, boosters.py)──▶ ONNX
                  ──parity.py (rows.py feeds it as the node does; diagnose.py
                    names the diverging step of a failure)──▶ ParityResult
    code/         ──functions.py (ast only, never imported)──▶ code/ files
    all of it     ──build.py──▶ apz.archive.write_package ──▶ <service>-<version>.apz

`compile_service` is the library entry point, `cli.register` the `apinode compile` command.
Heavy libraries (scikit-learn, skl2onnx, onnxruntime) load only once service.yaml is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from compiler.errors import CompileError

if TYPE_CHECKING:
    from compiler.build import CompileReport, compile_service

__all__ = ["CompileError", "CompileReport", "compile_service"]


def __getattr__(name: str) -> Any:
    if name in ("compile_service", "CompileReport"):
        from compiler import build

        return getattr(build, name)
    raise AttributeError(name)
