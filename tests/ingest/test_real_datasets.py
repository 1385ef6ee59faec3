"""The four real datasets in ../shared/datasets ingest end to end with the shipped mappings,
and the counts reconcile (rows in the file = curated + quarantined)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from fbk_tasks.ingest.pipeline import IngestError, ingest_partition, land_files, read_ledger
from fbk_tasks.testing import shared_dataset

pytestmark = pytest.mark.realdata

CASES = [
    # file, expected rows read, expected mapping
    ("airline_tweets.csv", 14_640, "airline_tweets"),
    ("online_shopping_10_cats.csv.gz", 62_774, "online_shopping_10_cats"),
    ("waimai_10k.csv", 11_987, "waimai_10k"),
    ("amazon_devices_datafiniti.csv", 100, "amazon_datafiniti"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "rows", "source"), CASES, ids=[c[0] for c in CASES])
def test_real_dataset_ingests_and_reconciles(settings, name, rows, source):
    path = shared_dataset(name)
    land_files(settings, [path], "2026-02-01")
    report = ingest_partition(settings, "2026-02-01")
    (f,) = report.files
    assert f.status == "ingested" and f.source == source
    assert f.rows_read == rows == f.rows_curated + f.rows_quarantined
    curated = pq.read_table(settings.curated_dir / "ds=2026-02-01").to_pandas()
    assert len(curated) == f.rows_curated and curated["review_id"].is_unique
    assert curated["label"].notna().mean() > (0.3 if source == "amazon_datafiniti" else 0.99)
    conf = curated["label_confidence"]
    if source == "airline_tweets":  # annotator agreement, carried for every labelled tweet
        assert conf.notna().all() and conf.between(0, 1).all()
        assert 0.6 < (conf == 1.0).mean() < 0.8 and conf.min() < 0.5
    else:
        assert conf.isna().all()
    if f.rows_quarantined:
        q = pq.read_table(settings.quarantine_dir / "ds=2026-02-01").to_pandas()
        assert len(q) == f.rows_quarantined and q["reason"].str.len().min() > 0
    ledger = read_ledger(settings)
    assert int(ledger["rows_read"].iloc[0]) == rows


def test_airline_ids_keyed_on_tweet_id_are_surfaced(settings, tmp_path):
    """Keyed on the spreadsheet-rounded tweet_id, 12,206 of 14,640 rows collide: the run fails
    and says so with the numbers, instead of losing them."""
    path = shared_dataset("airline_tweets.csv")
    naive = tmp_path / "naive.yaml"
    src = settings.ingest.sources_dir
    sources = tmp_path / "sources"
    sources.mkdir()
    for p in src.glob("*.yaml"):
        (sources / p.name).write_text(p.read_text())
    text = (sources / "airline_tweets.yaml").read_text()
    text = text.replace("review_id: null", "review_id: tweet_id").replace("id_from_content: true", "id_from_content: false")
    (sources / "airline_tweets.yaml").write_text(text)
    settings.ingest.sources_dir = sources
    land_files(settings, [path], "2026-02-01")
    with pytest.raises(IngestError) as err:
        ingest_partition(settings, "2026-02-01")
    msg = str(err.value)
    assert "_duplicate" in msg and "duplicates 12" in msg
    assert "rows read 14640" in msg
    del naive
