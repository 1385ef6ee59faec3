"""Scoring against a real MLflow registry (SQLite) and real Parquet."""

from __future__ import annotations

from pathlib import Path

import datetime as dt
import shutil

import pyarrow.dataset as pads
import pytest

from fbk_tasks.score.plan import plan_shards, shard_of
from fbk_tasks.score.registry import NoChampionError, resolve_champion
from fbk_tasks.score.run import finalize_run, run_scoring, score_shard

AT = dt.datetime(2026, 3, 3, tzinfo=dt.timezone.utc)


def _rows(path, rejected=False):
    root = path / "_rejected" if rejected else path
    files = sorted(str(p) for p in root.glob("ds=*/*.parquet"))
    if not files:
        return []
    t = pads.dataset(files, format="parquet").to_table()
    return sorted(t.to_pylist(), key=lambda r: (r["review_id"], r["model_version"]))


def _sql(settings, statement):
    from fbk_tasks.warehouse.query import query

    return query(settings, statement)[1]


def test_shard_of_is_stable_and_in_range():
    assert [shard_of(f"r{i}", 3) for i in range(6)] == [shard_of(f"r{i}", 3) for i in range(6)]
    assert {shard_of(f"r{i}", 3) for i in range(200)} == {0, 1, 2}
    assert shard_of("abc", 1) == 0


def test_plan_covers_every_review_once(lake):
    s = lake["settings"]
    ref = resolve_champion(s)
    assert ref.version == lake["version"] and ref.uri == f"models:/{ref.name}/{ref.version}"
    specs = plan_shards(s, None, ref, run_id="r1", scored_at=AT)
    assert sum(sp.n_planned for sp in specs) == lake["n_reviews"]
    assert {sp.ds for sp in specs} == {"2026-03-01", "2026-03-02"}
    again = plan_shards(s, None, ref, run_id="r1", scored_at=AT)
    assert [sp.to_dict() for sp in again] == [sp.to_dict() for sp in specs]
    only = plan_shards(s, "2026-03-02", ref, run_id="r2", scored_at=AT)
    assert sum(sp.n_planned for sp in only) == 5


def test_group_specs_caps_the_mapped_tasks_and_balances_planned_reviews(lake):
    from fbk_tasks.score.plan import group_specs

    s = lake["settings"]
    specs = plan_shards(s, None, resolve_champion(s), run_id="r1", scored_at=AT)  # 2 partitions x 2 shards
    assert len(specs) == 4
    assert group_specs(specs, 4) == [[sp] for sp in specs] == group_specs(specs, 100)
    for cap in (1, 2, 3):
        groups = group_specs(specs, cap)
        assert len(groups) == cap and all(groups)
        assert sorted((sp.ds, sp.shard) for g in groups for sp in g) == sorted((sp.ds, sp.shard) for sp in specs)
        loads = sorted(sum(sp.n_planned for sp in g) for g in groups)
        biggest = max(sp.n_planned for sp in specs)
        assert loads[-1] - loads[0] <= biggest  # dealt largest first to the lightest group
    with pytest.raises(ValueError):
        group_specs(specs, 0)


