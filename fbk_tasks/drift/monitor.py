"""One night of drift monitoring on the lake: load, measure, decide, write metrics and report.

Layout:

* reads ``<curated_dir>/ds=D/*.parquet`` and ``<scores_dir>/ds=D/*.parquet`` (the night);
* the *reference* is what the scoring model was trained on: the curated partitions named by the
  ``data.partitions`` param of the model version's MLflow run (training lineage). Without
  lineage (a model registered by hand) the latest ``drift.reference_fallback_partitions``
  partitions before the night are used, and the report says so;
* ``<state_dir>/drift/reference-<version>.parquet``: a capped, seeded sample of the reference
  scored once by that version (pyfunc) plus its MiniLM embeddings: the cache every later
  night reuses;
* writes ``<data_dir>/drift/ds=D/part-0.parquet`` (one row per signal x scope, plus a
  ``decision`` row) atomically and ``<reports_dir>/drift/drift-D.html``;
* ``<state_dir>/drift/retrain_requests.jsonl``: one line per retrain request (cooldown);
* ``<state_dir>/drift/no_reference/ds=D.json``: a night that could not be measured for want of a
  reference (with the version that scored it), so that it is not tried again every run.

Which nights a run checks: :func:`nights_to_check` (the latest scored night and late or
backfilled nights without drift metrics, newest first, at most ``drift.max_nights_per_run``).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fbk_tasks.drift.policy import Decision, SignalResult, decide
from fbk_tasks.settings import Settings

log = logging.getLogger(__name__)

PARTITIONS_PARAM = "data.partitions"
REQUESTS_FILE = "retrain_requests.jsonl"


class DriftInputError(LookupError):
    """The night cannot be measured (no scores, no reference, no model); the message says why."""


class NoReference(DriftInputError):
    """Nothing to compare the night with yet (e.g. the model was trained on this very night).
    ``model_version``: the version that scored the night, when known."""

    def __init__(self, message: str, model_version: int | None = None):
        super().__init__(message)
        self.model_version = model_version


@dataclass
class NightMeasurement:
    ds: str
    model_name: str
    model_version: int
    n_rows: int
    reference_partitions: list[str]
    reference_source: str  # "training lineage" | "fallback: ..."
    results: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)
    computed_at: str = ""

    def signal_results(self) -> list[SignalResult]:
        return [SignalResult(**r) for r in self.results]

    def save(self, path: Path) -> Path:
        from fbk_tasks.io.atomic import write_text

        return write_text(json.dumps(asdict(self), default=_json_default), path)

    @classmethod
    def load(cls, path: Path) -> "NightMeasurement":
        return cls(**json.loads(Path(path).read_text()))


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def drift_state_dir(settings: Settings) -> Path:
    return settings.state_dir / "drift"


def metrics_path(settings: Settings, ds: str) -> Path:
    return settings.data_dir / "drift" / f"ds={ds}" / "part-0.parquet"


def report_path(settings: Settings, ds: str) -> Path:
    return settings.reports_dir / "drift" / f"drift-{ds}.html"


def measurement_path(settings: Settings, ds: str) -> Path:
    return drift_state_dir(settings) / "measurements" / f"measurement-{ds}.json"


def reference_cache_path(settings: Settings, version: int) -> Path:
    return drift_state_dir(settings) / f"reference-{version}.parquet"


def no_reference_path(settings: Settings, ds: str) -> Path:
    return drift_state_dir(settings) / "no_reference" / f"ds={ds}.json"


def failure_path(settings: Settings, ds: str) -> Path:
    return drift_state_dir(settings) / "failures" / f"ds={ds}.json"


# -- reading the lake --------------------------------------------------------------------------


def _read_dir(folder: Path, columns: list[str] | None = None) -> pd.DataFrame:
    import pyarrow.parquet as pq

    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return pd.DataFrame(columns=columns or [])
    tables = [pq.read_table(f, columns=columns) for f in files]
    import pyarrow as pa

    return pa.concat_tables(tables, promote_options="default").to_pandas(types_mapper=None)


CURATED_COLUMNS = ["review_id", "text", "language", "product_category", "rating", "label"]


def _objects(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.astype(object)
    return out.where(pd.notna(out), None)


def scoring_version(counts: dict[int, int]) -> int:
    """The version a night is monitored with: most score rows, then the highest."""
    return max(counts, key=lambda v: (counts[v], v))


def score_versions(settings: Settings, ds: str) -> dict[int, int]:
    """Score rows per model version in the night's score files (only that column is read)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    counts: dict[int, int] = {}
    for f in sorted((settings.scores_dir / f"ds={ds}").glob("*.parquet")):
        for item in pc.value_counts(pq.read_table(f, columns=["model_version"]).column(0)).to_pylist():
            counts[int(item["values"])] = counts.get(int(item["values"]), 0) + int(item["counts"])
    return counts


