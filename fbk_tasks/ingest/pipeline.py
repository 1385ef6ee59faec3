"""Nightly ingestion of one logical date: landed files -> curated + quarantine + ledger.

Layout (all under the data root):
    landing/                      files dropped here (or in landing/<mapping>/) are claimed by
                                  the next run and moved to landing/ds=<ds>/<mapping>/
    curated/reviews/ds=<ds>/part-<file hash>.parquet
    quarantine/reviews/ds=<ds>/part-<file hash>.parquet
    ledger/ingest/ds=<ds>/<run id>-<file hash>.parquet      one row per file and run

A file is identified by the SHA-256 of its bytes. It is ingested into exactly one logical
date; the same bytes landing again are recorded as ``skipped`` while that date still holds
the file's part (a file removed from its date, whose re-run deleted the part, may land again
elsewhere). Re-running a date processes the files claimed for that date again and rewrites
the same outputs (each write atomic).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import re
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from fbk_tasks.ingest.mapping import SourceMapping, choose_mapping, load_mappings
from fbk_tasks.ingest.readers import FileRejected, read_file
from fbk_tasks.ingest.transform import (
    REASONS,
    Canonical,
    malformed_records,
    mark_duplicates,
    raw_records,
    redact_raw_values,
    remember_curated,
    to_canonical,
)
from fbk_tasks.ingest.validate import BatchRejected, run_gate, validation_frame
from fbk_tasks.io import atomic
from fbk_tasks.io.locks import exclusive_lock
from fbk_tasks.schema import CURATED_COLUMNS, CURATED_SCHEMA
from fbk_tasks.settings import Settings
from fbk_tasks.text.pii import PII_TYPES

log = logging.getLogger(__name__)

LEDGER_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("ds", pa.string()),
        ("source", pa.string()),
        ("source_file", pa.string()),
        ("file_sha256", pa.string()),
        ("status", pa.string()),  # ingested | failed | rejected | skipped
        ("format", pa.string()),
        ("encoding", pa.string()),
        ("rows_read", pa.int64()),
        ("rows_curated", pa.int64()),
        ("rows_quarantined", pa.int64()),
        ("rows_duplicate", pa.int64()),
        *[(f"pii_{t.lower()}", pa.int64()) for t in PII_TYPES],
        ("reasons", pa.string()),  # JSON: reason -> rows
        ("error", pa.string()),
        ("ingested_at", pa.timestamp("us", tz="UTC")),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("finished_at", pa.timestamp("us", tz="UTC")),
    ]
)
QUARANTINE_STR_COLUMNS = [c for c in CURATED_COLUMNS if c not in ("row_number",)]


class IngestError(RuntimeError):
    """One or more files could not be ingested; the message lists each with its reason."""

    def __init__(self, message: str, report: "IngestReport | None" = None):
        super().__init__(message)
        self.report = report


@dataclass
class FileReport:
    source_file: str
    source: str
    file_sha256: str
    status: str
    rows_read: int = 0
    rows_curated: int = 0
    rows_quarantined: int = 0
    rows_duplicate: int = 0
    pii: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # per stage, for logs and benchmarks


@dataclass
class IngestReport:
    ds: str
    run_id: str
    files: list[FileReport] = field(default_factory=list)
    docs_index: str | None = None

    @property
    def rows_read(self) -> int:
        return sum(f.rows_read for f in self.files if f.status == "ingested")

    @property
    def rows_curated(self) -> int:
        return sum(f.rows_curated for f in self.files if f.status == "ingested")

    @property
    def rows_quarantined(self) -> int:
        return sum(f.rows_quarantined for f in self.files if f.status == "ingested")

    def summary(self) -> dict:
        return {
            "ds": self.ds,
            "run_id": self.run_id,
            "files": len(self.files),
            "files_ingested": sum(f.status == "ingested" for f in self.files),
            "files_skipped": sum(f.status == "skipped" for f in self.files),
            "files_failed": sum(f.status in ("failed", "rejected") for f in self.files),
            "rows_read": self.rows_read,
            "rows_curated": self.rows_curated,
            "rows_quarantined": self.rows_quarantined,
            "data_docs": self.docs_index,
        }

    def to_dict(self) -> dict:
        return {**self.summary(), "file_reports": [asdict(f) for f in self.files]}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)[:120]


def _validate_ds(ds: str) -> str:
    try:
        date.fromisoformat(ds)
    except ValueError:
        raise ValueError(f"logical date must be YYYY-MM-DD, got {ds!r}") from None
    return ds


# --- landing ---------------------------------------------------------------------------------
def land_files(settings: Settings, files: list[Path], ds: str, source: str | None = None) -> list[Path]:
    """Copy files into landing/ds=<ds>/<mapping>/ (atomically), as `fbk ingest` does."""
    mappings = load_mappings(settings.ingest.sources_dir)
    landed = []
    for f in files:
        f = Path(f)
        if not f.is_file():
            raise FileRejected(f"{f}: no such file")
        mapping = choose_mapping(mappings, f.name, source)
        dst = settings.landing_dir / f"ds={ds}" / mapping.name / f.name
        if dst.exists() and file_sha256(dst) != file_sha256(f):
            dst = dst.with_name(f"{f.stem}-{file_sha256(f)[:8]}{''.join(f.suffixes)}")
        landed.append(atomic.copy_file(f, dst))
    return landed


def claim_landed_files(settings: Settings, ds: str, claim: bool = True) -> list[tuple[Path, SourceMapping]]:
    """Move unclaimed files from landing/ (and landing/<mapping>/) into landing/ds=<ds>/<mapping>/;
    return every file claimed for ds (sorted, so runs are deterministic). Under the ingestion
    lock, so a run of another date cannot claim the same file at the same time. ``claim=False``
    (a backfill, explicit files): only the files already claimed for ds; see :func:`may_claim`."""
    with ingest_lock(settings):
        return _claim_landed_files(settings, ds, claim)[0]


def may_claim(settings: Settings, ds: str) -> bool:
    """Whether a run for ``ds`` may claim the files waiting in landing/: not when a later date
    has claimed files already. Waiting files belong to the newest night; a re-run or backfill of
    an older date must reprocess exactly its own files, not sweep tonight's drops into the past.
    The files stay waiting (and are logged) for the next regular run."""
    landing = settings.landing_dir
    today = datetime.now(timezone.utc).date().isoformat()
    later = sorted(p.name[3:] for p in landing.glob("ds=*") if p.is_dir() and p.name[3:] > ds) if landing.exists() else []
    future = [d for d in later if d > today]
    if future:  # a typo (`fbk ingest f.csv --ds 2062-03-01`) must not stop every night from claiming
        log.warning("landing/ holds claimed files for dates after today (%s): ignored when deciding what to claim",
                    ", ".join(future))
        later = [d for d in later if d <= today]
    if later:
        log.info("ds=%s: not claiming new files from %s (ds=%s already has claimed files; they wait for the next "
                 "regular run)", ds, landing, later[-1])
    return not later


def ingest_lock(settings: Settings):
    """Serialise ingestion runs (a backfill running several dates at once, `fbk ingest` beside
    the DAG): two runs would otherwise race to claim the same landed file, and each could check
    a review_id against the other's partition before the other wrote it and curate it twice."""
    return exclusive_lock(settings.state_dir / "ingest.lock", "another ingestion run to finish", log)


