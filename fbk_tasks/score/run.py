"""Score one shard with the pinned model version; reconcile and publish a whole run.

Output of a shard (write-once files, temp file + ``os.replace``; ``<tag>`` hashes the
shard's plan: model version, run id and planned review ids):

* ``<scores_dir>/ds=D/part-<version>-<shard>-<tag>.parquet``: one row per scored review
  (``SCORES_SCHEMA``);
* ``<scores_dir>/_rejected/ds=D/part-<version>-<shard>-<tag>.parquet``: one row per review
  that could not be scored, with ``reason`` (``empty_text``, ``model_error``,
  ``invalid_prediction``, ``missing_from_curated``) and ``detail``.

Files are never rewritten, so a reader that listed a file reads the bytes it listed. A
retry of the same plan writes the same rows to the same name (``scored_at`` and ``run_id``
come from the run, not the clock); a later night adds files for the reviews it planned.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from fbk_tasks.schema import SENTIMENT_CLASSES
from fbk_tasks.score.plan import ShardSpec, duckdb_connection, output_files, partition_output_files, plan_shards, prune_plans
from fbk_tasks.score.registry import ModelRef, resolve_champion, served_version_before, snapshot_registry
from fbk_tasks.settings import Settings

log = logging.getLogger(__name__)


class ReconciliationError(RuntimeError):
    """Planned reviews do not equal scored + rejected, or a review was scored twice."""


@dataclass
class ShardResult:
    ds: str
    shard: int
    model_name: str
    model_version: int
    planned: int
    scored: int
    rejected: int
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    scores_file: str | None = None
    rejected_file: str | None = None
    seconds: float = 0.0
    backend: str | None = None  # what computed the predictions: onnx_int8, onnx_fp32, torch, sklearn or pyfunc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ShardResult":
        return cls(**data)


def shard_paths(settings: Settings, ds: str, model_version: int, shard: int, plan_tag: str) -> tuple[Path, Path]:
    """(scores file, rejections file) of one shard's plan."""
    name = f"part-{model_version}-{shard}-{plan_tag}.parquet"
    return (settings.scores_dir / f"ds={ds}" / name, settings.scores_dir / "_rejected" / f"ds={ds}" / name)


def _clean_text(text: Any) -> str:
    if text is None:
        return ""
    if isinstance(text, float) and math.isnan(text):
        return ""
    return " ".join(str(text).split())


def _matches_sql(files: list[str], plan_file: str, present: list[str]) -> str:
    """(curated file: 1-based in ``files``, row in that file, position in the plan, planned
    review_id) of every planned id, sorted by file then row: where to find each planned review
    (``present``: those of ``files`` that still exist).

    A plan file says where each id's first curated row was at planning time
    (``curated_file``/``curated_row``), so this is one sort of the shard's own rows, no join:
    DuckDB's external sort is what spills most reliably under the cap (the hash join this
    replaced failed with Out of Memory on a 10M-review night at 256 MiB). Plan files written
    before those columns existed are matched with that join."""
    import pyarrow.parquet as pq

    from fbk_tasks.score.plan import PLAN_COLUMNS, _files_sql

    plan = _files_sql([plan_file])
    if set(PLAN_COLUMNS) <= set(pq.read_schema(plan_file).names):
        return (f"SELECT curated_file::BIGINT AS fidx, curated_row AS row, file_row_number AS pos, review_id "
                f"FROM read_parquet({plan}, file_row_number = true) ORDER BY fidx, row")
    return (f"SELECT list_position({_files_sql(files)}, c.filename)::BIGINT AS fidx, c.file_row_number AS row, p.pos, p.review_id "
            f"FROM read_parquet({_files_sql(present)}, filename = true, file_row_number = true) c "
            f"JOIN (SELECT review_id, file_row_number AS pos FROM read_parquet({plan}, file_row_number = true)) p "
            f"ON c.review_id = p.review_id ORDER BY fidx, row")


