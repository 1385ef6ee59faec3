"""Drift fixtures: a reference drawn from the generator, a tiny TF-IDF model trained on it, and
small DriftSettings so that tests stay fast on shared CPUs."""

from __future__ import annotations

import pytest

REF_DS = "2026-03-01"
NIGHT_DS = "2026-03-08"


@pytest.fixture(scope="session")
def drift_world():
    from fbk_tasks.drift.testing import fit_tiny_model, generated_frame, with_predictions
    from fbk_tasks.settings import DriftSettings

    model = fit_tiny_model(generated_frame(1200, seed=1, ds="2026-02-20"))
    reference = with_predictions(generated_frame(1200, seed=2, ds=REF_DS), model)
    drift = DriftSettings(domain_max_rows=300, reference_max_rows=1200)
    return {"model": model, "reference": reference, "drift": drift}


@pytest.fixture(scope="session")
def night_of(drift_world):
    """night_of(seed, **DriftSpec kwargs) -> a scored night frame of 400 reviews."""
    from fbk_tasks.demo.generator import DriftSpec
    from fbk_tasks.drift.testing import generated_frame, with_predictions

    def make(seed: int, n: int = 400, **spec):
        return with_predictions(generated_frame(n, seed=seed, ds=NIGHT_DS, drift=DriftSpec(**spec) if spec else None),
                                drift_world["model"])

    return make
