"""The whole loop on real stages: train (baseline) -> score a drifted night -> drift requests a
retrain -> retrain + gate -> the next night is scored by the (possibly new) champion and
monitored against that version's own training lineage."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

ENV = {
    "FBK_TRAIN__MIN_ROWS_PER_CLASS": "10",
    "FBK_TRAIN__MIN_SLICE_ROWS": "10",
    "FBK_TRAIN__BASELINE_MAX_FEATURES": "5000",
    "FBK_DRIFT__REFERENCE_MAX_ROWS": "300",
    "FBK_DRIFT__DOMAIN_MAX_ROWS": "150",
    "FBK_DRIFT__MIN_BATCH_ROWS": "100",
    "FBK_DRIFT__USE_ENCODER": "false",
}


def test_drift_retrain_gate_next_night(settings, monkeypatch):
    from fbk_tasks.demo.generator import DriftSpec
    from fbk_tasks.drift.monitor import record_retrain_request, run_drift
    from fbk_tasks.drift.policy import Decision
    from fbk_tasks.drift.testing import generated_frame, write_curated_frame
    from fbk_tasks.score.registry import resolve_champion
    from fbk_tasks.score.run import run_scoring
    from fbk_tasks.settings import load_settings
    from fbk_tasks.train.pipeline import run_training

    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    s = load_settings()
    write_curated_frame(s, generated_frame(250, seed=1, ds="2026-03-01"), "2026-03-01")
    first = run_training(s, candidates=["baseline"])
    v1 = resolve_champion(s).version
    assert first["changed"]

    write_curated_frame(s, generated_frame(600, seed=2, ds="2026-03-02", drift=DriftSpec(new_category=True)), "2026-03-02")
    run_scoring(s, "2026-03-02", build=False)
    night1 = run_drift(s, "2026-03-02")
    assert night1["model_version"] == v1 and night1["reference_partitions"] == ["2026-03-01"]
    assert night1["reference_source"].startswith("training lineage")
    assert night1["decision"]["retrain"], night1["decision"]
    record_retrain_request(s, "2026-03-02", Decision(**night1["decision"]), v1)  # what emit_retrain does

    verdict = run_training(s, candidates=["baseline"])  # feedback_train, scheduled by retrain_requested
    champion = resolve_champion(s)
    assert str(champion.version) == str(verdict["champion_version"])  # the gate's word, promoted or not
    write_curated_frame(s, generated_frame(300, seed=3, ds="2026-03-03", drift=DriftSpec(new_category=True)), "2026-03-03")
    run_scoring(s, "2026-03-03", build=False)
    night2 = run_drift(s, "2026-03-03")
    assert night2["model_version"] == champion.version  # scored and monitored with the champion now
    # with these seeds the gate promotes the retrained model (more data, same golden set); its
    # training lineage includes the drifted night, so that night is now part of the reference
    assert champion.version != v1, verdict
    assert night2["reference_partitions"] == ["2026-03-01", "2026-03-02"]
    print(f"loop: v1={v1} champion after retrain=v{champion.version} night2={night2['decision']['status']} "
          f"reference={night2['reference_partitions']}")
    assert not night2["decision"]["retrain"]
    assert night2["decision"]["status"] == "cooldown" and night2["decision"]["last_retrain"] == "2026-03-02"
    # the retrained reference has seen the new category: its category drift is far smaller now
    import pandas as pd

    from fbk_tasks.drift.monitor import metrics_path

    def category_psi(ds):
        m = pd.read_parquet(metrics_path(s, ds))
        return m.loc[(m["signal"] == "category_mix_psi") & (m["scope"] == "all"), "value"].item()

    print(f"loop: category_mix_psi night1={category_psi('2026-03-02'):.3f} night2={category_psi('2026-03-03'):.3f}")
    assert category_psi("2026-03-03") < category_psi("2026-03-02") / 3