def _find_by_id(con: Any, spec: ShardSpec, ids: list[str], positions: list[int]) -> tuple[list[str], list[Any], list[int]]:
    """(ids, texts, plan positions) of those of ``ids`` that the shard's curated files hold at
    any row: the first row of each, in file then row order, as the planned scan would take it."""
    import pyarrow as pa

    from fbk_tasks.score.plan import _files_sql

    present = [f for f in spec.files if Path(f).exists()]
    if not present or not ids:
        return [], [], []
    order = {str(f): i for i, f in enumerate(spec.files)}
    con.register("fbk_lost_ids", pa.table({"review_id": pa.array(ids, pa.string())}))
    try:
        rows = con.execute(
            f"SELECT c.review_id, c.text, c.filename, c.file_row_number FROM read_parquet({_files_sql(present)}, "
            "filename = true, file_row_number = true) AS c SEMI JOIN fbk_lost_ids AS l ON c.review_id = l.review_id"
        ).fetchall()
    finally:
        con.unregister("fbk_lost_ids")
    first: dict[str, tuple[tuple[int, int], Any]] = {}
    for rid, text, fname, rownum in rows:
        key = (order.get(str(fname), len(order)), int(rownum))
        if rid not in first or key < first[rid][0]:
            first[rid] = (key, text)
    where = dict(zip(ids, positions))
    found = sorted(first, key=lambda r: first[r][0])
    if found:
        log.warning("shard %s/%s: %d planned review(s) not at their planned row (a curated file rewritten since "
                    "planning) found by id", spec.ds, spec.shard, len(found))
    return found, [first[r][1] for r in found], [where[r] for r in found]