def test_grouped_shards_score_as_separate_tasks_would(lake, monkeypatch):
    """One task scoring every shard (score.max_mapped_tasks=1) writes what one task per shard
    writes, and finalize reconciles it the same."""
    from fbk_tasks.score.plan import group_specs
    from fbk_tasks.score.run import score_shards

    s = lake["settings"]
    specs = plan_shards(s, None, resolve_champion(s), run_id="night-1", scored_at=AT)
    (group,) = group_specs(specs, 1)
    results = score_shards(s, group)
    assert sorted((r.ds, r.shard) for r in results) == sorted((sp.ds, sp.shard) for sp in specs)
    summary = finalize_run(s, specs, results, model_version=lake["version"])
    assert summary["planned"] == lake["n_reviews"] == summary["scored"] + summary["rejected"]
    grouped = _rows(s.scores_dir), _rows(s.scores_dir, rejected=True)

    # a retry of the task resumes: shards written in full are read back, not predicted again
    import mlflow.pyfunc

    files = {Path(f): Path(f).stat().st_mtime_ns for r in results for f in (r.scores_file, r.rejected_file) if f}
    real_load = mlflow.pyfunc.load_model
    monkeypatch.setattr(mlflow.pyfunc, "load_model", lambda *a, **k: pytest.fail("a finished shard was scored again"))
    again = score_shards(s, group)
    assert [(r.to_dict() | {"seconds": 0}) for r in again] == [(r.to_dict() | {"seconds": 0}) for r in results]
    assert {f: f.stat().st_mtime_ns for f in files} == files
    # one shard lost its scores file (an attempt died between its two files): only it is scored again
    lost = next(r for r in results if r.scores_file)
    Path(lost.scores_file).unlink()
    loads = []
    monkeypatch.setattr(mlflow.pyfunc, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    assert [r.scored for r in score_shards(s, group)] == [r.scored for r in results] and len(loads) == 1
    assert (_rows(s.scores_dir), _rows(s.scores_dir, rejected=True)) == grouped

    shutil.rmtree(s.scores_dir)  # the same run again, through `fbk score`
    assert run_scoring(s, run_id="night-1", scored_at=AT)["scored"] == summary["scored"]
    assert (_rows(s.scores_dir), _rows(s.scores_dir, rejected=True)) == grouped
    assert score_shards(s, []) == []


def test_run_reconciles_rejects_and_scores_each_review_once(lake):
    s = lake["settings"]
    summary = run_scoring(s, run_id="night-1", scored_at=AT)
    assert summary["planned"] == lake["n_reviews"] == summary["scored"] + summary["rejected"]
    assert summary["rejected_by_reason"] == {"empty_text": 2, "model_error": 1}
    assert summary["model_version"] == lake["version"]
    scores = _rows(s.scores_dir)
    assert all(r["scored_at"] == AT and r["run_id"] == "night-1" for r in scores)
    assert {"label", "confidence", "prob_negative", "prob_neutral", "prob_positive"} <= set(scores[0])
    # checked on the warehouse, as analysts see it
    (n, n_distinct), = _sql(s, "SELECT count(*), count(DISTINCT review_id) FROM review_scores")
    (n_rej,), = _sql(s, "SELECT count(*) FROM score_rejections")
    (n_reviews,), = _sql(s, "SELECT count(*) FROM reviews")
    assert n == n_distinct == summary["scored"] and n + n_rej == n_reviews
    (unmatched,), = _sql(s, """SELECT count(*) FROM reviews r WHERE
        (SELECT count(*) FROM review_scores x WHERE x.review_id = r.review_id)
      + (SELECT count(*) FROM score_rejections j WHERE j.review_id = r.review_id) <> 1""")
    assert unmatched == 0


def test_rerun_is_idempotent(lake):
    s = lake["settings"]
    run_scoring(s, run_id="night-1", scored_at=AT)
    first, first_rej = _rows(s.scores_dir), _rows(s.scores_dir, rejected=True)
    again = run_scoring(s, run_id="night-1", scored_at=AT)
    assert again["planned"] == 0
    assert _rows(s.scores_dir) == first and _rows(s.scores_dir, rejected=True) == first_rej
    # re-running the same night from scratch of its plan (rescore, same run) gives the same rows
    redo = run_scoring(s, run_id="night-1", scored_at=AT, rescore=True)
    assert redo["planned"] == lake["n_reviews"]
    assert _rows(s.scores_dir) == first and _rows(s.scores_dir, rejected=True) == first_rej


def test_forced_rescore_same_version_supersedes_old_files(lake):
    s = lake["settings"]
    run_scoring(s, run_id="night-1", scored_at=AT)
    old_files = sorted(s.scores_dir.rglob("*.parquet"))
    summary = run_scoring(s, run_id="fix-1", scored_at=AT + dt.timedelta(days=5), rescore=True)
    assert summary["planned"] == lake["n_reviews"] and summary["superseded_files_removed"] == len(old_files)
    assert not any(p.exists() for p in old_files)
    rows = _rows(s.scores_dir) + _rows(s.scores_dir, rejected=True)
    assert len(rows) == len({r["review_id"] for r in rows}) == lake["n_reviews"]
    assert {r["run_id"] for r in rows} == {"fix-1"}


def test_a_rescore_without_a_run_time_wins_over_the_scores_it_replaces(lake):
    """`fbk score --ds D --rescore` has no logical date; stamped with the night's end, as plain
    CLI runs are, it lost to a scheduled run's later scored_at in review_scores (latest score
    wins) while it ran, or for good when it failed before removing the older files. A rescore
    without a run time is stamped when it runs."""
    s = lake["settings"]
    run_scoring(s, run_id="scheduled__2026-03-10", scored_at=AT + dt.timedelta(days=7))
    before = dt.datetime.now(dt.timezone.utc)
    specs = plan_shards(s, "2026-03-01", resolve_champion(s), rescore=True)
    assert specs and {dt.datetime.fromisoformat(sp.scored_at) >= before for sp in specs} == {True}


def test_incremental_night_adds_files_never_rewrites(lake):
    from fbk_tasks.score.testing import write_curated

    s = lake["settings"]
    run_scoring(s, run_id="night-1", scored_at=AT)
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in s.scores_dir.rglob("*.parquet")}
    write_curated(s, "2026-03-02", ["good again", "bad again", "so so"], start_row=500)
    summary = run_scoring(s, run_id="night-2", scored_at=AT + dt.timedelta(days=1))
    assert summary["planned"] == 3
    (n, n_distinct), = _sql(s, "SELECT count(*), count(DISTINCT review_id) FROM review_scores")
    (n_rej,), = _sql(s, "SELECT count(*) FROM score_rejections")
    assert n == n_distinct and n + n_rej == lake["n_reviews"] + 3
    assert all((p.stat().st_ino, p.stat().st_mtime_ns) == v for p, v in before.items())  # write-once