def _claim_landed_files(settings: Settings, ds: str, claim: bool) -> tuple[list[tuple[Path, SourceMapping]], list[Path]]:
    """(files claimed for ds, files in landing/ that no claim rule takes: in a folder that names
    no mapping, or nested deeper; reported when claiming, so that they are not ignored forever).
    New files are claimed only when ``claim`` and :func:`may_claim` allow."""
    claim = claim and may_claim(settings, ds)
    mappings = load_mappings(settings.ingest.sources_dir)
    landing = settings.landing_dir
    landing.mkdir(parents=True, exist_ok=True)
    target = landing / f"ds={ds}"
    candidates: list[tuple[Path, str | None]] = []
    stray: list[Path] = []
    if claim:
        candidates = [(p, None) for p in landing.iterdir() if p.is_file() and not p.name.startswith(".")]
        for sub in landing.iterdir():
            if not sub.is_dir() or sub.name.startswith("ds=") or sub.name.startswith("."):
                continue
            for p in sub.rglob("*"):
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(sub).parts):
                    if sub.name in mappings and p.parent == sub:
                        candidates.append((p, sub.name))
                    else:
                        stray.append(p)
    for path, explicit in sorted(candidates):
        mapping = choose_mapping(mappings, path.name, explicit)
        dst = target / mapping.name / path.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():
            dst = dst.with_name(f"{path.stem}-{file_sha256(path)[:8]}{''.join(path.suffixes)}")
        path.rename(dst)  # same file system: atomic
    out = []
    if target.exists():
        for sub in sorted(p for p in target.iterdir() if p.is_dir()):
            mapping = choose_mapping(mappings, "", sub.name) if sub.name in mappings else None
            for path in sorted(p for p in sub.iterdir() if p.is_file() and not p.name.startswith(".")):
                if mapping is None:
                    raise IngestError(f"{path}: folder '{sub.name}' names no source mapping in {settings.ingest.sources_dir}")
                out.append((path, mapping))
    return out, sorted(stray)


