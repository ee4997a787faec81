"""One line, not a traceback, for a connection that does not speak HTTP/1.

aiohttp logs a request it cannot parse as an error with its traceback (logger
`aiohttp.server`). On a public port that is the normal noise of scanners and of clients
pointed at the wrong port: a gRPC client on the HTTP port sends HTTP/2's preface
(`PRI * HTTP/2.0`), a TLS client a handshake. The client already got its 400 and the
connection closed; the log only needs to say who and what.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger("node.http")


class _MalformedRequests(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        text = str(exc.message).strip().splitlines()[0] if exc.message else type(exc).__name__
        if "PRI" in str(exc.message):
            text = "HTTP/2 preface (a gRPC client on the HTTP port?)"
        log.warning("malformed HTTP request from %s answered 400: %s", peer, text)
        return False


_FILTER = _MalformedRequests()


def quiet_malformed_requests() -> None:
    """Installs the filter (once) on aiohttp's server logger."""
    logger = logging.getLogger("aiohttp.server")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
