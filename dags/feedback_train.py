"""
### feedback_train: weekly (or on request) retraining of the review-sentiment model

Runs at `schedule.train_cron` (default every Sunday 03:00 UTC), and whenever the asset
`retrain_requested` is updated (drift monitoring emits it).

1. **assemble**: curated partitions + human label corrections -> train/dev split; the golden
   set is taken once and never trained on (`fbk_tasks.train.data`).
2. **pretrain** (only with `train.pretrain`): WordPiece tokenizer + small BERT masked-LM on
   curated text of `train.pretrain_language`, or with `train.pretrain_from` more masked-LM
   training of that base model on it; the fine-tune then starts from the result.
3. **train_candidate** (mapped over `train.candidates`): baseline TF-IDF + logistic regression,
   transformer fine-tune; each is an MLflow run with metrics, lineage and a pyfunc model. With
   `train.gpu_queue` set, the transformer runs as `train_transformer` on that queue and pool.
4. **register**: one registry version per run (idempotent under retries).
5. **gate**: golden-set macro-F1 vs the champion, slice check, fresh-process reload check;
   verdict tags on every version, aliases `champion` / `challenger` / `previous`. It answers
   every pending drift retrain request (`state/drift/retrain_requests.jsonl`): `fbk.trigger.*`
   tags on the candidates, `fbk.drift.refused_retrain` on a champion that stays, and the
   requesting night's drift report shows the outcome.
6. **publish_champion**: emits the `champion_model` asset event (new version, F1) only when the
   champion changed; skipped otherwise.

Run the same steps without Airflow with `fbk train`.
"""

from __future__ import annotations

from datetime import timedelta

from _common import DEFAULT_ARGS, START_DATE, on_run_failure, parse_time_settings, run_timeout, schedule_cron
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

RETRAIN_REQUESTED = Asset("retrain_requested")
CHAMPION_MODEL = Asset("champion_model")


def _gpu_queue() -> str | None:
    """Read at parse time, as the schedule is: where the transformer task runs."""
    return parse_time_settings().train.gpu_queue


@task
def assemble() -> str:
    from fbk_tasks.settings import load_settings
    from fbk_tasks.train.pipeline import assemble as assemble_data

    from airflow.sdk.exceptions import AirflowFailException

    from fbk_tasks.train.data import TrainingDataError

    params = get_current_context()["params"]
    try:
        return assemble_data(load_settings(), params.get("ds_from") or None, params.get("ds_to") or None)
    except TrainingDataError as exc:  # degenerate data: a retry cannot help
        raise AirflowFailException(str(exc)) from exc


@task
def pretrain(prepared_dir: str) -> str | None:
    """The pre-trained model dir, or None when pre-training is off (the fine-tune uses train.base_model)."""
    from fbk_tasks.settings import load_settings

    settings = load_settings()
    if not settings.train.pretrain or "transformer" not in settings.train.candidates:
        return None
    from fbk_tasks.train.pretrain import pretrain as run_pretrain

    params = get_current_context()["params"]  # the same range as the data the candidates train on
    return run_pretrain(settings, params.get("ds_from") or None, params.get("ds_to") or None)


@task
def plan_candidates(exclude_transformer: bool) -> list[str]:
    from fbk_tasks.settings import load_settings

    candidates = load_settings().train.candidates
    return [c for c in candidates if not (exclude_transformer and c == "transformer")]


@task(execution_timeout=timedelta(hours=8))
def train_candidate(prepared_dir: str, candidate: str, base_model: str | None) -> dict | None:
    from fbk_tasks.settings import load_settings
    from fbk_tasks.train.pipeline import train_candidate as train

    settings = load_settings()
    if candidate not in settings.train.candidates:
        return None  # the dedicated transformer task when train.candidates leaves it out
    return train(settings, prepared_dir, candidate, base_model)


@task
def register(trained: list, extra: dict | None = None) -> list[dict]:
    from fbk_tasks.settings import load_settings
    from fbk_tasks.train.pipeline import register_candidate

    settings = load_settings()
    runs = [t for t in [*list(trained), extra] if t]
    return [register_candidate(settings, t) for t in runs]


@task
def gate(registered: list[dict]) -> dict:
    from fbk_tasks.settings import load_settings
    from fbk_tasks.train.gate import gate_candidates

    return gate_candidates(load_settings(), registered)


@task(outlets=[CHAMPION_MODEL])
def publish_champion(result: dict):
    """Asset event only when the champion changed: skipping emits none."""
    from airflow.sdk.exceptions import AirflowSkipException

    if not result.get("changed"):
        raise AirflowSkipException(f"champion unchanged (v{result.get('champion_version')})")
    yield Metadata(
        CHAMPION_MODEL,
        extra={
            "version": result["champion_version"],
            "previous_version": result.get("previous_version"),
            "golden_macro_f1": result.get("macro_f1"),
        },
    )


@dag(
    dag_id="feedback_train",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable(schedule_cron("train_cron"), timezone="UTC"), assets=[RETRAIN_REQUESTED]),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=run_timeout("train"),
    on_failure_callback=on_run_failure,
    doc_md=__doc__,
    tags=["feedback", "train", "mlflow"],
    default_args=DEFAULT_ARGS,
    params={
        "ds_from": Param(None, type=["null", "string"], format="date", description="first curated partition (YYYY-MM-DD)"),
        "ds_to": Param(None, type=["null", "string"], format="date", description="last curated partition (YYYY-MM-DD)"),
    },
)
def feedback_train():
    prepared = assemble()
    pretrained = pretrain(prepared)
    queue = _gpu_queue()
    if queue:
        trained = train_candidate.partial(prepared_dir=prepared, base_model=pretrained).expand(
            candidate=plan_candidates(exclude_transformer=True)
        )
        transformer = train_candidate.override(task_id="train_transformer", queue=queue, pool=queue)(
            prepared, "transformer", pretrained
        )
        # none_failed: with only the transformer configured the mapped task expands to nothing.
        registered = register.override(trigger_rule="none_failed")(trained, transformer)
    else:
        trained = train_candidate.partial(prepared_dir=prepared, base_model=pretrained).expand(
            candidate=plan_candidates(exclude_transformer=False)
        )
        registered = register(trained)
    publish_champion(gate(registered))


feedback_train()
