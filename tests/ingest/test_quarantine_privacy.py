"""The quarantine's raw_record shows what was wrong with a row, but no personal data: only the
source columns the row's mapping reads, every value PII-redacted as the text is (nothing else
cleaned), and a malformed line redacted too."""

from __future__ import annotations

import csv
import io
import json

import pyarrow.parquet as pq

from fbk_tasks.ingest.pipeline import ingest_partition, land_files

DS = "2026-03-01"
PHONE, EMAIL = "13800138000", "jane.doe@example.com"
# columns a source sends that no mapping reads: never stored anywhere
PERSONAL = {"reviewer_name": "Jane Roe", "tweet_coord": "[40.7128, -74.006]", "reviewer_email": "roe.jane@example.org"}


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _ingest(settings, tmp_path, name: str, data: bytes, source: str | None = None):
    settings.ingest.max_quarantine_share = 1.0
    settings.ingest.max_duplicate_share = 1.0
    f = tmp_path / "in" / name
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(data)
    land_files(settings, [f], DS, source)
    (report,) = ingest_partition(settings, DS).files
    assert report.status == "ingested", report.error
    curated = pq.read_table(settings.curated_dir / f"ds={DS}").to_pandas()
    q = settings.quarantine_dir / f"ds={DS}"
    quarantine = pq.read_table(q).to_pandas() if q.exists() else None
    return report, curated, quarantine


def _everything(frame) -> str:
    return "\n".join(str(v) for v in frame.to_numpy().ravel() if v is not None)


HEADER = ["review_id", "product_id", *PERSONAL, "rating", "text", "created_at"]


def _row(rid: str, text: str, rating: str = "4") -> list[str]:
    return [rid, "P1", *PERSONAL.values(), rating, text, "2026-02-28T10:00:00Z"]


def test_raw_record_keeps_mapped_columns_redacted_and_the_bad_value(settings, tmp_path):
    rows = [
        _row("r1", f"Call me {PHONE}, parcel lost"),
        _row("r2", f"Call me {PHONE}, parcel lost"),  # duplicate text: quarantined
        _row("r3", f"Mail {EMAIL}, <b>kettle</b> is fine, see https://shop.example.com/p/1", rating="five"),
        _row("r4", f"Kettle leaks, ring me on {PHONE}", rating=f"call {PHONE}"),
        # PII the text's cleaning reveals first: an HTML-escaped e-mail, full-width digits
        _row("r5", "Write to jane.doe&#64;example.com or ring １３８００１３８０００", rating="5 stars"),
        _row("r6", "我的QQ是284210953 敬待回复, confirmation # G8CVWJ", rating="好"),
    ]
    report, curated, quarantine = _ingest(settings, tmp_path, "reviews.csv", _csv(HEADER, rows))
    assert report.rows_curated == 1 and report.rows_quarantined == 5
    assert curated["text"].tolist() == ["Call me [PHONE], parcel lost"]

    records = dict(zip(quarantine["review_id"], map(json.loads, quarantine["raw_record"]), strict=True))
    # only the columns the generic mapping reads, in the file's order
    assert {tuple(r) for r in records.values()} == {("review_id", "product_id", "rating", "text", "created_at")}
    stored = _everything(quarantine) + _everything(curated)
    for value in (*PERSONAL.values(), PHONE, EMAIL, "１３８００１３８０００", "jane.doe&#64;example.com", "284210953", "G8CVWJ"):
        assert value not in stored, value

    # why each row was quarantined is still there, as written; only PII is replaced
    assert records["r2"]["text"] == "Call me [PHONE], parcel lost"
    assert records["r3"]["rating"] == "five"
    assert records["r3"]["text"] == "Mail [EMAIL], <b>kettle</b> is fine, see https://shop.example.com/p/1"
    assert records["r4"]["rating"] == "call [PHONE]" and records["r4"]["text"] == "Kettle leaks, ring me on [PHONE]"
    assert "[EMAIL]" in records["r5"]["text"] and "[PHONE]" in records["r5"]["text"] and records["r5"]["rating"] == "5 stars"
    assert records["r6"]["text"] == "我的[QQ] 敬待回复, confirmation # [BOOKING]" and records["r6"]["rating"] == "好"
    reasons = dict(zip(quarantine["review_id"], quarantine["reason"], strict=True))
    assert reasons["r2"] == "duplicate" and reasons["r3"] == reasons["r4"] == reasons["r5"] == reasons["r6"] == "rating_invalid"


