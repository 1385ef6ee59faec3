"""How one logical date's run treats its files as a whole: a file that breaks unexpectedly does
not stop the others, the same bytes landed twice under two names are ingested once, and two
ingestion runs never work on the landing area and curated history at the same time."""

from __future__ import annotations

import fcntl
import logging
import threading
import time

import pyarrow.parquet as pq
import pytest

from fbk_tasks.ingest import pipeline
from fbk_tasks.ingest.pipeline import IngestError, ingest_partition, land_files, read_ledger

DS = "2026-03-01"
CSV = "review_id,product_id,rating,text,created_at\n"


def _file(tmp_path, name: str, prefix: str, n: int = 4) -> bytes:
    data = (CSV + "".join(f"{prefix}{i},P{i},4,Kettle {prefix} number {i} boils quickly,2026-02-28T10:00:00Z\n" for i in range(n))).encode()
    f = tmp_path / "in" / name
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(data)
    return f


def test_an_unexpected_error_in_one_file_fails_that_file_not_the_night(settings, tmp_path, monkeypatch):
    """The broken file gets a 'failed' ledger row with the error, the later files are still
    ingested and recorded, stale parts are still cleaned, and the run still raises."""
    land_files(settings, [_file(tmp_path, "a.csv", "a"), _file(tmp_path, "b.csv", "b")], DS)
    stale = settings.curated_dir / f"ds={DS}" / "part-0000000000000000.parquet"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left over")
    real = pipeline.ingest_file

    def flaky(settings_, path, *args, **kwargs):
        if path.name == "a.csv":
            raise RuntimeError("disk on fire")
        return real(settings_, path, *args, **kwargs)

    monkeypatch.setattr(pipeline, "ingest_file", flaky)
    with pytest.raises(IngestError, match=r"a\.csv \[failed\]: RuntimeError: disk on fire") as err:
        ingest_partition(settings, DS, run_id="run1")
    assert isinstance(err.value.__cause__, RuntimeError)  # the traceback reaches the task log
    assert [(f.source_file.rsplit("/", 1)[-1], f.status) for f in err.value.report.files] == [("a.csv", "failed"), ("b.csv", "ingested")]
    ledger = read_ledger(settings).set_index("source_file")
    assert ledger.loc[f"ds={DS}/generic/a.csv", "status"] == "failed"
    assert "disk on fire" in ledger.loc[f"ds={DS}/generic/a.csv", "error"]
    assert ledger.loc[f"ds={DS}/generic/b.csv", "status"] == "ingested"
    assert sorted(pq.read_table(settings.curated_dir / f"ds={DS}").to_pandas()["review_id"]) == ["b0", "b1", "b2", "b3"]
    assert not stale.exists()


def test_a_write_that_fails_half_way_leaves_neither_part(settings, tmp_path, monkeypatch):
    """A file whose quarantine part cannot be written (disk full) after its curated part was
    written must not leave the curated rows visible without their quarantine rows: neither
    part appears, no temporary file is left, and the ledger says failed. The re-run writes both."""
    data = CSV + "".join(f"w{i},P{i},4,Kettle w number {i} boils quickly,2026-02-28T10:00:00Z\n" for i in range(6)) + "w9,P9,4,,2026-02-28T10:00:00Z\n"
    f = tmp_path / "in" / "w.csv"
    f.parent.mkdir(parents=True)
    f.write_text(data)
    land_files(settings, [f], DS)
    real = pipeline.pq.write_table
    writes: list[str] = []

    def full_disk(table, where, *args, **kwargs):
        writes.append(str(where))
        if len(writes) == 2:
            raise OSError(28, "No space left on device")
        return real(table, where, *args, **kwargs)

    monkeypatch.setattr(pipeline.pq, "write_table", full_disk)
    with pytest.raises(IngestError, match=r"w\.csv \[failed\]: OSError"):
        ingest_partition(settings, DS, run_id="run1")
    assert "curated" in writes[0] and "quarantine" in writes[1]
    for root in (settings.curated_dir, settings.quarantine_dir):
        assert not list((root / f"ds={DS}").glob("*")) if (root / f"ds={DS}").exists() else True
    assert read_ledger(settings)["status"].tolist() == ["failed"]

    monkeypatch.setattr(pipeline.pq, "write_table", real)
    report = ingest_partition(settings, DS, run_id="run2")
    assert (report.rows_curated, report.rows_quarantined) == (6, 1)
    assert len(pq.read_table(settings.curated_dir / f"ds={DS}")) == 6
    assert pq.read_table(settings.quarantine_dir / f"ds={DS}").column("reason").to_pylist() == ["text_empty"]


