from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg import PgServer, start_postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    """A private PostgreSQL server for this test process (see tests/pg.py)."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