def test_alias_move_mid_run_keeps_planned_version(lake):
    from fbk_tasks.score.testing import register_keyword_model

    s = lake["settings"]
    ref = resolve_champion(s)
    specs = plan_shards(s, None, ref, run_id="night-1", scored_at=AT)
    v2 = register_keyword_model(s, bias="negative")  # the alias moves to v2 between plan and scoring
    assert resolve_champion(s).version == v2 != ref.version
    results = [score_shard(s, spec) for spec in specs]
    summary = finalize_run(s, specs, results)
    assert summary["model_version"] == ref.version
    rows = _rows(s.scores_dir)
    assert {r["model_version"] for r in rows} == {ref.version}
    assert {r["label"] for r in rows} != {"negative"}  # v1 answers, not the negative-biased v2
    # the next run uses the new champion; the warehouse shows only the champion's scores
    nxt = run_scoring(s, run_id="night-2", scored_at=AT + dt.timedelta(days=1))
    assert nxt["model_version"] == v2 and nxt["planned"] == lake["n_reviews"]
    assert _sql(s, "SELECT DISTINCT model_version, predicted_label FROM review_scores") == [(v2, "negative")]


def test_rescore_backfills_history_with_current_champion(lake):
    from fbk_tasks.score.testing import register_keyword_model

    s = lake["settings"]
    run_scoring(s, run_id="night-1", scored_at=AT)
    v2 = register_keyword_model(s, bias="positive")
    summary = run_scoring(s, rescore=True, run_id="backfill", scored_at=AT)
    assert summary["model_version"] == v2 and summary["planned"] == lake["n_reviews"]
    (n, n_distinct, versions), = _sql(s, "SELECT count(*), count(DISTINCT review_id), list(DISTINCT model_version) FROM review_scores")
    assert n == n_distinct == summary["scored"] and versions == [v2]
    (n_versions,), = _sql(s, "SELECT count(*) FROM model_versions")
    assert n_versions == 2


