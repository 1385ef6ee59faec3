"""Planning, shard matching and reconciliation in DuckDB (bounded memory, partition-scoped):
the same plans, tags and verdicts as the earlier all-Arrow implementation, which is kept here
as the reference."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from fbk_tasks.score.plan import ShardSpec, output_files, plan_shards, plan_tag, processed_ids, shard_of
from fbk_tasks.score.registry import ModelRef, resolve_champion
from fbk_tasks.score.run import ReconciliationError, finalize_run, run_scoring, score_shard, verify_outputs

AT = dt.datetime(2026, 3, 3, tzinfo=dt.timezone.utc)
REF = ModelRef(name="m", version=7, run_id=None, uri="models:/m/7")


# -- the earlier Arrow implementation (global history, all ids in memory): the reference -----------


def _old_tag(ref: ModelRef, run_id: str, sorted_ids: list[str]) -> str:
    h = hashlib.sha256(f"{ref.name}\0{ref.version}\0{run_id}\0".encode())
    for rid in sorted_ids:
        h.update(rid.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:12]


def _old_processed(settings, ref: ModelRef) -> pa.Array:
    files = output_files(settings, ref.version, rejected=False) + output_files(settings, ref.version, rejected=True)
    if not files:
        return pa.array([], type=pa.string())
    flt = (pc.field("model_name") == ref.name) & (pc.field("model_version") == ref.version)
    col = pads.dataset([str(f) for f in files], format="parquet").to_table(columns=["review_id"], filter=flt).column(0)
    return pc.unique(col.combine_chunks())


def _old_plan(settings, ds, ref: ModelRef, run_id: str, rescore: bool = False) -> list[tuple[str, int, int, str, list[str]]]:
    """(ds, shard, n_planned, tag, sorted ids) per shard with work, as the Arrow planner made them."""
    from fbk_tasks.score.plan import curated_partitions

    n = settings.score.shards
    done = pa.array([], type=pa.string()) if rescore else _old_processed(settings, ref)
    out = []
    for part_ds, files in curated_partitions(settings, ds).items():
        col = pads.dataset([str(f) for f in files], format="parquet").to_table(columns=["review_id"]).column(0)
        todo = pc.unique(pc.drop_null(col.combine_chunks()))
        if len(done) and len(todo):
            todo = pc.filter(todo, pc.invert(pc.is_in(todo, value_set=done)))
        ids = todo.to_pylist()
        for k in range(n):
            mine = sorted(i for i in ids if shard_of(i, n) == k)
            if mine:
                out.append((part_ds, k, len(mine), _old_tag(ref, run_id, mine), mine))
    return out


def _new_plan(specs: list[ShardSpec]) -> list[tuple[str, int, int, str, list[str]]]:
    return [(s.ds, s.shard, s.n_planned, s.plan_tag, pq.read_table(s.plan_file).column("review_id").to_pylist()) for s in specs]


# -- curated files with chosen ids ----------------------------------------------------------------


def _curated(settings, ds: str, ids: list[str | None], texts: list[str] | None = None, *, name: str, row_group_size: int | None = None) -> Path:
    """A curated part file (CURATED_SCHEMA) with exactly these review ids, in this order."""
    from fbk_tasks.score.testing import write_curated

    texts = texts or [f"text of {i}" for i in ids]
    tmp = write_curated(settings, ds, texts, source=f"tmp-{name}")
    table = pq.read_table(tmp)
    tmp.unlink()
    table = table.set_column(table.schema.get_field_index("review_id"), "review_id", pa.array(ids, type=pa.string()))
    path = settings.curated_dir / f"ds={ds}" / f"{name}.parquet"
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


IDS_A = ["b", "a", "Z", "é", "ä", "", "z", "10", "9", "日本", "a b", "ß"]
IDS_B = ["a", "q", "é", "x1", None, "x2", "b"]  # a, é, b again (re-delivered rows), and a null id


def _settings(monkeypatch, **env):
    from fbk_tasks.settings import load_settings

    for key, value in env.items():
        monkeypatch.setenv(f"FBK_SCORE__{key.upper()}", str(value))
    return load_settings()


class _Model:
    """Contract-shaped model: positive for every text."""

    def predict(self, frame):
        import pandas as pd

        n = len(frame)
        return pd.DataFrame({"label": ["positive"] * n, "confidence": [0.9] * n, "prob_negative": [0.05] * n,
                             "prob_neutral": [0.05] * n, "prob_positive": [0.9] * n})


def test_plan_agrees_with_arrow_reference_sorted_files_same_tags(settings, monkeypatch):
    s = _settings(monkeypatch, shards=3, scan_batch_rows=2)
    _curated(s, "2026-05-01", IDS_A, name="part-a", row_group_size=5)
    _curated(s, "2026-05-01", IDS_B, name="part-b")
    _curated(s, "2026-05-02", [f"n{i:03d}" for i in range(40)], name="part-c", row_group_size=7)
    for rescore in (False, True):
        specs = plan_shards(s, None, REF, run_id="r1", scored_at=AT, rescore=rescore)
        new = _new_plan(specs)
        assert new == _old_plan(s, None, REF, "r1", rescore=rescore)
        for ds, _, n_planned, tag, ids in new:
            assert ids == sorted(ids) and len(set(ids)) == n_planned  # sorted (code points), unique
            assert tag == _old_tag(REF, "r1", ids) == plan_tag(REF, "r1", ids)  # tags unchanged for the same ids
    # null ids are never planned; every other id once
    assert sum(n for _, _, n, _, _ in new) == len({i for i in IDS_A + IDS_B if i is not None}) + 40
    assert not [p for p in (s.state_dir / "score_plans").rglob("*") if p.name.startswith(".")]  # no temp file left
    assert not (s.state_dir / "duckdb_tmp").exists() or not any((s.state_dir / "duckdb_tmp").iterdir())


def test_plan_after_a_partial_night_agrees_with_arrow_reference(settings, monkeypatch):
    """What the version already processed (scored *and* rejected) is left out, as before."""
    s = _settings(monkeypatch, shards=2, scan_batch_rows=3)
    _curated(s, "2026-05-01", IDS_A, name="part-a")
    specs = plan_shards(s, "2026-05-01", REF, run_id="n1", scored_at=AT)
    for spec in specs:
        score_shard(s, spec, model=_Model())
    assert processed_ids(s, REF, ["2026-05-01"]).to_pylist() == sorted(_old_processed(s, REF).to_pylist())
    assert processed_ids(s, REF, ["2026-05-02"]).to_pylist() == []
    _curated(s, "2026-05-01", IDS_B + ["late1", "late2"], texts=["t"] * 7 + ["", "late"], name="part-b")
    specs2 = plan_shards(s, None, REF, run_id="n2", scored_at=AT)
    assert _new_plan(specs2) == _old_plan(s, None, REF, "n2")
    assert sorted(i for _, _, _, _, ids in _new_plan(specs2) for i in ids) == ["late1", "late2", "q", "x1", "x2"]
    results = [score_shard(s, spec, model=_Model()) for spec in specs2]
    assert sum(r.rejected_by_reason.get("empty_text", 0) for r in results) == 1  # late1 had no text
    # another model version has processed nothing
    other = ModelRef(name="m", version=8, run_id=None, uri="models:/m/8")
    assert sum(sp.n_planned for sp in plan_shards(s, None, other, run_id="n3", scored_at=AT)) == len(IDS_A) + 5


def test_night_two_never_reads_night_one_outputs(lake):
    """Partition scope: planning and verifying a night read only that night's partitions. The
    first night's score and rejection files are corrupted; the second night still plans, scores
    and reconciles (the all-history implementation failed reading them), and a duplicate inside
    the second night's partition is still caught."""
    from fbk_tasks.score.testing import write_curated

    s = lake["settings"]
    first = run_scoring(s, ds="2026-03-01", run_id="night-1", scored_at=AT, build=False)
    assert first["planned"] == 10
    old = sorted(s.scores_dir.rglob("ds=2026-03-01/*.parquet"))
    assert old and any("_rejected" in str(p) for p in old)
    for p in old:
        p.write_bytes(b"not a parquet file at all")
    with pytest.raises(Exception):  # what the earlier all-history reads did with such a file
        _old_processed(s, resolve_champion(s))

    write_curated(s, "2026-03-02", ["good again", "so so"], start_row=500)
    second = run_scoring(s, ds="2026-03-02", run_id="night-2", scored_at=AT + dt.timedelta(days=1), build=False)
    assert second["planned"] == 5 + 2 and second["partitions"] == ["2026-03-02"]
    assert second["version_scored_in_partitions"] + second["version_rejected_in_partitions"] == 7
    assert all(p.read_bytes() == b"not a parquet file at all" for p in old)  # untouched

    ref = resolve_champion(s)
    specs = plan_shards(s, "2026-03-02", ref, run_id="night-2", scored_at=AT + dt.timedelta(days=1), rescore=True)
    verify_outputs(s, ref, specs)  # clean
    src = sorted(s.scores_dir.glob(f"ds=2026-03-02/part-{ref.version}-*.parquet"))[0]
    shutil.copy(src, src.with_name(f"part-{ref.version}-9-duplicate.parquet"))
    with pytest.raises(ReconciliationError, match="duplicate score rows"):
        verify_outputs(s, ref, specs)
    # verifying the first night itself does read its (corrupted) files, and fails loudly
    specs_1 = plan_shards(s, "2026-03-01", ref, run_id="x", scored_at=AT, rescore=True)
    with pytest.raises(Exception, match="(?i)parquet"):
        verify_outputs(s, ref, specs_1)


