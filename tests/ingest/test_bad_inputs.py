"""The bad-input corpus: every case gets a clear error or a quarantine row with its reason,
and nothing is lost (rows read = curated + quarantined, checked against the Parquet files)."""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fbk_tasks.ingest.pipeline import IngestError, ingest_partition, land_files, read_ledger

DS = "2026-03-01"
HEADER = ["review_id", "product_id", "product_name", "product_category", "rating", "title", "text", "created_at"]


def _csv(rows: list[list[str]], header=HEADER, delimiter=",") -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _row(rid: str, text: str, rating: str = "4", created: str = "2026-02-28T10:00:00Z", product: str = "P1") -> list[str]:
    return [rid, product, "Kettle", "home", rating, "", text, created]


def _ingest(settings, tmp_path, name: str, data: bytes, source: str | None = None):
    f = tmp_path / "in" / name
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(data)
    land_files(settings, [f], DS, source)
    return ingest_partition(settings, DS)


def _outputs(settings):
    cur = settings.curated_dir / f"ds={DS}"
    qua = settings.quarantine_dir / f"ds={DS}"
    curated = pq.read_table(cur).to_pandas() if cur.exists() and any(cur.glob("*.parquet")) else pd.DataFrame()
    quarantine = pq.read_table(qua).to_pandas() if qua.exists() and any(qua.glob("*.parquet")) else pd.DataFrame()
    return curated, quarantine


def _reconciles(settings, report):
    curated, quarantine = _outputs(settings)
    for f in report.files:
        assert f.rows_read == f.rows_curated + f.rows_quarantined
    assert report.rows_curated == len(curated)
    assert report.rows_quarantined == len(quarantine)
    ledger = read_ledger(settings)
    ledger = ledger[ledger["run_id"] == report.run_id]
    assert int(ledger["rows_read"].sum()) == len(curated) + len(quarantine)
    return curated, quarantine


# -- row-level cases, one file, one GX run ---------------------------------------------------
ROW_CASES = {
    # id: (row, expected reason or None when the row must be curated, check on curated text)
    "rating_word": (_row("r01", "Works fine, rating spelled out", rating="five"), "rating_invalid"),
    "rating_zero": (_row("r02", "Zero stars given here", rating="0"), "rating_out_of_range"),
    "rating_six": (_row("r03", "Six stars given here", rating="6"), "rating_out_of_range"),
    "rating_fraction": (_row("r04", "Four and a half", rating="4.5"), "rating_invalid"),
    # not whole and outside 1..5: one reason (invalid), and GX must count it the same way
    "rating_fraction_above": (_row("r22", "Five and a half stars", rating="5.5"), "rating_invalid"),
    "rating_fraction_below": (_row("r23", "Half a star only", rating="0.5"), "rating_invalid"),
    "text_nan": (_row("r05", ""), "text_empty"),
    "text_whitespace": (_row("r06", "   \t  "), "text_empty"),
    "text_1mb": (_row("r07", "This kettle is good. " * 50_000), "text_too_long"),
    "script_only": (_row("r08", "<script>alert('x')</script>"), "text_empty"),
    "future_date": (_row("r09", "Review from the future", created="2099-01-01T00:00:00Z"), "timestamp_in_future"),
    "bad_date": (_row("r10", "Review with a bad date", created="yesterday"), "timestamp_unparseable"),
    "duplicate_id_a": (_row("r11", "The first copy of this review is kept"), None),
    "duplicate_id_b": (_row("r11", "A different text but the same id"), "duplicate"),
    "emoji_only": (_row("r12", "😀😀👍"), "language_unknown"),
    "french": (_row("r13", "Le produit est arrivé cassé et le service client ne répond pas"), "language_unknown"),
    "mixed_zh_en": (_row("r14", "这个kettle质量很好，烧水很快，price也合适"), None),
    "script_and_text": (_row("r15", "<script>alert(1)</script>Great <b>kettle</b> &amp; fast delivery"), None),
    "nul_bytes": (_row("r16", "Good\x00 kettle\x00 indeed"), None),
    "rating_empty_ok": (_row("r17", "No rating but fine", rating=""), None),
    "dup_text_a": (_row("r18", "Exactly the same words twice", product="P9"), None),
    "dup_text_b": (_row("r19", "exactly the same words, twice!", product="P9"), "duplicate"),
    "pii": (_row("r20", "Mail me at jane.doe@example.com or call +1 415 555 0134, price $49.99"), None),
}


