"""Plan a scoring run: which curated reviews the pinned model version has not yet processed.

The "already processed" set is derived from the project's own outputs (score and rejection
Parquet files of that model version), never from Airflow's database, so the CLI, a DAG run and a
backfill all agree. The plan of each shard (its review ids) is written under
``<state_dir>/score_plans/<run>/`` so a shard scores exactly what was planned, whatever lands
in curated storage or happens to the alias in the meantime.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
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


def shard_of(review_id: str, n_shards: int) -> int:
    """Stable shard of a review (same in every process and Python version)."""
    digest = hashlib.blake2b(review_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n_shards


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


def processed_ids(settings: Settings, model: ModelRef) -> Any:
    """Review ids this model version already scored or rejected (from the project's Parquet),
    as a unique Arrow string array."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    files = output_files(settings, model.version, rejected=False) + output_files(settings, model.version, rejected=True)
    if not files:
        return pa.array([], type=pa.string())
    dataset = pads.dataset([str(f) for f in files], format="parquet")
    flt = (pc.field("model_name") == model.name) & (pc.field("model_version") == model.version)
    col = dataset.to_table(columns=["review_id"], filter=flt).column(0)
    return pc.unique(col.combine_chunks()) if col.num_chunks else pa.array([], type=pa.string())


def _py_chunks(arr: Any, size: int = 65536) -> Iterator[list[str]]:
    """Python strings of an Arrow array, a slice at a time (never all at once)."""
    for start in range(0, len(arr), size):
        yield arr.slice(start, size).to_pylist()


def plan_tag(model_ref: ModelRef, run_id: str, sorted_ids: Iterable[str]) -> str:
    """Hash of a shard's plan (model version, run, ids): a retry of the same plan writes the
    same output file name with the same rows; any other plan writes other files."""
    h = hashlib.sha256(f"{model_ref.name}\0{model_ref.version}\0{run_id}\0".encode())
    for rid in sorted_ids:
        h.update(rid.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:12]


def _plan_dir(settings: Settings, run_id: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)
    return settings.state_dir / "score_plans" / safe


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

    Ids stay in Arrow arrays (unique, anti-join with what the version already processed, sort);
    only the shard hash runs in Python, a slice at a time.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from fbk_tasks.io.atomic import write_parquet

    scored_at = scored_at or default_scored_at(ds)
    if scored_at.tzinfo is None:
        raise ValueError("scored_at must be timezone-aware")
    scored_at = scored_at.astimezone(_dt.timezone.utc)
    run_id = run_id or f"cli__{ds or 'all'}__{scored_at:%Y%m%dT%H%M%S}"
    n = settings.score.shards
    done = pa.array([], type=pa.string()) if rescore else processed_ids(settings, model_ref)
    plan_dir = _plan_dir(settings, run_id)

    specs: list[ShardSpec] = []
    for part_ds, files in curated_partitions(settings, ds).items():
        dataset = pads.dataset([str(f) for f in files], format="parquet")
        col = dataset.to_table(columns=["review_id"]).column(0)
        todo = pc.unique(pc.drop_null(col.combine_chunks())) if col.num_chunks else pa.array([], type=pa.string())
        del col
        if len(done) and len(todo):
            todo = pc.filter(todo, pc.invert(pc.is_in(todo, value_set=done)))
        shard_no = np.fromiter((shard_of(rid, n) for chunk in _py_chunks(todo) for rid in chunk), dtype=np.int64, count=len(todo))
        for k in range(n):
            ids = pc.filter(todo, pa.array(shard_no == k))
            if not len(ids):
                continue
            ids = pc.take(ids, pc.sort_indices(ids))  # UTF-8 byte order = Python's code-point order
            tag = plan_tag(model_ref, run_id, (rid for chunk in _py_chunks(ids) for rid in chunk))
            plan_file = plan_dir / f"ds={part_ds}" / f"shard-{k}-of-{n}-{tag}.parquet"
            if not plan_file.exists():
                write_parquet(pa.table({"review_id": ids}), plan_file)
            specs.append(
                ShardSpec(
                    ds=part_ds,
                    shard=k,
                    n_shards=n,
                    model=model_ref,
                    files=tuple(str(f) for f in files),
                    plan_file=str(plan_file),
                    plan_tag=tag,
                    n_planned=len(ids),
                    run_id=run_id,
                    scored_at=scored_at.isoformat(),
                    rescore=rescore,
                )
            )
    return specs
