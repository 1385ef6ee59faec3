"""Plan a scoring run: which curated reviews the pinned model version has not yet processed.

The "already processed" set is derived from the project's own outputs (score and rejection
Parquet files of that model version), never from Airflow's database, so the CLI, a DAG run and a
backfill all agree. The plan of each shard (its review ids) is written under
``<state_dir>/score_plans/<run>/`` so a shard scores exactly what was planned, whatever lands
in curated storage or happens to the alias in the meantime.

**Partition scope.** A review's score or rejection row is written under its curated
partition's ``ds=`` (``score_shard`` writes ``scores/ds=<spec.ds>/``), and review ids are unique
across curated partitions (ingestion quarantines an id already seen in an earlier partition:
``fbk_tasks.ingest.pipeline._history``). So "already processed by this version" for the reviews
of partition D only needs the version's output files under ``ds=D``: planning a night reads
that night's outputs, never the whole history, and its memory and time do not grow with the
number of nights already scored.

**Bounded memory.** The set operations (unique, anti-join with what was processed, sort) are
one DuckDB sort over the Parquet files with a memory cap (``score.duckdb_memory_mb``; beyond it
DuckDB spills to ``<state_dir>/duckdb_tmp``), read back a batch at a time: the first row of
each id decides (:func:`_plan_sql`), and the kept ids go to one Parquet writer per shard, so a
plan holds one batch of ids in Python, whatever the night's volume. Each plan row also says
where the id's first curated row is (``curated_file``, ``curated_row``), so scoring finds the
rows with a sort of its own plan instead of a join with the whole night.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from fbk_tasks.score.registry import ModelRef
from fbk_tasks.settings import Settings

_DS = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class ShardSpec:
    """One unit of scoring work (JSON-able through :meth:`to_dict` for XCom)."""

    ds: str
    shard: int
    n_shards: int
    model: ModelRef
    files: tuple[str, ...]
    plan_file: str
    plan_tag: str  # hash of the planned ids; names the output files (write-once)
    n_planned: int
    run_id: str
    scored_at: str  # ISO-8601, UTC; written to every row (deterministic per run)
    rescore: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["files"] = list(self.files)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ShardSpec":
        data = dict(data)
        data["model"] = ModelRef.from_dict(data["model"])
        data["files"] = tuple(data["files"])
        return cls(**data)


def group_specs(specs: list[ShardSpec], max_groups: int) -> list[list[ShardSpec]]:
    """The run's shards as at most ``max_groups`` groups, one mapped Airflow task each.

    Up to ``max_groups`` shards: one shard per group, in plan order. Beyond (a new champion's
    first night, or a rescore, over hundreds of partitions would otherwise pass Airflow's
    ``max_map_length``): shards are dealt, largest first, to the group with the fewest planned
    reviews so far (ties: the lowest group), so groups carry about the same work; deterministic
    for the same plan."""
    if max_groups < 1:
        raise ValueError("max_groups must be >= 1")
    if len(specs) <= max_groups:
        return [[s] for s in specs]
    import heapq

    groups: list[list[ShardSpec]] = [[] for _ in range(max_groups)]
    lightest = [(0, k) for k in range(max_groups)]  # (planned reviews so far, group): a heap
    for spec in sorted(specs, key=lambda s: (-s.n_planned, s.ds, s.shard)):
        load, k = heapq.heappop(lightest)
        groups[k].append(spec)
        heapq.heappush(lightest, (load + spec.n_planned, k))
    return groups


def shard_of(review_id: str, n_shards: int) -> int:
    """Stable shard of a review (same in every process and Python version)."""
    return _shard_of_utf8(review_id.encode("utf-8"), n_shards)


def _shard_of_utf8(review_id: bytes, n_shards: int) -> int:
    """:func:`shard_of` of an id already encoded as UTF-8."""
    return int.from_bytes(hashlib.blake2b(review_id, digest_size=8).digest(), "big") % n_shards


def validate_ds(ds: str) -> str:
    if not _DS.match(ds):
        raise ValueError(f"ds must look like YYYY-MM-DD, got {ds!r}")
    _dt.date.fromisoformat(ds)
    return ds


def default_scored_at(ds: str | None) -> _dt.datetime:
    """Deterministic timestamp for runs without a logical date: end of ``ds``, else today 00:00 UTC."""
    if ds:
        day = _dt.date.fromisoformat(ds) + _dt.timedelta(days=1)
    else:
        day = _dt.datetime.now(tz=_dt.timezone.utc).date()
    return _dt.datetime(day.year, day.month, day.day, tzinfo=_dt.timezone.utc)


def curated_partitions(settings: Settings, ds: str | None = None) -> dict[str, list[Path]]:
    """``{ds: sorted part files}`` for one partition or all of them."""
    root = settings.curated_dir
    dirs = [root / f"ds={validate_ds(ds)}"] if ds else sorted(root.glob("ds=*"))
    out: dict[str, list[Path]] = {}
    for d in dirs:
        # hidden names are in-progress temporary files of the atomic writers: never data
        files = sorted(p for p in d.glob("*.parquet") if p.is_file() and not p.name.startswith("."))
        if files:
            out[d.name.split("=", 1)[1]] = files
    return out


def output_files(settings: Settings, model_version: int, *, rejected: bool, ds: str | None = None) -> list[Path]:
    """Score (or rejection) files of a model version, in one partition or all."""
    root = settings.scores_dir / "_rejected" if rejected else settings.scores_dir
    return sorted(root.glob(f"ds={ds or '*'}/part-{model_version}-*.parquet"))


def partition_output_files(settings: Settings, model_version: int, partitions: Iterable[str], *, rejected: bool) -> list[Path]:
    """Score (or rejection) files of a model version in the given partitions only (never the
    whole history; see the module docstring for why that is enough)."""
    return [f for ds in sorted(set(partitions)) for f in output_files(settings, model_version, rejected=rejected, ds=validate_ds(ds))]


@contextmanager
def duckdb_connection(settings: Settings) -> Iterator[Any]:
    """An in-memory DuckDB connection for a run's set operations, capped at
    ``score.duckdb_memory_mb`` and spilling to a temporary folder of its own under
    ``<state_dir>/duckdb_tmp`` (one per connection: concurrent shard tasks never share spill
    files), removed on exit."""
    import duckdb

    tmp = settings.state_dir / "duckdb_tmp" / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    tmp.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"SET memory_limit = '{int(settings.score.duckdb_memory_mb)}MB'")
        con.execute(f"SET temp_directory = '{_sql_quote(str(tmp))}'")
        con.execute("SET preserve_insertion_order = false")  # every ordered result says ORDER BY
        con.execute("SET enable_progress_bar = false")
        yield con
    finally:
        con.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _sql_quote(text: str) -> str:
    return text.replace("'", "''")


def _files_sql(files: Iterable[Any]) -> str:
    """A DuckDB list literal of file paths (inlined: ``read_parquet`` needs its file list when
    the statement is bound)."""
    return "[" + ", ".join(f"'{_sql_quote(str(f))}'" for f in files) + "]"


def _version_ids_sql(files: list[Path]) -> str:
    """SQL of the review ids in output ``files`` that belong to the version (parameters
    ``$model_name``, ``$model_version``); a typed empty relation when there is no file
    (``read_parquet([])`` is an error; the statement then takes no parameter)."""
    if not files:
        return "(SELECT NULL::VARCHAR AS review_id WHERE false)"
    return f"(SELECT review_id FROM read_parquet({_files_sql(files)}) WHERE model_name = $model_name AND model_version = $model_version)"


def processed_ids(settings: Settings, model: ModelRef, partitions: Iterable[str], *, con: Any = None) -> Any:
    """Review ids this model version already scored or rejected in ``partitions`` (from the
    project's Parquet), as a sorted unique Arrow string array.

    Partition-scoped: a review's output is written under its curated partition, and review
    ids are unique across curated partitions, so the version's files in other partitions can
    never hold one of these partitions' reviews (the module docstring). Planning does the same
    anti-join inside DuckDB without materialising this array; this function is for inspection
    and tests."""
    import pyarrow as pa

    files = (partition_output_files(settings, model.version, partitions, rejected=False)
             + partition_output_files(settings, model.version, partitions, rejected=True))
    if not files:
        return pa.array([], type=pa.string())
    sql = f"SELECT DISTINCT review_id FROM {_version_ids_sql(files)} t WHERE review_id IS NOT NULL ORDER BY review_id COLLATE C"
    params = {"model_name": model.name, "model_version": model.version}
    if con is None:
        with duckdb_connection(settings) as own:
            table = own.sql(sql, params=params).to_arrow_table()
    else:
        table = con.sql(sql, params=params).to_arrow_table()
    return table.column(0).combine_chunks().cast(pa.string())


def plan_tag(model_ref: ModelRef, run_id: str, sorted_ids: Iterable[str]) -> str:
    """Hash of a shard's plan (model version, run, ids): a retry of the same plan writes the
    same output file name with the same rows; any other plan writes other files."""
    h = _PlanHasher(model_ref, run_id)
    for rid in sorted_ids:
        h.update([rid.encode("utf-8")])
    return h.tag()


# A plan file: the shard's review ids, sorted, each with where its (first) curated row is:
# ``curated_file`` a 1-based index into ShardSpec.files, ``curated_row`` the row in that file.
PLAN_COLUMNS = ["review_id", "curated_file", "curated_row"]


def _plan_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("review_id", pa.string()), ("curated_file", pa.int32()), ("curated_row", pa.int64())])


class _PlanHasher:
    """:func:`plan_tag`, fed a batch of UTF-8 ids at a time (same digest)."""

    def __init__(self, model_ref: ModelRef, run_id: str) -> None:
        self._h = hashlib.sha256(f"{model_ref.name}\0{model_ref.version}\0{run_id}\0".encode())

    def update(self, ids_utf8: list[bytes]) -> None:
        if ids_utf8:
            self._h.update(b"\0".join(ids_utf8) + b"\0")

    def tag(self) -> str:
        return self._h.hexdigest()[:12]


def _plan_dir(settings: Settings, run_id: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)
    return settings.state_dir / "score_plans" / safe


def prune_plans(settings: Settings, keep_run_id: str | None = None, now: float | None = None) -> list[str]:
    """Remove the plan folders (``<state_dir>/score_plans/<run>/``) not modified for
    ``score.plan_retention_days`` days, except ``keep_run_id``'s; returns the folders removed.
    A plan is only read by its own run's tasks (and their retries), so an old one is history
    nobody reads; the run's outputs and counts stay in ``scores/`` and the warehouse."""
    import time

    days = settings.score.plan_retention_days
    root = settings.state_dir / "score_plans"
    if days is None or not root.is_dir():
        return []
    cutoff = (now if now is not None else time.time()) - days * 86400
    keep = _plan_dir(settings, keep_run_id).name if keep_run_id else None
    removed = []
    for run in sorted(p for p in root.iterdir() if p.is_dir() and p.name != keep):
        newest = max((f.stat().st_mtime for f in run.rglob("*")), default=run.stat().st_mtime)
        if newest < cutoff:
            shutil.rmtree(run, ignore_errors=True)
            removed.append(run.name)
    return removed


class _ShardPlanWriter:
    """The ids of one shard, streamed in sorted order into a hidden temporary Parquet file in
    the plan folder and hashed on the way; :meth:`commit` names the file after the hash
    (``shard-K-of-N-<tag>.parquet``, fsync + ``os.replace``, like ``fbk_tasks.io.atomic``, whose
    helpers need the final name up front). A plan file already there for the same tag holds
    the same ids and is left alone."""

    ROW_GROUP_IDS = 65_536  # buffered before a write: no row group of a few ids per streamed batch

    def __init__(self, folder: Path, shard: int, n_shards: int, model_ref: ModelRef, run_id: str) -> None:
        self.folder, self.shard, self.n_shards = folder, shard, n_shards
        self.hasher = _PlanHasher(model_ref, run_id)
        self.rows = 0
        self._pending: list[Any] = []
        self._pending_rows = 0
        self._writer: Any = None
        self._tmp: Path | None = None

    def write(self, rows: Any, ids_utf8: list[bytes]) -> None:
        """``rows``: a record batch of :data:`PLAN_COLUMNS`, sorted by review_id, after the
        rows written so far; ``ids_utf8`` its ids encoded (hashed into the tag)."""
        self.hasher.update(ids_utf8)
        self.rows += rows.num_rows
        self._pending.append(rows)
        self._pending_rows += rows.num_rows
        if self._pending_rows >= self.ROW_GROUP_IDS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._pending_rows:
            return
        table = pa.Table.from_batches(self._pending).cast(_plan_schema())
        if self._writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._tmp = self.folder / f".shard-{self.shard}-of-{self.n_shards}.parquet.tmp-{uuid.uuid4().hex}"
            self._writer = pq.ParquetWriter(str(self._tmp), table.schema, compression="zstd")
        self._writer.write_table(table, row_group_size=max(self._pending_rows, 1))
        self._pending, self._pending_rows = [], 0

    def commit(self) -> tuple[Path, str]:
        """(plan file, tag); the writer must have seen at least one id."""
        self._flush()
        self._writer.close()
        self._writer = None
        tag = self.hasher.tag()
        path = self.folder / f"shard-{self.shard}-of-{self.n_shards}-{tag}.parquet"
        try:
            if not path.exists():
                with open(self._tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.replace(self._tmp, path)
        finally:
            self.abort()
        return path, tag

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._writer = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


def _plan_sql(curated: list[Path], done: list[Path]) -> str:
    """One ORDER BY, no hash operator: every non-null curated id with its place (1-based index
    into ``curated``, row in that file), plus the version's ids in the ``done`` output files
    with place (0, 0), sorted by (review_id, file, row). So in each id's group the first row is
    a ``done`` row when the version already processed it, else the id's first curated row in
    file order (:func:`plan_shards` keeps those). DuckDB's external sort is what spills most
    reliably under the cap (hash joins and aggregates failed with Out of Memory where a sort of
    the same rows did not). ``COLLATE C`` compares byte-wise, which for UTF-8 is Python's
    code-point order: plan files keep the order they always had."""
    listed = _files_sql(curated)
    rows = (f"SELECT review_id, list_position({listed}, filename)::INTEGER AS curated_file, file_row_number AS curated_row "
            f"FROM read_parquet({listed}, filename = true, file_row_number = true) WHERE review_id IS NOT NULL")
    if done:
        rows += f" UNION ALL SELECT review_id, 0, 0 FROM {_version_ids_sql(done)} d WHERE review_id IS NOT NULL"
    return f"SELECT review_id, curated_file, curated_row FROM ({rows}) t ORDER BY review_id COLLATE C, curated_file, curated_row"


def _first_in_group(ids: Any, previous: str | None) -> Any:
    """For a batch of ``ids`` sorted (nulls last) and continuing a stream whose last id so far was
    ``previous``: a numpy bool per row, True where the row starts a new id (null = null)."""
    import numpy as np
    import pyarrow.compute as pc

    n = len(ids)
    first = np.ones(n, dtype=bool)
    if not n:
        return first
    head = ids[0].as_py()
    first[0] = not (previous is not None and head == previous) and not (previous is _NULL_ID and head is None)
    if n > 1:
        a, b = ids.slice(1), ids.slice(0, n - 1)
        same = pc.or_(pc.fill_null(pc.equal(a, b), False), pc.and_(pc.is_null(a), pc.is_null(b)))
        first[1:] = ~same.to_numpy(zero_copy_only=False)
    return first


_NULL_ID = object()  # "the stream's last id was null" for _first_in_group


def _last_id(ids: Any, previous: Any) -> Any:
    """The stream's last id after this batch (``_NULL_ID`` for null)."""
    if not len(ids):
        return previous
    last = ids[len(ids) - 1].as_py()
    return _NULL_ID if last is None else last


def plan_shards(
    settings: Settings,
    ds: str | None,
    model_ref: ModelRef,
    *,
    run_id: str | None = None,
    scored_at: _dt.datetime | None = None,
    rescore: bool = False,
) -> list[ShardSpec]:
    """Shards of curated reviews (one partition, or all when ``ds`` is None) still to score.

    With ``rescore`` every curated review is planned again (backfill with the current champion).
    Only shards with work are returned. A review id appearing twice is planned once.

    Per partition, DuckDB sorts the curated ids with what the version already processed *in
    that partition* (see the module docstring: ids are unique across partitions), under
    ``score.duckdb_memory_mb``; the result streams out in batches of ``score.scan_batch_rows``,
    the first row of each id says whether to plan it and where its first curated row is, the
    shard of each id (:func:`shard_of`) is computed per batch, and each shard's rows go to its
    own plan file (sorted by id, hashed into ``plan_tag`` on the way).
    """
    import numpy as np
    import pyarrow as pa

    # a forced rescore without a run time is stamped now: the warehouse shows a review's latest
    # score by scored_at, and a rescore must win over the files it replaces (kept if it fails)
    scored_at = scored_at or (_dt.datetime.now(tz=_dt.timezone.utc) if rescore else default_scored_at(ds))
    if scored_at.tzinfo is None:
        raise ValueError("scored_at must be timezone-aware")
    scored_at = scored_at.astimezone(_dt.timezone.utc)
    run_id = run_id or f"cli__{ds or 'all'}__{scored_at:%Y%m%dT%H%M%S}"
    n = settings.score.shards
    plan_dir = _plan_dir(settings, run_id)
    params = {"model_name": model_ref.name, "model_version": model_ref.version}

    specs: list[ShardSpec] = []
    with duckdb_connection(settings) as con:
        for part_ds, files in curated_partitions(settings, ds).items():
            done = [] if rescore else partition_output_files(
                settings, model_ref.version, [part_ds], rejected=False) + partition_output_files(
                settings, model_ref.version, [part_ds], rejected=True)
            writers = [_ShardPlanWriter(plan_dir / f"ds={part_ds}", k, n, model_ref, run_id) for k in range(n)]
            try:
                reader = con.sql(_plan_sql(files, done), params=params if done else None).to_arrow_reader(settings.score.scan_batch_rows)
                previous: Any = None
                for batch in reader:
                    ids = batch.column(0).cast(pa.string())
                    if not len(ids):
                        continue
                    first = _first_in_group(ids, previous)
                    previous = _last_id(ids, previous)
                    # an id's first row is a curated one (file >= 1) unless the version already processed it
                    keep = first & (batch.column(1).to_numpy(zero_copy_only=False) > 0)
                    if not keep.any():
                        continue
                    todo = pa.RecordBatch.from_arrays([ids, batch.column(1), batch.column(2)], names=PLAN_COLUMNS).filter(pa.array(keep))
                    utf8 = [rid.encode("utf-8") for rid in todo.column(0).to_pylist()]
                    shard_no = np.fromiter((_shard_of_utf8(b, n) for b in utf8), dtype=np.int64, count=len(utf8))
                    for k in np.unique(shard_no).tolist():
                        mask = shard_no == k
                        writers[k].write(todo.filter(pa.array(mask)), [b for b, m in zip(utf8, mask) if m])
                    del utf8, ids, batch, todo
                committed = [(k, w.rows, *w.commit()) for k, w in enumerate(writers) if w.rows]
            finally:
                for w in writers:
                    w.abort()
            for k, n_planned, plan_file, tag in committed:
                specs.append(
                    ShardSpec(
                        ds=part_ds,
                        shard=k,
                        n_shards=n,
                        model=model_ref,
                        files=tuple(str(f) for f in files),
                        plan_file=str(plan_file),
                        plan_tag=tag,
                        n_planned=n_planned,
                        run_id=run_id,
                        scored_at=scored_at.isoformat(),
                        rescore=rescore,
                    )
                )
    return specs
