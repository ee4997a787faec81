"""`inference.GRPCInferenceService`: the Open Inference Protocol over gRPC, thin.

Each RPC decodes its message, calls the :class:`~node.oip.plane.OipPlane`, encodes;
errors get the status codes of the error table through :func:`node.grpc.servicer.mapped`
(in `ModelStreamInfer`, a failed request, even by a bug of ours, is a response with
`error_message`, and the stream goes on). Inputs come in `raw_input_contents` (one entry per input, as tritonclient sends
them) or in typed contents; outputs go back in `raw_output_contents`, as Triton answers.

The generated stubs share Triton's proto package `inference`, so this module and
`tritonclient.grpc` cannot be imported by one process: only :mod:`node.server` imports it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import json_format

from node import errors, ops
from node._proto.inference import grpc_service_pb2 as pb
from node._proto.inference import grpc_service_pb2_grpc, model_config_pb2
from node.grpc.servicer import caller, mapped, message_error
from node.oip import tensors
from node.oip.plane import OipPlane

log = logging.getLogger("node.oip")
Context = grpc.aio.ServicerContext[Any, Any]
_OUTPUT = pb.ModelInferResponse.InferOutputTensor


def _param(p: pb.InferParameter) -> Any:
    kind = p.WhichOneof("parameter_choice")
    return getattr(p, kind) if kind else None


def _inputs(request: pb.ModelInferRequest) -> list[tensors.Tensor]:
    raw, inputs = request.raw_input_contents, request.inputs
    if raw:
        if len(raw) != len(inputs):
            raise errors.BadRequest(f"{len(raw)} raw_input_contents for {len(inputs)} inputs")
        return [tensors.from_raw(t.name, t.datatype, t.shape[:], data) for t, data in zip(inputs, raw, strict=True)]
    return [tensors.from_contents(t.name, t.datatype, t.shape[:], t.contents) for t in inputs]


class InferenceServicer(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, plane: OipPlane) -> None:
        self.plane = plane

    @mapped
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.plane.live())

    @mapped
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.plane.ready())

    @mapped
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self.plane.server_metadata())

    @mapped
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(
            ready=self.plane.model_ready(request.name, request.version, caller(context, "oip-grpc"))
        )

    @mapped
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Context) -> pb.ModelMetadataResponse:
        doc = self.plane.model_metadata(request.name, request.version, caller(context, "oip-grpc"))
        doc.pop("parameters", None)  # no field for them in the proto
        return json_format.ParseDict(doc, pb.ModelMetadataResponse())  # type: ignore[no-any-return]

    @mapped
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Context) -> pb.ModelConfigResponse:
        doc = self.plane.model_config(request.name, request.version, caller(context, "oip-grpc"))
        return pb.ModelConfigResponse(config=json_format.ParseDict(doc, model_config_pb2.ModelConfig()))

    @mapped
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Context) -> pb.ModelStatisticsResponse:
        stats = self.plane.statistics(request.name, request.version, caller(context, "oip-grpc"))
        return json_format.ParseDict({"model_stats": stats}, pb.ModelStatisticsResponse())  # type: ignore[no-any-return]

    @mapped
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Context) -> pb.RepositoryIndexResponse:
        models = [pb.RepositoryIndexResponse.ModelIndex(**e) for e in self.plane.index(request.ready)]
        return pb.RepositoryIndexResponse(models=models)

    async def _infer(self, request: pb.ModelInferRequest, who: ops.Caller) -> pb.ModelInferResponse:
        result = await self.plane.infer(
            request.model_name,
            request.model_version,
            _inputs(request),
            who,
            request_id=request.id,
            parameters={k: _param(v) for k, v in request.parameters.items()},
            outputs=[o.name for o in request.outputs] or None,
        )
        response = pb.ModelInferResponse(
            model_name=result.model_name,
            model_version=result.model_version,
            id=result.id,
            outputs=[_OUTPUT(name=t.name, datatype=t.datatype, shape=t.shape) for t in result.outputs],
        )
        # (extended, not given to the constructor: protobuf copies a list argument slower)
        response.raw_output_contents.extend([tensors.to_raw(t) for t in result.outputs])
        return response

    @mapped
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        return await self._infer(request, caller(context, "oip-grpc"))

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        # One at a time, in order; the node batches across streams.
        who = caller(context, "oip-grpc-stream")
        async for request in request_iterator:
            try:
                response = await self._infer(request, who)
            except Exception as exc:  # this request fails, the stream goes on
                _, message = message_error(exc, "ModelStreamInfer")
                yield pb.ModelStreamInferResponse(
                    error_message=message, infer_response=pb.ModelInferResponse(id=request.id)
                )
            else:
                yield pb.ModelStreamInferResponse(infer_response=response)
