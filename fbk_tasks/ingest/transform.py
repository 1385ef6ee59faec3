"""Map a read file onto the canonical schema, clean and redact it, and decide per row
whether it is curated or quarantined (with every reason that applies).

Pure functions on in-memory tables: no I/O here, so they test on tiny frames.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fbk_tasks.ingest.mapping import SourceMapping
from fbk_tasks.ingest.readers import ROW_NUMBER, FileRejected, ReadResult
from fbk_tasks.settings import IngestSettings
from fbk_tasks.text.clean import clean_and_redact, clean_and_redact_many, normalize_for_dedup
from fbk_tasks.text.lang import detect_language
from fbk_tasks.text.pii import PII_TYPES, as_string_array, redact_pii

# Row-level reasons, in the order they are listed in `reason`.
REASONS = (
    "malformed_row",
    "invalid_encoding",
    "text_empty",
    "text_too_short",
    "text_too_long",
    "rating_invalid",
    "rating_out_of_range",
    "label_invalid",
    "label_confidence_invalid",
    "timestamp_unparseable",
    "timestamp_in_future",
    "language_unknown",
    "duplicate",
)


@dataclass
class Canonical:
    """A file mapped to canonical columns, with one boolean mask per reason."""

    frame: pd.DataFrame  # canonical columns + row_number + raw values + dedup_key
    # the columns the mapping reads, as read (no other column: see record_columns), for the
    # quarantine's raw_record
    source: pa.Table | None = None
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    pii_counts: dict[str, int] = field(default_factory=dict)
    malformed: list[tuple[int, str, str]] = field(default_factory=list)

    def reasons(self, rows: np.ndarray | None = None) -> pd.Series:
        """Semicolon-joined reasons per row ('' when the row is clean); only for the rows
        selected by the boolean mask ``rows`` when given (indexed like the frame)."""
        index = self.frame.index if rows is None else self.frame.index[rows]
        out = np.full(len(index), "", dtype=object)
        for name in REASONS:
            mask = self.masks.get(name)
            if mask is None or not mask.any():
                continue
            sel = mask if rows is None else mask[rows]
            out[sel] = np.where(out[sel] == "", name, out[sel] + ";" + name)
        return pd.Series(out, index=index, dtype=object)

    def quarantined(self) -> np.ndarray:
        mask = np.zeros(len(self.frame), dtype=bool)
        for m in self.masks.values():
            mask |= m
        return mask


def _col(table: pa.Table, name: str | None) -> pa.ChunkedArray | None:
    if name and name in table.column_names:
        return table[name]
    return None


def _strip_or_null_arrow(arr: pa.ChunkedArray | None, n: int) -> pa.Array:
    """Trimmed strings, '' as null (an absent column: all null)."""
    if arr is None:
        return pa.nulls(n, pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    s = pc.utf8_trim_whitespace(arr)
    return pc.if_else(pc.equal(s, ""), pa.scalar(None, pa.string()), s)


def _str_series(arr: pa.Array) -> pd.Series:
    """An Arrow string array as a pandas ``str`` column (Arrow-backed, NaN for missing),
    without building a Python object per row."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_large_string(arr.type):
        return arr.to_pandas()
    return arr.cast(pa.string()).to_pandas() if not pa.types.is_string(arr.type) else arr.to_pandas()


def _strip_or_null(arr: pa.ChunkedArray | None, n: int) -> pd.Series:
    return _str_series(_strip_or_null_arrow(arr, n))


def content_ids(table: pa.Table, source: str) -> pd.Series:
    """Stable id from the row's content: blake2b over the source name and every source column."""
    cols = [c for c in table.column_names if c != ROW_NUMBER]
    values = [table[c].to_pylist() for c in cols]
    prefix = source.encode() + b"\x1e"
    out = []
    for row in zip(*values):
        h = hashlib.blake2b(prefix, digest_size=10)
        h.update("\x1f".join("" if v is None else v for v in row).encode("utf-8"))
        out.append(h.hexdigest())
    return pd.Series(out, dtype=object)


def parse_ratings(raw: pd.Series, scale: int) -> tuple[pd.Series, np.ndarray, np.ndarray, pd.Series]:
    """(rating Int8 nullable, invalid mask, out-of-range mask, the parsed number). Only numbers are ratings:
    'five' is invalid, not guessed."""
    text = raw.astype("string").str.strip()
    num = pd.to_numeric(text, errors="coerce")
    present = text.notna() & (text != "")
    invalid = (present & (num.isna() | (num != np.floor(num)))).to_numpy(dtype=bool)
    if scale != 5:
        num = np.ceil(num * 5 / scale)
    out_of_range = (present & num.notna() & ((num < 1) | (num > 5))).to_numpy(dtype=bool) & ~invalid
    rating = num.where(~(invalid | out_of_range)).astype("Int8")
    return rating, invalid, out_of_range, num.astype(float)