# --- ledger ----------------------------------------------------------------------------------
def read_ledger(settings: Settings) -> pd.DataFrame:
    if not settings.ledger_dir.exists() or not any(settings.ledger_dir.rglob("*.parquet")):
        return pd.DataFrame(columns=LEDGER_SCHEMA.names)
    dataset = pads.dataset(settings.ledger_dir, format="parquet", partitioning="hive", schema=LEDGER_SCHEMA)
    return dataset.to_table().to_pandas()


def _ledger_row(report: FileReport, *, ds: str, run_id: str, fmt: str, encoding: str, ingested_at, started, finished) -> dict:
    row = {
        "run_id": run_id,
        "ds": ds,
        "source": report.source,
        "source_file": report.source_file,
        "file_sha256": report.file_sha256,
        "status": report.status,
        "format": fmt,
        "encoding": encoding,
        "rows_read": report.rows_read,
        "rows_curated": report.rows_curated,
        "rows_quarantined": report.rows_quarantined,
        "rows_duplicate": report.rows_duplicate,
        "reasons": json.dumps(report.reasons, sort_keys=True),
        "error": report.error,
        "ingested_at": ingested_at,
        "started_at": started,
        "finished_at": finished,
    }
    for t in PII_TYPES:
        row[f"pii_{t.lower()}"] = int(report.pii.get(t, 0))
    return row


def _write_ledger(settings: Settings, row: dict, repeat: bool = False) -> None:
    """One file per file and run, rewritten when the run's task is retried. ``repeat``: the
    row of a second copy of the same bytes in this run, which must not replace the first's."""
    table = pa.Table.from_pylist([row], schema=LEDGER_SCHEMA).drop_columns(["ds"])
    key = row["file_sha256"][:16]
    if repeat:
        key += "-" + hashlib.blake2b(row["source_file"].encode("utf-8"), digest_size=4).hexdigest()
    path = settings.ledger_dir / f"ds={row['ds']}" / f"{_safe(row['run_id'])}-{key}.parquet"
    atomic.write_parquet(table, path)


# --- history for duplicate detection ---------------------------------------------------------
@dataclass
class History:
    """What a night's rows are checked against for duplicates.

    By review_id: the curated Parquet of every other partition, later ones included, so a
    backfilled night cannot curate a review a later night already holds (it would be scored
    and counted twice); ds's own partition is not among them, so a re-run reproduces it. Their
    review_ids are never loaded whole: each file's ids are looked up in them by a DuckDB
    semi-join under ``score.duckdb_memory_mb``, so memory follows the file, not the history.
    The files are listed at each look-up (another night's re-run may have replaced its parts).
    ``keys``: (product, normalised text) of the other partitions inside the dedup window
    (either side of ds), bounded by the window.
    ``ids``: review_ids curated by earlier files of this run (see ``remember_curated``)."""

    curated_dir: Path
    ds: str
    keys: set[str] = field(default_factory=set)
    ids: set[str] = field(default_factory=set)

    def files(self) -> list[str]:
        if not self.curated_dir.exists():
            return []
        return [str(f) for part in sorted(self.curated_dir.glob("ds=*")) if part.name != f"ds={self.ds}"
                for f in sorted(part.glob("*.parquet"))]

    def seen_ids(self, settings: Settings, review_ids: pd.Series) -> set[str]:
        """The ids among ``review_ids`` that were curated before: in this run or in history."""
        import duckdb

        wanted = pd.unique(review_ids.dropna().astype(str))
        if not len(wanted):
            return set()
        files = self.files()
        try:
            found = self._lookup(settings, wanted, files)
        except duckdb.IOException:
            if all(Path(f).exists() for f in files):
                raise
            log.info("a curated file went away while duplicates were looked up (another night's re-run); listing again")
            found = self._lookup(settings, wanted, self.files())
        return self.ids.intersection(wanted) | found

    @staticmethod
    def _lookup(settings: Settings, wanted: np.ndarray, files: list[str]) -> set[str]:
        from fbk_tasks.score.plan import duckdb_connection

        if not files:
            return set()
        with duckdb_connection(settings) as con:
            con.register("wanted", pa.table({"review_id": pa.array(wanted, pa.string())}))
            rows = con.execute(
                "SELECT DISTINCT h.review_id FROM read_parquet($files) AS h "
                "SEMI JOIN wanted AS w ON h.review_id = w.review_id",
                {"files": files},
            ).fetchall()
        return {r[0] for r in rows}


