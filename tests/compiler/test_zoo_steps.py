"""The zoo's "step" groups (each model as a pipeline step), apart from tests/compiler/test_zoo.py
so that `--dist loadscope` runs them on another worker than the estimator groups."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compiler.test_zoo import STEP_GROUPS, served_group_matches_sklearn


@pytest.mark.parametrize(("task", "kind"), STEP_GROUPS, ids=[f"{t}-{k}" for t, k in STEP_GROUPS])
def test_zoo_group_served_matches_sklearn(tmp_path: Path, task: str, kind: str) -> None:
    served_group_matches_sklearn(tmp_path, task, kind)
