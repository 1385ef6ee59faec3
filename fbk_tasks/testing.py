"""Helpers for the project's tests (kept in the package so every test folder can import them)."""

from __future__ import annotations

import os
from pathlib import Path

from fbk_tasks.settings import PROJECT_ROOT

SHARED_DATASETS = PROJECT_ROOT.parent / "shared" / "datasets"


def shared_dataset(name: str) -> Path:
    """Path of a real dataset in ../shared/datasets; skip the test visibly when it is absent
    (and fail in CI, where it must exist)."""
    import pytest

    path = SHARED_DATASETS / name
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing in CI, where ../shared/datasets must exist")
        pytest.skip(f"real dataset {path} not present (../shared/datasets is absent on this machine)")
    return path
