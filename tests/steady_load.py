"""A steady load on a real node for fault tests: closed-loop HTTP clients counting every
answer, and /ready polled meanwhile. Tests print its figures (`pytest -s`)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import aiohttp


class Load:
    """A steady closed-loop HTTP load of `clients` concurrent callers (aiohttp), counting
    every answer by errorType, the requests never answered, and /ready's 503s meanwhile."""

    def __init__(self, url: str, ready_url: str, body: dict[str, Any], clients: int) -> None:
        self.url, self.ready_url, self.body, self.clients = url, ready_url, body, clients
        self.sent = 0
        self.outcomes: Counter[str] = Counter()
        self.lost: list[str] = []
        self.not_ready = 0
        self.stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(120)

    async def _client(self, session: aiohttp.ClientSession) -> None:
        while not self.stop.is_set():
            self.sent += 1
            try:
                async with session.post(self.url, json=self.body) as r:
                    body = await r.json()
                    self.outcomes["ok" if r.status == 200 else body.get("errorType", str(r.status))] += 1
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                self.lost.append(repr(exc))

    async def _ready(self, session: aiohttp.ClientSession) -> None:
        while not self.stop.is_set():
            try:
                async with session.get(self.ready_url) as r:
                    self.not_ready += r.status != 200
            except (aiohttp.ClientError, TimeoutError):  # unreachable is not ready either
                self.not_ready += 1
            await asyncio.sleep(0.02)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(self._ready(session), *(self._client(session) for _ in range(self.clients)))

    @property
    def failed(self) -> int:
        return sum(n for kind, n in self.outcomes.items() if kind != "ok")

    def report(self, what: str) -> str:
        line = f"{what}: sent {self.sent}, failed {self.failed} {dict(self.outcomes)}, lost {len(self.lost)}"
        print(line)
        return line