def parse_confidences(raw: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """(confidence float, invalid mask). A confidence is a number in [0, 1]; empty is null (no
    confidence), anything else ('high', 70, -0.1) is invalid, not guessed."""
    text = raw.astype("string").str.strip()
    num = pd.to_numeric(text, errors="coerce").astype(float).to_numpy()
    present = (text.notna() & (text != "")).to_numpy(dtype=bool)
    ok = np.isfinite(num) & (num >= 0) & (num <= 1)
    return pd.Series(np.where(ok, num, np.nan), dtype=float), present & ~ok


def parse_labels(raw: pd.Series, values: dict[str, str]) -> tuple[pd.Series, np.ndarray]:
    """(class or null, invalid mask) from the label as written (trimmed, null when empty). A
    value the mapping does not list is invalid, not dropped: left null it would be curated
    unlabelled (or relabelled from its rating) and training would lose it. A whole number
    written as a float ('1.0': JSON 1.0, a float column) is the label '1'. An invalid row keeps
    the value as written in ``label``; it is quarantined, so that is what its row shows."""
    label = raw.map(values)
    unknown = label.isna() & raw.notna()
    if unknown.any():
        label[unknown] = raw[unknown].map(lambda v: values.get(_whole_number(v) or v))
    invalid = (label.isna() & raw.notna()).to_numpy(dtype=bool)
    return label.where(~invalid, raw), invalid


def _whole_number(value: str) -> str | None:
    try:
        num = float(value)
    except ValueError:
        return None
    return str(int(num)) if math.isfinite(num) and num == int(num) else None


def parse_timestamps(raw: pd.Series, fmt: str | None) -> tuple[pd.Series, np.ndarray]:
    """(UTC timestamps, unparseable mask). Empty values are null, not unparseable."""
    text = raw.astype("string").str.strip()
    present = (text.notna() & (text != "")).to_numpy(dtype=bool)
    if fmt:
        ts = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)
    else:
        # microseconds before the retry: one value with 9 fractional digits makes this pass
        # nanosecond, where a date outside 1677-2262 ('0001-01-01', '9999-12-31') is NaT and
        # its retried (microsecond) value could not be assigned back
        ts = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True).astype("datetime64[us, UTC]")
        retry = ts.isna().to_numpy() & present
        if retry.any():  # other common layouts, e.g. '2017-07-18 23:52:58' or '03/15/2024'
            ts[retry] = pd.to_datetime(text[retry], format="mixed", errors="coerce", utc=True).astype("datetime64[us, UTC]")
    ts = ts.astype("datetime64[us, UTC]")
    unparseable = present & ts.isna().to_numpy()
    return ts, unparseable