def _iter_planned_batches(settings: Settings, spec: ShardSpec, con: Any) -> Iterator[tuple[list[str], list[Any], Any]]:
    """Stream (review_ids, texts, positions in the plan file) of the planned ids from the
    shard's curated files, batch by batch, in file order then row order (deterministic: the
    order the pyarrow scan of these files had).

    Two streams, both a batch at a time: the planned rows' places sorted by (file, row)
    (:func:`_matches_sql`), and each curated file read with pyarrow in batches of
    ``score.scan_batch_rows``; the rows of a file batch that the place stream names are taken,
    and kept only if they still hold the planned id (a curated file replaced since planning
    leaves its ids unmatched here; :func:`score_shard` then looks them up by id). Nothing here
    grows with the shard."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    batch_rows = settings.score.scan_batch_rows
    present = [f for f in spec.files if Path(f).exists()]
    if not present:
        return
    matches = con.sql(_matches_sql(list(spec.files), spec.plan_file, present)).to_arrow_reader(batch_rows)
    # the pending part of the place stream
    m_file = m_row = m_pos = np.empty(0, dtype=np.int64)
    m_ids: list[Any] = []  # Arrow arrays, concatenated on use

    def refill() -> bool:
        nonlocal m_file, m_row, m_pos, m_ids
        for b in matches:
            if b.num_rows:
                m_file = np.concatenate([m_file, b.column(0).to_numpy(zero_copy_only=False).astype(np.int64)])
                m_row = np.concatenate([m_row, b.column(1).to_numpy(zero_copy_only=False).astype(np.int64)])
                m_pos = np.concatenate([m_pos, b.column(2).to_numpy(zero_copy_only=False).astype(np.int64)])
                m_ids = [_concat_strings(m_ids + [b.column(3)])]
                return True
        return False

    def drop(k: int) -> None:
        nonlocal m_file, m_row, m_pos, m_ids
        m_file, m_row, m_pos = m_file[k:], m_row[k:], m_pos[k:]
        m_ids = [m_ids[0].slice(k)] if m_ids else []

    for fidx, path in enumerate(spec.files, start=1):  # the plan's curated_file is 1-based
        if not len(m_file) and not refill():
            return  # nothing planned is left
        if m_file[0] > fidx:
            continue  # nothing planned in this file
        if not Path(path).exists():  # gone since planning: its planned ids stay unseen (missing)
            while m_file[-1] == fidx and refill():
                pass
            drop(int(np.searchsorted(m_file, fidx, side="right")))
            continue
        offset = 0
        with pq.ParquetFile(path) as pf:
            for batch in pf.iter_batches(batch_size=batch_rows, columns=["review_id", "text"]):
                end = offset + batch.num_rows
                # every place inside this batch must be pending (the stream is sorted by file, row)
                while (m_file[-1] == fidx and m_row[-1] < end) and refill():
                    pass
                k = int(np.searchsorted(m_file, fidx, side="right"))  # pending places in this file
                k = int(np.searchsorted(m_row[:k], end, side="left"))  # ... inside this batch
                if k:
                    picked = batch.take(m_row[:k] - offset)
                    same = pc.fill_null(pc.equal(picked.column(0), m_ids[0].slice(0, k)), False).to_numpy(zero_copy_only=False)
                    if not same.all():
                        log.warning("%s: %d planned rows hold another review id now; left as missing", path, int((~same).sum()))
                        picked = picked.filter(same)
                    yield picked.column(0).to_pylist(), picked.column(1).to_pylist(), m_pos[:k][same]
                    drop(k)
                offset = end
                if not len(m_file) and not refill():
                    return
                if m_file[0] != fidx:
                    break  # the rest of this file holds nothing planned
        # places past the end of the file (it was replaced by a shorter one): missing
        while len(m_file) and m_file[-1] == fidx and refill():
            pass
        drop(int(np.searchsorted(m_file, fidx, side="right")))


def _concat_strings(arrays: list[Any]) -> Any:
    import pyarrow as pa

    return pa.concat_arrays([a.cast(pa.string()) for a in arrays])


class _StreamingScores:
    """The shard's scores file, written batch by batch into a hidden temporary file beside the
    destination and renamed over it at the end (atomic, write-once): memory stays one batch,
    whatever the shard's size. Rows are in scan order, which is deterministic for a plan. A
    retry that finds the file already there with the same rows leaves it alone."""

    def __init__(self, path: Path, schema: Any, metadata: dict[str, str]) -> None:
        import uuid

        import pyarrow.parquet as pq

        self.path = path
        self.schema = schema.with_metadata({**(schema.metadata or {}), **{k.encode(): v.encode() for k, v in metadata.items()}})
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
        self.writer = pq.ParquetWriter(str(self.tmp), self.schema, compression="zstd")
        self.rows = 0
        self._pending: list[Any] = []
        self._pending_rows = 0

    # Predictions are buffered into row groups of this many rows: a row group per predict call
    # (score.batch_size rows) made the writer's footer metadata, which it holds until close,
    # grow with the shard (thousands of row groups on a million-review shard).
    ROW_GROUP_ROWS = 65_536

    def write(self, batch: Any) -> None:
        self._pending.append(batch.replace_schema_metadata(self.schema.metadata))
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows
        if self._pending_rows >= self.ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._pending_rows:
            self.writer.write_table(pa.Table.from_batches(self._pending, schema=self.schema), row_group_size=self._pending_rows)
        self._pending, self._pending_rows = [], 0

    def commit(self) -> str | None:
        self._flush()
        self.writer.close()
        try:
            if self.rows == 0:
                return None
            if self.path.exists() and _same_rows_streamed(self.path, self.tmp):
                return str(self.path)
            with open(self.tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(self.tmp, self.path)
            return str(self.path)
        finally:
            self.tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def _valid_prediction(row: Any) -> str | None:
    """None when a prediction row is usable, else why not."""
    label = row.get("label")
    conf = row.get("confidence")
    if not isinstance(label, str) or not label:
        return f"label is {label!r}"
    if label not in SENTIMENT_CLASSES:  # the marts count shares per class: 'Positive' would be in none
        return f"label {label!r} is not one of {', '.join(SENTIMENT_CLASSES)}"
    try:
        c = float(conf)
    except (TypeError, ValueError):
        return f"confidence is {conf!r}"
    if not (0.0 <= c <= 1.0) or math.isnan(c):
        return f"confidence {c} outside [0, 1]"
    return None


class ModelFailure(RuntimeError):
    """The model failed on every row of a batch, one by one too: a systemic fault, not bad input."""


def _predict(model: Any, ids: list[str], texts: list[str], max_detail: int) -> tuple[list[dict], list[tuple[str, str, str]]]:
    """Predict a batch; on failure fall back to row by row so one bad row rejects only itself."""
    import pandas as pd

    def rows_of(frame: Any, n: int) -> list[dict]:
        if len(frame) != n:
            raise ValueError(f"model returned {len(frame)} rows for {n} inputs")
        return frame.reset_index(drop=True).to_dict("records")

    try:
        preds = rows_of(model.predict(pd.DataFrame({"text": texts})), len(texts))
        pairs = list(zip(ids, preds))
    except Exception as batch_exc:  # isolate the bad rows
        log.warning("batch of %d failed (%s); retrying row by row", len(texts), batch_exc)
        pairs = []
        for rid, text in zip(ids, texts):
            try:
                pairs.append((rid, rows_of(model.predict(pd.DataFrame({"text": [text]})), 1)[0]))
            except Exception as exc:
                pairs.append((rid, {"__error__": f"{type(exc).__name__}: {exc}"[:max_detail]}))
        if len(texts) > 1 and all("__error__" in pred for _, pred in pairs):
            # not bad rows but a broken model or machine (out of memory, a dead session): fail the
            # shard, writing nothing, so a retry scores these reviews instead of rejecting them for good
            raise ModelFailure(f"every row of a batch of {len(texts)} failed alone too; first: {pairs[0][1]['__error__']}") from batch_exc
    ok: list[dict] = []
    bad: list[tuple[str, str, str]] = []
    for rid, pred in pairs:
        if "__error__" in pred:
            bad.append((rid, "model_error", pred["__error__"]))
            continue
        problem = _valid_prediction(pred)
        if problem:
            bad.append((rid, "invalid_prediction", problem[:max_detail]))
            continue
        row = {"review_id": rid, "label": pred["label"], "confidence": float(pred["confidence"])}
        for cls in SENTIMENT_CLASSES:
            p = pred.get(f"prob_{cls}")
            row[f"prob_{cls}"] = None if p is None or (isinstance(p, float) and math.isnan(p)) else float(p)
        ok.append(row)
    return ok, bad


def prepare_model(model: Any, settings: Settings) -> str:
    """Choose how a loaded model serves and return the backend's name.

    A project :class:`~fbk_tasks.train.pyfunc.SentimentModel` serves its ONNX export when the
    golden check at registration passed (int8 before fp32) and ``score.backend`` is ``auto``,
    else PyTorch; a champion logged without ONNX artifacts serves PyTorch. Any other model
    (``predict(DataFrame)`` only) is served as it is: ``pyfunc``.
    """
    inner = model
    unwrap = getattr(model, "unwrap_python_model", None)
    if unwrap is not None:
        try:
            inner = unwrap()
        except Exception:  # not a PythonModel-based pyfunc
            return "pyfunc"
    use = getattr(inner, "use_backend", None)
    if use is None:
        return "pyfunc"
    backend = use(settings.score.backend, threads=settings.score.threads or os.cpu_count())
    log.info("serving with backend %s", backend)
    return backend


def _write_once(path: Path, rows: "list[dict] | Any", schema: Any, metadata: dict[str, str] | None = None) -> str | None:
    """Write a shard's rows to a write-once file (sorted by review_id).

    Files are never modified once written, so a reader that listed a file always reads the
    bytes it listed. The name carries the plan's hash; a retry of the same plan produces the
    same rows, so an existing file with equal content is left alone.
    """
    import pyarrow as pa

    from fbk_tasks.io.atomic import write_parquet

    if isinstance(rows, list):
        rows = pa.Table.from_pylist(rows, schema=schema)
    if rows.num_rows == 0:
        return None
    table = rows.sort_by("review_id")
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **{k.encode(): v.encode() for k, v in metadata.items()}})
    if not _already_written(path, table, schema):
        write_parquet(table, path)
    return str(path)


def _same_rows_streamed(path: Path, new_file: Path, batch_rows: int = 65_536) -> bool:
    """True when ``path`` holds exactly the rows of ``new_file`` (a retry of the same plan):
    leave it alone. Compared a slice at a time (memory: a batch, not the shard). A file with
    other rows (or unreadable) is reported and will be replaced."""
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as old_pf, pq.ParquetFile(new_file) as new_pf:
            if old_pf.metadata.num_rows != new_pf.metadata.num_rows or not old_pf.schema_arrow.equals(new_pf.schema_arrow):
                raise ValueError("other rows")
            old_it = old_pf.iter_batches(batch_size=batch_rows)
            new_it = new_pf.iter_batches(batch_size=batch_rows)
            a = b = None  # the not yet compared rest of the current batch of each file
            while True:
                if a is None or not a.num_rows:
                    a = next(old_it, None)
                if b is None or not b.num_rows:
                    b = next(new_it, None)
                if a is None or b is None:
                    if a is None and b is None:
                        return True
                    raise ValueError("other rows")
                n = min(a.num_rows, b.num_rows)
                if not a.slice(0, n).equals(b.slice(0, n)):
                    raise ValueError("other rows")
                a, b = a.slice(n), b.slice(n)
    except Exception:  # other rows, or an unreadable leftover: replace it
        pass
    log.warning("%s exists with different rows (non-deterministic model?); replacing it", path)
    return False


def _already_written(path: Path, table: Any, schema: Any = None) -> bool:
    """True when ``path`` already holds exactly ``table`` (a retry of the same plan): leave it
    alone. A file with other rows (or unreadable) is reported and will be replaced."""
    import pyarrow.parquet as pq

    if not path.exists():
        return False
    try:
        if pq.read_table(path, schema=schema).equals(table):
            return True
    except Exception:  # unreadable leftover: replace it
        pass
    log.warning("%s exists with different rows (non-deterministic model?); replacing it", path)
    return False


def score_shard(settings: Settings, shard: ShardSpec, *, model: Any = None, backend: str | None = None) -> ShardResult:
    """Score the shard's planned reviews with the shard's pinned model version.

    ``model`` (anything with ``predict(DataFrame) -> DataFrame``) is loaded from
    ``shard.model.uri`` when not given, and its serving backend chosen (:func:`prepare_model`;
    pass ``backend`` with a model already prepared). Rows stream from Parquet in batches of
    ``score.batch_size``, and predictions stream into the scores file (:class:`_StreamingScores`).
    The plan file says where each planned review's curated row is; DuckDB sorts those places
    under ``score.duckdb_memory_mb`` and the texts stream from the files
    (:func:`_iter_planned_batches`), so memory does not grow with the shard beyond one byte per
    planned id (which planned ids were seen) and the rejected rows. Every planned review ends
    up in exactly one of the two output files; the result's counts satisfy
    ``planned == scored + rejected``.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fbk_tasks.score.schema import REJECTED_SCHEMA, SCORES_SCHEMA

    started = time.monotonic()
    spec = shard
    ref = spec.model
    with pq.ParquetFile(spec.plan_file) as pf:
        n_planned = pf.metadata.num_rows  # plan files hold unique ids
    if model is None:
        import mlflow.pyfunc

        from fbk_tasks.score.registry import configure_mlflow

        configure_mlflow(settings)
        model = mlflow.pyfunc.load_model(ref.uri)
        backend = None
    if backend is None:
        backend = prepare_model(model, settings)

    scored_at = _dt.datetime.fromisoformat(spec.scored_at)
    common = {"model_name": ref.name, "model_version": ref.version, "scored_at": scored_at, "run_id": spec.run_id, "ds": spec.ds}
    max_detail = settings.score.max_error_detail_chars
    scores_path, rejected_path = shard_paths(settings, spec.ds, ref.version, spec.shard, spec.plan_tag)
    file_meta = {"fbk.backend": backend}
    out = _StreamingScores(scores_path, SCORES_SCHEMA, file_meta)
    n_scored = 0
    rejected_rows: list[dict] = []
    seen = np.zeros(n_planned, dtype=bool)  # one byte per planned id (by position in the plan file)
    buf_ids: list[str] = []
    buf_texts: list[str] = []

    def flush() -> None:
        if not buf_ids:
            return
        nonlocal n_scored
        ok, bad = _predict(model, buf_ids, buf_texts, max_detail)
        if ok:
            out.write(pa.RecordBatch.from_pylist([{**r, **common} for r in ok], schema=SCORES_SCHEMA))
            n_scored += len(ok)
        rejected_rows.extend({"review_id": rid, "reason": reason, "detail": detail, **common} for rid, reason, detail in bad)
        buf_ids.clear()
        buf_texts.clear()

    def take(ids: list[str], texts: list[Any], positions: Any) -> None:
        for rid, text, pos in zip(ids, texts, positions):
            if seen[pos]:
                continue  # the same review id again (a re-delivered row): scored once
            seen[pos] = True
            clean = _clean_text(text)
            if not clean:
                rejected_rows.append({"review_id": rid, "reason": "empty_text", "detail": "no text after whitespace normalisation", **common})
                continue
            buf_ids.append(rid)
            buf_texts.append(clean)
            if len(buf_ids) >= settings.score.batch_size:
                flush()

    try:
        with duckdb_connection(settings) as con:
            for ids, texts, positions in _iter_planned_batches(settings, spec, con):
                take(ids, texts, positions)
            # planned ids not at their planned place, read back from the plan file a batch at a
            # time (sorted already): a curated file rewritten since planning (a re-ingest of the
            # night) may hold them at other rows, so they are looked up by id in one join
            # (usually none is left; at most as many as would be rejected rows)
            lost_ids, lost_pos = [], []
            if not seen.all():
                offset = 0
                with pq.ParquetFile(spec.plan_file) as pf:
                    for batch in pf.iter_batches(batch_size=settings.score.scan_batch_rows, columns=["review_id"]):
                        unseen = np.flatnonzero(~seen[offset:offset + batch.num_rows])
                        if len(unseen):
                            lost_ids.extend(batch.column(0).take(pa.array(unseen)).to_pylist())
                            lost_pos.extend((unseen + offset).tolist())
                        offset += batch.num_rows
                take(*_find_by_id(con, spec, lost_ids, lost_pos))
        flush()
    except BaseException:
        out.abort()
        raise
    # planned ids found nowhere in the shard's curated files
    rejected_rows.extend({"review_id": rid, "reason": "missing_from_curated", "detail": "planned id not found in the planned files",
                          **common} for rid, pos in zip(lost_ids, lost_pos) if not seen[pos])
    del seen

    scores_file = out.commit()
    rejected_file = _write_once(rejected_path, rejected_rows, REJECTED_SCHEMA, file_meta)
    result = ShardResult(
        ds=spec.ds,
        shard=spec.shard,
        model_name=ref.name,
        model_version=ref.version,
        planned=n_planned,
        scored=n_scored,
        rejected=len(rejected_rows),
        rejected_by_reason=dict(sorted(Counter(r["reason"] for r in rejected_rows).items())),
        scores_file=scores_file,
        rejected_file=rejected_file,
        seconds=round(time.monotonic() - started, 3),
        backend=backend,
    )
    log.info("shard %s/%s: %d scored, %d rejected in %.1fs with %s (%.1f reviews/s)", spec.ds, spec.shard, result.scored,
             result.rejected, result.seconds, backend, result.scored / max(result.seconds, 1e-9))
    if result.planned != result.scored + result.rejected:
        raise ReconciliationError(f"shard {spec.ds}/{spec.shard}: planned {result.planned} != scored {result.scored} + rejected {result.rejected}")
    return result