def _history(settings: Settings, ds: str) -> History:
    from fbk_tasks.text.clean import normalize_for_dedup

    root = settings.curated_dir
    hist = History(curated_dir=root, ds=ds)
    if not root.exists():
        return hist
    day = date.fromisoformat(ds)
    window_start = (day - timedelta(days=settings.ingest.dedup_window_days)).isoformat()
    window_end = (day + timedelta(days=settings.ingest.dedup_window_days)).isoformat()
    for part in sorted(root.glob("ds=*")):
        pds = part.name[3:]
        files = sorted(part.glob("*.parquet")) if pds != ds and window_start <= pds <= window_end else []
        if files:
            t = pads.dataset(files, format="parquet").to_table(columns=["product_id", "product_name", "product_category", "source", "text"])
            f = t.to_pandas()
            product = f["product_id"].fillna(f["product_name"]).fillna(f["product_category"]).fillna(f["source"])
            norm = pd.Series(normalize_for_dedup(t["text"]).to_pylist(), dtype=object)
            hist.keys.update((product.astype(str) + "\x1f" + norm).tolist())
    return hist


# --- one file --------------------------------------------------------------------------------
def _malformed_rows(canon: Canonical, mapping: SourceMapping, source_file: str, ds: str, ingested_at) -> None:
    """Append rows the parser could not split, as rows with no fields, flagged malformed_row."""
    if not canon.malformed:
        return
    n0 = len(canon.frame)
    extra = pd.DataFrame(
        {
            "review_id": [hashlib.blake2b(raw.encode("utf-8"), digest_size=10).hexdigest() for _, raw, _ in canon.malformed],
            "text": [None] * len(canon.malformed),
            "source": mapping.name,
            "source_file": source_file,
            "row_number": [num if num > 0 else None for num, _, _ in canon.malformed],
            "ds": ds,
            "raw_record": malformed_records(canon.malformed),  # PII redacted
            "language": "other",
        }
    )
    extra["ingested_at"] = canon.frame["ingested_at"].iloc[0] if n0 else pd.Timestamp(ingested_at)
    canon.frame = pd.concat([canon.frame, extra], ignore_index=True)
    k = len(extra)
    for name in list(canon.masks):
        canon.masks[name] = np.concatenate([canon.masks[name], np.zeros(k, dtype=bool)])
    canon.masks["malformed_row"] = np.concatenate([np.zeros(n0, dtype=bool), np.ones(k, dtype=bool)])


def _curated_table(frame: pd.DataFrame) -> pa.Table:
    out = frame[CURATED_COLUMNS].copy()
    out["rating"] = out["rating"].astype("Int8")
    out["row_number"] = out["row_number"].astype("int64")
    return pa.Table.from_pandas(out, schema=CURATED_SCHEMA, preserve_index=False)


# quarantine column -> the value as the source wrote it (the parsed one is null or rescaled where
# the value was bad: the original is what a person needs to fix the row)
RAW_VALUE_COLUMNS = {"rating": "raw_rating", "created_at": "raw_created_at", "label_confidence": "raw_label_confidence"}