def to_canonical(
    read: ReadResult,
    mapping: SourceMapping,
    cfg: IngestSettings,
    *,
    source_file: str,
    ds: str,
    ingested_at: datetime,
    now: datetime | None = None,
) -> Canonical:
    """Map, clean, redact and check every row of one file."""
    table = read.table
    n = table.num_rows
    missing = [c for c in mapping.required_columns() if c not in table.column_names]
    if missing:
        raise FileRejected(
            f"{source_file}: missing required column(s) {missing} for source mapping '{mapping.name}'; "
            f"the file has {[c for c in table.column_names if c != ROW_NUMBER]}"
        )
    cols = mapping.source_columns()
    frame = pd.DataFrame(index=pd.RangeIndex(n))

    # ids
    id_col = _col(table, cols.get("review_id"))
    if mapping.id_from_content is True or (mapping.id_from_content == "if_missing" and id_col is None):
        frame["review_id"] = content_ids(table, mapping.name)
    else:
        frame["review_id"] = _strip_or_null(id_col, n)
        missing_id = frame["review_id"].isna()
        if missing_id.any():  # an id column with holes: fill those from content, never drop
            frame.loc[missing_id, "review_id"] = content_ids(table.filter(pa.array(missing_id.to_numpy())), mapping.name).to_numpy()

    products = []
    for name in ("product_id", "product_name", "product_category"):
        arr = _strip_or_null_arrow(_col(table, cols.get(name)), n)
        if name in mapping.constants:
            arr = pc.fill_null(arr, pa.scalar(mapping.constants[name], pa.string()))
        products.append(arr)
        frame[name] = _str_series(arr)

    # text and title: clean, then redact personal data (counts kept per type). Text and
    # title are cleaned at the same time (the kernels release the GIL; see clean_and_redact).
    text_arr = _col(table, cols.get("text"))
    title_arr = _col(table, cols.get("title"))
    cleaned, *rest = clean_and_redact_many([text_arr] if title_arr is None else [text_arr, title_arr])
    text_out = cleaned.text
    frame["text"] = _str_series(text_out)
    pii = dict(cleaned.counts)
    if title_arr is not None:
        (title,) = rest
        t = title.text
        frame["title"] = _str_series(pc.if_else(pc.equal(t, ""), pa.scalar(None, t.type), t))
        for k, v in title.counts.items():
            pii[k] = pii.get(k, 0) + v
    else:
        frame["title"] = _str_series(pa.nulls(n, pa.string()))

    raw_rating = _strip_or_null(_col(table, cols.get("rating")), n)
    frame["rating"], rating_invalid, rating_oor, frame["rating_parsed"] = parse_ratings(raw_rating, mapping.rating_scale)

    raw_ts = _strip_or_null(_col(table, cols.get("created_at")), n)
    frame["created_at"], ts_bad = parse_timestamps(raw_ts, mapping.timestamp_format)
    now = now or datetime.now(timezone.utc)
    horizon = pd.Timestamp(now + timedelta(minutes=cfg.future_tolerance_minutes))
    ts_future = (frame["created_at"] > horizon).fillna(False).to_numpy(dtype=bool)

    language = detect_language(text_out)
    frame["language"] = _str_series(language)
    frame["source"] = mapping.name
    frame["source_file"] = source_file
    frame["ingested_at"] = pd.Timestamp(ingested_at).tz_convert("UTC")
    frame["ingested_at"] = frame["ingested_at"].astype("datetime64[us, UTC]")

    # sentiment label: explicit column, else from the rating
    label_arr = _col(table, mapping.label_column)
    if label_arr is not None:
        raw_label = pd.Series(pc.utf8_trim_whitespace(label_arr).to_pylist(), dtype=object)
        raw_label = raw_label.where(raw_label != "", None)
        frame["label"], label_invalid = parse_labels(raw_label, mapping.label_values)
    else:
        frame["label"] = pd.Series([None] * n, dtype=object)
        label_invalid = np.zeros(n, dtype=bool)
    from_rating = frame["label"].isna() & frame["rating"].notna()
    stars = frame["rating"].astype("float").to_numpy()
    by_rating = np.select([stars <= 2, stars == 3, stars >= 4], ["negative", "neutral", "positive"], default=None)
    frame.loc[from_rating, "label"] = by_rating[from_rating.to_numpy()]
    frame["label"] = _str_series(pa.array(frame["label"].astype(object).where(frame["label"].notna(), None), pa.string(), from_pandas=True))
    raw_conf = _strip_or_null(_col(table, mapping.label_confidence_column), n)
    confidence, confidence_invalid = parse_confidences(raw_conf)
    # a confidence belongs to an explicit label: none for rows labelled from their rating or unlabelled
    explicit = (~from_rating & frame["label"].notna()).to_numpy(dtype=bool)
    frame["label_confidence"] = confidence.where(explicit).to_numpy(dtype=float)

    frame["row_number"] = table[ROW_NUMBER].to_numpy()
    frame["ds"] = ds

    length = pc.fill_null(pc.utf8_length(text_out), 0).to_numpy(zero_copy_only=False)
    empty = length == 0
    masks = {
        "invalid_encoding": pc.fill_null(pc.match_substring(text_out, "\ufffd"), False).to_numpy(zero_copy_only=False),
        "text_empty": empty,
        "text_too_short": (~empty) & (length < cfg.min_text_chars),
        "text_too_long": length > cfg.max_text_chars,
        "rating_invalid": rating_invalid,
        "rating_out_of_range": rating_oor,
        "label_invalid": label_invalid,
        "label_confidence_invalid": confidence_invalid,
        "timestamp_unparseable": ts_bad,
        "timestamp_in_future": ts_future,
        "language_unknown": (~empty) & ~pc.fill_null(pc.is_in(language, pa.array(list(cfg.allowed_languages), pa.string())), False).to_numpy(zero_copy_only=False),
    }
    frame["raw_rating"] = raw_rating
    frame["raw_created_at"] = raw_ts
    frame["raw_label_confidence"] = raw_conf
    product_key = pc.coalesce(*products, pa.scalar(mapping.name, pa.string()))
    norm = pc.fill_null(normalize_for_dedup(text_out), "")
    frame["dedup_key"] = _str_series(pc.binary_join_element_wise(product_key.cast(norm.type), norm, "\x1f"))
    for k in PII_TYPES:
        pii.setdefault(k, 0)
    source = table.select([*record_columns(mapping, table), ROW_NUMBER])
    return Canonical(frame=frame, source=source, masks=masks, pii_counts=pii, malformed=list(read.malformed))