def test_row_level_corpus(settings, tmp_path, monkeypatch):
    settings.ingest.max_quarantine_share = 1.0
    settings.ingest.max_duplicate_share = 1.0
    rows = [case[0] for case in ROW_CASES.values()]
    rows.append(["r99", "P1", "Kettle", "home", "4", "", "ok", "2026-02-28", "EXTRA"])  # too many fields
    # a sender's clock two minutes ahead of ours: within ingest.future_tolerance_minutes, so curated
    ahead = (datetime.now(timezone.utc) + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows.append(_row("r21", "Posted two minutes ahead of our clock", created=ahead))
    data = _csv(rows).encode("utf-8")
    report = _ingest(settings, tmp_path, "corpus.csv", data)
    curated, quarantine = _reconciles(settings, report)
    assert report.rows_read == len(rows)

    by_id_q = {}
    for _, r in quarantine.iterrows():
        by_id_q.setdefault(r["review_id"], []).append(r["reason"].split(";"))
    for name, (row, reason) in ROW_CASES.items():
        rid = row[0]
        if reason is None:
            assert rid in set(curated["review_id"]), f"{name}: expected curated"
        else:
            assert rid in by_id_q and any(reason in rs for rs in by_id_q[rid]), f"{name}: expected quarantine reason {reason}, got {by_id_q.get(rid)}"

    assert "r21" in set(curated["review_id"])
    malformed = quarantine[quarantine["reason"].str.contains("malformed_row")]
    assert len(malformed) == 1 and "EXTRA" in malformed["raw_record"].iloc[0]

    text = dict(zip(curated["review_id"], curated["text"]))
    assert "\x00" not in text["r16"] and "kettle" in text["r16"]
    assert "<" not in text["r15"] and "Great kettle & fast delivery" in text["r15"]
    assert "[EMAIL]" in text["r20"] and "[PHONE]" in text["r20"] and "$49.99" in text["r20"]
    assert "jane.doe" not in " ".join(quarantine["text"].dropna()) + " ".join(curated["text"])
    lang = dict(zip(curated["review_id"], curated["language"]))
    assert lang["r14"] == "zh"
    # the quarantine keeps the original values a person needs to fix the row
    q = quarantine.set_index("review_id")
    assert q.loc["r01", "rating"] == "five"
    assert q.loc["r10", "created_at"] == "yesterday"
    ledger = read_ledger(settings)
    assert ledger["pii_email"].sum() >= 1 and ledger["pii_phone"].sum() >= 1


def test_a_corrected_resend_in_the_same_night_is_not_a_duplicate(settings, tmp_path):
    """Duplicates are judged against what was curated: a row quarantined in one file (bad
    rating) and sent again corrected in a later file of the same night is curated, while a row
    curated in the first file and sent again is a duplicate."""
    settings.ingest.max_quarantine_share = 1.0
    settings.ingest.max_duplicate_share = 1.0
    first = tmp_path / "in" / "a_first.csv"
    resend = tmp_path / "in" / "b_resend.csv"
    first.parent.mkdir(parents=True)
    first.write_text(_csv([_row("c1", "Kettle boils slowly", rating="five"), _row("c2", "Kettle arrived dented")]))
    resend.write_text(_csv([_row("c1", "Kettle boils slowly", rating="2"), _row("c2", "Kettle arrived dented")]))
    land_files(settings, [first, resend], DS)
    report = ingest_partition(settings, DS)
    curated, quarantine = _reconciles(settings, report)
    assert sorted(curated["review_id"]) == ["c1", "c2"]
    reasons = dict(zip(zip(quarantine["review_id"], quarantine["source_file"].str.contains("b_resend")), quarantine["reason"]))
    assert reasons == {("c1", False): "rating_invalid", ("c2", True): "duplicate"}
    assert curated.set_index("review_id").loc["c1", "rating"] == 2


def test_a_corrected_copy_later_in_the_same_file_is_curated(settings, tmp_path):
    """Within one file too, the first *valid* row of an id (or text) is the one curated: a row
    quarantined for a bad rating followed by its corrected copy keeps the copy, not neither;
    two valid copies keep the first."""
    settings.ingest.max_quarantine_share = 1.0
    settings.ingest.max_duplicate_share = 1.0
    f = tmp_path / "in" / "night.csv"
    f.parent.mkdir(parents=True)
    f.write_text(_csv([_row("c1", "Kettle boils slowly", rating="five"), _row("c2", "Kettle arrived dented"),
                       _row("c1", "Kettle boils slowly", rating="2"), _row("c2", "Kettle arrived dented")]))
    land_files(settings, [f], DS)
    report = ingest_partition(settings, DS)
    curated, quarantine = _reconciles(settings, report)
    assert sorted(curated["row_number"]) == [2, 3] and sorted(curated["review_id"]) == ["c1", "c2"]
    assert dict(zip(quarantine["row_number"], quarantine["reason"])) == {1: "rating_invalid;duplicate", 4: "duplicate"}


def test_label_confidence_is_kept_or_quarantined_with_its_value(settings, tmp_path):
    """A source's confidence in its label: a number in [0, 1] is kept beside the label, anything
    else quarantines the row with reason label_confidence_invalid and the value as written; a
    label derived from the rating carries no confidence."""
    settings.ingest.max_quarantine_share = 1.0
    header = HEADER + ["label", "label_confidence"]
    rows = [
        _row("c1", "Kettle boils fast, good value") + ["positive", "0.6667"],
        _row("c2", "Kettle leaks from the lid seam") + ["negative", ""],
        _row("c3", "Kettle is fine I suppose, nothing more") + ["neutral", "high"],
        _row("c4", "Kettle switch broke after a week") + ["negative", "1.5"],
        _row("c5", "Kettle arrived on time and works") + ["", "0.5"],
    ]
    report = _ingest(settings, tmp_path, "confidence.csv", _csv(rows, header=header).encode("utf-8"))
    curated, quarantine = _reconciles(settings, report)
    cur = curated.set_index("review_id")
    assert sorted(cur.index) == ["c1", "c2", "c5"]
    assert cur.loc["c1", "label_confidence"] == pytest.approx(0.6667)
    assert pd.isna(cur.loc["c2", "label_confidence"])
    assert cur.loc["c5", "label"] == "positive" and pd.isna(cur.loc["c5", "label_confidence"])  # from the rating
    q = quarantine.set_index("review_id")
    assert sorted(q.index) == ["c3", "c4"]
    assert set(q["reason"]) == {"label_confidence_invalid"}
    assert q.loc["c3", "label_confidence"] == "high" and q.loc["c4", "label_confidence"] == "1.5"
    (f,) = report.files
    assert f.rows_quarantined == 2


# -- file-level cases ----------------------------------------------------------------------------
def _good_rows(n=5, prefix="g"):
    return [_row(f"{prefix}{i}", f"Solid kettle {prefix} number {i}, boils quickly") for i in range(n)]


def test_gbk_encoded_file_is_decoded(settings, tmp_path):
    rows = [_row("z1", "物流很快，质量不错，就是价格有点贵"), _row("z2", "包装破损，客服态度很差")]
    report = _ingest(settings, tmp_path, "gbk.csv", _csv(rows).encode("gbk"))
    curated, _ = _reconciles(settings, report)
    # full-width punctuation is folded to ASCII by the cleaner (NFKC); the words are intact
    assert set(curated["text"]) == {unicodedata.normalize("NFKC", t) for t in ("物流很快，质量不错，就是价格有点贵", "包装破损，客服态度很差")}
    assert read_ledger(settings)["encoding"].iloc[0] == "gb18030"


def test_utf8_bom_header(settings, tmp_path):
    report = _ingest(settings, tmp_path, "bom.csv", b"\xef\xbb\xbf" + _csv(_good_rows()).encode())
    curated, _ = _reconciles(settings, report)
    assert sorted(curated["review_id"]) == [f"g{i}" for i in range(5)]


def test_invalid_utf8_bytes_quarantined(settings, tmp_path):
    settings.ingest.max_quarantine_share = 1.0
    data = _csv(_good_rows(20)).encode() + b"bad1,P1,Kettle,home,4,,broken \xff\xfe bytes,2026-02-28\n"
    report = _ingest(settings, tmp_path, "badutf8.csv", data)
    _, quarantine = _reconciles(settings, report)
    assert list(quarantine["reason"]) == ["invalid_encoding"]


def test_semicolon_delimiter_is_sniffed(settings, tmp_path):
    report = _ingest(settings, tmp_path, "semi.csv", _csv(_good_rows(), delimiter=";").encode())
    curated, _ = _reconciles(settings, report)
    assert len(curated) == 5


def test_tsv_and_jsonl_and_parquet(settings, tmp_path):
    rows = _good_rows(3, "t")
    _ingest(settings, tmp_path, "a.tsv", _csv(rows, delimiter="\t").encode())
    jl = "\n".join(json.dumps(dict(zip(HEADER, r))) for r in _good_rows(3, "j")) + "\n{not json\n"
    settings.ingest.max_quarantine_share = 1.0
    _ingest(settings, tmp_path, "b.jsonl", jl.encode())
    t = pa.Table.from_pylist([dict(zip(HEADER, r)) | {"rating": 5} for r in _good_rows(3, "p")])
    buf = io.BytesIO()
    pq.write_table(t, buf)
    report = _ingest(settings, tmp_path, "c.parquet", buf.getvalue())
    curated, quarantine = _reconciles(settings, report)
    assert {"t0", "j0", "p0"} <= set(curated["review_id"])
    assert set(curated.loc[curated["review_id"].str.startswith("p"), "rating"]) == {5}
    assert quarantine["reason"].str.contains("malformed_row").sum() == 1


def test_extra_columns_are_ignored(settings, tmp_path):
    header = HEADER + ["internal_note"]
    rows = [r + ["ignore me"] for r in _good_rows()]
    report = _ingest(settings, tmp_path, "extra.csv", _csv(rows, header=header).encode())
    curated, _ = _reconciles(settings, report)
    assert "internal_note" not in curated.columns and len(curated) == 5


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("empty.csv", b"", "zero-byte"),
        ("truncated.parquet", None, "Parquet"),
        ("nocol.csv", b"review_id,comment\n1,hello\n", "missing required column"),
        ("sheet.xlsx", b"PK\x03\x04junk", "unknown file type"),
        ("blank.csv", b"   \n\n", "no header"),
    ],
)
def test_unreadable_files_fail_with_a_clear_error(settings, tmp_path, name, data, message):
    if data is None:
        buf = io.BytesIO()
        pq.write_table(pa.table({"text": ["hello"] * 100}), buf)
        data = buf.getvalue()[:-40]
    with pytest.raises(IngestError, match=message) as err:
        _ingest(settings, tmp_path, name, data)
    report = err.value.report
    assert report.files[0].status == "rejected"
    ledger = read_ledger(settings)
    assert list(ledger["status"]) == ["rejected"] and message in ledger["error"].iloc[0]


