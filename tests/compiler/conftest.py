from __future__ import annotations

from collections.abc import Iterator

import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tests run in parallel on few cores: OpenMP threads (HistGradientBoosting) would
    # spend their time waiting on each other at barriers.
    with threadpool_limits(limits=1):
        yield