def test_no_champion_is_a_clear_error(settings):
    with pytest.raises(NoChampionError, match="champion"):
        resolve_champion(settings)


def test_cli_score(lake, monkeypatch, capsys):
    import fbk_tasks.cli as cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", ("fbk_tasks.score.commands", "fbk_tasks.warehouse.commands"))
    assert cli.main(["score", "--ds", "2026-03-02"]) == 0
    out = capsys.readouterr().out
    assert '"planned": 5' in out
    assert cli.main(["score", "--ds", "2026-13-01"]) == 2
    assert cli.main(["score", "--ds", "2026-04-01"]) == 2
    assert "no curated partition" in capsys.readouterr().err
    assert cli.main(["score"]) == 0
    assert '"planned": 10' in capsys.readouterr().out


class _RecordingModel:
    """Contract-shaped model that records batch sizes and returns a bad confidence for 'nan' and a
    label outside the scheme ('Positive') for 'shout'."""

    def __init__(self):
        self.batches = []

    def predict(self, frame):
        import pandas as pd

        self.batches.append(len(frame))
        rows = []
        for t in frame["text"]:
            conf = float("nan") if t == "nan" else 0.9
            rows.append({"label": "Positive" if t == "shout" else "positive", "confidence": conf, "prob_negative": 0.05, "prob_neutral": 0.05, "prob_positive": 0.9})
        return pd.DataFrame(rows)


def test_shard_streams_in_batches_and_rejects_invalid_predictions(settings, monkeypatch):
    from fbk_tasks.score.registry import ModelRef
    from fbk_tasks.score.testing import write_curated
    from fbk_tasks.settings import load_settings

    monkeypatch.setenv("FBK_SCORE__BATCH_SIZE", "4")
    monkeypatch.setenv("FBK_SCORE__SHARDS", "1")
    monkeypatch.setenv("FBK_SCORE__SCAN_BATCH_ROWS", "3")
    s = load_settings()
    texts = [f"text {i}" for i in range(9)] + ["shout", "nan", "  \n "]
    write_curated(s, "2026-07-01", texts)
    write_curated(s, "2026-07-01", texts[:2], start_row=0)  # the same review ids again: planned once
    ref = ModelRef(name="m", version=7, run_id=None, uri="models:/m/7")
    (spec,) = plan_shards(s, "2026-07-01", ref, run_id="r", scored_at=AT)
    assert spec.n_planned == 12
    model = _RecordingModel()
    result = score_shard(s, spec, model=model)
    assert max(model.batches) <= 4 and sum(model.batches) == 11
    assert (result.planned, result.scored, result.rejected) == (12, 9, 3)
    assert result.rejected_by_reason == {"empty_text": 1, "invalid_prediction": 2}
    assert result.scores_file.endswith(f"ds=2026-07-01/part-7-0-{spec.plan_tag}.parquet")
    # written batch by batch, yet one complete file: every scored id once, nothing left behind
    import pyarrow.parquet as pq

    written = pq.read_table(result.scores_file)
    assert written.num_rows == 9 and len(set(written.column("review_id").to_pylist())) == 9
    assert set(written.column("label").to_pylist()) == {"positive"}
    assert written.schema.metadata[b"fbk.backend"]
    assert not [f for f in Path(result.scores_file).parent.iterdir() if f.name.startswith(".")]
    # a retry of the same plan finds the same rows and leaves the file alone
    before = Path(result.scores_file).stat().st_mtime_ns
    assert score_shard(s, spec, model=_RecordingModel()).scores_file == result.scores_file
    assert Path(result.scores_file).stat().st_mtime_ns == before