def remove_superseded(settings: Settings, specs: list[ShardSpec], results: list[ShardResult]) -> int:
    """After a forced rescore, delete the version's older files in the rescored partitions.

    A forced rescore plans every review of each partition in scope, so every older file of
    the same version there is fully superseded by this run's files. This is the only place
    files under ``scores/`` are deleted (a reader listing that very file at that instant may
    fail once; ordinary nights never delete or rewrite).
    """
    keep = {f for r in results for f in (r.scores_file, r.rejected_file) if f}
    version = specs[0].model.version
    removed = 0
    for ds in sorted({s.ds for s in specs if s.rescore}):
        for rejected in (False, True):
            for path in output_files(settings, version, rejected=rejected, ds=ds):
                if str(path) not in keep:
                    path.unlink(missing_ok=True)
                    removed += 1
    return removed


def verify_outputs(settings: Settings, model: ModelRef, specs: list[ShardSpec]) -> dict[str, int]:
    """Check the files, not just the counts: each planned id is in scores xor rejections of the
    version, and no review has two rows for the version. Raise :class:`ReconciliationError`.

    Scope: the version's files in the partitions of the run (``specs``), not the whole
    history. A review's rows are written under its curated partition, and review ids are
    unique across curated partitions (ingestion quarantines ids seen in earlier partitions;
    ``fbk_tasks.score.plan``), so a duplicate of one of the run's reviews, or its coverage, can
    only be in these partitions. If that uniqueness were broken (a curated partition ingested
    before an earlier day's), the same id could be scored once in each partition, and this
    check would not see it.

    The checks are one DuckDB sort over the Parquet files under ``score.duckdb_memory_mb``
    (every score, rejection and planned row of the scope, tagged by source, ordered by
    review_id), counted per id a batch at a time in numpy: memory does not grow with the
    night's volume, and the only DuckDB operator is the external sort, which spills most
    reliably (a version of this with hash aggregates and joins needed more than the cap)."""
    import numpy as np

    from fbk_tasks.score.plan import _files_sql, _first_in_group, _last_id, _version_ids_sql

    partitions = sorted({s.ds for s in specs})
    scored_files = partition_output_files(settings, model.version, partitions, rejected=False)
    rejected_files = partition_output_files(settings, model.version, partitions, rejected=True)
    plans = [s.plan_file for s in specs]
    parts = []
    if scored_files:
        parts.append(f"SELECT review_id, 0::TINYINT AS src FROM {_version_ids_sql(scored_files)} s")
    if rejected_files:
        parts.append(f"SELECT review_id, 1::TINYINT AS src FROM {_version_ids_sql(rejected_files)} r")
    if plans:
        parts.append(f"SELECT review_id, 2::TINYINT AS src FROM read_parquet({_files_sql(plans)})")
    # DuckDB refuses parameters that the statement does not use (no output file: no filter)
    params = {"model_name": model.name, "model_version": model.version} if scored_files or rejected_files else None
    # per review id: rows in scores, rows in rejections, rows in the plans
    totals = dict.fromkeys(("s_rows", "s_unique", "r_rows", "r_unique", "both", "missing"), 0)

    def count(groups: Any) -> None:  # groups: (k, 3) counts of complete id groups
        ns, nr, npl = groups[:, 0], groups[:, 1], groups[:, 2]
        totals["s_rows"] += int(ns.sum())
        totals["s_unique"] += int((ns > 0).sum())
        totals["r_rows"] += int(nr.sum())
        totals["r_unique"] += int((nr > 0).sum())
        totals["both"] += int(((ns > 0) & (nr > 0)).sum())
        totals["missing"] += int(((npl > 0) & (ns == 0) & (nr == 0)).sum())

    if parts:
        sql = " UNION ALL ".join(parts)
        sql = f"SELECT review_id, src FROM ({sql}) t ORDER BY review_id COLLATE C NULLS LAST"
        with duckdb_connection(settings) as con:
            carry = np.zeros(3, dtype=np.int64)  # counts of the id group still open at the end of the last batch
            previous: Any = None
            for batch in con.sql(sql, params=params).to_arrow_reader(settings.score.scan_batch_rows):
                if not batch.num_rows:
                    continue
                ids = batch.column(0)
                first = _first_in_group(ids, previous)
                previous = _last_id(ids, previous)
                group = np.cumsum(first)  # 0: rows continuing the open group; 1..g: groups starting here
                src = batch.column(1).to_numpy(zero_copy_only=False).astype(np.int64)
                counts = np.zeros((int(group[-1]) + 1, 3), dtype=np.int64)
                np.add.at(counts, (group, src), 1)
                counts[0] += carry
                if group[-1] == 0:  # the whole batch continues the open group
                    carry = counts[0]
                    continue
                # complete: the open group (if it had rows) and every group but the last one
                done_groups = counts[:-1] if counts[0].any() else counts[1:-1]
                count(done_groups)
                carry = counts[-1]
            if carry.any():
                count(carry[None, :])
    problems = []
    if totals["s_rows"] != totals["s_unique"]:
        problems.append(f"{totals['s_rows'] - totals['s_unique']} duplicate score rows")
    if totals["r_rows"] != totals["r_unique"]:
        problems.append(f"{totals['r_rows'] - totals['r_unique']} duplicate rejection rows")
    if totals["both"]:
        problems.append(f"{totals['both']} reviews both scored and rejected")
    if totals["missing"]:
        problems.append(f"{totals['missing']} planned reviews have no output row")
    if problems:
        raise ReconciliationError(f"model {model.name} v{model.version}: " + "; ".join(problems))
    return {"version_scored_in_partitions": totals["s_unique"], "version_rejected_in_partitions": totals["r_unique"]}


