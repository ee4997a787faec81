"""The Open Inference Protocol (KServe V2, with Triton's extensions) on HTTP and gRPC.

`model` (naming, metadata, tensors -> the columns of a predict-multi, results -> tensors), `tensors` (the wire forms of
tensors), `plane` (the operations, over the :class:`~node.dataplane.DataPlane`), and the two
thin transports `http` and `grpc`.
"""
