"""The identity of a pool: which endpoint of which generation of which service it serves.

The registry makes one per pool it loads; the supervisor files pools by it, metrics label
by its fields and logs print it (`fraud/score@v3`, `fraud/score@v3~2#enrich0`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PoolKey:
    service: str
    endpoint: str
    generation: str
    # >0: the same version loaded again, with new content, beside the one that serves
    instance: int = 0
    # The SQL pool reading the endpoint's enrichment table at this index (see node.lookup)
    enrich: int | None = None

    def __str__(self) -> str:
        text = f"{self.service}/{self.endpoint}@{self.generation}"
        if self.instance:
            text += f"~{self.instance}"
        if self.enrich is not None:
            text += f"#enrich{self.enrich}"
        return text

    @property
    def endpoint_id(self) -> str:
        """What the pool's workers serve: the endpoint, or `endpoint.enrichN`; the name of
        its pool settings too (DATA_DIR/config/services/SERVICE/ENDPOINT_ID.json)."""
        return self.endpoint if self.enrich is None else f"{self.endpoint}.enrich{self.enrich}"

    def enrichment(self, index: int) -> PoolKey:
        return dataclasses.replace(self, enrich=index)