def _quarantine_table(frame: pd.DataFrame, reasons: pd.Series, raw: list[str]) -> pa.Table:
    out = pd.DataFrame(index=frame.index)
    for c in QUARANTINE_STR_COLUMNS:
        col = frame[c] if c in frame else pd.Series([None] * len(frame), index=frame.index)
        out[c] = col.astype(object).where(col.notna(), None).map(lambda v: None if v is None else str(v))
    for col, src in RAW_VALUE_COLUMNS.items():
        out[col] = frame[src].where(frame[src].notna(), None) if src in frame else None
    # values as the source wrote them (an invalid label is kept as written, too): PII redacted
    for col in (*RAW_VALUE_COLUMNS, "label"):
        out[col] = redact_raw_values(out[col].astype(object).where(out[col].notna(), None)).to_pylist()
    out["row_number"] = frame["row_number"].astype("Int64")
    out["reason"] = reasons
    out["raw_record"] = raw
    schema = pa.schema([(c, pa.string()) for c in QUARANTINE_STR_COLUMNS] + [("row_number", pa.int64()), ("reason", pa.string()), ("raw_record", pa.string())])
    return pa.Table.from_pandas(out[schema.names], schema=schema, preserve_index=False)


def ingest_file(
    settings: Settings,
    path: Path,
    mapping: SourceMapping,
    *,
    ds: str,
    sha: str,
    ingested_at: datetime,
    history: History,
    now: datetime,
    remember: bool = True,
) -> tuple[FileReport, str, str]:
    """Ingest one claimed file; return (report, format, encoding). Writes curated and quarantine."""
    rel = str(path.relative_to(settings.landing_dir))
    report = FileReport(source_file=rel, source=mapping.name, file_sha256=sha, status="ingested")
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now_ = time.perf_counter()
        report.seconds[stage] = round(now_ - clock, 3)
        clock = now_

    read = read_file(path, mapping.format, mapping.encoding)
    lap("read")
    canon = to_canonical(read, mapping, settings.ingest, source_file=rel, ds=ds, ingested_at=ingested_at, now=now)
    lap("clean_redact_map")
    _malformed_rows(canon, mapping, rel, ds, ingested_at)
    canon.masks.setdefault("malformed_row", np.zeros(len(canon.frame), dtype=bool))
    if canon.masks["malformed_row"].any():  # no text at all
        canon.masks["text_empty"] = canon.masks["text_empty"] | canon.masks["malformed_row"]
    mark_duplicates(canon, history.seen_ids(settings, canon.frame["review_id"]), history.keys)
    lap("duplicates")

    vframe = validation_frame(canon.frame, canon.masks)
    _wait_for_gx()
    gate = run_gate(
        settings,
        vframe,
        batch_name=f"{ds}-{Path(rel).name}-{sha[:12]}",
        now=now,
        masks=canon.masks,
        max_quarantine_share=mapping.max_quarantine_share,
        max_duplicate_share=mapping.max_duplicate_share,
    )
    lap("gx_validate")

    quarantined = canon.quarantined()
    reasons = canon.reasons(quarantined)  # only quarantined rows carry reasons
    report.rows_read = read.rows_read
    report.rows_quarantined = int(quarantined.sum())
    report.rows_curated = int((~quarantined).sum())
    report.rows_duplicate = int(canon.masks["duplicate"].sum())
    report.pii = canon.pii_counts
    report.reasons = {name: int(canon.masks[name].sum()) for name in REASONS if name in canon.masks and canon.masks[name].any()}
    if report.rows_read != report.rows_curated + report.rows_quarantined:
        raise IngestError(f"{rel}: counts do not reconcile: read {report.rows_read} != curated {report.rows_curated} + quarantined {report.rows_quarantined}")
    if not gate.success:
        raise BatchRejected(f"{rel}: data-quality gate failed: " + "; ".join(gate.batch_failures) + f" (rows read {report.rows_read}, quarantined {report.rows_quarantined}, duplicates {report.rows_duplicate})")

    part = f"part-{sha[:16]}.parquet"
    curated_path = settings.curated_dir / f"ds={ds}" / part
    quarantine_path = settings.quarantine_dir / f"ds={ds}" / part
    curated_table = _curated_table(canon.frame.loc[~quarantined, CURATED_COLUMNS])
    quarantine_table = None
    if quarantined.any():
        positions = np.flatnonzero(quarantined)
        parsed = positions[positions < canon.source.num_rows]
        raw = raw_records(canon.source, parsed)  # mapped columns only, PII redacted
        if len(positions) > len(parsed):  # malformed rows, appended after the parsed ones
            raw += list(canon.frame["raw_record"].iloc[positions[len(parsed):]])
        wanted = [c for c in (*QUARANTINE_STR_COLUMNS, *RAW_VALUE_COLUMNS.values(), "row_number") if c in canon.frame]
        quarantine_table = _quarantine_table(canon.frame.loc[quarantined, wanted], reasons, raw)
    # Both parts are written to hidden temporary files first and renamed only once both are
    # complete, so a write that fails (disk full) leaves neither: a failed file never shows
    # readers its curated rows without its quarantine rows (or a new one beside an old one).
    with atomic.atomic_path(curated_path) as curated_tmp:
        if quarantine_table is None:
            pq.write_table(curated_table, curated_tmp, compression="zstd")
            quarantine_path.unlink(missing_ok=True)
        else:
            with atomic.atomic_path(quarantine_path) as quarantine_tmp:
                pq.write_table(curated_table, curated_tmp, compression="zstd")
                pq.write_table(quarantine_table, quarantine_tmp, compression="zstd")
    if remember:  # not for the last file of a run: nobody reads them again
        remember_curated(canon, ~quarantined, history.ids, history.keys)
    lap("write")
    return report, read.format, read.encoding