def test_airline_quarantine_drops_the_tweeters_identity(settings, tmp_path):
    """The airline export carries who tweeted and where from; its mapping reads none of it."""
    header = ["tweet_id", "airline_sentiment", "airline_sentiment_confidence", "negativereason", "airline", "name", "text",
              "tweet_coord", "tweet_created", "tweet_location", "user_timezone"]  # fmt: skip
    tweet = ["5.70306e+17", "negative", "1.0", "Lost Luggage", "United", "jroe_77", f"@united bag lost, call me {PHONE}",
             "[40.64, -73.78]", "24-02-2015 11:35", "Brooklyn, NY", "Eastern Time (US & Canada)"]  # fmt: skip
    rows = [tweet, tweet, [*tweet[:2], "high", *tweet[3:6], "@united still no bag", *tweet[7:]]]
    report, curated, quarantine = _ingest(settings, tmp_path, "airline_tweets.csv", _csv(header, rows))
    assert report.rows_curated == 1 and report.rows_quarantined == 2
    assert sorted(quarantine["reason"]) == ["duplicate", "label_confidence_invalid"]
    for raw in quarantine["raw_record"]:
        record = json.loads(raw)
        assert list(record) == ["airline_sentiment", "airline_sentiment_confidence", "airline", "text", "tweet_created"]
    stored = _everything(quarantine)
    for value in ("jroe_77", "[40.64, -73.78]", "Brooklyn", "Eastern Time", "5.70306e+17", "Lost Luggage", PHONE):
        assert value not in stored, value
    bad = json.loads(quarantine.loc[quarantine["reason"] == "label_confidence_invalid", "raw_record"].iloc[0])
    assert bad["airline_sentiment_confidence"] == "high"


def test_malformed_line_is_redacted_but_shows_the_fault(settings, tmp_path):
    rows = [_row("r1", "A kettle that works"), [*_row("m1", f"Text with {PHONE} and {EMAIL}"), "EXTRA"]]
    report, _, quarantine = _ingest(settings, tmp_path, "reviews.csv", _csv(HEADER, rows))
    assert report.rows_quarantined == 1 and quarantine["reason"].tolist() == ["malformed_row;text_empty"]
    record = json.loads(quarantine["raw_record"].iloc[0])
    assert record["_raw_line"].endswith(",EXTRA") and "[PHONE]" in record["_raw_line"] and "[EMAIL]" in record["_raw_line"]
    assert PHONE not in record["_raw_line"] and EMAIL not in record["_raw_line"]
    assert record["_parser"].startswith("malformed_row (expected 8 fields, got 9)")


def test_ledger_counts_qq_and_booking_and_reads_older_rows(settings, tmp_path):
    """QQ numbers and booking codes are counted per type like the others (ledger pii_qq,
    pii_booking); ledger files written before those columns existed still read (as null)."""
    from fbk_tasks.ingest.pipeline import read_ledger
    from fbk_tasks.score.testing import write_ledger

    import pyarrow.parquet as pq

    from fbk_tasks.io.atomic import write_parquet

    older = write_ledger(settings, "2026-02-01")  # rewritten with the six original pii_* columns only
    write_parquet(pq.read_table(older).drop_columns(["pii_qq", "pii_booking"]), older)
    rows = [_row("r1", "我的QQ是284210953 敬待回复, 加群8757013"), _row("r2", "PNR A3ZZ0F, ticket # 0162424965446, call 13800138000")]
    _ingest(settings, tmp_path, "reviews.csv", _csv(HEADER, rows))
    ledger = read_ledger(settings).set_index("ds")
    new = ledger.loc[DS]
    assert (new["pii_qq"], new["pii_booking"], new["pii_phone"]) == (2, 2, 1)
    old = ledger.loc["2026-02-01"]
    assert old["pii_email"] == 1 and old[["pii_qq", "pii_booking"]].isna().all()
