"""The query log: one JSON line per query, for audit and drift analysis.

Lines are formatted on the request path (cheap: one orjson call) and handed to a bounded
queue; a thread writes them to `DIR/queries.jsonl`, rotated by size
(`logging.handlers.RotatingFileHandler`). Serving never waits on the disk: a full queue
(a slow disk) or a failing write (a full disk) drops the line and counts it
(`apinode_querylog_dropped_total`). A clean shutdown flushes every queued line.

Per service (a :class:`~apz.specs.QueryLogSpec`, read by `apz.manifest.parse_query_log`),
from `query_log:` in service.yaml, overridden by
`DATA_DIR/config/services/<SERVICE>/query_log.json`: `enabled` (default true when the node
has `--query-log`), `sample_rate` (0..1, default 1), `exclude` (feature names left out,
e.g. card numbers).
"""

from __future__ import annotations

import datetime as dt
import logging
import logging.handlers
import queue
import random
from pathlib import Path
from typing import Any

import orjson

from apz.specs import QueryLogSpec

log = logging.getLogger("node.querylog")


class _Handler(logging.handlers.RotatingFileHandler):
    def __init__(self, owner: QueryLog, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner

    def handleError(self, record: logging.LogRecord) -> None:
        self.owner.dropped += 1  # a full or failing disk: count, never raise into serving


class _Queue(logging.handlers.QueueHandler):
    def __init__(self, owner: QueryLog, q: queue.Queue[Any]) -> None:
        super().__init__(q)
        self.owner = owner

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.owner.dropped += 1

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record  # the message is already the finished line


class QueryLog:
    def __init__(
        self, directory: Path, *, max_bytes: int = 64 * 1024**2, backups: int = 10, queue_size: int = 100_000
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "queries.jsonl"
        self.dropped = 0
        self.enqueued = 0
        self._q: queue.Queue[Any] = queue.Queue(queue_size)
        self._handler = _Handler(self, self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._front = _Queue(self, self._q)
        self._listener = logging.handlers.QueueListener(self._q, self._handler)
        self._listener.start()
        self.policies: dict[str, QueryLogSpec] = {}

    def set_policy(self, service: str, policy: QueryLogSpec) -> None:
        self.policies[service] = policy

    def record(self, entry: dict[str, Any]) -> None:
        policy = self.policies.get(entry["service"], QueryLogSpec())
        if not policy.enabled or (policy.sample_rate < 1 and random.random() >= policy.sample_rate):
            return
        if policy.exclude:
            for key in ("features", "enriched", "arguments", "data"):
                feats = entry.get(key)
                if isinstance(feats, dict):
                    entry[key] = {k: v for k, v in feats.items() if k not in policy.exclude}
            for key in ("items", "enrichedItems", "data"):
                items = entry.get(key)
                if isinstance(items, list):
                    entry[key] = [
                        {k: v for k, v in f.items() if k not in policy.exclude} if isinstance(f, dict) else f
                        for f in items
                    ]
        entry["time"] = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
        line = orjson.dumps(entry, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS, default=str).decode()
        record = logging.LogRecord("query", logging.INFO, "", 0, line, None, None)
        self._front.enqueue(record)
        self.enqueued += 1

    def close(self) -> None:
        """Writes every queued line, then closes the file (on a clean shutdown)."""
        self._listener.stop()
        self._handler.close()