def test_shard_that_dies_mid_way_leaves_no_visible_file(settings, monkeypatch):
    """The scores file streams into a hidden temporary file: a crash after some batches leaves
    neither a partial ``*.parquet`` nor the temporary file."""
    from fbk_tasks.score import run as run_mod
    from fbk_tasks.score.registry import ModelRef
    from fbk_tasks.score.testing import write_curated
    from fbk_tasks.settings import load_settings

    monkeypatch.setenv("FBK_SCORE__BATCH_SIZE", "2")
    monkeypatch.setenv("FBK_SCORE__SHARDS", "1")
    monkeypatch.setenv("FBK_SCORE__SCAN_BATCH_ROWS", "2")
    s = load_settings()
    write_curated(s, "2026-07-02", [f"text {i}" for i in range(8)])
    ref = ModelRef(name="m", version=7, run_id=None, uri="models:/m/7")
    (spec,) = plan_shards(s, "2026-07-02", ref, run_id="r", scored_at=AT)
    real = run_mod._iter_planned_batches

    def dies(*args):
        for i, batch in enumerate(real(*args)):
            if i == 2:
                raise OSError("disk went away")
            yield batch

    monkeypatch.setattr(run_mod, "_iter_planned_batches", dies)
    model = _RecordingModel()
    with pytest.raises(OSError, match="disk went away"):
        score_shard(s, spec, model=model)
    assert sum(model.batches) == 4  # two batches were scored and streamed out before the crash
    folder = s.scores_dir / "ds=2026-07-02"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_registry_snapshot_is_write_once_and_tracks_alias_moves(lake):
    from fbk_tasks.score.registry import configure_mlflow, snapshot_registry
    from fbk_tasks.score.testing import register_keyword_model

    s = lake["settings"]
    first = snapshot_registry(s)
    assert snapshot_registry(s) == first  # unchanged registry: nothing new written
    v2 = register_keyword_model(s)
    second = snapshot_registry(s)
    assert second != first and first.exists()
    configure_mlflow(s).set_registered_model_alias(s.mlflow.registered_model_name, "champion", str(lake["version"]))
    third = snapshot_registry(s)  # back to v1: same content as the first, but newest wins
    assert third not in (first, second)
    from fbk_tasks.warehouse.build import build_warehouse
    from fbk_tasks.warehouse.query import query

    build_warehouse(s)
    assert query(s, "SELECT model_version FROM model_versions WHERE is_champion")[1] == [(lake["version"],)]
    assert v2 == lake["version"] + 1


def test_warehouse_keeps_the_served_scores_when_the_alias_moves_during_a_run(lake):
    """A scoring run pinned v1; the champion alias moved to v2 before its finalize (the weekly
    training, or `fbk model promote`). review_scores keeps showing v1's scores, the version the
    run served, instead of going empty; the next run scores history with v2 and shows those."""
    from fbk_tasks.score.registry import resolve_champion
    from fbk_tasks.score.testing import register_keyword_model
    from fbk_tasks.warehouse.query import query

    s, v1 = lake["settings"], lake["version"]
    n = run_scoring(s)["scored"]  # some test reviews are rejected by design
    pinned = resolve_champion(s)
    v2 = register_keyword_model(s, bias="positive")  # now the champion
    specs = plan_shards(s, None, pinned, run_id="during-the-move")  # the run that pinned v1: nothing new to score
    assert specs == []
    finalize_run(s, specs, [], model_version=pinned.version)
    rows = query(s, "SELECT model_version, count(*) FROM review_scores GROUP BY 1")[1]
    assert rows == [(v1, n)]
    assert query(s, "SELECT model_version FROM model_versions WHERE is_champion")[1] == [(v2,)]

    n2 = run_scoring(s)["scored"]  # the next night: the new champion scores history, and serves
    assert query(s, "SELECT model_version, count(*) FROM review_scores GROUP BY 1")[1] == [(v2, n2)] and n2 > 0


