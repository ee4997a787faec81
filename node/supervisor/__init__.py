"""The supervisor: pools of worker processes per endpoint, fair queues, fault recovery.

Dependencies point one way: `supervisor` (upkeep, the pools by `PoolKey`) -> `pool` (queue,
dispatch, batching) -> `crew` (a pool's processes) -> `scaling` (when to grow, retire, back
off), `slots` (the node-wide cap and CPU budget), `process` (one worker) -> `channel`
(framing) -> :mod:`node.worker.protocol`.
"""
