"""The Open Inference Protocol (KServe V2, with Triton's extensions) on HTTP and gRPC.

`model` (naming, metadata, tensors <-> predict-multi items), `tensors` (the wire forms of
tensors), `plane` (the operations, over the :class:`~node.dataplane.DataPlane`), and the two
thin transports `http` and `grpc`.
"""