def test_header_only_file_fails_the_batch(settings, tmp_path):
    with pytest.raises(IngestError, match="expect_table_row_count_to_be_between"):
        _ingest(settings, tmp_path, "header.csv", _csv([]).encode())


def test_quarantine_share_over_threshold_fails_with_numbers(settings, tmp_path):
    rows = [_row(f"b{i}", "") for i in range(8)] + _good_rows(2)
    with pytest.raises(IngestError) as err:
        _ingest(settings, tmp_path, "mostlybad.csv", _csv(rows).encode())
    msg = str(err.value)
    assert "expect_column_mean_to_be_between" in msg and "_quarantined" in msg and "0.8000" in msg
    curated, quarantine = _outputs(settings)
    assert curated.empty and quarantine.empty  # a failed batch publishes nothing
    assert read_ledger(settings)["status"].tolist() == ["failed"]


def test_parquet_binary_column_with_invalid_utf8_quarantines_the_row(settings, tmp_path):
    """A binary column is text in UTF-8 bytes; a value that is not UTF-8 used to abort the whole
    night ('Invalid UTF8 payload'). Like a CSV, it is read with U+FFFD and the row quarantined."""
    settings.ingest.max_quarantine_share = 1.0
    t = pa.table({"review_id": ["p1", "p2", "p3"], "text": pa.array([b"Solid kettle, boils quickly", "水壶很好用".encode(), b"broken \xff\xfe bytes here"], pa.binary())})
    buf = io.BytesIO()
    pq.write_table(t, buf)
    report = _ingest(settings, tmp_path, "binary.parquet", buf.getvalue())
    curated, quarantine = _reconciles(settings, report)
    assert sorted(curated["review_id"]) == ["p1", "p2"]
    assert list(quarantine["review_id"]) == ["p3"] and list(quarantine["reason"]) == ["invalid_encoding"]
    assert read_ledger(settings)["encoding"].iloc[0] == "binary (invalid UTF-8 replaced)"