def _scored_run(lake):
    s = lake["settings"]
    ref = resolve_champion(s)
    specs = plan_shards(s, None, ref, run_id="night-1", scored_at=AT)
    results = [score_shard(s, spec) for spec in specs]
    return s, ref, specs, results


def _old_verify(settings, ref: ModelRef, specs) -> list[str]:
    """The earlier Arrow reconciliation (all history of the version): its list of problems."""
    def ids(rejected):
        files = output_files(settings, ref.version, rejected=rejected)
        if not files:
            return pa.array([], type=pa.string())
        return pads.dataset([str(f) for f in files], format="parquet").to_table(columns=["review_id"]).column(0).combine_chunks()

    scored, rejected = ids(False), ids(True)
    su, ru = pc.unique(scored), pc.unique(rejected)
    problems = []
    if len(scored) != len(su):
        problems.append(f"{len(scored) - len(su)} duplicate score rows")
    if len(rejected) != len(ru):
        problems.append(f"{len(rejected) - len(ru)} duplicate rejection rows")
    both = int(pc.sum(pc.is_in(su, value_set=ru)).as_py() or 0) if len(su) and len(ru) else 0
    if both:
        problems.append(f"{both} reviews both scored and rejected")
    missing = 0
    for spec in specs:
        planned = pq.read_table(spec.plan_file).column(0).combine_chunks()
        covered = pc.or_(pc.is_in(planned, value_set=su), pc.is_in(planned, value_set=ru))
        missing += len(planned) - int(pc.sum(covered).as_py() or 0)
    if missing:
        problems.append(f"{missing} planned reviews have no output row")
    return problems