def finalize_run(settings: Settings, specs: list[ShardSpec], results: list[ShardResult], *, build: bool = True,
                 model_version: int | None = None, partial: bool = False) -> dict[str, Any]:
    """Reconcile a run (counts per shard and the files), snapshot the registry, rebuild the warehouse.

    ``model_version``: the version the run pinned (taken from the shards when there are any);
    the snapshot records it as the one whose scores the warehouse shows, when the run planned
    every curated partition. ``partial`` (a run of one ``ds``): the version served before stays
    served, since a new champion's scores of one night would hide every other night from
    ``review_scores``; a later full run switches."""
    from fbk_tasks.warehouse.build import build_warehouse

    by_key = {(r.ds, r.shard): r for r in results}
    problems = []
    for spec in specs:
        r = by_key.get((spec.ds, spec.shard))
        if r is None:
            problems.append(f"shard {spec.ds}/{spec.shard} has no result")
        elif r.planned != spec.n_planned or r.planned != r.scored + r.rejected:
            problems.append(f"shard {spec.ds}/{spec.shard}: planned {spec.n_planned}, result planned {r.planned} = scored {r.scored} + rejected {r.rejected}?")
        elif r.model_version != spec.model.version:
            problems.append(f"shard {spec.ds}/{spec.shard} scored with v{r.model_version}, planned v{spec.model.version}")
    if problems:
        raise ReconciliationError("; ".join(problems))
    versions = {s.model.version for s in specs}
    if len(versions) > 1:
        raise ReconciliationError(f"one run used several model versions: {sorted(versions)}")
    summary: dict[str, Any] = {
        "planned": sum(s.n_planned for s in specs),
        "scored": sum(r.scored for r in results),
        "rejected": sum(r.rejected for r in results),
        "shards": len(specs),
        "partitions": sorted({s.ds for s in specs}),
        "rejected_by_reason": dict(sum((Counter(r.rejected_by_reason) for r in results), Counter())),
        "backend": ",".join(sorted({r.backend for r in results if r.backend})) or None,
    }
    if specs:
        model = specs[0].model
        summary.update(model_name=model.name, model_version=model.version, run_id=specs[0].run_id)
        if any(s.rescore for s in specs):
            summary["superseded_files_removed"] = remove_superseded(settings, specs, results)
        summary.update(verify_outputs(settings, model, specs))
    served = int(specs[0].model.version) if specs else model_version
    if partial:
        served = served_version_before(settings) or served
    snapshot_registry(settings, served_version=served)
    pruned = prune_plans(settings, keep_run_id=specs[0].run_id if specs else None)
    if pruned:
        summary["plans_pruned"] = len(pruned)
    if build:
        summary["warehouse"] = str(build_warehouse(settings))
    return summary


