"""Shared fixtures.

Airflow reads its configuration when first imported, so the environment for a throw-away
SQLite-backed Airflow home is set here, at conftest import, before any test imports airflow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fbk_tasks.testing import shared_dataset  # noqa: F401  (re-exported for test modules)

ROOT = Path(__file__).resolve().parent.parent

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="fbk-airflow-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }
)
for key in [k for k in os.environ if k.startswith("FBK_")]:
    del os.environ[key]
# Airflow 3 puts the DAG bundle's root on sys.path when it parses or runs a DAG (BundleDagBag),
# so DAG files can share dags/_common.py; a plain DagBag in tests needs the same.
if str(ROOT / "dags") not in sys.path:
    sys.path.append(str(ROOT / "dags"))


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite Airflow metadata database in a temporary AIRFLOW_HOME."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        env=os.environ.copy(),
        capture_output=True,
    )
    return _AIRFLOW_HOME


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """Settings on a fresh data root under tmp_path (everything else at its defaults)."""
    from fbk_tasks.settings import load_settings

    monkeypatch.setenv("FBK_DATA_DIR", str(tmp_path / "data"))
    return load_settings()