def scored_nights(settings: Settings, upto: str | None = None) -> list[str]:
    """ds of the score partitions holding at least one score file, on or before ``upto``, oldest first."""
    return sorted(p.name[3:] for p in settings.scores_dir.glob("ds=*")
                  if p.is_dir() and (upto is None or p.name[3:] <= upto) and any(p.glob("*.parquet")))


def load_night(settings: Settings, ds: str) -> tuple[pd.DataFrame, str, int]:
    """The night's scored reviews joined to curated columns; returns (frame, model_name, version).

    When a night was scored by several versions, the version with most rows (then the highest)
    is monitored."""
    scores = _read_dir(settings.scores_dir / f"ds={ds}", ["review_id", "model_name", "model_version", "label"])
    if scores.empty:
        raise DriftInputError(f"no scores for ds={ds} under {settings.scores_dir} (run scoring first)")
    version = scoring_version({int(v): int(n) for v, n in scores.groupby("model_version").size().items()})
    scores = scores[scores["model_version"] == version].drop_duplicates("review_id")
    name = str(scores["model_name"].iloc[0])
    curated = _read_dir(settings.curated_dir / f"ds={ds}", CURATED_COLUMNS)
    frame = curated.merge(scores.rename(columns={"label": "predicted"})[["review_id", "predicted"]], on="review_id")
    return _objects(frame), name, version


def _champion_lineage(settings: Settings, name: str, version: int) -> tuple[list[str] | None, dict[str, str]]:
    """(training partitions from the version's run, the version's tags)."""
    from fbk_tasks.score.registry import configure_mlflow

    client = configure_mlflow(settings)
    mv = client.get_model_version(name, str(version))
    tags = dict(mv.tags or {})
    if not mv.run_id:
        return None, tags
    try:
        params = client.get_run(mv.run_id).data.params
    except Exception:  # run deleted: no lineage
        return None, tags
    raw = params.get(PARTITIONS_PARAM)
    parts = [p for p in raw.split(",") if p] if raw else None
    return parts, tags


def reference_partitions(settings: Settings, ds: str, lineage: list[str] | None) -> tuple[list[str], str]:
    """The reference partitions and where they came from: the version's training lineage (every
    partition of it still on disk, the night included: the version's cached sample is built
    once, for whichever night it first measures, and serves every later night, so leaving that
    first night out would leave it out for good; :func:`measure_night` drops the night's own
    reviews from the comparison), else the partitions before the night."""
    available = sorted(p.name[3:] for p in settings.curated_dir.glob("ds=*") if p.is_dir())
    if lineage:
        parts = [p for p in lineage if p in available]
        if parts and parts != [ds]:
            return parts, "training lineage (MLflow param data.partitions)"
    before = [p for p in available if p < ds][-settings.drift.reference_fallback_partitions :]
    if not before:
        raise NoReference(f"no reference: the model has no usable training lineage and no curated partition precedes {ds}")
    why = "no training lineage on the model version" if not lineage else "training partitions no longer on disk"
    return before, f"fallback ({why}): latest {len(before)} partition(s) before the night"


def reference_sample(settings: Settings, parts: list[str]) -> pd.DataFrame:
    """At most ``drift.reference_max_rows`` curated reviews of ``parts`` (each id once, from the
    first partition that holds it; seeded), with :data:`CURATED_COLUMNS` and ``ds``. The ids are
    drawn first and only the drawn rows' text is read, so memory follows the sample, not the
    training history a lineage can name (the ids alone are read whole)."""
    import pyarrow.parquet as pq

    frames = [_read_dir(settings.curated_dir / f"ds={p}", ["review_id"]).assign(ds=p) for p in parts]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=[*CURATED_COLUMNS, "ds"])
    ids = pd.concat(frames, ignore_index=True).drop_duplicates("review_id").sort_values("review_id", kind="stable").reset_index(drop=True)
    if len(ids) > settings.drift.reference_max_rows:
        ids = ids.sample(settings.drift.reference_max_rows, random_state=settings.drift.seed).sort_values("review_id").reset_index(drop=True)
    rows = []
    for p, group in ids.groupby("ds", sort=False):
        wanted = group["review_id"].tolist()
        files = sorted((settings.curated_dir / f"ds={p}").glob("*.parquet"))
        part = pd.concat([pq.read_table(f, columns=CURATED_COLUMNS, filters=[("review_id", "in", wanted)]).to_pandas() for f in files],
                         ignore_index=True)
        rows.append(part.drop_duplicates("review_id").assign(ds=p))
    full = pd.concat(rows, ignore_index=True)
    return ids[["review_id", "ds"]].merge(full, on=["review_id", "ds"], how="left", validate="one_to_one")[[*CURATED_COLUMNS, "ds"]]


