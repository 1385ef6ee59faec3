"""The DuckDB warehouse: empty and populated lakes, `fbk sql`, atomic rebuilds."""

from __future__ import annotations

import json
import os

import duckdb
import pytest

from fbk_tasks.warehouse.build import build_warehouse, list_views
from fbk_tasks.warehouse.query import query

STAGING = {"stg_reviews", "stg_quarantine", "stg_ingest_ledger", "stg_scores", "stg_model_versions", "stg_score_rejections"}
MARTS = {"reviews", "products", "review_scores", "daily_product_sentiment", "category_sentiment", "quarantine_summary",
         "ingest_ledger", "model_versions", "drift_metrics", "score_rejections", "score_coverage"}


@pytest.fixture
def cli(monkeypatch):
    import fbk_tasks.cli as cli_mod

    monkeypatch.setattr(cli_mod, "COMMAND_MODULES", ("fbk_tasks.score.commands", "fbk_tasks.warehouse.commands"))
    return cli_mod.main


def test_empty_lake_builds_typed_empty_views(settings):
    path = build_warehouse(settings)
    assert path == settings.warehouse_path and path.exists()
    assert set(list_views(settings)) == STAGING | MARTS
    for view in STAGING | MARTS:
        assert query(settings, f"SELECT count(*) FROM {view}")[1] == [(0,)], view
    types = dict((r[0], r[1]) for r in query(settings, "DESCRIBE review_scores")[1])
    assert types["rating"] == "TINYINT" and types["model_version"] == "BIGINT"
    assert types["scored_at"] == "TIMESTAMP WITH TIME ZONE" and types["ds"] == "DATE" and types["created_date"] == "DATE"
    types = dict((r[0], r[1]) for r in query(settings, "DESCRIBE daily_product_sentiment")[1])
    assert types["share_negative"] == "DOUBLE" and types["n_negative"] == "BIGINT"
    # no temp files left next to the warehouse
    assert sorted(p.name for p in path.parent.iterdir()) == ["warehouse.duckdb"]


def test_populated_lake_marts(settings):
    from fbk_tasks.score.testing import register_keyword_model, write_curated, write_ledger, write_quarantine
    from fbk_tasks.score.run import run_scoring

    write_curated(settings, "2026-05-01", ["good", "bad", "bad bad", "ok"], products=("p1", "p2"), ratings=[5, 1, 2, 3])
    write_quarantine(settings, "2026-05-01", ["duplicate;rating_out_of_range", "duplicate"])
    write_ledger(settings, "2026-05-01")
    (settings.data_dir / "drift").mkdir(parents=True)
    build_warehouse(settings)  # before any score: scores/model_versions are typed empty views
    assert query(settings, "SELECT count(*) FROM review_scores")[1] == [(0,)]
    register_keyword_model(settings)
    run_scoring(settings, scored_at=__import__("datetime").datetime(2026, 5, 2, tzinfo=__import__("datetime").timezone.utc))
    rows = query(settings, "SELECT product_id, n_reviews, n_negative, n_positive, share_negative, avg_rating "
                           "FROM daily_product_sentiment ORDER BY product_id")[1]
    assert rows == [("p1", 2, 1, 1, 0.5, 3.5), ("p2", 2, 1, 0, 0.5, 2.0)]
    assert query(settings, "SELECT reason, n_rows FROM quarantine_summary ORDER BY reason")[1] == [
        ("duplicate", 2), ("rating_out_of_range", 1)]
    assert query(settings, "SELECT status, pii_total, duration_s FROM ingest_ledger")[1] == [("ingested", 1, 3.0)]
    assert query(settings, "SELECT model_version, is_champion, aliases FROM model_versions")[1] == [(1, True, ["champion"])]
    assert query(settings, "SELECT served_version, n_curated, n_scored, n_rejected, n_unscored, share_scored FROM score_coverage")[1] == [
        (1, 4, 4, 0, 0, 1.0)]
    # every view reads Parquet through absolute paths
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        sqls = dict(con.execute("SELECT view_name, sql FROM duckdb_views() WHERE view_name LIKE 'stg_%'").fetchall())
    finally:
        con.close()
    with_files = STAGING - {"stg_score_rejections"}  # nothing was rejected in this lake
    assert all(f"read_parquet('{settings.data_dir}/" in sqls[v] for v in with_files)
    assert "read_parquet" not in sqls["stg_score_rejections"]


def test_rebuild_replaces_file_atomically(settings):
    first = build_warehouse(settings)
    inode = os.stat(first).st_ino
    con = duckdb.connect(str(first), read_only=True)  # a reader holding the old file
    try:
        build_warehouse(settings)
        assert os.stat(settings.warehouse_path).st_ino != inode
        assert con.execute("SELECT count(*) FROM reviews").fetchone() == (0,)
    finally:
        con.close()