@pytest.mark.parametrize("permissive", [False, True])
def test_the_same_bytes_twice_in_one_night_are_ingested_once(settings, tmp_path, permissive):
    """'export.csv' and 'export (1).csv' with the same bytes: the second is skipped and says
    which file it repeats; the first file's ledger row and curated part are kept (they share
    the content hash that names both), with or without a duplicate-share threshold."""
    if permissive:
        settings.ingest.max_duplicate_share = 1.0
        settings.ingest.max_quarantine_share = 1.0
    first = _file(tmp_path, "export.csv", "e")
    second = tmp_path / "in" / "export (1).csv"
    second.write_bytes(first.read_bytes())
    land_files(settings, [first, second], DS)
    for run in ("run1", "run2"):  # a re-run decides the same
        report = ingest_partition(settings, DS, run_id=run)
        assert [(f.source_file.rsplit("/", 1)[-1], f.status) for f in report.files] == [("export (1).csv", "ingested"), ("export.csv", "skipped")]
        assert "export (1).csv" in report.files[1].error
        assert report.rows_curated == 4
        curated = pq.read_table(settings.curated_dir / f"ds={DS}").to_pandas()
        assert sorted(curated["review_id"]) == ["e0", "e1", "e2", "e3"]
        ledger = read_ledger(settings)
        ledger = ledger[ledger["run_id"] == run]
        assert sorted(ledger["status"]) == ["ingested", "skipped"]
        assert int(ledger["rows_read"].sum()) == len(curated)


def test_ingestion_runs_are_serialised_by_a_lock(settings, tmp_path, caplog):
    """A second run waits (and says so) while another holds the ingestion lock, so it cannot
    claim the same landed files or check duplicates against a partition being written."""
    land_files(settings, [_file(tmp_path, "a.csv", "a")], DS)
    lock = settings.state_dir / "ingest.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        caplog.set_level(logging.INFO, logger="fbk_tasks.ingest.pipeline")
        t = threading.Thread(target=lambda: result.setdefault("report", ingest_partition(settings, DS, run_id="run1")))
        t.start()
        time.sleep(1.0)
        assert t.is_alive() and not settings.ledger_dir.exists() and not (settings.curated_dir / f"ds={DS}").exists()
        assert any("waiting for another ingestion run" in r.getMessage() for r in caplog.records)
        fcntl.flock(held, fcntl.LOCK_UN)
    t.join(timeout=120)
    assert not t.is_alive() and result["report"].rows_curated == 4


def test_an_older_date_does_not_sweep_new_files_into_the_past(settings, tmp_path):
    """Files waiting in landing/ belong to the newest night: a re-run or `fbk ingest --ds` of an
    older date reprocesses its own files only; the waiting file is claimed by the next run of the
    newest date. Explicit files (claim=False) never sweep either."""
    land_files(settings, [_file(tmp_path, "old.csv", "o")], "2026-03-01")
    ingest_partition(settings, "2026-03-01", run_id="night1")
    land_files(settings, [_file(tmp_path, "mid.csv", "m")], "2026-03-02")
    ingest_partition(settings, "2026-03-02", run_id="night2")
    waiting = settings.landing_dir / "tonight.csv"
    waiting.write_bytes(_file(tmp_path, "tonight.csv", "t").read_bytes())

    assert pipeline.claim_landed_files(settings, "2026-03-01")[0][0].name == "old.csv"  # the DAG's claim task
    rerun = ingest_partition(settings, "2026-03-01", run_id="night1")  # a re-run of an older night
    assert [f.source_file for f in rerun.files] == ["ds=2026-03-01/generic/old.csv"] and waiting.exists()
    explicit = ingest_partition(settings, "2026-03-02", run_id="night2", claim=False)
    assert [f.source_file for f in explicit.files] == ["ds=2026-03-02/generic/mid.csv"] and waiting.exists()

    land_files(settings, [_file(tmp_path, "typo.csv", "y")], "2062-03-01")  # a mistyped --ds far ahead: ignored
    tonight = ingest_partition(settings, "2026-03-03", run_id="night3")
    assert [f.source_file for f in tonight.files] == ["ds=2026-03-03/generic/tonight.csv"] and not waiting.exists()


def test_files_no_run_claims_fail_the_night_loudly_after_the_others(settings, tmp_path):
    """A file in a folder that names no mapping (a typo), or nested deeper, would never be
    ingested and never reach the ledger: the run ingests the rest and then fails naming them."""
    (settings.landing_dir / "airline_tweetz").mkdir(parents=True)
    (settings.landing_dir / "airline_tweetz" / "x.csv").write_bytes(b"review_id,text\n1,hello there\n")
    (settings.landing_dir / "generic" / "sub").mkdir(parents=True)
    (settings.landing_dir / "generic" / "sub" / "y.csv").write_bytes(b"review_id,text\n2,hello again\n")
    (settings.landing_dir / "good.csv").write_bytes(_file(tmp_path, "good.csv", "g").read_bytes())
    (settings.landing_dir / "generic" / ".rsync-partial").mkdir()  # a transfer tool's hidden folder: not a stray
    (settings.landing_dir / "generic" / ".rsync-partial" / "z.csv").write_bytes(b"review_id,text\n3,half\n")
    with pytest.raises(IngestError, match=r"(?s)0 of 1 file\(s\) not ingested.*2 file\(s\) in landing/ that no run claims"
                                          r".*airline_tweetz/x\.csv.*generic/sub/y\.csv") as err:
        ingest_partition(settings, DS, run_id="run1")
    assert [(f.source_file, f.status) for f in err.value.report.files] == [(f"ds={DS}/generic/good.csv", "ingested")]
    assert (settings.landing_dir / "airline_tweetz" / "x.csv").exists()
