"""Fixtures for scoring tests: a real MLflow SQLite registry with a keyword pyfunc champion
and real curated Parquet partitions."""

from __future__ import annotations

import pytest

TEXTS_DAY1 = ["good phone", "bad battery", "   ", "it is ok", "RAISE_ERROR please", "great great screen",
              "terrible support", "love it", "", "works"]
TEXTS_DAY2 = ["excellent value", "broken on arrival", "fine", "hate the colour", "perfect"]


@pytest.fixture
def lake(settings):
    """Two curated partitions and a registered champion (version 1)."""
    from fbk_tasks.score.testing import register_keyword_model, write_curated

    write_curated(settings, "2026-03-01", TEXTS_DAY1)
    write_curated(settings, "2026-03-02", TEXTS_DAY2, start_row=100)
    version = register_keyword_model(settings)
    return {"settings": settings, "version": version, "n_reviews": len(TEXTS_DAY1) + len(TEXTS_DAY2)}
