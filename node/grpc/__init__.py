"""The gRPC transport (grpc.aio): the user API, the admin API, health and reflection."""
