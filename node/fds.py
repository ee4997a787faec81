"""File descriptors: raise the soft limit at start, and size the connection caps below it.

Clients hold one descriptor per connection; the node itself needs descriptors to spawn a
worker (a socketpair and pipes), to answer `/ready`, to write the query log. If connections
could use them all, a flood of idle connections would leave the node unable to replace a
dead worker. So the HTTP and gRPC connection caps together leave `reserve` descriptors free.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("node")

RESERVE = 512  # the node's own use (listeners, gRPC's threads, workers' sockets and pipes, logs)


def raise_nofile() -> int:
    """Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:  # a sandbox may refuse: keep what we have
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_cap(requested: int, nofile: int) -> int:
    """The per-server connection cap (HTTP and gRPC each get it) that leaves a reserve free."""
    reserve = min(RESERVE, nofile // 2)
    fits = max(1, (nofile - reserve) // 2)
    if requested > fits:
        log.warning(
            "--max-connections %d lowered to %d: the open-file limit is %d and %d descriptors stay in "
            "reserve for workers and health checks (raise the hard limit, e.g. LimitNOFILE=, to allow more)",
            requested,
            fits,
            nofile,
            reserve,
        )
        return fits
    return requested