def test_parquet_column_that_cannot_become_text_rejects_the_file(settings, tmp_path):
    """A column Arrow cannot turn into text (here a time zone the tz database lacks) rejects
    the file with the column named, and is recorded in the ledger, instead of an ArrowInvalid
    that aborts the night."""
    t = pa.table({"text": ["Solid kettle"], "created_at": pa.array([0], pa.timestamp("s", tz="Mars/Olympus"))})
    buf = io.BytesIO()
    pq.write_table(t, buf)
    with pytest.raises(IngestError, match="column 'created_at'.*cannot be read as text"):
        _ingest(settings, tmp_path, "tz.parquet", buf.getvalue())
    assert read_ledger(settings)["status"].tolist() == ["rejected"]


def test_label_outside_the_mapping_is_quarantined_with_its_value(settings, tmp_path):
    """A label the mapping does not know used to become NULL silently (or be replaced by the
    rating's): the row was curated unlabelled and training lost it. A number written as a
    float ('1.0', JSON 1.0) is the label '1'; anything else is quarantined as label_invalid,
    with the value as written in the quarantine's label column."""
    settings.ingest.max_quarantine_share = 1.0
    rows = [
        {"cat": "书籍", "label": 1, "review": "这本书内容很好，推荐"},
        {"cat": "书籍", "label": 1.0, "review": "印刷清晰，物流也快"},
        {"cat": "书籍", "label": "0", "review": "纸张很差，有异味"},
        {"cat": "书籍", "label": 0.0, "review": "包装破损，很失望"},
        {"cat": "书籍", "label": 2, "review": "一般般吧，没什么特别"},
        {"cat": "书籍", "label": "yes", "review": "还可以，价格合适"},
        {"cat": "书籍", "label": 0.5, "review": "有好有坏，说不清"},
        {"cat": "书籍", "label": None, "review": "没有标签的评论"},
    ]
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    report = _ingest(settings, tmp_path, "labels.jsonl", data, source="online_shopping_10_cats")
    curated, quarantine = _reconciles(settings, report)
    assert {t: None if pd.isna(label) else label for t, label in zip(curated["text"], curated["label"])} == {
        "这本书内容很好,推荐": "positive",
        "印刷清晰,物流也快": "positive",
        "纸张很差,有异味": "negative",
        "包装破损,很失望": "negative",
        "没有标签的评论": None,
    }
    assert set(quarantine["reason"]) == {"label_invalid"}
    assert sorted(quarantine["label"]) == ["0.5", "2", "yes"]
    (f,) = report.files
    assert f.rows_quarantined == 3 and f.reasons == {"label_invalid": 3}
