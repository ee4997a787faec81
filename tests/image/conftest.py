"""The image tests run last: their build (minutes on a new machine) starts in the background
in tests/setup_services.sh, and the rest of the suite runs meanwhile instead of waiting."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    image = [i for i in items if i.nodeid.startswith("tests/image/test_image.py")]
    if image:
        rest = [i for i in items if not i.nodeid.startswith("tests/image/test_image.py")]
        items[:] = rest + image
