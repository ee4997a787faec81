"""The descriptor pool of the Open Inference Protocol's messages (written by node/_proto_gen.py).

Triton's `tritonclient.grpc` registers its own `inference` package (a superset of ours, from
other files) in protobuf's default pool, and one pool cannot hold both: apart, a process (a
test, a tool) may use Triton's client and a node together.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