def load_reference(settings: Settings, name: str, version: int, parts: list[str], use_encoder: bool = True) -> tuple[pd.DataFrame, np.ndarray | None]:
    """The cached, scored reference sample of ``version`` (built on first use)."""
    import pyarrow as pa

    from fbk_tasks.drift import signals as sg
    from fbk_tasks.io.atomic import write_parquet

    path = reference_cache_path(settings, version)
    if path.exists():
        frame = pd.read_parquet(path)
        emb = np.stack(frame["embedding"].to_numpy()).astype(np.float32) if "embedding" in frame.columns and frame["embedding"].notna().all() and len(frame) else None
        if emb is not None or not use_encoder:
            return _objects(frame.drop(columns=["embedding"], errors="ignore")), emb
    ref = reference_sample(settings, parts)
    if ref.empty:
        raise DriftInputError(f"reference partitions {parts} hold no reviews")
    import mlflow

    from fbk_tasks.score.registry import configure_mlflow
    from fbk_tasks.train.registry import trained_review_ids

    client = configure_mlflow(settings)
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    preds = model.predict(pd.DataFrame({"text": [str(t) for t in ref["text"]]}))
    ref = _objects(ref)
    trained = trained_review_ids(client, client.get_model_version(name, str(version)).run_id)
    # a row the version trained on agrees with its label far more often than a new one (training
    # accuracy): agreement_drop compares the night with the reference rows it did not train on
    ref["trained_on"] = ref["review_id"].isin(trained) if trained is not None else None
    ref["predicted"] = [str(v) for v in preds["label"]]
    ref["confidence"] = [float(v) for v in preds["confidence"]]
    emb = sg.embed([str(t) for t in ref["text"]], settings.drift.embed_max_length) if use_encoder else None
    table = pa.Table.from_pandas(ref.assign(rating=pd.array([None if r is None else int(r) for r in ref["rating"]], dtype="Int64")), preserve_index=False)
    if emb is not None:
        table = table.append_column("embedding", pa.array(list(emb), pa.list_(pa.float32())))
    write_parquet(table, path)
    log.info("reference cache for v%s: %d rows from %s -> %s", version, len(ref), parts, path)
    return ref, emb


# -- cooldown state ------------------------------------------------------------------------------


def record_retrain_request(settings: Settings, ds: str, decision: Decision, model_version: int,
                           run_id: str | None = None) -> Path:
    """Append this night's retrain request to the state file (idempotent per ds; an answered
    request keeps its outcome). ``run_id``: the monitoring run that made it."""
    with _requests_lock(settings):
        entries = read_retrain_requests(settings)
        kept = next((e.get("outcome") for e in entries if e.get("ds") == ds), None)
        entries = [e for e in entries if e.get("ds") != ds]
        # ``asof``: the night clock when it was made (the latest scored night; a late night's
        # request starts the cooldown then, not at its own, older date)
        entry = {"ds": ds, "asof": max(ds, _latest_scored(settings) or ds), "model_version": model_version,
                 "requested_at": _dt.datetime.now(_dt.timezone.utc).isoformat(), "reasons": decision.reasons, "run_id": run_id}
        if kept:
            entry["outcome"] = kept
        entries.append(entry)
        return _write_requests(settings, entries)


def _requests_lock(settings: Settings):
    """Serialise the read-modify-write of the request file: the monitor (recording a request) and
    the gate (answering them) may run at the same time, and neither may lose the other's line."""
    from fbk_tasks.io.locks import exclusive_lock

    return exclusive_lock(drift_state_dir(settings) / (REQUESTS_FILE + ".lock"), "the retrain request file", log)


def requested_by_another_run(settings: Settings, ds: str, run_id: str | None) -> dict[str, Any] | None:
    """The request already recorded for night ``ds`` by a different monitoring run, if any.

    A night is measured again whenever ``review_scores`` is updated (the 03:00 run after an
    asset-triggered one, a re-score); the decision is the same, but asking for a second retrain
    of the same night is not: only the run that first asked emits the event (and again when that
    run's task is retried)."""
    return next((e for e in read_retrain_requests(settings) if e.get("ds") == ds and e.get("run_id") != run_id), None)


def read_retrain_requests(settings: Settings) -> list[dict[str, Any]]:
    """Every recorded retrain request, oldest first (answered ones carry ``outcome``)."""
    path = drift_state_dir(settings) / REQUESTS_FILE
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _write_requests(settings: Settings, entries: list[dict[str, Any]]) -> Path:
    from fbk_tasks.io.atomic import write_text

    path = drift_state_dir(settings) / REQUESTS_FILE
    return write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in sorted(entries, key=lambda e: e["ds"])), path)