# --- GX import ------------------------------------------------------------------------------
# Importing great_expectations costs seconds per worker process. It is started on a thread
# when a run begins, so it overlaps reading and cleaning (mostly Arrow and numpy work that
# releases the GIL); the gate waits for it. A failed import here is ignored: the gate's own
# import then raises the real error.
_gx_thread: threading.Thread | None = None


def _import_gx_quietly() -> None:
    try:
        importlib.import_module("great_expectations")
    except Exception:  # noqa: BLE001 - re-raised by the gate's own import
        log.debug("background import of great_expectations failed", exc_info=True)


def _start_gx_import() -> None:
    global _gx_thread
    if "great_expectations" in sys.modules or _gx_thread is not None:
        return
    _gx_thread = threading.Thread(target=_import_gx_quietly, name="fbk-gx-import", daemon=True)
    _gx_thread.start()


def _wait_for_gx() -> None:
    if _gx_thread is not None:
        _gx_thread.join()


# --- one logical date ------------------------------------------------------------------------
def _held_elsewhere(settings: Settings, prior: pd.DataFrame, ds: str, sha: str) -> pd.DataFrame:
    """The ``ingested`` ledger rows ``prior`` of the file's bytes on dates other than ``ds``
    whose part is still there. A file removed from its date and that date re-run has lost its
    part (the stale-part cleanup deleted it) while the old ledger row still says ingested:
    that date no longer holds the rows, so the same bytes landing again must be ingested."""
    other = prior[prior["ds"].astype(str) != ds] if len(prior) else prior
    if not len(other):
        return other
    part = f"part-{sha[:16]}.parquet"
    held = {d: any((root / f"ds={d}" / part).exists() for root in (settings.curated_dir, settings.quarantine_dir))
            for d in other["ds"].astype(str).unique()}
    return other[other["ds"].astype(str).map(held).to_numpy(dtype=bool)]


def ingest_partition(settings: Settings, ds: str, run_id: str | None = None, now: datetime | None = None,
                     claim: bool = True) -> IngestReport:
    """Ingest every file claimed for ``ds``, claiming the files waiting in landing/ first when
    ``claim`` and :func:`may_claim` allow. Raises IngestError listing the files that failed, and
    the files in landing/ that no claim rule takes (the others are ingested and recorded). One
    run at a time (see :func:`ingest_lock`)."""
    _validate_ds(ds)
    now = now or datetime.now(timezone.utc)
    run_id = run_id or f"manual__{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%f')}"
    with ingest_lock(settings):
        return _ingest_partition(settings, ds, run_id, now, claim)


