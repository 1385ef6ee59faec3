"""False alarms and detection on generated nights, with the signal and policy functions directly
(a tiny TF-IDF model trained on reference-distribution data; no MLflow, no Airflow).

The domain classifier runs on character n-grams here (``use_encoder=False``) to keep 20 nights
fast on shared CPUs; the MiniLM path is covered by the slow tests at the end and the DAG test.
"""

from __future__ import annotations

import pytest

from fbk_tasks.drift.compute import FEATURES_CHAR, FEATURES_MINILM, compute_signals
from fbk_tasks.drift.policy import decide
from .conftest import NIGHT_DS

NULL_SEEDS = range(100, 120)  # 20 nights drawn from the reference distribution

# shift -> signals that must fire (others may fire too)
SHIFTS = {
    "new_category": {"category_mix_psi"},
    "new_complaints": {"novel_term_share"},
    "sentiment_flip": {"prediction_psi"},
    "language_shift": {"language_mix_psi"},
}


def _run(world, night, use_encoder=False):
    m = compute_signals(world["reference"], night, world["drift"], use_encoder=use_encoder)
    return m, decide(m.results, world["drift"], len(night), NIGHT_DS)


def test_one_reference_night_is_quiet_and_a_flip_fires(drift_world, night_of):
    m, d = _run(drift_world, night_of(100))
    assert not d.retrain and [r for r in m.results if r.fired] == []
    m, d = _run(drift_world, night_of(7, sentiment_flip=True))
    assert d.retrain and "prediction_psi" in d.fired_signals


@pytest.mark.slow
def test_no_false_alarms_over_20_reference_nights(drift_world, night_of):
    fired = {}
    for seed in NULL_SEEDS:
        m, d = _run(drift_world, night_of(seed))
        assert not d.retrain, (seed, d.reasons)
        fired[seed] = [f"{r.signal}[{r.scope}]={r.value:.3f}" for r in m.results if r.fired]
    assert not any(fired.values()), fired


@pytest.mark.slow
@pytest.mark.parametrize("shift", sorted(SHIFTS))
def test_each_shift_requests_a_retrain(drift_world, night_of, shift):
    m, d = _run(drift_world, night_of(7, **{shift: True}))
    assert d.retrain, (shift, {r.signal: r.value for r in m.results})
    assert SHIFTS[shift] <= set(d.fired_signals), (shift, d.fired_signals)
    domain = next(r for r in m.results if r.signal == "domain_auc")
    assert domain.detail["features"] == FEATURES_CHAR


@pytest.mark.slow
def test_minilm_domain_classifier_quiet_then_fires(drift_world, night_of):
    """The real English path: MiniLM embeddings (small samples), and the switch to character
    n-grams for a Chinese-dominant night."""
    world = {**drift_world, "drift": drift_world["drift"].model_copy(update={"domain_max_rows": 120})}
    ref = world["reference"].iloc[:400].reset_index(drop=True)
    world["reference"] = ref
    m, d = _run(world, night_of(101, n=250), use_encoder=True)
    auc = next(r for r in m.results if r.signal == "domain_auc")
    assert auc.detail["features"] == FEATURES_MINILM and auc.value < world["drift"].auc_threshold
    assert not d.retrain, d.reasons
    m, d = _run(world, night_of(7, n=250, language_shift=True), use_encoder=True)
    auc = next(r for r in m.results if r.signal == "domain_auc")
    unk = next(r for r in m.results if r.signal == "unk_rate_increase")
    assert auc.detail["features"] == FEATURES_CHAR and "Chinese-dominant" in auc.detail["why"]
    assert d.retrain and unk.fired and unk.value > 0.05


def test_tiny_and_empty_nights_never_request(drift_world, night_of):
    for n in (0, 5):
        night = night_of(3, n=n) if n else night_of(3, n=5).iloc[:0]
        m, d = _run(drift_world, night)
        assert not d.retrain and d.status == "too_few_rows"


def test_a_shift_in_one_category_fires_in_its_scope_only(drift_world, night_of):
    """Per-category scopes: the model's predictions flip in one category only (1,200-row night,
    so each category has >= min_category_rows)."""
    night = night_of(11, n=1200).copy()
    books = night["product_category"] == "books"
    night.loc[books, "predicted"] = "negative"
    m, _ = _run(drift_world, night)
    scoped = {(r.signal, r.scope): r for r in m.results}
    assert scoped[("prediction_psi", "category=books")].fired
    assert scoped[("agreement_drop", "category=books")].fired
    assert not scoped[("prediction_psi", "category=home")].fired
    assert not scoped[("prediction_psi", "all")].severe


def test_agreement_drop_compares_the_night_with_rows_the_model_did_not_train_on(drift_world, night_of):
    """The reference is the champion's training partitions: the rows it trained on agree with
    their labels at training accuracy, which would read as a drop on every new night. Rows marked
    ``trained_on`` are left out of the reference agreement; unknown (None) means all rows count."""
    import pandas as pd

    from fbk_tasks.drift.testing import generated_frame, with_predictions

    trained = with_predictions(generated_frame(1200, seed=1, ds="2026-02-20"), drift_world["model"])
    held = drift_world["reference"]
    night = night_of(100)

    def agreement_drop(reference):
        m, _ = _run({**drift_world, "reference": reference}, night)
        (r,) = [x for x in m.results if x.signal == "agreement_drop" and x.scope == "all"]
        return r

    mixed = agreement_drop(pd.concat([trained.assign(trained_on=True), held.assign(trained_on=False)], ignore_index=True))
    alone = agreement_drop(held)
    assert mixed.detail["reference_rows_used"] == "not trained on" and mixed.detail["reference_rows"] == alone.detail["reference_rows"]
    assert mixed.value == pytest.approx(alone.value)
    unknown = agreement_drop(pd.concat([trained, held], ignore_index=True).assign(trained_on=None))
    assert unknown.detail["reference_rows_used"].startswith("all") and unknown.detail["reference_rows"] > 2 * 1000
    assert unknown.value > alone.value  # the training rows' higher agreement is what it would have measured
