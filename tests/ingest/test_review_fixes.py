"""Defects found in review of the ingestion stage: a file removed from one date and landed on
another is ingested there, nanosecond timestamps beside out-of-range sentinels, CSVs with
CR-only line endings, and `fbk ingest`'s default date in UTC."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone

import pandas as pd
import pyarrow.parquet as pq
import pytest

from fbk_tasks.ingest.pipeline import IngestError, ingest_partition, land_files, read_ledger
from fbk_tasks.ingest.readers import read_file
from fbk_tasks.ingest.transform import parse_timestamps

D1, D2, D3 = "2026-03-01", "2026-03-02", "2026-03-03"
HEADER = "review_id,product_id,rating,text,created_at"


def _rows(prefix: str, n: int = 4, created: str = "2026-02-28T10:00:00Z") -> list[str]:
    return [f"{prefix}{i},P{i},4,Kettle {prefix} number {i} boils quickly,{created}" for i in range(n)]


def _write(tmp_path, name: str, data: bytes):
    f = tmp_path / "in" / name
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(data)
    return f


def _parts(settings, ds: str) -> list[str]:
    return sorted(p.name for root in (settings.curated_dir, settings.quarantine_dir) for p in (root / f"ds={ds}").glob("*.parquet"))


# -- 1: a file removed from its date -----------------------------------------------------------
def test_a_file_removed_from_its_date_is_ingested_where_it_lands_again(settings, tmp_path):
    """Landed under the wrong date, removed from there and that date re-run (its parts are
    deleted), then landed for the right date: ingested there, not skipped as 'already
    ingested for ds=D1', where its rows no longer are. Once held by D2, the same bytes
    landing for a third date are skipped again, naming D2."""
    f = _write(tmp_path, "export.csv", ("\n".join([HEADER, *_rows("x")]) + "\n").encode())
    land_files(settings, [f], D1)
    assert [x.status for x in ingest_partition(settings, D1, run_id="run1").files] == ["ingested"]
    assert _parts(settings, D1)
    (settings.landing_dir / f"ds={D1}" / "generic" / "export.csv").unlink()
    assert ingest_partition(settings, D1, run_id="run2").files == []
    assert not _parts(settings, D1)  # the stale-part cleanup removed them; run1's ledger row stays

    land_files(settings, [f], D2)
    report = ingest_partition(settings, D2, run_id="run3")
    assert [(x.status, x.rows_curated) for x in report.files] == [("ingested", 4)]
    assert sorted(pq.read_table(settings.curated_dir / f"ds={D2}").to_pandas()["review_id"]) == ["x0", "x1", "x2", "x3"]
    ledger = read_ledger(settings)
    assert ledger[ledger["run_id"] == "run3"]["status"].tolist() == ["ingested"]

    land_files(settings, [f], D3)
    again = ingest_partition(settings, D3, run_id="run4")
    assert [x.status for x in again.files] == ["skipped"] and f"ds={D2}" in again.files[0].error
    assert not _parts(settings, D3)


# -- 2: nanosecond timestamps beside out-of-range sentinels -------------------------------------
def test_nanosecond_timestamps_beside_sentinel_dates_parse():
    """One value with 9 fractional digits made the ISO pass nanosecond; '0001-01-01' and
    '9999-12-31' are outside that range, and assigning their retried values back raised
    OutOfBoundsDatetime. They now parse as they do in a file without such a value."""
    raw = pd.Series(["2026-03-01T10:00:00.123456789Z", "0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z", "03/15/2024", "yesterday", None], dtype=object)
    ts, bad = parse_timestamps(raw, None)
    assert str(ts.dtype) == "datetime64[us, UTC]"
    assert list(ts[:4]) == [
        pd.Timestamp("2026-03-01T10:00:00.123456Z"),
        pd.Timestamp("0001-01-01T00:00:00Z").as_unit("us"),
        pd.Timestamp("9999-12-31T00:00:00Z").as_unit("us"),
        pd.Timestamp("2024-03-15T00:00:00Z"),
    ]
    assert bad.tolist() == [False, False, False, False, True, False]
    # the same values without the nanosecond one: the same results
    ts2, bad2 = parse_timestamps(raw[1:], None)
    assert list(ts2[:3]) == list(ts[1:4]) and bad2.tolist() == bad[1:].tolist()


def test_a_file_with_nanosecond_timestamps_and_sentinels_is_ingested(settings, tmp_path):
    """The whole file used to fail as an unexpected error; now the far-future sentinel is
    quarantined as timestamp_in_future (as it is in any file) and the other rows are curated."""
    settings.ingest.max_quarantine_share = 1.0
    rows = [*_rows("n", 3, created="2026-02-28T10:00:00.123456789Z"), *_rows("old", 1, created="0001-01-01T00:00:00Z"),
            *_rows("far", 1, created="9999-12-31T00:00:00Z")]
    land_files(settings, [_write(tmp_path, "ns.csv", ("\n".join([HEADER, *rows]) + "\n").encode())], D1)
    report = ingest_partition(settings, D1)
    assert [(x.status, x.rows_curated, x.rows_quarantined) for x in report.files] == [("ingested", 4, 1)]
    curated = pq.read_table(settings.curated_dir / f"ds={D1}").to_pandas().set_index("review_id")
    assert curated.loc["n0", "created_at"] == pd.Timestamp("2026-02-28T10:00:00.123456Z")
    assert curated.loc["old0", "created_at"].year == 1
    quarantine = pq.read_table(settings.quarantine_dir / f"ds={D1}").to_pandas()
    assert quarantine[["review_id", "reason", "created_at"]].values.tolist() == [["far0", "timestamp_in_future", "9999-12-31T00:00:00Z"]]


# -- 3: CR-only line endings and other CSV parse errors -----------------------------------------
def test_a_csv_with_cr_only_line_endings_is_read(settings, tmp_path):
    """Old Excel for Mac ends lines with a lone \\r (the file has no \\n): read like any CSV,
    a quoted value spanning lines included, instead of failing on the header."""
    rows = [*_rows("m", 3), 'm9,P9,5,"Two lines\rof review text",2026-02-28T10:00:00Z']
    f = _write(tmp_path, "mac.csv", ("\r".join([HEADER, *rows]) + "\r").encode())
    read = read_file(f)
    assert read.table.column_names[:5] == HEADER.split(",") and not read.malformed
    assert read.table["text"].to_pylist()[3] == "Two lines\rof review text"
    land_files(settings, [f], D1)
    report = ingest_partition(settings, D1)
    assert [(x.status, x.rows_read, x.rows_curated) for x in report.files] == [("ingested", 4, 4)]
    assert sorted(pq.read_table(settings.curated_dir / f"ds={D1}").to_pandas()["review_id"]) == ["m0", "m1", "m2", "m9"]


@pytest.mark.parametrize(
    "data",
    [
        # a lone \r inside the header line of a \n file (mixed line endings)
        ("review_id,product_id,rating,te\rxt,created_at\n" + "\n".join(_rows("c")) + "\n").encode(),
        # a header field over the csv module's field size limit (128 KiB)
        (f'review_id,"{"t" * 200_000}",text\n' + "c0,x,Kettle boils quickly\n").encode(),
    ],
    ids=["cr_in_header", "huge_header_field"],
)
def test_a_csv_the_parser_cannot_split_is_rejected_not_failed(settings, tmp_path, data):
    """A csv.Error is a property of the file, not an outage: the file is rejected with the
    reason (and not retried as 'failed' every night)."""
    land_files(settings, [_write(tmp_path, "broken.csv", data)], D1)
    with pytest.raises(IngestError, match=r"broken\.csv \[rejected\]: broken\.csv: cannot parse as csv") as err:
        ingest_partition(settings, D1)
    assert err.value.__cause__ is None
    assert read_ledger(settings)["status"].tolist() == ["rejected"]


# -- 4: `fbk ingest`'s default date -----------------------------------------------------------
_DEFAULT_DS = """
import argparse
from datetime import date
from fbk_tasks.ingest.commands import add_commands
parser = argparse.ArgumentParser()
add_commands(parser.add_subparsers(dest="command"))
print(parser.parse_args(["ingest"]).ds, date.today().isoformat())
"""


def test_fbk_ingest_defaults_to_the_utc_date():
    """In time zones 11 hours behind and 14 hours ahead of UTC (at any moment the local date
    differs from the UTC date in at least one of them), the default --ds is the UTC date."""
    local_differs = False
    for tz in ("Pacific/Pago_Pago", "Pacific/Kiritimati"):
        before = datetime.now(timezone.utc).date().isoformat()
        out = subprocess.run([sys.executable, "-c", _DEFAULT_DS], env={**os.environ, "TZ": tz}, capture_output=True, text=True, check=True)
        after = datetime.now(timezone.utc).date().isoformat()
        default, local = out.stdout.split()
        assert default in (before, after), f"TZ={tz}: default --ds {default}, UTC date {after}"
        local_differs |= local not in (before, after)
    assert local_differs  # the check above could tell a local date from the UTC date