def _ingest_partition(settings: Settings, ds: str, run_id: str, now: datetime, claim: bool) -> IngestReport:
    files, stray = _claim_landed_files(settings, ds, claim)
    if files:
        _start_gx_import()
    ledger = read_ledger(settings)
    done = ledger[ledger["status"] == "ingested"] if len(ledger) else ledger
    history = _history(settings, ds)
    report = IngestReport(ds=ds, run_id=run_id)
    errors: list[str] = []
    unexpected: BaseException | None = None
    live_parts: set[str] = set()
    # the same bytes claimed twice for ds (dropped under two names): the ledger read above does
    # not know the first copy yet, and both copies would share its ledger row and part file
    handled: dict[str, str] = {}

    for i, (path, mapping) in enumerate(files):
        started = datetime.now(timezone.utc)
        sha = file_sha256(path)
        rel = str(path.relative_to(settings.landing_dir))
        prior = done[done["file_sha256"] == sha] if len(done) else done
        other_days = _held_elsewhere(settings, prior, ds, sha)
        fmt = enc = None
        repeat = sha in handled
        if repeat:
            fr = FileReport(rel, mapping.name, sha, "skipped", error=f"same content as {handled[sha]}, handled earlier in this run")
            ingested_at = None
        elif len(other_days):
            fr = FileReport(rel, mapping.name, sha, "skipped", error=f"same content already ingested for ds={other_days['ds'].iloc[0]} ({other_days['source_file'].iloc[0]})")
            ingested_at = None
        else:
            # a re-run keeps the first ingestion time, so outputs are reproduced exactly
            same_day = prior[prior["ds"].astype(str) == ds] if len(prior) else prior
            ingested_at = pd.Timestamp(same_day["ingested_at"].min()).to_pydatetime() if len(same_day) else now
            try:
                fr, fmt, enc = ingest_file(settings, path, mapping, ds=ds, sha=sha, ingested_at=ingested_at, history=history, now=now, remember=i < len(files) - 1)
                live_parts.add(f"part-{sha[:16]}.parquet")
            except FileRejected as exc:
                fr = FileReport(rel, mapping.name, sha, "rejected", error=str(exc))
            except BatchRejected as exc:
                fr = FileReport(rel, mapping.name, sha, "failed", error=str(exc))
            except Exception as exc:  # noqa: BLE001 - a bug or an outage: this file fails, not the night
                log.exception("%s: unexpected error", rel)
                fr = FileReport(rel, mapping.name, sha, "failed", error=f"{type(exc).__name__}: {exc}")
                unexpected = unexpected or exc
        handled.setdefault(sha, rel)
        if fr.status in ("rejected", "failed"):
            errors.append(f"{rel} [{fr.status}]: {fr.error}")
            log.error("%s [%s]: %s", rel, fr.status, fr.error)
        else:
            log.info("%s: %s read=%d curated=%d quarantined=%d duplicates=%d pii=%s", rel, fr.status, fr.rows_read, fr.rows_curated, fr.rows_quarantined, fr.rows_duplicate, fr.pii)
        report.files.append(fr)
        _write_ledger(settings, _ledger_row(fr, ds=ds, run_id=run_id, fmt=fmt, encoding=enc, ingested_at=ingested_at, started=started, finished=datetime.now(timezone.utc)), repeat=repeat)

    # parts left from files that are no longer claimed for this date (never expected; kept honest)
    for root in (settings.curated_dir, settings.quarantine_dir):
        for stale in (root / f"ds={ds}").glob("part-*.parquet") if (root / f"ds={ds}").exists() else []:
            if stale.name not in live_parts and not any(f.status == "failed" and stale.name == f"part-{f.file_sha256[:16]}.parquet" for f in report.files):
                stale.unlink()
    docs = settings.reports_dir / "gx" / "index.html"
    report.docs_index = str(docs) if docs.exists() else None
    if stray:
        log.error("%d file(s) in %s that no run claims: %s", len(stray), settings.landing_dir, [str(p) for p in stray])
    if errors or stray:
        message = f"ds={ds}: {len(errors)} of {len(files)} file(s) not ingested" + "".join(f"\n  {e}" for e in errors)
        if stray:  # never ingested and never in the ledger: say so every night until someone moves them
            message += (f"\n{len(stray)} file(s) in landing/ that no run claims (only files directly in landing/ or in "
                        f"landing/<mapping>/ are; mappings: {', '.join(sorted(load_mappings(settings.ingest.sources_dir)))}); "
                        "move or remove them:" + "".join(f"\n  {p.relative_to(settings.landing_dir)}" for p in stray))
        # chained to the first unexpected error, so its traceback reaches the task log
        raise IngestError(message, report) from unexpected
    return report