def record_columns(mapping: SourceMapping, table: pa.Table) -> list[str]:
    """The source columns the mapping reads (mapped to a canonical field, the label and its
    confidence), in the file's order: all a quarantined row's raw_record may show. The others
    (a tweeter's name, location, time zone, GPS coordinates, a reviewer's user name) are never
    stored: the mapping does not use them, and nothing redacts them."""
    used = set(mapping.source_columns().values()) | {c for c in (mapping.label_column, mapping.label_confidence_column) if c}
    return [c for c in table.column_names if c in used and c != ROW_NUMBER]


def redact_raw_values(values) -> pa.Array:
    """Values as written with their PII redacted exactly as the text's is (``[EMAIL]``,
    ``[PHONE]`` ...), but nothing else changed: no HTML, link or ad cleaning, so the quarantine
    still shows what was wrong with a row (a rating 'five' stays 'five'). A value whose PII the
    text's cleaning would reveal first (an e-mail written ``john&#64;x.com``, a phone in
    full-width digits or split by invisible characters) is stored cleaned and redacted instead,
    so that no PII the curated text hides is left readable in the quarantine."""
    arr = as_string_array(values)
    if not len(arr):
        return arr
    red = redact_pii(arr).text
    hidden = np.asarray(clean_and_redact(red).row_counts.to_numpy(zero_copy_only=False)) > 0
    if hidden.any():
        idx = pa.array(np.flatnonzero(hidden))
        cleaned = clean_and_redact(arr.take(idx)).text
        red = pc.replace_with_mask(red, pa.array(hidden), cleaned.cast(red.type))
    return red


def raw_records(table: pa.Table, rows: np.ndarray) -> list[str]:
    """JSON of the source columns as read, PII redacted (:func:`redact_raw_values`), for the
    given row positions (quarantined rows only: serialising every row would cost more than the
    rest of the cleaning). ``table`` is :attr:`Canonical.source`: the mapped columns only."""
    cols = [c for c in table.column_names if c != ROW_NUMBER]
    sub = table.take(pa.array(rows, pa.int64())) if len(rows) else table.slice(0, 0)
    values = [redact_raw_values(sub[c]).to_pylist() for c in cols]
    return [json.dumps(dict(zip(cols, row)), ensure_ascii=False) for row in zip(*values)] if cols else ["{}"] * len(rows)


def malformed_records(malformed: list[tuple[int, str, str]]) -> list[str]:
    """raw_record of rows the parser could not split: the line as read and the parser's
    message, PII redacted (:func:`redact_raw_values`). The line cannot be cut into columns, so
    it keeps its unmapped fields (their PII redacted): what a person needs to see the fault."""
    if not malformed:
        return []
    lines = redact_raw_values(pa.array([raw for _, raw, _ in malformed], pa.string())).to_pylist()
    why = redact_raw_values(pa.array([w for _, _, w in malformed], pa.string())).to_pylist()
    return [json.dumps({"_raw_line": raw, "_parser": w}, ensure_ascii=False) for raw, w in zip(lines, why, strict=True)]


def mark_duplicates(canon: Canonical, seen_ids: set[str], seen_keys: set[str]) -> None:
    """Flag rows whose review_id, or (product, normalised text), was seen before, in this
    file or earlier (``seen_*`` hold the curated rows of earlier partitions and files)."""
    f = canon.frame
    other = [m for name, m in canon.masks.items() if name != "duplicate"]
    valid = ~np.logical_or.reduce(other) if other else np.ones(len(f), dtype=bool)
    dup_id = _later_copies(f["review_id"], valid) | f["review_id"].isin(seen_ids).to_numpy()
    nonempty = f["text"].fillna("").str.len().to_numpy() > 0
    keys = f["dedup_key"]
    dup_text = nonempty & (_later_copies(keys, valid) | keys.isin(seen_keys).to_numpy())
    canon.masks["duplicate"] = dup_id | dup_text


def _later_copies(keys: pd.Series, valid: np.ndarray) -> np.ndarray:
    """Rows whose key another row of the file holds first, where the first *valid* row counts as
    the first: a row quarantined for another reason followed by its corrected copy (same id)
    keeps the copy, instead of quarantining both. Among rows of a key none of which is valid,
    the first in file order."""
    order = np.lexsort((np.arange(len(keys)), ~valid))  # valid rows first, each group in file order
    out = np.empty(len(keys), dtype=bool)
    out[order] = keys.iloc[order].duplicated(keep="first").to_numpy()
    return out


def remember_curated(canon: Canonical, curated: np.ndarray, seen_ids: set[str], seen_keys: set[str]) -> None:
    """Add a file's curated rows to ``seen_*`` once it has been written, so later files of the
    run are checked against what was published (as earlier partitions are), not against rows
    that were quarantined or belonged to a rejected file: a corrected re-send is not a duplicate."""
    f = canon.frame.loc[curated]
    seen_ids.update(f["review_id"].tolist())
    seen_keys.update(f["dedup_key"][f["text"].fillna("").str.len() > 0].tolist())