def _new_verify(settings, ref, specs) -> list[str]:
    try:
        verify_outputs(settings, ref, specs)
    except ReconciliationError as exc:
        return str(exc).split(": ", 1)[1].split("; ")
    return []


def test_reconciliation_clean_run_agrees_with_arrow_reference(lake):
    s, ref, specs, results = _scored_run(lake)
    assert _new_verify(s, ref, specs) == _old_verify(s, ref, specs) == []
    summary = finalize_run(s, specs, results, build=False)
    assert summary["version_scored_in_partitions"] == summary["scored"]
    assert summary["version_rejected_in_partitions"] == summary["rejected"]


def test_reconciliation_catches_duplicate_rows(lake):
    s, ref, specs, _ = _scored_run(lake)
    for rejected in (False, True):
        src = output_files(s, ref.version, rejected=rejected, ds="2026-03-01")[0]
        shutil.copy(src, src.with_name(f"part-{ref.version}-8-copy.parquet"))
    n_s = pq.read_metadata(output_files(s, ref.version, rejected=False, ds="2026-03-01")[0]).num_rows
    problems = _new_verify(s, ref, specs)
    assert problems == _old_verify(s, ref, specs)
    assert problems[0] == f"{n_s} duplicate score rows" and "duplicate rejection rows" in problems[1]


def test_reconciliation_catches_missing_rows(lake):
    s, ref, specs, _ = _scored_run(lake)
    victim = output_files(s, ref.version, rejected=True, ds="2026-03-01")[0]
    n = pq.read_metadata(victim).num_rows
    victim.unlink()
    problems = _new_verify(s, ref, specs)
    assert problems == _old_verify(s, ref, specs) == [f"{n} planned reviews have no output row"]
    with pytest.raises(ReconciliationError, match="have no output row"):
        verify_outputs(s, ref, specs)


def test_reconciliation_catches_scored_and_rejected(lake):
    s, ref, specs, _ = _scored_run(lake)
    scored = pq.read_table(output_files(s, ref.version, rejected=False, ds="2026-03-02")[0])
    rej_file = output_files(s, ref.version, rejected=True, ds="2026-03-01")[0]
    rej = pq.read_table(rej_file)
    extra = {name: rej.column(name)[0].as_py() for name in rej.column_names}
    extra["review_id"] = scored.column("review_id")[0].as_py()
    extra["ds"] = "2026-03-02"
    folder = s.scores_dir / "_rejected" / "ds=2026-03-02"  # day 2 had no rejection
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([extra], schema=rej.schema), folder / f"part-{ref.version}-5-extra.parquet")
    problems = _new_verify(s, ref, specs)
    assert problems == _old_verify(s, ref, specs) == ["1 reviews both scored and rejected"]


