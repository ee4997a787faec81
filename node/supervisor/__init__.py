"""The supervisor: pools of worker processes per endpoint, fair queues, fault recovery."""