def test_fbk_sql_formats(settings, cli, capsys):
    assert cli(["sql", "SELECT 1"]) == 2
    assert "fbk warehouse build" in capsys.readouterr().err
    assert cli(["warehouse", "build"]) == 0
    assert "built" in capsys.readouterr().out
    stmt = "SELECT 1 AS n, 'a,b' AS s, DATE '2026-01-02' AS d, NULL AS z"
    assert cli(["sql", stmt]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split(" | ")[0].strip() == "n" and out[2].startswith("1 ") and "NULL" in out[2] and out[-1] == "(1 row)"
    assert cli(["sql", stmt, "--csv"]) == 0
    assert capsys.readouterr().out == 'n,s,d,z\n1,"a,b",2026-01-02,\n'
    assert cli(["sql", stmt, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 1, "s": "a,b", "d": "2026-01-02", "z": None}]
    assert cli(["sql", "SELECT * FROM no_such_view"]) == 2
    assert "no_such_view" in capsys.readouterr().err
    # read-only: writes are refused
    assert cli(["sql", "CREATE TABLE t AS SELECT 1"]) == 2
    assert "read-only" in capsys.readouterr().err.lower()


def test_fbk_sql_runs_queries_only(settings, cli, capsys, tmp_path):
    """The read-only connection stops writes to the warehouse file, not COPY ... TO a file (into
    the lake: one stray file there broke every query of review_scores) nor ATTACH or SET: only
    one SELECT or EXPLAIN runs."""
    assert cli(["warehouse", "build"]) == 0
    capsys.readouterr()
    target = settings.scores_dir / "ds=2026-03-04" / "part-oops.parquet"
    target.parent.mkdir(parents=True)
    for statement in (f"COPY (SELECT 'oops') TO '{target}' (FORMAT csv)", f"ATTACH '{tmp_path / 'x.db'}'",
                      "SET threads = 1", "SELECT 1; SELECT 2", "INSTALL httpfs"):
        assert cli(["sql", statement]) == 2, statement
        assert "only one read-only query" in capsys.readouterr().err, statement
    assert not target.exists() and not (tmp_path / "x.db").exists()
    for statement in ("EXPLAIN SELECT * FROM reviews", "WITH a AS (SELECT 1 AS n) SELECT n FROM a", "DESCRIBE reviews"):
        assert cli(["sql", statement]) == 0, statement


def test_in_progress_hidden_temp_files_are_ignored(settings):
    """Atomic writers leave ``.tmp-<uuid>-part-x.parquet`` while writing; DuckDB's ``*`` would
    match it and fail every query ("too small to be a Parquet file")."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    from fbk_tasks.score.plan import plan_shards
    from fbk_tasks.score.registry import ModelRef
    from fbk_tasks.score.testing import write_curated
    from fbk_tasks.warehouse.sources import DRIFT_SCHEMA

    write_curated(settings, "2026-08-01", ["good", "bad"])
    part = settings.curated_dir / "ds=2026-08-01"
    (part / ".tmp-0123abcd-part-ffff.parquet").write_bytes(b"half a file")
    drift = settings.data_dir / "drift" / "ds=2026-08-01"
    drift.mkdir(parents=True)
    build_warehouse(settings)
    empty_cols = [r[0] for r in query(settings, "DESCRIBE drift_metrics")[1]]
    pq.write_table(pa.Table.from_pylist([{"ds": "2026-08-01", "model_version": 1, "signal": "psi", "scope": "all", "value": 0.3,
                                          "threshold": 0.2, "fired": True, "detail": "{}", "metric": "psi", "drifted": True,
                                          "computed_at": dt.datetime(2026, 8, 2, tzinfo=dt.timezone.utc)}], schema=DRIFT_SCHEMA),
                   drift / "part-0.parquet")
    (drift / ".tmp-feed-part-0.parquet").write_bytes(b"")
    build_warehouse(settings)
    assert query(settings, "SELECT count(*) FROM reviews")[1] == [(2,)]
    assert query(settings, "SELECT ds, metric, drifted FROM drift_metrics")[1] == [(dt.date(2026, 8, 1), "psi", True)]
    assert [r[0] for r in query(settings, "DESCRIBE drift_metrics")[1]] == empty_cols  # same columns empty or not
    specs = plan_shards(settings, "2026-08-01", ModelRef("m", 1, None, "models:/m/1"), run_id="r")
    assert sum(s.n_planned for s in specs) == 2
    assert all(".tmp" not in f for s in specs for f in s.files)


def _score_lake(settings, products=("p1", "p2")):
    import datetime as dt

    from fbk_tasks.score.run import run_scoring
    from fbk_tasks.score.testing import register_keyword_model, write_curated

    path = write_curated(settings, "2026-05-01", ["good", "bad", "bad bad", "ok"], products=products, ratings=[5, 1, 2, 3])
    register_keyword_model(settings)
    run_scoring(settings, scored_at=dt.datetime(2026, 5, 2, tzinfo=dt.timezone.utc))
    return path


def test_reviews_without_a_product_id_are_grouped_by_category(settings):
    """A source without product ids (the Chinese shopping set): one row per category and day,
    not one row for all categories with an arbitrary category name."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fbk_tasks.io.atomic import write_parquet

    path = _score_lake(settings)
    t = pq.read_table(path)
    write_parquet(t.set_column(t.schema.get_field_index("product_id"), t.schema.field("product_id"),
                               pa.nulls(t.num_rows, pa.string())), path)
    build_warehouse(settings)
    rows = query(settings, "SELECT product_id, product_category, n_reviews, n_negative FROM daily_product_sentiment "
                           "ORDER BY product_category")[1]
    assert rows == [(None, "laptops", 2, 1), (None, "phones", 2, 1)]


def test_a_product_keeps_one_name_across_days_and_languages(settings):
    """Sources name one product in several languages; a name picked per day split the product's
    trend across names (and the README's 'worst products' ranking grouped partial series). Every
    day now carries the product's most frequent name; `products` lists them all."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    from fbk_tasks.io.atomic import write_parquet
    from fbk_tasks.score.run import run_scoring
    from fbk_tasks.score.testing import register_keyword_model, write_curated

    write_curated(settings, "2026-05-01", ["good", "bad", "ok"], products=("p1",))
    later = write_curated(settings, "2026-05-02", ["bad", "good"], products=("p1",), start_row=10)
    t = pq.read_table(later)
    write_parquet(t.set_column(t.schema.get_field_index("product_name"), t.schema.field("product_name"),
                               pa.array(["无线蓝牙耳机 Pro"] * t.num_rows)), later)
    register_keyword_model(settings)
    run_scoring(settings, scored_at=dt.datetime(2026, 5, 3, tzinfo=dt.timezone.utc))
    rows = query(settings, "SELECT day, product_name, n_reviews FROM daily_product_sentiment ORDER BY day")[1]
    assert rows == [(dt.date(2026, 5, 1), "Product p1", 3), (dt.date(2026, 5, 2), "Product p1", 2)]
    assert query(settings, "SELECT product_id, product_name, product_names, n_reviews, first_day, last_day FROM products")[1] == [
        ("p1", "Product p1", ["Product p1", "无线蓝牙耳机 Pro"], 5, dt.date(2026, 5, 1), dt.date(2026, 5, 2))]


def test_ingest_ledger_marks_each_files_latest_attempt(settings):
    """A re-run of a night writes ledger rows again for the same file: summing every row counted
    its reviews twice; `is_latest` keeps each landed file's last attempt."""
    from fbk_tasks.score.testing import write_ledger

    write_ledger(settings, "2026-05-01", run_id="ingest-1")
    write_ledger(settings, "2026-05-01", run_id="ingest-2")  # the re-run, same file
    write_ledger(settings, "2026-05-02", run_id="ingest-3")
    build_warehouse(settings)
    assert query(settings, "SELECT sum(rows_curated) FROM ingest_ledger")[1] == [(24,)]
    assert query(settings, "SELECT sum(rows_curated), list(run_id ORDER BY run_id) FROM ingest_ledger WHERE is_latest")[1] == [
        (16, ["ingest-2", "ingest-3"])]


def test_a_rescore_left_half_done_shows_each_review_once(settings):
    """A forced rescore writes new files beside the version's older ones and removes those when it
    finishes; while it runs, or after it failed, review_scores still has one row per review: the
    latest score."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from fbk_tasks.io.atomic import write_parquet
    from fbk_tasks.score.plan import output_files

    _score_lake(settings)
    files = output_files(settings, 1, rejected=False, ds="2026-05-01")
    assert files
    for old in files:  # a rescore that wrote its files and then failed before removing the older ones
        t = pq.read_table(old)
        later = pc.add(t["scored_at"], pa.scalar(3600, pa.duration("s")).cast(pa.duration(t["scored_at"].type.unit)))
        newer = t.set_column(t.schema.get_field_index("scored_at"), t.schema.field("scored_at"), later)
        newer = newer.set_column(newer.schema.get_field_index("run_id"), newer.schema.field("run_id"),
                                 pa.array(["rescore"] * newer.num_rows, newer.schema.field("run_id").type))
        write_parquet(newer, old.with_name(old.name.replace("part-1-", "part-1-zz")))
    build_warehouse(settings)
    assert query(settings, "SELECT count(*), count(DISTINCT review_id) FROM review_scores")[1] == [(4, 4)]
    assert query(settings, "SELECT DISTINCT score_run_id FROM review_scores")[1] == [("rescore",)]
    assert query(settings, "SELECT sum(n_reviews) FROM daily_product_sentiment")[1] == [(4,)]


def test_the_readme_example_queries_run(settings):
    """Every statement in the README's ```sql blocks runs on a populated warehouse (the analysts'
    first contact: a renamed column fails here, not in front of them)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sql\n(.*?)```", readme, flags=re.S)
    statements = [s.strip() for b in blocks for s in b.split(";") if s.strip() and not all(
        line.startswith("--") for line in s.strip().splitlines())]
    assert len(statements) >= 4
    _score_lake(settings)
    build_warehouse(settings)
    for sql in statements:
        query(settings, sql)


def test_created_date_is_the_utc_day_in_any_session_time_zone(settings):
    """Analysts opening the warehouse with DuckDB directly bucket created_at in their own time
    zone (a review at 00:00 UTC is the day before in Los Angeles); created_date is the UTC day."""
    import datetime as dt

    _score_lake(settings)  # reviews created at 2026-05-01 00:00 UTC
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        con.execute("SET TimeZone = 'America/Los_Angeles'")
        rows = con.execute("SELECT DISTINCT created_date, CAST(created_at AS DATE) FROM review_scores").fetchall()
    finally:
        con.close()
    assert rows == [(dt.date(2026, 5, 1), dt.date(2026, 4, 30))]


def test_score_coverage_says_what_the_sentiment_marts_cover(settings):
    """The sentiment marts count scored reviews only: a night the served version has not reached
    yet, or rejected reviews, vanished from them without a trace. score_coverage counts them."""
    import datetime as dt

    from fbk_tasks.score.testing import write_curated

    _score_lake(settings)
    write_curated(settings, "2026-05-02", ["later", "", "more"])  # not scored yet
    build_warehouse(settings)
    rows = query(settings, "SELECT ds, served_version, n_curated, n_scored, n_rejected, n_unscored, share_scored "
                           "FROM score_coverage ORDER BY ds")[1]
    assert rows == [(dt.date(2026, 5, 1), 1, 4, 4, 0, 0, 1.0), (dt.date(2026, 5, 2), 1, 3, 0, 0, 3, 0.0)]
    from fbk_tasks.score.run import run_scoring

    run_scoring(settings, scored_at=dt.datetime(2026, 5, 3, tzinfo=dt.timezone.utc))  # the empty text is rejected
    rows = query(settings, "SELECT ds, n_curated, n_scored, n_rejected, n_unscored FROM score_coverage ORDER BY ds")[1]
    assert rows == [(dt.date(2026, 5, 1), 4, 4, 0, 0), (dt.date(2026, 5, 2), 3, 2, 1, 0)]


def test_ledger_rows_written_before_a_pii_type_existed_still_read(settings):
    """QQ numbers and booking references became PII types after ledgers were written: those
    files lack pii_qq/pii_booking, and a lake holding only such files must still build, with
    NULL there and pii_total over what they counted."""
    import datetime as dt

    import pyarrow as pa

    from fbk_tasks.io.atomic import write_parquet
    from fbk_tasks.score.testing import write_ledger
    from fbk_tasks.warehouse.sources import LEDGER_SCHEMA

    old_schema = pa.schema([f for f in LEDGER_SCHEMA if f.name not in ("pii_qq", "pii_booking")])
    t0 = dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)
    row = {f.name: 0 for f in old_schema if pa.types.is_integer(f.type)}
    row.update(run_id="old", ds="2026-05-01", source="test", source_file="old.csv", file_sha256="1" * 64, status="ingested",
               pii_email=2, error=None, started_at=t0, finished_at=t0)
    write_parquet(pa.Table.from_pylist([row], schema=old_schema), settings.ledger_dir / "ds=2026-05-01" / "old-1.parquet")
    build_warehouse(settings)
    assert query(settings, "SELECT pii_qq, pii_booking, pii_total FROM ingest_ledger")[1] == [(None, None, 2)]
    write_ledger(settings, "2026-05-02")  # a new file beside it: the new columns read from it
    build_warehouse(settings)
    assert query(settings, "SELECT ds, pii_qq, pii_total FROM ingest_ledger ORDER BY ds")[1] == [
        (dt.date(2026, 5, 1), None, 2), (dt.date(2026, 5, 2), 0, 1)]