def refresh_warehouse(settings: Settings, registry: bool = False) -> Path | None:
    """Rebuild the warehouse (after a stage that wrote what it shows: drift metrics, a gate's
    verdicts, an alias move), first snapshotting the registry when ``registry``, with the served
    version kept (only a full scoring run switches it). Without this, `model_versions` and
    `drift_metrics` showed the state of the last scoring run until the next one. Never raises:
    the stage's own outcome stands, and the next rebuild catches up (the failure is logged)."""
    from fbk_tasks.warehouse.build import build_warehouse

    try:
        if registry:
            snapshot_registry(settings, served_version=served_version_before(settings))
        return build_warehouse(settings)
    except Exception:  # noqa: BLE001 - a view that cannot be rebuilt now must not undo a promotion
        log.exception("warehouse not refreshed; the next scoring run rebuilds it")
        return None


def finished_shard(settings: Settings, spec: ShardSpec) -> ShardResult | None:
    """The result of a shard this run already wrote in full, read back from its two files (their
    names carry the plan tag, so only this plan can have written them), or None.

    A shard is written in full when its score and rejection rows add up to the plan file's rows;
    anything less (an attempt that died between the two files) scores the shard again."""
    import pyarrow.parquet as pq

    scores_path, rejected_path = shard_paths(settings, spec.ds, spec.model.version, spec.shard, spec.plan_tag)
    if not scores_path.exists() and not rejected_path.exists():
        return None
    with pq.ParquetFile(spec.plan_file) as pf:
        planned = pf.metadata.num_rows
    scored, backend = 0, None
    if scores_path.exists():
        with pq.ParquetFile(scores_path) as pf:
            scored = pf.metadata.num_rows
            backend = (pf.schema_arrow.metadata or {}).get(b"fbk.backend", b"").decode() or None
    reasons: Counter = Counter()
    if rejected_path.exists():
        reasons.update(pq.read_table(rejected_path, columns=["reason"]).column(0).to_pylist())
    if scored + sum(reasons.values()) != planned:
        return None
    return ShardResult(ds=spec.ds, shard=spec.shard, model_name=spec.model.name, model_version=spec.model.version,
                       planned=planned, scored=scored, rejected=sum(reasons.values()),
                       rejected_by_reason=dict(sorted(reasons.items())),
                       scores_file=str(scores_path) if scores_path.exists() else None,
                       rejected_file=str(rejected_path) if rejected_path.exists() else None, backend=backend)


