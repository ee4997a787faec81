"""The JSON HTTP transport: one aiohttp session, keep-alive connections, bodies pre-encoded.

Each body is encoded with orjson once, up front; the URL is parsed once. The connector is
sized to the run: one connection per closed-loop client (each client keeps its connection
alive across requests), or up to the in-flight cap in open loop, where connections are
opened as they are needed (a stalled server makes the generator open more, as real callers
would). The answer body is read in full before the call counts as answered.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson
from yarl import URL

from loadtest.config import Target
from loadtest.transport import error_key


class HttpTransport:
    """Sends pre-encoded JSON bodies to one URL; implements :class:`Transport`."""

    def __init__(self, target: Target, bodies: Sequence[Any], *, connections: int, timeout: float) -> None:
        self._url = URL(target.http_url())
        self._method = target.method.upper()
        self._bodies = [orjson.dumps(b) for b in bodies]
        headers = {"Content-Type": "application/json"}
        if target.api_key:
            token = base64.b64encode(f"{target.api_key}:".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        connector = aiohttp.TCPConnector(
            limit=connections,
            limit_per_host=connections,
            keepalive_timeout=60.0,
            ttl_dns_cache=None,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            auto_decompress=False,
            raise_for_status=False,
        )

    async def call(self, slot: int, index: int) -> str | None:
        try:
            async with self._session.request(self._method, self._url, data=self._bodies[index]) as resp:
                await resp.read()
                status = resp.status
        except TimeoutError:
            return "timeout"
        except aiohttp.ClientError as exc:
            return error_key("conn", exc)
        except OSError as exc:
            return error_key("conn", exc)
        return None if status < 400 else f"http {status}"

    async def aclose(self) -> None:
        await self._session.close()
        # Lets the connector's transports finish closing before the loop goes away.
        await asyncio.sleep(0)