def test_a_run_of_one_night_never_switches_the_served_version(lake):
    """After a promotion, `fbk score --ds D` scores D with the new champion; review_scores keeps
    showing the version served before for every night (switching would show only D), and the
    next full run, having scored all history with the new champion, switches."""
    from fbk_tasks.score.testing import register_keyword_model
    from fbk_tasks.warehouse.query import query

    s, v1 = lake["settings"], lake["version"]
    n = run_scoring(s)["scored"]
    v2 = register_keyword_model(s, bias="positive")  # now the champion
    one = run_scoring(s, "2026-03-02")
    assert one["model_version"] == v2 and one["scored"] > 0
    assert query(s, "SELECT model_version, count(*) FROM review_scores GROUP BY 1")[1] == [(v1, n)]
    assert query(s, "SELECT model_version FROM model_versions WHERE is_served")[1] == [(v1,)]
    run_scoring(s, "2026-03-02")  # nothing left to do for that night: still v1
    assert query(s, "SELECT model_version FROM model_versions WHERE is_served")[1] == [(v1,)]

    full = run_scoring(s)  # the other night: now v2 covers history, and serves
    assert full["partitions"] == ["2026-03-01"]
    rows = query(s, "SELECT model_version, count(*), count(DISTINCT ds) FROM review_scores GROUP BY 1")[1]
    assert rows == [(v2, n, 2)]


def test_a_broken_model_fails_the_shard_instead_of_rejecting_every_review(settings, monkeypatch):
    """Every row of a batch fails alone too (out of memory, a dead session): that is a fault of the
    model or machine, not of the reviews. The shard fails, writes nothing and the reviews stay
    planned for the retry; one bad row among good ones is still only rejected."""
    from fbk_tasks.score.registry import ModelRef
    from fbk_tasks.score.run import ModelFailure
    from fbk_tasks.score.testing import write_curated
    from fbk_tasks.settings import load_settings

    monkeypatch.setenv("FBK_SCORE__SHARDS", "1")
    s = load_settings()
    write_curated(s, "2026-07-03", [f"good text {i}" for i in range(6)])
    ref = ModelRef(name="m", version=8, run_id=None, uri="models:/m/8")
    (spec,) = plan_shards(s, "2026-07-03", ref, run_id="r", scored_at=AT)

    class OutOfMemory:
        def predict(self, frame):
            raise MemoryError("CUDA out of memory")

    with pytest.raises(ModelFailure, match="every row of a batch of 6 failed"):
        score_shard(s, spec, model=OutOfMemory())
    assert not (s.scores_dir / "ds=2026-07-03").exists() or not any((s.scores_dir / "ds=2026-07-03").glob("*.parquet"))
    assert not list(s.scores_dir.glob("_rejected/ds=2026-07-03/*.parquet"))
    (again,) = plan_shards(s, "2026-07-03", ref, run_id="r2", scored_at=AT)
    assert again.n_planned == 6  # nothing was marked done: the retry scores them


def test_finished_run_prunes_plans_older_than_the_retention(lake):
    import os
    import time

    from fbk_tasks.score.plan import prune_plans

    s = lake["settings"]
    root = s.state_dir / "score_plans"
    old, recent = root / "old-run" / "ds=2026-01-01", root / "recent-run" / "ds=2026-03-01"
    for d in (old, recent):
        d.mkdir(parents=True)
        (d / "shard-0-of-2-abc.parquet").write_bytes(b"x")
    month_ago = time.time() - 30 * 86400
    for p in (old / "shard-0-of-2-abc.parquet", old, old.parent):
        os.utime(p, (month_ago, month_ago))
    summary = run_scoring(s, run_id="night-1", scored_at=AT)
    assert summary["plans_pruned"] == 1
    assert not (root / "old-run").exists() and (root / "recent-run").exists() and (root / "night-1").is_dir()
    # the run's own plan is kept however old; None keeps everything
    assert prune_plans(s, keep_run_id="night-1", now=time.time() + 365 * 86400) == ["recent-run"]
    assert (root / "night-1").is_dir()
    s.score.plan_retention_days = None
    assert prune_plans(s, now=time.time() + 365 * 86400) == [] and (root / "night-1").is_dir()
