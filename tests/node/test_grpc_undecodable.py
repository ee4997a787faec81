"""Every gRPC method the node serves answers an undecodable message INVALID_ARGUMENT.

The methods come from the node's own server reflection, so a service registered without
the guard (as the Open Inference Protocol service once was) fails this test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.inproc import run_node
from tests.packages import function_package

GARBAGE = (b"\xff\xff\xff\xff\x0f", b"\x0a\x05ab")  # wire type 7 (none such); a length past the end


def _ident(x: bytes) -> bytes:
    return x


def served_methods(channel: grpc.Channel) -> Iterator[tuple[str, bool, bool]]:
    """(`/package.Service/Method`, client streaming, server streaming) of every service."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    def ask(req: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
        return next(iter(stub.ServerReflectionInfo(iter([req]), timeout=30)))

    services = [
        s.name for s in ask(reflection_pb2.ServerReflectionRequest(list_services="")).list_services_response.service
    ]
    assert len(services) == 5, services  # apinode, admin, OIP, health, reflection
    for name in services:
        answer = ask(reflection_pb2.ServerReflectionRequest(file_containing_symbol=name))
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in answer.file_descriptor_response.file_descriptor_proto
        ]
        found = [
            (f"/{f.package}.{s.name}" if f.package else f"/{s.name}", s)
            for f in files
            for s in f.service
            if (f"{f.package}.{s.name}" if f.package else s.name) == name
        ]
        assert len(found) == 1, name
        prefix, service = found[0]
        for m in service.method:
            yield f"{prefix}/{m.name}", m.client_streaming, m.server_streaming


def test_every_method_of_every_service_refuses_undecodable_messages(tmp_path: Path) -> None:
    pkg = function_package(tmp_path, {"e": {"function": "pid"}})
    with run_node(tmp_path / "data", pkg) as node, grpc.insecure_channel(node.grpc) as plain:
        # the admin key on every call: an admin method checks the key before it reads a message
        ch = node.admin_channel(plain)
        methods = list(served_methods(ch))
        assert "/inference.GRPCInferenceService/ModelInfer" in {m for m, _, _ in methods}
        assert len(methods) > 30
        for method, client_streaming, server_streaming in methods:
            for raw in GARBAGE:
                with pytest.raises(grpc.RpcError) as err:
                    if client_streaming and server_streaming:
                        list(ch.stream_stream(method, _ident, _ident)(iter([raw]), timeout=30))
                    elif client_streaming:
                        ch.stream_unary(method, _ident, _ident)(iter([raw]), timeout=30)
                    elif server_streaming:
                        list(ch.unary_stream(method, _ident, _ident)(raw, timeout=30))
                    else:
                        ch.unary_unary(method, _ident, _ident)(raw, timeout=30)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, err.value.details())
                assert "the request cannot be decoded" in (err.value.details() or ""), method
        assert node.running()
        assert "Traceback" not in node.log()
