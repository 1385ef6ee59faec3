"""The champion model: resolved once per run, pinned by version; and the registry snapshot."""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fbk_tasks.settings import Settings, redact_uri


class NoChampionError(LookupError):
    """The registry has no version under the configured alias."""


@dataclass(frozen=True)
class ModelRef:
    """One registered model version, pinned (``uri`` names the version, never the alias)."""

    name: str
    version: int
    run_id: str | None
    uri: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelRef":
        return cls(name=data["name"], version=int(data["version"]), run_id=data.get("run_id"), uri=data["uri"])


def configure_mlflow(settings: Settings):
    """Point this process's MLflow at the project stores; return an MlflowClient."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_registry_uri)
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_registry_uri)


def is_missing_alias(exc: Exception) -> bool:
    """MLflow's answers for "no such model" and "no such alias" (the same from SQL and REST
    stores); anything else (a locked SQLite store, a tracking server that timed out) is not."""
    code = getattr(exc, "error_code", None)
    if code == "RESOURCE_DOES_NOT_EXIST":
        return True
    message = str(exc).lower()
    return code == "INVALID_PARAMETER_VALUE" and "alias" in message and "not found" in message


def resolve_champion(settings: Settings) -> ModelRef:
    """The version the alias ``settings.score.model_alias`` points at now, as a pinned reference."""
    from mlflow.exceptions import MlflowException

    client = configure_mlflow(settings)
    name, alias = settings.mlflow.registered_model_name, settings.score.model_alias
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if not is_missing_alias(exc):
            raise  # a registry that could not answer is not "no champion"
        raise NoChampionError(
            f"registered model {name!r} has no version with alias {alias!r} "
            f"(registry {redact_uri(settings.mlflow_registry_uri)}): {exc.message if hasattr(exc, 'message') else exc}"
        ) from None
    version = int(mv.version)
    return ModelRef(name=name, version=version, run_id=mv.run_id, uri=f"models:/{name}/{version}")


def served_version_before(settings: Settings) -> int | None:
    """The version the newest registry snapshot records as served (None: no snapshot yet)."""
    import pyarrow.parquet as pq

    from fbk_tasks.warehouse.sources import registry_snapshot_dir

    snapshots = sorted(registry_snapshot_dir(settings).glob("model_versions-*.parquet"))
    if not snapshots:
        return None
    served = pq.read_table(snapshots[-1], columns=["served_version"]).column("served_version").drop_null()
    return int(served[0].as_py()) if len(served) else None


def _ts_ms(ms: int | None) -> _dt.datetime | None:
    return None if ms is None else _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc)


def snapshot_registry(settings: Settings, now: _dt.datetime | None = None, served_version: int | None = None) -> Path:
    """Snapshot every version of the registered model (aliases, tags, run) to Parquet.

    ``served_version``: the version whose scores the warehouse shows (``review_scores``): the
    one the scoring run that takes the snapshot used, which is not the champion when the alias
    moved during the run (its scores come with the next run). None: the champion's.

    Snapshots are write-once files
    (``<state_dir>/registry/model_versions-<snapshot time>-<content hash>.parquet``): when the
    newest snapshot already has this content nothing is written, otherwise a file is added;
    the warehouse shows the newest by ``snapshot_at``.
    No file a reader may have listed is ever rewritten.
    """
    import hashlib

    import pyarrow as pa
    from mlflow.exceptions import MlflowException

    from fbk_tasks.io.atomic import write_parquet
    from fbk_tasks.score.schema import MODEL_VERSIONS_SCHEMA
    from fbk_tasks.warehouse.sources import registry_snapshot_dir

    client = configure_mlflow(settings)
    name = settings.mlflow.registered_model_name
    snapshot_at = now or _dt.datetime.now(tz=_dt.timezone.utc)
    try:
        aliases_by_version: dict[int, list[str]] = {}
        for alias, version in (client.get_registered_model(name).aliases or {}).items():
            aliases_by_version.setdefault(int(version), []).append(alias)
        versions = list(client.search_model_versions(f"name = '{name}'"))
    except MlflowException as exc:
        if not is_missing_alias(exc):
            raise  # a registry that could not answer is not "no versions": keep the last snapshot
        aliases_by_version, versions = {}, []  # no such model yet: an empty snapshot is the truth
    if served_version is None:
        served_version = next((v for v, names in aliases_by_version.items() if settings.score.model_alias in names), None)
    rows = []
    for mv in sorted(versions, key=lambda m: int(m.version)):
        v = int(mv.version)
        rows.append(
            {
                "model_name": name,
                "version": v,
                "run_id": mv.run_id,
                "aliases": sorted(aliases_by_version.get(v, [])),
                "tags": json.dumps(dict(mv.tags or {}), sort_keys=True),
                "status": str(mv.status) if mv.status is not None else None,
                "source": mv.source,
                "created_at": _ts_ms(mv.creation_timestamp),
                "served_version": None if served_version is None else int(served_version),
                "snapshot_at": snapshot_at,
            }
        )
    content = json.dumps([{k: v for k, v in r.items() if k != "snapshot_at"} for r in rows], sort_keys=True, default=str)
    digest = hashlib.sha256(f"{name}\0{content}".encode()).hexdigest()[:16]
    folder = registry_snapshot_dir(settings)
    existing = sorted(folder.glob("model_versions-*.parquet"))
    if existing and existing[-1].stem.endswith(f"-{digest}"):
        return existing[-1]  # the newest snapshot already says this
    path = folder / f"model_versions-{snapshot_at:%Y%m%dT%H%M%S%f}-{digest}.parquet"
    table = pa.Table.from_pylist(rows, schema=MODEL_VERSIONS_SCHEMA)
    return write_parquet(table, path)
