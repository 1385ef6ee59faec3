"""The retrain policy on hand-made signal values (no data, no models)."""

from __future__ import annotations

import math

import pytest

from fbk_tasks.drift.policy import SignalResult, apply_thresholds, decide
from fbk_tasks.settings import DriftSettings

D = DriftSettings(min_batch_rows=200, psi_threshold=0.2, severe_psi_threshold=0.5, auc_threshold=0.7,
                  severe_auc_threshold=0.9, signals_required=2, cooldown_days=3)


def _results(**values):
    rs = [SignalResult(name.split("__")[0], name.split("__")[1] if "__" in name else "all", v) for name, v in values.items()]
    return apply_thresholds(rs, D)


def test_nothing_fires_below_thresholds():
    d = decide(_results(prediction_psi=0.05, domain_auc=0.55, agreement_drop=0.01), D, 1000, "2026-03-08")
    assert not d.retrain and d.status == "no_drift" and d.fired_signals == []


def test_one_ordinary_signal_is_not_enough():
    d = decide(_results(prediction_psi=0.3, domain_auc=0.55), D, 1000, "2026-03-08")
    assert not d.retrain and d.status == "below_threshold" and d.fired_signals == ["prediction_psi"]


def test_two_agreeing_signals_fire():
    d = decide(_results(prediction_psi=0.3, domain_auc=0.75), D, 1000, "2026-03-08")
    assert d.retrain and d.status == "retrain" and d.fired_signals == ["domain_auc", "prediction_psi"]
    assert d.numbers == {"prediction_psi[all]": 0.3, "domain_auc[all]": 0.75}


def test_one_signal_in_two_scopes_counts_once():
    d = decide(_results(prediction_psi=0.3, **{"prediction_psi__category=books": 0.4}), D, 1000, "2026-03-08")
    assert not d.retrain and d.fired_signals == ["prediction_psi"]


def test_severe_signal_fires_alone():
    d = decide(_results(prediction_psi=0.6, domain_auc=0.5), D, 1000, "2026-03-08")
    assert d.retrain and d.severe_signals == ["prediction_psi"] and "(severe)" in d.reasons[0]


def test_minimum_batch_size():
    d = decide(_results(prediction_psi=0.9, domain_auc=0.95), D, 199, "2026-03-08")
    assert not d.retrain and d.status == "too_few_rows"
    assert decide(_results(prediction_psi=0.9), D, 200, "2026-03-08").retrain


@pytest.mark.parametrize("last, retrain", [("2026-03-08", False), ("2026-03-06", False), ("2026-03-05", True),
                                           ("2026-03-09", True), (None, True)])
def test_cooldown_after_retrain(last, retrain):
    d = decide(_results(prediction_psi=0.9), D, 1000, "2026-03-08", last_retrain=last)
    assert d.retrain is retrain
    if not retrain:
        assert d.status == "cooldown" and d.fired_signals == ["prediction_psi"]


def test_unmeasurable_signal_never_fires():
    rs = _results(agreement_drop=None, domain_auc=float("nan"))
    assert not any(r.fired for r in rs)
    assert math.isnan(rs[1].value)


def test_settings_validate_shares_and_severe_order():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        DriftSettings(auc_threshold=1.5)
    with pytest.raises(ValidationError):
        DriftSettings(psi_threshold=0.6, severe_psi_threshold=0.5)
    with pytest.raises(ValidationError):
        DriftSettings(novel_term_share=-0.1)


def test_a_later_request_supersedes_a_late_night():
    d = decide(_results(prediction_psi=0.9), D, 1000, "2026-03-04", later_request="2026-03-06")
    assert not d.retrain and d.status == "superseded" and "2026-03-06" in d.reasons[-1]
    assert decide(_results(prediction_psi=0.9), D, 1000, "2026-03-08", later_request="2026-03-06").retrain  # not later
    quiet = decide(_results(prediction_psi=0.05), D, 1000, "2026-03-04", later_request="2026-03-06")
    assert quiet.status == "no_drift"  # nothing to supersede


def test_a_late_night_counts_its_cooldown_to_the_latest_night():
    # promotion on 03-07, night 03-04 checked late while 03-08 is the latest: inside the cooldown
    d = decide(_results(prediction_psi=0.9), D, 1000, "2026-03-04", last_retrain="2026-03-07", asof="2026-03-08")
    assert not d.retrain and d.status == "cooldown" and "checked late" in d.reasons[-1]
    assert decide(_results(prediction_psi=0.9), D, 1000, "2026-03-04", last_retrain="2026-03-01", asof="2026-03-08").retrain
