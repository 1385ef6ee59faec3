"""
### feedback_score: nightly sentiment scoring with the registry's champion

Runs at `schedule.score_cron` (default every night at 03:00 UTC) **and** whenever ingestion updates
`Asset('curated_reviews')`.

1. **resolve_champion**: reads the alias (`score.model_alias`, default `champion`) of the
   registered model once and pins that version for the whole run (a later alias move does
   not change this run). With no champion yet (a new deployment before its first training)
   the run skips: no retries, no alert, no `review_scores` event.
2. **plan**: curated reviews the pinned version has not scored yet (from the project's own
   score Parquet, not Airflow's database), split into `score.shards` shards by hash of
   `review_id`. Params: `ds` (one partition; default all), `rescore` (score again with the
   current champion).
3. **score_shard** (dynamic task mapping, one task per shard; when a run has more shards than
   `score.max_mapped_tasks`, e.g. a new champion's first night over hundreds of partitions,
   the shards are dealt into that many tasks, balanced by planned reviews, each loading the
   model once): streams each shard from
   Parquet, predicts in batches, writes `scores/ds=D/part-<version>-<shard>-<tag>.parquet`
   atomically; unscorable reviews go to `scores/_rejected/` with a reason. The champion
   serves through its ONNX export (int8, else fp32) when that export passed the golden-set
   check at registration, else through PyTorch; the backend is in each result and in the
   Asset metadata.
4. **finalize**: checks planned = scored + rejected (counts and files), snapshots the
   registry, rebuilds `warehouse.duckdb` (atomic replace), and emits `Asset('review_scores')`
   with the counts and model version.

Rows are reproducible: `scored_at` is the run's data interval end (else its run_after), and
`run_id` is the Airflow run id, so clearing and re-running a night gives identical rows.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Metadata,
    Param,
    dag,
    get_current_context,
    task,
)

from _common import DEFAULT_ARGS, START_DATE, on_run_failure, parse_time_settings, run_timeout, schedule_cron

CURATED_REVIEWS = Asset("curated_reviews")
REVIEW_SCORES = Asset("review_scores")


def _deadline():
    """Alert (alerts.* settings) when a scoring run has not finished score.deadline_minutes after
    it was queued. Counted from the queueing, not the logical date: the runs a `curated_reviews`
    event starts (the ones that score the night) have no logical date, and while one hangs
    `max_active_runs=1` keeps the cron run from being created at all, so only a deadline of its
    own catches it. Read at parse time, as the schedule is."""
    minutes = parse_time_settings().score.deadline_minutes
    if not minutes:
        return None
    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=dt.timedelta(minutes=minutes),
        callback=AsyncCallback("fbk_tasks.alerts.deadline_missed", kwargs={"message": f"feedback_score not finished {minutes:g} min after it was queued"}),
    )


def _run_scored_at() -> tuple[str, str]:
    """(run_id, scored_at ISO) of the current DAG run, deterministic for the run."""
    ctx = get_current_context()
    dag_run = ctx["dag_run"]
    when = ctx.get("data_interval_end") or ctx.get("logical_date") or dag_run.run_after
    return dag_run.run_id, when.isoformat()


@dag(
    dag_id="feedback_score",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(schedule_cron("score_cron"), timezone="UTC"),
        assets=CURATED_REVIEWS,
    ),
    start_date=START_DATE,
    catchup=False,
    deadline=_deadline(),
    max_active_runs=1,
    dagrun_timeout=run_timeout("score"),
    on_failure_callback=on_run_failure,
    doc_md=__doc__,
    tags=["fbk", "scoring", "mlflow"],
    default_args=DEFAULT_ARGS,
    params={
        "ds": Param(None, type=["null", "string"], format="date", description="Only this curated partition (YYYY-MM-DD)."),
        "rescore": Param(False, type="boolean", description="Score again with the current champion."),
    },
)
def feedback_score():
    @task
    def resolve_champion() -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from fbk_tasks.score.registry import NoChampionError
        from fbk_tasks.score.registry import resolve_champion as _resolve
        from fbk_tasks.settings import load_settings

        try:
            return _resolve(load_settings()).to_dict()
        except NoChampionError as exc:
            # a fresh deployment before its first training: nothing to score with yet, which a
            # retry or an alert would not change; the run skips (feedback_train promotes one)
            raise AirflowSkipException(f"{exc}; nothing scored until feedback_train promotes a champion") from exc

    @task
    def plan(model: dict) -> list[list[dict]]:
        """The run's shards, in at most score.max_mapped_tasks groups (one shard each unless
        there are more shards than that)."""
        from fbk_tasks.score.plan import group_specs, plan_shards
        from fbk_tasks.score.registry import ModelRef
        from fbk_tasks.settings import load_settings

        settings = load_settings()
        params = get_current_context()["params"]
        run_id, scored_at = _run_scored_at()
        specs = plan_shards(
            settings,
            params.get("ds") or None,
            ModelRef.from_dict(model),
            run_id=run_id,
            scored_at=dt.datetime.fromisoformat(scored_at),
            rescore=bool(params.get("rescore")),
        )
        return [[s.to_dict() for s in group] for group in group_specs(specs, settings.score.max_mapped_tasks)]

    @task(max_active_tis_per_dagrun=parse_time_settings().score.max_parallel_shards)
    def score_shard(shards: list[dict]) -> list[dict]:
        from fbk_tasks.score.plan import ShardSpec
        from fbk_tasks.score.run import score_shards
        from fbk_tasks.settings import load_settings

        return [r.to_dict() for r in score_shards(load_settings(), [ShardSpec.from_dict(s) for s in shards])]

    # runs when score_shard was skipped for want of work, not when there was no champion
    @task(outlets=[REVIEW_SCORES], trigger_rule="none_failed_min_one_success")
    def finalize(model: dict, groups: list[list[dict]], results: list[list[dict]] | None):
        from fbk_tasks.score.plan import ShardSpec
        from fbk_tasks.score.run import ShardResult, finalize_run
        from fbk_tasks.settings import load_settings

        summary = finalize_run(
            load_settings(),
            [ShardSpec.from_dict(s) for group in groups for s in group],
            [ShardResult.from_dict(r) for group in (results or []) for r in group],
            model_version=int(model["version"]),
            partial=bool(get_current_context()["params"].get("ds")),
        )
        summary.setdefault("model_name", model["name"])
        summary.setdefault("model_version", model["version"])
        yield Metadata(REVIEW_SCORES, {k: summary.get(k) for k in ("model_name", "model_version", "backend", "planned", "scored", "rejected", "shards")})
        return summary

    model = resolve_champion()
    groups = plan(model)
    results = score_shard.expand(shards=groups)
    finalize(model, groups, results)


feedback_score_dag = feedback_score()
