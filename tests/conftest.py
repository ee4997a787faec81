"""Set before any test module imports grpc."""

import os

# The test process forks only to exec (nodes, workers of in-process nodes, tools) while gRPC's
# threads run: gRPC's fork handlers are moot there, as `apinode serve` sets for itself (node.cli).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