def outcome_text(request: dict[str, Any]) -> str:
    """One line for people: what the gate did with a retrain request."""
    out = request.get("outcome")
    if not out:
        return f"retrain requested for {request['ds']} (v{request.get('model_version')}): not answered yet (feedback_train pending)"
    cands = "; ".join(f"v{v} ({c.get('candidate') or '?'}) {c['verdict']}: {c['reason']}"
                      for v, c in sorted(out.get("candidates", {}).items(), key=lambda kv: int(kv[0])))
    head = (f"PROMOTED v{out['champion_version']} (was v{out.get('previous_version')})" if out["verdict"] == "promoted"
            else f"REFUSED - champion v{out['champion_version']} stays")
    return f"retrain requested for {request['ds']}: {head}; gate at {out['answered_at']}; candidates: {cands}"


def answer_retrain_requests(settings: Settings, gate_result: dict[str, Any],
                            registered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Record the gate's verdict on every retrain request not answered yet.

    Called by the gate after every training run (a retrain triggered by ``retrain_requested``,
    a scheduled one or ``fbk train``). It answers the requests of nights its data includes (up
    to the latest partition a candidate trained on, from ``registered[*]["partitions"]``): a
    request made for a later night (while a long run trained) is left to the run it triggered.
    Effects, so that a refusal is never silent:

    * the request lines in ``retrain_requests.jsonl`` get an ``outcome``;
    * the candidate versions get ``fbk.trigger.*`` tags (which request(s) they answer, why);
    * on a refusal, the champion that stays gets ``fbk.drift.refused_retrain``;
    * the requesting nights' drift reports are rendered again with the outcome.
    Returns the answered requests."""
    verdicts = gate_result.get("verdicts") or {}
    kinds = {str(c["version"]): c.get("candidate") for c in registered}
    outcome = {
        "verdict": "promoted" if gate_result.get("changed") else "refused",
        "champion_version": gate_result.get("champion_version"),
        "previous_version": gate_result.get("previous_version"),
        "answered_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "candidates": {str(v): {"candidate": kinds.get(str(v)), **d} for v, d in verdicts.items()},
    }
    trained = [p for c in registered for p in (c.get("partitions") or [])]
    through = max(trained) if trained else None  # None: not known (answers every pending request)
    with _requests_lock(settings):
        pending = [e for e in read_retrain_requests(settings)
                   if not e.get("outcome") and (through is None or e["ds"] <= through)]
    if not pending:
        return []
    for e in pending:
        e["outcome"] = outcome

    from fbk_tasks.train import registry

    client = registry.client_for(settings)
    name = settings.mlflow.registered_model_name
    days = ",".join(e["ds"] for e in pending)
    reasons = "; ".join(r for e in pending for r in e.get("reasons", []))[:1000]
    for v in verdicts:
        registry.set_tags(client, name, str(v), {"fbk.trigger": "retrain_requested", "fbk.trigger.request_ds": days,
                                                 "fbk.trigger.reasons": reasons})
    if outcome["verdict"] == "refused" and outcome["champion_version"]:
        registry.set_tags(client, name, outcome["champion_version"], {
            "fbk.drift.refused_retrain": outcome_text(pending[-1])[:5000], "fbk.drift.refused_at": outcome["answered_at"]})
    for e in pending:
        log.info("%s", outcome_text(e))
        _rerender_report(settings, e)
    # the outcome is written last: a gate retried after a failure above finds the requests still
    # pending and does the tags and reports again
    answered = {e["ds"] for e in pending}
    with _requests_lock(settings):
        entries = read_retrain_requests(settings)
        for e in entries:
            if e["ds"] in answered and not e.get("outcome"):
                e["outcome"] = outcome
        _write_requests(settings, entries)
    return pending


def _rerender_report(settings: Settings, request: dict[str, Any]) -> None:
    """The requesting night's report again, now with the gate's outcome (when its inputs exist)."""
    from fbk_tasks.drift.report import write_report

    mfile, metrics = measurement_path(settings, request["ds"]), metrics_path(settings, request["ds"])
    if not (mfile.exists() and metrics.exists()):
        log.warning("no measurement for %s: its report keeps the pending outcome", request["ds"])
        return
    frame = pd.read_parquet(metrics)
    detail = json.loads(frame.loc[frame["signal"] == "decision", "detail"].iloc[0])
    decision = Decision(**{k: detail[k] for k in Decision.__dataclass_fields__})
    write_report(settings, NightMeasurement.load(mfile), decision, report_path(settings, request["ds"]), request)


def latest_request(settings: Settings, ds: str) -> dict[str, Any] | None:
    """The latest retrain request recorded for a night on or before ``ds``."""
    earlier = [e for e in read_retrain_requests(settings) if e["ds"] <= ds]
    return earlier[-1] if earlier else None


def _request_clock(entry: dict[str, Any]) -> str:
    """The night-clock date a request was made at: the latest scored night then (``asof``;
    requests recorded before it was kept: their own night)."""
    return max(entry["ds"], entry.get("asof") or entry["ds"])


def last_retrain(settings: Settings, ds: str, version_tags: dict[str, str] | None = None, asof: str | None = None) -> str | None:
    """Latest date on or before ``asof`` (default ``ds``) of a retrain: a request recorded for
    another night, dated by :func:`_request_clock` (so a late night's request cools down the
    nights after the one that was latest when it asked), or the scoring version's promotion
    (``fbk.gate.at`` tag). A night's own request does not cool it down (a re-check is idempotent)."""
    asof = max(ds, asof or ds)
    dates = [_request_clock(e) for e in read_retrain_requests(settings)
             if e.get("ds") and e["ds"] != ds and _request_clock(e) <= asof]
    gate_at = (version_tags or {}).get("fbk.gate.at")
    if gate_at and gate_at[:10] <= asof:
        dates.append(gate_at[:10])
    return max(dates) if dates else None


# -- the night -------------------------------------------------------------------------------------


def measure_night(settings: Settings, ds: str, use_encoder: bool | None = None) -> NightMeasurement:
    """Load the night and its reference and measure every signal (thresholds applied).
    ``use_encoder`` defaults to ``settings.drift.use_encoder``."""
    from fbk_tasks.drift.compute import compute_signals

    use_encoder = settings.drift.use_encoder if use_encoder is None else use_encoder
    night, name, version = load_night(settings, ds)
    lineage, tags = _champion_lineage(settings, name, version)
    try:
        parts, source = reference_partitions(settings, ds, lineage)
    except NoReference as exc:
        raise NoReference(str(exc), version) from None
    ref, emb = load_reference(settings, name, version, parts, use_encoder)
    # The cache is the version's, built for its first monitored night: when that was a later
    # night (a late or backfilled night is checked after it), it may hold this night's reviews.
    # A night is never compared with itself: its own reviews (ids are unique across partitions)
    # leave the reference.
    own = ref["review_id"].isin(set(night["review_id"])).to_numpy()
    if own.any():
        log.info("drift %s: %d of the %d cached reference reviews are this night's: left out", ds, int(own.sum()), len(ref))
        ref, emb = ref[~own].reset_index(drop=True), (emb[~own] if emb is not None else None)
        if ref.empty:
            raise NoReference(f"no reference: the cached reference of v{version} holds only night {ds}", version)
    if "ds" in ref.columns:  # what the cached sample really holds (it was taken for the version's first night)
        held = sorted({str(d) for d in ref["ds"]})
        if held != [p for p in parts if p != ds]:  # more than the night's own reviews left out
            source = f"{source}; compared with v{version}'s cached reference sample, which holds these partitions"
        parts = held
    else:
        source = f"{source}; cached sample of v{version} written without its partitions: it may hold others"
    m = compute_signals(ref, night, settings.drift, reference_embeddings=emb, use_encoder=use_encoder)
    m.info["version_tags"] = {k: v for k, v in tags.items() if k.startswith("fbk.gate.")}
    m.info["reference_rows_of_this_night_left_out"] = int(own.sum())
    return NightMeasurement(ds=ds, model_name=name, model_version=version, n_rows=len(night), reference_partitions=parts,
                            reference_source=source, results=[r.to_dict() for r in m.results], info=m.info,
                            computed_at=_dt.datetime.now(_dt.timezone.utc).isoformat())


def _clean(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def write_metrics(settings: Settings, meas: NightMeasurement, decision: Decision) -> Path:
    """``<data_dir>/drift/ds=D/part-0.parquet``: one row per signal x scope and a decision row.

    Columns: ds, model_version, signal, scope, value, threshold, fired, detail (JSON), and for
    the warehouse's ``drift_metrics`` view also metric (= signal), drifted (= fired), computed_at."""
    import pyarrow as pa

    from fbk_tasks.io.atomic import write_parquet

    computed = _dt.datetime.fromisoformat(meas.computed_at) if meas.computed_at else _dt.datetime.now(_dt.timezone.utc)
    rows = []
    for r in meas.signal_results():
        detail = {**r.detail, "severe": r.severe, "severe_threshold": _clean(r.severe_threshold)}
        rows.append((r.signal, r.scope, _clean(r.value), _clean(r.threshold), r.fired, detail))
    rows.append(("decision", "all", float(len(decision.fired_signals)), float(settings.drift.signals_required),
                 decision.retrain, {**decision.to_dict(), "reference_partitions": meas.reference_partitions,
                                    "reference_source": meas.reference_source, "features": meas.info.get("features")}))
    table = pa.table({
        "ds": pa.array([meas.ds] * len(rows), pa.string()),
        "model_version": pa.array([meas.model_version] * len(rows), pa.int64()),
        "signal": pa.array([r[0] for r in rows], pa.string()),
        "scope": pa.array([r[1] for r in rows], pa.string()),
        "value": pa.array([r[2] for r in rows], pa.float64()),
        "threshold": pa.array([r[3] for r in rows], pa.float64()),
        "fired": pa.array([bool(r[4]) for r in rows], pa.bool_()),
        "detail": pa.array([json.dumps(r[5], sort_keys=True, default=_json_default) for r in rows], pa.string()),
        "metric": pa.array([r[0] for r in rows], pa.string()),
        "drifted": pa.array([bool(r[4]) for r in rows], pa.bool_()),
        "computed_at": pa.array([computed] * len(rows), pa.timestamp("us", tz="UTC")),
    })
    return write_parquet(table, metrics_path(settings, meas.ds))


def later_request(requests: list[dict[str, Any]], ds: str) -> str | None:
    """The nearest night after ``ds`` with a recorded retrain request (pending or answered), unless
    ``ds`` has a request of its own (re-checking a night that asked stays idempotent)."""
    days = {e["ds"] for e in requests if e.get("ds")}
    later = [d for d in days if d > ds]
    return None if ds in days or not later else min(later)


def _decide(settings: Settings, meas: NightMeasurement, requests: list[dict[str, Any]], latest: str | None,
            later: str | None = None) -> Decision:
    """The policy for one night. A night checked late (a newer night is scored) and without a
    request of its own is superseded by a request recorded for a later night, and its cooldown is
    counted to the latest scored night; a night that asked before is decided as on its own date
    (a re-run stays idempotent), never superseded."""
    own = any(e.get("ds") == meas.ds for e in requests)
    later = None if own else (later or later_request(requests, meas.ds))
    asof = meas.ds if own or not latest else max(meas.ds, latest)
    last = last_retrain(settings, meas.ds, meas.info.get("version_tags"), asof)
    return decide(meas.signal_results(), settings.drift, meas.n_rows, meas.ds, last, later, asof)


def _latest_scored(settings: Settings) -> str | None:
    nights = scored_nights(settings)
    return nights[-1] if nights else None


def decide_night(settings: Settings, meas: NightMeasurement) -> tuple[Decision, Path, Path]:
    """Apply the policy (cooldown and later requests from state), write metrics and the HTML report."""
    decision = _decide(settings, meas, read_retrain_requests(settings), _latest_scored(settings))
    return (decision, *_write_night(settings, meas, decision))


def decide_nights(settings: Settings, measurements: list[NightMeasurement]) -> list[dict[str, Any]]:
    """Decide several nights of one run; returns their summaries, oldest first.

    Each night is decided as :func:`decide_night` does (against the recorded requests), then, when
    more than one night would request a retrain, only the newest keeps that decision: the older
    ones are ``superseded`` by it (unless they already have a recorded request of their own, see
    :func:`_decide`), so a run asks for one retrain at most. Metrics and reports are written with
    the final decisions."""
    ordered = sorted(measurements, key=lambda m: m.ds)
    requests, latest = read_retrain_requests(settings), _latest_scored(settings)
    decisions = [_decide(settings, m, requests, latest) for m in ordered]
    wanting = [i for i, d in enumerate(decisions) if d.retrain]
    for i in wanting[:-1]:
        decisions[i] = _decide(settings, ordered[i], requests, latest, later=ordered[wanting[-1]].ds)
    out = [summary(m, d, *_write_night(settings, m, d)) for m, d in zip(ordered, decisions)]
    from fbk_tasks.score.run import refresh_warehouse

    refresh_warehouse(settings)  # drift_metrics shows tonight's rows now, not after the next scoring run
    return out


def retrain_candidate(summaries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest night of these summaries whose decision is a retrain (the run's one request)."""
    wanting = [s for s in summaries if s["decision"]["retrain"]]
    return max(wanting, key=lambda s: s["ds"]) if wanting else None


def _write_night(settings: Settings, meas: NightMeasurement, decision: Decision) -> tuple[Path, Path]:
    from fbk_tasks.drift.report import write_report

    mpath = write_metrics(settings, meas, decision)
    request = latest_request(settings, meas.ds)
    if decision.retrain and (request is None or request["ds"] != meas.ds):  # emit_retrain records it next
        request = {"ds": meas.ds, "model_version": meas.model_version, "reasons": decision.reasons}
    rpath = write_report(settings, meas, decision, report_path(settings, meas.ds), request)
    log.info("drift %s v%s: %s (%s)", meas.ds, meas.model_version, decision.status, "; ".join(decision.reasons))
    return mpath, rpath


# -- which nights ----------------------------------------------------------------------------------


def record_no_reference(settings: Settings, ds: str, model_version: int, reason: str) -> Path:
    """Note that night ``ds``, scored by ``model_version``, has no reference (see :func:`nights_to_check`)."""
    from fbk_tasks.io.atomic import write_text

    note = {"ds": ds, "model_version": int(model_version), "reason": reason,
            "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    return write_text(json.dumps(note, sort_keys=True), no_reference_path(settings, ds))


def read_failure(settings: Settings, ds: str) -> dict[str, Any] | None:
    """The night's failure note (:func:`record_failure`), None when there is none or it cannot be read."""
    path = failure_path(settings, ds)
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except (OSError, ValueError):
        return None


def record_failure(settings: Settings, ds: str, error: str, run_id: str) -> dict[str, Any]:
    """Count a monitor run that could not measure night ``ds`` (a run counts once, however many
    task attempts it makes: ``run_id``; ``fbk drift`` has none and does not count).
    At ``drift.max_night_failures`` runs the night is ``given_up``: :func:`nights_to_check` no
    longer lists it for that scoring version, so it stops taking a place and alerting every run.
    A run with ``ds`` set (or ``fbk drift --ds``) still measures it; a measurement clears the note."""
    from fbk_tasks.io.atomic import write_text

    note = read_failure(settings, ds) or {"ds": ds, "runs": [], "first_at": None}
    try:
        version: int | None = scoring_version(score_versions(settings, ds))
    except Exception:  # noqa: BLE001 - the note is still worth writing without it
        version = None
    if note.get("given_up") and note.get("model_version") != version:
        # given up for another version: a new champion scoring the night starts counting again
        # (an older night's count carries over a re-scoring that changes nothing about its failure)
        note = {"ds": ds, "runs": [], "first_at": None}
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if run_id not in note["runs"]:
        note["runs"].append(run_id)
    limit = settings.drift.max_night_failures
    note.update(model_version=version, last_error=error, at=now, first_at=note["first_at"] or now,
                failures=len(note["runs"]), given_up=len(note["runs"]) >= limit)
    write_text(json.dumps(note, sort_keys=True), failure_path(settings, ds))
    return note


def clear_failure(settings: Settings, ds: str) -> None:
    failure_path(settings, ds).unlink(missing_ok=True)


def _check_records(settings: Settings, ds: str) -> list[tuple[int, str]]:
    """(model_version, decision status) of what the monitor wrote for the night: its drift
    metrics' decision row and/or its no-reference note (status ``no_reference``) and/or a
    failure note that gave up (status ``given_up``). A record that cannot be read counts as none."""
    import pyarrow.parquet as pq

    records: list[tuple[int, str]] = []
    mpath, npath = metrics_path(settings, ds), no_reference_path(settings, ds)
    try:
        if mpath.exists():
            t = pq.read_table(mpath, columns=["signal", "model_version", "detail"]).to_pydict()
            records += [(int(v), str(json.loads(d)["status"])) for sig, v, d in zip(t["signal"], t["model_version"], t["detail"])
                        if sig == "decision"]
        if npath.exists():
            records.append((int(json.loads(npath.read_text())["model_version"]), "no_reference"))
        failed = read_failure(settings, ds)
        if failed and failed.get("given_up"):  # version unknown (unreadable scores): -1, counts for older nights
            records.append((-1 if failed.get("model_version") is None else int(failed["model_version"]), "given_up"))
    except Exception as exc:  # a damaged file: check the night again (it is rewritten)
        log.warning("drift record of %s unreadable (%s): the night is checked again", ds, exc)
        return []
    return records


def nights_to_check(settings: Settings, upto: str, limit: int) -> list[str]:
    """Scored nights on or before ``upto`` the monitor has not checked yet: newest first, at most ``limit``.

    A night counts as checked when the monitor wrote drift metrics for it (or a no-reference note,
    :func:`record_no_reference`), except that

    * the **latest** scored night must have been checked with the model version that scores it
      now (a new champion's scores are measured again, as each scoring run's monitor run did);
      older nights are not measured again when a later champion re-scores them (scoring covers
      every partition, and that champion was normally trained on them);
    * metrics whose decision is a retrain, but with no request recorded for the night (emit did
      not happen: ``fbk drift`` only prints, or the run failed before emitting), do not count;
      nor does a ``superseded`` decision while no later night has a recorded request (the
      request that superseded it was never made), so that drift is decided again.

    Newest first, so the latest night is always included when unchecked and a backlog larger
    than ``limit`` is worked off, newest to oldest, over the next runs. A night without a
    reference is noted and skipped, and not tried again for that scoring version; so is a night
    that ``drift.max_night_failures`` runs could not measure (:func:`record_failure`)."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    nights = scored_nights(settings, upto)
    requested = {e["ds"] for e in read_retrain_requests(settings) if e.get("ds")}

    def settled(ds: str, status: str) -> bool:
        if status == "retrain":
            return ds in requested
        if status == "superseded":
            return any(r > ds for r in requested)
        return True

    out: list[str] = []
    for ds in reversed(nights):
        records = _check_records(settings, ds)
        if records and ds == nights[-1]:
            try:
                current: int | None = scoring_version(score_versions(settings, ds))
            except Exception:  # noqa: BLE001 - unreadable or empty scores: only a give-up recorded as such counts
                current = None
            records = [r for r in records if r[0] == current or (current is None and r == (-1, "given_up"))]
        if not any(settled(ds, status) for _, status in records):
            out.append(ds)
            if len(out) == limit:
                break
    return out


def measure_nights(settings: Settings, nights: list[str], use_encoder: bool | None = None,
                   run_id: str | None = None) -> dict[str, Any]:
    """Measure each night, oldest first, and save its measurement (``measurement_path``). Returns (JSON-able)
    ``{"measured": [measurement files], "skipped": {ds: why}, "failed": {ds: why}}``: a night
    without a reference is skipped (and noted); any other error is a failure of that night only
    (one broken night, e.g. an old version whose artifacts are gone, must not hide the others),
    counted against the night by :func:`record_failure` when ``run_id`` (the ``feedback_monitor``
    run) is given; None (``fbk drift``: a person retrying while fixing it) does not count. When no
    night could be measured or skipped and an error other than :class:`DriftInputError`
    occurred (registry down, ...), the first such error is raised (after counting), so the
    task's retries apply."""
    out: dict[str, Any] = {"measured": [], "skipped": {}, "failed": {}}
    unexpected: list[BaseException] = []
    for ds in sorted(nights):  # oldest first, as nightly runs would: a new version's cache is built for its oldest night
        try:
            meas = measure_night(settings, ds, use_encoder)
        except NoReference as exc:
            if exc.model_version is not None:
                record_no_reference(settings, ds, exc.model_version, str(exc))
            clear_failure(settings, ds)
            log.info("drift %s skipped: %s", ds, exc)
            out["skipped"][ds] = str(exc)
            continue
        except DriftInputError as exc:
            log.error("drift %s cannot be measured: %s", ds, exc)
            out["failed"][ds] = str(exc)
            continue
        except Exception as exc:  # noqa: BLE001 - recorded per night, re-raised below when nothing worked
            log.exception("drift %s failed", ds)
            out["failed"][ds] = f"{type(exc).__name__}: {exc}"
            unexpected.append(exc)
            continue
        out["measured"].append(str(meas.save(measurement_path(settings, ds))))
        clear_failure(settings, ds)
    for ds, why in out["failed"].items():  # counted before any raise, so a night that always raises is given up too
        if run_id is None:
            continue
        note = record_failure(settings, ds, why, run_id)
        if note["given_up"]:
            out["failed"][ds] = (f"{why} [{note['failures']} runs failed on this night: no longer checked automatically; "
                                 f"fix it, then run feedback_monitor with ds={ds} or `fbk drift --ds {ds}`]")
        else:
            out["failed"][ds] = f"{why} [failure {note['failures']} of {settings.drift.max_night_failures} before it is given up]"
    if unexpected and not out["measured"] and not out["skipped"]:
        raise unexpected[0]
    return out


def run_drift_nights(settings: Settings, nights: list[str], use_encoder: bool | None = None) -> dict[str, Any]:
    """Measure and decide several nights (``fbk drift`` without ``--ds``):
    ``{"nights": [summaries, oldest first], "skipped": {...}, "failed": {...}}``. A failure is
    reported, not counted towards ``drift.max_night_failures``: only ``feedback_monitor`` runs count."""
    done = measure_nights(settings, nights, use_encoder)
    summaries = decide_nights(settings, [NightMeasurement.load(f) for f in done["measured"]])
    return {"nights": summaries, "skipped": done["skipped"], "failed": done["failed"]}


def run_drift(settings: Settings, ds: str, use_encoder: bool | None = None) -> dict[str, Any]:
    """Measure and decide one night (the ``fbk drift`` path); returns a JSON-able summary."""
    meas = measure_night(settings, ds, use_encoder)
    meas.save(measurement_path(settings, ds))  # as the DAG does: the report can be re-rendered later
    clear_failure(settings, ds)
    decision, mpath, rpath = decide_night(settings, meas)
    return summary(meas, decision, mpath, rpath)


def summary(meas: NightMeasurement, decision: Decision, mpath: Path, rpath: Path) -> dict[str, Any]:
    return {"ds": meas.ds, "model_name": meas.model_name, "model_version": meas.model_version, "n_rows": meas.n_rows,
            "decision": decision.to_dict(), "features": meas.info.get("features"),
            "reference_partitions": meas.reference_partitions, "reference_source": meas.reference_source,
            "metrics_path": str(mpath), "report_path": str(rpath)}


__all__ = [
    "DriftInputError", "NightMeasurement", "NoReference", "answer_retrain_requests", "decide_night", "decide_nights",
    "last_retrain", "later_request", "latest_request", "outcome_text", "read_retrain_requests", "load_night", "load_reference",
    "clear_failure", "failure_path", "measure_night", "measure_nights", "metrics_path", "nights_to_check", "no_reference_path", "read_failure", "record_failure", "record_no_reference",
    "record_retrain_request", "requested_by_another_run", "reference_cache_path", "reference_partitions",
    "report_path", "retrain_candidate", "run_drift", "run_drift_nights", "score_versions", "scored_nights",
    "scoring_version", "summary", "write_metrics",
]