def test_reconciliation_ignores_other_versions_rows_in_scope(lake):
    """Rows of another model name in the version's files (never written so, but filtered as
    before) do not count."""
    s, ref, specs, _ = _scored_run(lake)
    src = output_files(s, ref.version, rejected=False, ds="2026-03-01")[0]
    t = pq.read_table(src)
    t = t.set_column(t.schema.get_field_index("model_name"), "model_name", pa.array(["other"] * t.num_rows))
    pq.write_table(t, src.with_name(f"part-{ref.version}-7-other.parquet"))
    assert _new_verify(s, ref, specs) == []


def test_shard_matching_agrees_with_scan_order_dedup_and_missing(settings, monkeypatch):
    """Rows stream in curated file order, then row order; a re-delivered id is scored once (its
    first row); a planned id whose file disappeared is rejected as missing; row groups and
    scan batches of odd sizes change nothing. The same with a plan file of the earlier format
    (review_id only: matched by a join)."""
    import dataclasses

    from fbk_tasks.score.plan import duckdb_connection
    from fbk_tasks.score.run import _iter_planned_batches

    s = _settings(monkeypatch, shards=1, scan_batch_rows=3, batch_size=4)
    f1 = _curated(s, "2026-06-01", [f"id{i:02d}" for i in range(20, 0, -1)], name="part-1", row_group_size=4)
    f2 = _curated(s, "2026-06-01", ["id05", "zz1", "id07", "zz2", "id05"], texts=["second 05", "z1", "second 07", "z2", "third 05"], name="part-2")
    f3 = _curated(s, "2026-06-01", ["gone1", "gone2"], name="part-3")
    (spec,) = plan_shards(s, "2026-06-01", REF, run_id="r", scored_at=AT)
    assert spec.n_planned == 24
    plan = pq.read_table(spec.plan_file)
    assert plan.column_names == ["review_id", "curated_file", "curated_row"]
    where = {r["review_id"]: (r["curated_file"], r["curated_row"]) for r in plan.to_pylist()}
    assert where["id05"] == (1, 15) and where["zz2"] == (2, 3) and where["gone2"] == (3, 1)  # first rows, 1-based files
    f3.unlink()  # planned, then lost from curated storage

    # reference: the earlier pyarrow scan (files in order, rows in order, first occurrence)
    planned = set(plan.column(0).to_pylist())
    expected, seen = [], set()
    for f in (f1, f2):
        for rid, text in zip(*pq.read_table(f, columns=["review_id", "text"]).to_pydict().values()):
            if rid in planned and rid not in seen:
                seen.add(rid)
                expected.append((rid, text))
    legacy = spec.plan_file.replace(".parquet", "-legacy.parquet")
    pq.write_table(plan.select(["review_id"]), legacy)
    plan_ids = plan.column(0).to_pylist()
    for sp in (spec, dataclasses.replace(spec, plan_file=legacy)):
        got = []
        with duckdb_connection(s) as con:
            for ids, texts, pos in _iter_planned_batches(s, sp, con):
                assert [plan_ids[p] for p in pos] == ids
                got.extend(zip(ids, texts))
        first = []
        for rid, text in got:
            if rid not in {r for r, _ in first}:
                first.append((rid, text))
        assert first == expected
        assert len(got) == len(expected) + (3 if sp.plan_file == legacy else 0)  # the join also finds the re-deliveries
        result = score_shard(s, sp, model=_Model())
        assert (result.planned, result.scored, result.rejected) == (24, 22, 2)
        assert result.rejected_by_reason == {"missing_from_curated": 2}
        assert pq.read_table(result.scores_file).column("review_id").to_pylist() == [r for r, _ in expected]
        assert pq.read_table(result.rejected_file).column("review_id").to_pylist() == ["gone1", "gone2"]