def score_shards(settings: Settings, specs: list[ShardSpec]) -> list[ShardResult]:
    """Score several shards of one run in this process (one mapped task of a grouped run, see
    :func:`fbk_tasks.score.plan.group_specs`): the pinned model is loaded and prepared once.

    Shards this run already wrote in full (:func:`finished_shard`: an earlier attempt of the
    task that failed on a later shard) are read back, not predicted again, so a retry resumes
    where the failure was and never rewrites a file readers may have seen."""
    if len({s.model.uri for s in specs}) > 1:
        raise ValueError(f"shards of one task must pin one model, got {sorted({s.model.uri for s in specs})}")
    done = {(s.ds, s.shard): finished_shard(settings, s) for s in specs}
    todo = [s for s in specs if done[(s.ds, s.shard)] is None]
    if len(todo) < len(specs):
        log.info("%d of %d shards were written in full by an earlier attempt: read back, not scored again", len(specs) - len(todo), len(specs))
    if todo:
        import mlflow.pyfunc

        from fbk_tasks.score.registry import configure_mlflow

        configure_mlflow(settings)
        model = mlflow.pyfunc.load_model(todo[0].model.uri)
        backend = prepare_model(model, settings)
        for spec in todo:
            done[(spec.ds, spec.shard)] = score_shard(settings, spec, model=model, backend=backend)
    return [done[(s.ds, s.shard)] for s in specs]


def run_scoring(
    settings: Settings,
    ds: str | None = None,
    *,
    rescore: bool = False,
    run_id: str | None = None,
    scored_at: _dt.datetime | None = None,
    build: bool = True,
) -> dict[str, Any]:
    """The whole run without Airflow (what `fbk score` does): resolve, plan, score, finalize."""
    model_ref = resolve_champion(settings)
    specs = plan_shards(settings, ds, model_ref, run_id=run_id, scored_at=scored_at, rescore=rescore)
    results = score_shards(settings, specs)
    summary = finalize_run(settings, specs, results, build=build, model_version=int(model_ref.version), partial=ds is not None)
    summary.setdefault("model_name", model_ref.name)
    summary.setdefault("model_version", model_ref.version)
    return summary
