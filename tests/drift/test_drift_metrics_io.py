"""The drift_metrics partition: layout, atomic write, the warehouse view, cooldown state and the report."""

from __future__ import annotations

import json

import pandas as pd

from fbk_tasks.drift.monitor import NightMeasurement, last_retrain, metrics_path, record_retrain_request, write_metrics
from fbk_tasks.drift.policy import SignalResult, apply_thresholds, decide


def _measurement(settings, ds="2026-03-02"):
    rs = apply_thresholds([
        SignalResult("prediction_psi", "all", 0.7, detail={"reference": {"negative": 0.25}, "night": {"negative": 0.65}}),
        SignalResult("prediction_psi", "category=books", 0.1),
        SignalResult("domain_auc", "all", 0.55, detail={"features": "minilm_embeddings"}),
        SignalResult("agreement_drop", "all", None),
        SignalResult("category_mix_psi", "all", 3.0, detail={"unseen_categories": ["smart_glasses"]}),
    ], settings.drift)
    info = {"features": "minilm_embeddings", "features_why": "English-dominant batch", "n_reference": 500,
            "separating_terms": {"night": [{"term": "glasses", "weight": 2.0, "night_share": 0.5, "reference_share": 0.0}],
                                 "reference": []},
            "novel_terms": [{"term": "glasses", "night_share": 0.5}],
            "prediction_shares": {"reference": {"negative": 0.25, "positive": 0.75}, "night": {"negative": 0.65, "positive": 0.35}},
            "lengths": {"reference": [10.0, 20.0, 30.0], "night": [12.0, 50.0]}}
    return NightMeasurement(ds=ds, model_name="review-sentiment", model_version=3, n_rows=400, reference_partitions=["2026-03-01"],
                            reference_source="training lineage", results=[r.to_dict() for r in rs], info=info,
                            computed_at="2026-03-03T04:00:00+00:00")


def test_metrics_partition_and_warehouse_view(settings):
    from fbk_tasks.warehouse.build import build_warehouse
    from fbk_tasks.warehouse.query import query

    meas = _measurement(settings)
    decision = decide(meas.signal_results(), settings.drift, meas.n_rows, meas.ds)
    path = write_metrics(settings, meas, decision)
    assert path == settings.data_dir / "drift" / "ds=2026-03-02" / "part-0.parquet" == metrics_path(settings, "2026-03-02")
    assert [p.name for p in path.parent.iterdir()] == ["part-0.parquet"]  # no temporary file left
    df = pd.read_parquet(path)
    assert list(df.columns[:8]) == ["ds", "model_version", "signal", "scope", "value", "threshold", "fired", "detail"]
    assert len(df) == 6 and df.loc[df["signal"] == "decision", "fired"].item() is True
    row = df[(df["signal"] == "prediction_psi") & (df["scope"] == "all")].iloc[0]
    assert row["fired"] and json.loads(row["detail"])["severe"] is True
    assert pd.isna(df.loc[df["signal"] == "agreement_drop", "value"].item())
    build_warehouse(settings)
    rows = query(settings, "SELECT signal, scope, fired, metric, drifted FROM drift_metrics WHERE ds = '2026-03-02' ORDER BY signal, scope")[1]
    assert ("prediction_psi", "all", True, "prediction_psi", True) in rows and len(rows) == 6


def test_report_names_what_fired(settings):
    from fbk_tasks.drift.report import render_report

    meas = _measurement(settings)
    html = render_report(meas, decide(meas.signal_results(), settings.drift, meas.n_rows, meas.ds))
    assert "RETRAIN REQUESTED" in html and "smart_glasses" in html and "glasses" in html
    assert "minilm_embeddings" in html and html.count("data:image/png;base64,") == 2


def test_retrain_requests_state(settings):
    meas = _measurement(settings)
    decision = decide(meas.signal_results(), settings.drift, meas.n_rows, meas.ds)
    assert last_retrain(settings, "2026-03-02") is None
    record_retrain_request(settings, "2026-03-02", decision, 3)
    record_retrain_request(settings, "2026-03-02", decision, 3)  # idempotent per night
    assert last_retrain(settings, "2026-03-02") is None  # a night's own request does not cool it down
    assert last_retrain(settings, "2026-03-04") == "2026-03-02"
    assert last_retrain(settings, "2026-03-04", {"fbk.gate.at": "2026-03-03T05:00:00+00:00"}) == "2026-03-03"
    assert last_retrain(settings, "2026-03-01", {"fbk.gate.at": "2026-03-03T05:00:00+00:00"}) is None


def _record_many(settings, worker: int, decision) -> None:
    for i in range(15):
        record_retrain_request(settings, f"2026-0{1 + worker % 9}-{10 + i}", decision, worker)


def test_concurrent_requests_are_never_lost(settings):
    """The monitor and the gate rewrite the request file (read, change, write); in parallel
    processes every line survives (a lock serialises them)."""
    import multiprocessing

    from fbk_tasks.drift.monitor import read_retrain_requests

    meas = _measurement(settings)
    decision = decide(meas.signal_results(), settings.drift, meas.n_rows, meas.ds)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_record_many, args=(settings, w, decision)) for w in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)
    assert len({e["ds"] for e in read_retrain_requests(settings)}) == 6 * 15


def test_reference_sample_reads_text_of_the_drawn_rows_only_and_draws_as_before(settings, monkeypatch):
    """The reference is at most drift.reference_max_rows reviews of the version's training
    partitions (all of history, often). The ids are drawn first and only the drawn rows' text is
    read; the draw is the one the whole-history read made (same ids, same rows, first partition
    holding an id wins), so existing reference caches stay what a rebuild would give."""
    import pyarrow.parquet as pq

    from fbk_tasks.drift import monitor
    from fbk_tasks.drift.testing import generated_frame, write_curated_frame

    settings.drift.reference_max_rows = 150
    parts = ["2026-03-01", "2026-03-02", "2026-03-03"]
    frames = [generated_frame(120, seed=20 + i, ds=ds) for i, ds in enumerate(parts)]
    for frame, ds in zip(frames, parts):
        write_curated_frame(settings, frame, ds)
    again = frames[0].head(30).assign(text="a later copy")  # ids of 03-01 again, later, other text
    write_curated_frame(settings, again, "2026-03-04")
    parts.append("2026-03-04")

    # the whole-history read it replaces, as the oracle
    whole = pd.concat([monitor._read_dir(settings.curated_dir / f"ds={p}", monitor.CURATED_COLUMNS).assign(ds=p) for p in parts],
                      ignore_index=True).drop_duplicates("review_id").sort_values("review_id", kind="stable").reset_index(drop=True)
    expected = whole.sample(150, random_state=settings.drift.seed).sort_values("review_id").reset_index(drop=True)

    texts_read = []
    real = pq.read_table

    def counting(source, *args, columns=None, **kwargs):
        table = real(source, *args, columns=columns, **kwargs)
        if columns and "text" in columns:
            texts_read.append(table.num_rows)
        return table

    monkeypatch.setattr(pq, "read_table", counting)
    got = monitor.reference_sample(settings, parts)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected[got.columns].reset_index(drop=True), check_dtype=False)
    assert "a later copy" not in set(got["text"])
    assert sum(texts_read) == 150 < len(whole)