def test_shard_finds_moved_rows_of_a_rewritten_curated_file_by_id(settings, monkeypatch):
    """The plan says where each id's row was; a curated file rewritten since planning (a
    re-ingest of the night: other ids at those rows, or fewer rows) never makes the shard score
    another review under an id. The planned ids the file still holds at other rows are found by
    id and scored (they were rejected as missing before, and the version never planned them
    again); only ids gone from every file are missing_from_curated."""
    s = _settings(monkeypatch, shards=1, scan_batch_rows=2)
    _curated(s, "2026-06-02", ["a1", "a2", "a3"], name="part-1")
    f2 = _curated(s, "2026-06-02", ["b1", "b2", "b3", "b4"], texts=["t1", "t2", "t3", "t4"], name="part-2")
    (spec,) = plan_shards(s, "2026-06-02", REF, run_id="r", scored_at=AT)
    pq.write_table(pq.read_table(f2).slice(1, 2), f2)  # now b2, b3: every row moved, b1 and b4 gone
    result = score_shard(s, spec, model=_Model())
    assert (result.planned, result.scored, result.rejected) == (7, 5, 2)
    scores = pq.read_table(result.scores_file).to_pydict()
    assert scores["review_id"] == ["a1", "a2", "a3", "b2", "b3"]
    assert pq.read_table(result.rejected_file).column("review_id").to_pylist() == ["b1", "b4"]
    assert pq.read_table(result.rejected_file).column("reason").to_pylist() == ["missing_from_curated"] * 2


def test_small_memory_cap_same_results(lake, monkeypatch):
    """The smallest cap allowed gives the same plan and verdicts."""
    from fbk_tasks.settings import load_settings

    monkeypatch.setenv("FBK_SCORE__DUCKDB_MEMORY_MB", "64")
    s = load_settings()
    ref = resolve_champion(s)
    specs = plan_shards(s, None, ref, run_id="r", scored_at=AT)
    assert _new_plan(specs) == _old_plan(s, None, ref, "r")
    summary = finalize_run(s, specs, [score_shard(s, sp) for sp in specs], build=False)
    assert summary["planned"] == lake["n_reviews"]


def test_retry_comparison_streams_across_row_group_layouts(tmp_path):
    """A retry's scores file is compared with the one already there a slice at a time:
    equal rows in other row groups are equal; one changed value, a missing row or another
    column is not."""
    from fbk_tasks.score.run import _same_rows_streamed

    t = pa.table({"review_id": [f"r{i:03d}" for i in range(50)], "confidence": [i / 50 for i in range(50)]})
    old = tmp_path / "old.parquet"
    pq.write_table(t, old, row_group_size=7)
    same = tmp_path / "same.parquet"
    pq.write_table(t, same, row_group_size=11)
    assert _same_rows_streamed(old, same, batch_rows=5)
    changed = tmp_path / "changed.parquet"
    pq.write_table(t.set_column(1, "confidence", pa.array([i / 50 for i in range(49)] + [0.5])), changed)
    assert not _same_rows_streamed(old, changed, batch_rows=5)
    shorter = tmp_path / "shorter.parquet"
    pq.write_table(t.slice(0, 49), shorter)
    assert not _same_rows_streamed(old, shorter, batch_rows=5)
    other = tmp_path / "other.parquet"
    pq.write_table(t.rename_columns(["review_id", "score"]), other)
    assert not _same_rows_streamed(old, other)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"junk")
    assert not _same_rows_streamed(junk, same)


@pytest.mark.parametrize("batch_rows", [1, 2, 3, 5])
def test_reconciliation_counts_across_streamed_batches(lake, monkeypatch, batch_rows):
    """Per-id counting carries an id's group across DuckDB's streamed batches: with every
    problem at once and batches of 1-5 rows, the verdict equals the Arrow reference."""
    from fbk_tasks.settings import load_settings

    s, ref, specs, _ = _scored_run(lake)
    monkeypatch.setenv("FBK_SCORE__SCAN_BATCH_ROWS", str(batch_rows))
    s = load_settings()
    day1 = output_files(s, ref.version, rejected=False, ds="2026-03-01")[0]
    shutil.copy(day1, day1.with_name(f"part-{ref.version}-8-copy.parquet"))  # duplicate score rows
    rej_file = output_files(s, ref.version, rejected=True, ds="2026-03-01")[0]
    rej = pq.read_table(rej_file)
    pq.write_table(rej.slice(0, 1), rej_file.with_name(f"part-{ref.version}-8-copy.parquet"))  # one duplicate rejection
    extra = rej.slice(0, 1).to_pylist()[0]
    extra["review_id"] = pq.read_table(day1).column("review_id")[0].as_py()
    pq.write_table(pa.Table.from_pylist([extra], schema=rej.schema), rej_file.with_name(f"part-{ref.version}-9-both.parquet"))
    output_files(s, ref.version, rejected=False, ds="2026-03-02")[0].unlink()  # day 2's scores missing
    problems = _new_verify(s, ref, specs)
    assert problems == _old_verify(s, ref, specs)
    assert [p.split(" ", 1)[1] for p in problems] == ["duplicate score rows", "duplicate rejection rows",
                                                      "reviews both scored and rejected", "planned reviews have no output row"]
