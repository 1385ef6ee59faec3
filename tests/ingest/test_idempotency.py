"""Ingesting the same files twice for the same logical date gives identical outputs, and the
same bytes landing again later are recorded as skipped, never ingested twice."""

from __future__ import annotations

import hashlib

import pandas as pd
import pyarrow.parquet as pq

from fbk_tasks.demo.generator import generate_reviews, write_reviews
from fbk_tasks.ingest.pipeline import ingest_partition, land_files, read_ledger


def _digest(root):
    out = {}
    for p in sorted(root.rglob("*.parquet")):
        t = pq.read_table(p)
        out[str(p.relative_to(root))] = hashlib.sha256(t.to_pandas().to_csv(index=False).encode()).hexdigest()
    return out


def test_rerun_same_date_is_identical(settings, tmp_path):
    settings.ingest.max_quarantine_share = 1.0
    df = generate_reviews(400, seed=3, ds="2026-03-02")
    f1 = write_reviews(df.iloc[:200], tmp_path / "in" / "a.csv", "csv")
    f2 = write_reviews(df.iloc[200:], tmp_path / "in" / "b.jsonl", "jsonl")
    land_files(settings, [f1, f2], "2026-03-02")
    first = ingest_partition(settings, "2026-03-02", run_id="run1")
    cur1, q1 = _digest(settings.curated_dir), _digest(settings.quarantine_dir)
    second = ingest_partition(settings, "2026-03-02", run_id="run2")
    assert _digest(settings.curated_dir) == cur1 and _digest(settings.quarantine_dir) == q1
    assert first.rows_read == second.rows_read == 400
    assert first.rows_curated == second.rows_curated and first.rows_quarantined > 0
    ledger = read_ledger(settings)
    assert sorted(ledger["run_id"].unique()) == ["run1", "run2"] and len(ledger) == 4

    # the same bytes again, on a later date: skipped, nothing duplicated
    land_files(settings, [f1], "2026-03-03")
    third = ingest_partition(settings, "2026-03-03", run_id="run3")
    assert [f.status for f in third.files] == ["skipped"]
    assert not (settings.curated_dir / "ds=2026-03-03").exists()


def test_review_seen_on_an_earlier_day_is_a_duplicate(settings, tmp_path):
    df = generate_reviews(100, seed=5, ds="2026-03-02", bad_share=0, duplicate_share=0, noise_share=0, pii_share=0)
    land_files(settings, [write_reviews(df, tmp_path / "d1.csv")], "2026-03-02")
    ingest_partition(settings, "2026-03-02")
    again = df.iloc[:10].copy()
    again["title"] = "re-exported"  # different bytes, same reviews
    settings.ingest.max_duplicate_share = 1.0
    settings.ingest.max_quarantine_share = 1.0
    land_files(settings, [write_reviews(again, tmp_path / "d2.csv")], "2026-03-03")
    report = ingest_partition(settings, "2026-03-03")
    assert report.files[0].rows_duplicate == 10 and report.rows_curated == 0
    q = pq.read_table(settings.quarantine_dir / "ds=2026-03-03").to_pandas()
    assert set(q["reason"]) == {"duplicate"}


def test_backfilled_night_does_not_curate_a_review_a_later_night_holds(settings, tmp_path):
    """Backfill: night 03-05 was ingested; then 03-04 is ingested late holding ten of the same
    reviews. They are quarantined as duplicates, so no review is curated (and later scored and
    counted) twice; re-running 03-05 still reproduces it (its own partition is not history)."""
    df = generate_reviews(100, seed=5, ds="2026-03-05", bad_share=0, duplicate_share=0, noise_share=0, pii_share=0)
    land_files(settings, [write_reviews(df, tmp_path / "d5.csv")], "2026-03-05")
    later = ingest_partition(settings, "2026-03-05")
    settings.ingest.max_duplicate_share = 1.0
    settings.ingest.max_quarantine_share = 1.0
    again = df.iloc[:10].copy()
    again["title"] = "exported a day early"
    land_files(settings, [write_reviews(again, tmp_path / "d4.csv")], "2026-03-04")
    backfill = ingest_partition(settings, "2026-03-04")
    assert backfill.files[0].rows_duplicate == 10 and backfill.rows_curated == 0
    curated = pq.read_table(settings.curated_dir / "ds=2026-03-05").to_pandas()
    assert not (settings.curated_dir / "ds=2026-03-04").exists() or not len(pq.read_table(settings.curated_dir / "ds=2026-03-04"))
    assert curated["review_id"].is_unique and len(curated) == later.rows_curated
    assert ingest_partition(settings, "2026-03-05").rows_curated == later.rows_curated


def test_a_review_id_curated_long_ago_is_a_duplicate_whatever_its_text(settings, tmp_path):
    """Outside the dedup window only the review_id look-up (a DuckDB semi-join against every
    other curated partition) can find it: edited text, months later."""
    settings.ingest.dedup_window_days = 1
    df = generate_reviews(100, seed=5, ds="2026-03-02", bad_share=0, duplicate_share=0, noise_share=0, pii_share=0)
    land_files(settings, [write_reviews(df, tmp_path / "d1.csv")], "2026-03-02")
    ingest_partition(settings, "2026-03-02")
    fresh = generate_reviews(20, seed=6, ds="2026-06-01", bad_share=0, duplicate_share=0, noise_share=0, pii_share=0)
    again = df.iloc[:10].copy()
    again["text"] = again["text"] + " (edited in June)"
    settings.ingest.max_duplicate_share = 1.0
    land_files(settings, [write_reviews(pd.concat([again, fresh]), tmp_path / "d2.csv")], "2026-06-01")
    report = ingest_partition(settings, "2026-06-01")
    assert report.files[0].rows_duplicate == 10 and report.rows_curated == 20
    q = pq.read_table(settings.quarantine_dir / "ds=2026-06-01").to_pandas()
    assert set(q["review_id"]) == set(again["review_id"]) and set(q["reason"]) == {"duplicate"}


def test_history_lookup_lists_again_when_a_file_goes_away(settings, tmp_path, monkeypatch):
    """Another night's re-run may remove a stale part between listing and reading."""
    from fbk_tasks.ingest.pipeline import History, _history

    df = generate_reviews(50, seed=5, ds="2026-03-02", bad_share=0, duplicate_share=0, noise_share=0, pii_share=0)
    land_files(settings, [write_reviews(df, tmp_path / "d1.csv")], "2026-03-02")
    ingest_partition(settings, "2026-03-02")
    hist = _history(settings, "2026-03-09")
    real = History.files
    calls = []

    def stale_first(self):
        calls.append(1)
        return real(self) + ([str(settings.curated_dir / "ds=2026-03-01" / "part-gone.parquet")] if len(calls) == 1 else [])

    monkeypatch.setattr(History, "files", stale_first)
    ids = pd.Series(list(df["review_id"][:5]) + ["never-seen"])
    assert hist.seen_ids(settings, ids) == set(df["review_id"][:5]) and len(calls) == 2
