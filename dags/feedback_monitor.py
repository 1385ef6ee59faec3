"""
### feedback_monitor: nightly drift check of the scored reviews against the champion's training data

Runs whenever scoring updates `Asset('review_scores')`.

1. **compute_signals**: loads the night (param `ds`; default the latest scored partition on or
   before the run's date) and the model version that scored it; the reference is that
   version's training partitions (MLflow lineage), sampled, scored once and cached under
   `state/drift/`. Measures prediction drift (PSI of predicted classes, overall and per
   category), input drift (category / language mix PSI, text-length PSI, [UNK]-token share,
   a domain classifier's cross-validated ROC AUC on MiniLM embeddings, or on character
   n-grams for Chinese-dominant batches, and frequent never-seen terms) and live quality
   (prediction vs rating agreement drop).
2. **decide**: the policy of `drift.*` settings (minimum rows, agreeing signals, severe single
   signal, cooldown after a retrain); writes `drift/ds=D/part-0.parquet` (the warehouse's
   `drift_metrics`) and `reports/drift/drift-D.html`.
3. **emit_retrain**: only when the policy fires: records the request (cooldown state) and
   updates `Asset('retrain_requested')` with the reasons and numbers, which schedules
   `feedback_train`. Otherwise skipped.

Failures are logged and, when configured (`alerts.webhook_url`, `alerts.email`),
posted / e-mailed. The same path runs without Airflow as `fbk drift [--ds D]`.
"""

from __future__ import annotations

from _common import DEFAULT_ARGS, START_DATE, logical_ds
from airflow.sdk import Asset, Param, dag, get_current_context, task

REVIEW_SCORES = Asset("review_scores")
RETRAIN_REQUESTED = Asset("retrain_requested")


def _night(context) -> str:
    """The partition to check: param ds, else the latest scored partition on or before the run's date."""
    ds = context["params"].get("ds")
    if ds:
        return ds
    from fbk_tasks.settings import load_settings

    settings = load_settings()
    upto = logical_ds(context)
    scored = sorted(p.name[3:] for p in settings.scores_dir.glob("ds=*") if p.is_dir() and p.name[3:] <= upto)
    if not scored:
        raise ValueError(f"no scored partition on or before {upto} under {settings.scores_dir}")
    return scored[-1]


@dag(
    dag_id="feedback_monitor",
    schedule=[REVIEW_SCORES],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["fbk", "monitoring", "drift"],
    default_args=DEFAULT_ARGS,  # includes the failure alert (per task, with its exception)
    params={"ds": Param(None, type=["null", "string"], description="Night to check (YYYY-MM-DD); default: latest scored.")},
)
def feedback_monitor():
    @task
    def compute_signals() -> str:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from fbk_tasks.drift.monitor import DriftInputError, NoReference, measure_night, measurement_path
        from fbk_tasks.settings import load_settings

        settings = load_settings()
        ds = _night(get_current_context())
        try:
            meas = measure_night(settings, ds)
        except NoReference as exc:  # a normal state (first night of a model), not a failure
            raise AirflowSkipException(str(exc)) from None
        except DriftInputError as exc:  # missing inputs: a retry finds the same, fail with the reason
            raise AirflowFailException(str(exc)) from exc
        return str(meas.save(measurement_path(settings, ds)))

    @task
    def decide(measurement_file: str) -> dict:
        from fbk_tasks.drift.monitor import NightMeasurement, decide_night, summary
        from fbk_tasks.settings import load_settings

        meas = NightMeasurement.load(measurement_file)
        decision, mpath, rpath = decide_night(load_settings(), meas)
        return summary(meas, decision, mpath, rpath)

    @task(outlets=[RETRAIN_REQUESTED])
    def emit_retrain(result: dict, *, outlet_events=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        decision = result["decision"]
        if not decision["retrain"]:
            raise AirflowSkipException(f"no retrain requested: {decision['status']}")
        from fbk_tasks.drift.monitor import record_retrain_request, requested_by_another_run
        from fbk_tasks.drift.policy import Decision
        from fbk_tasks.settings import load_settings

        settings, run_id = load_settings(), get_current_context()["run_id"]
        earlier = requested_by_another_run(settings, result["ds"], run_id)
        if earlier:
            raise AirflowSkipException(f"a retrain for {result['ds']} was already requested at {earlier.get('requested_at')} "
                                       f"by run {earlier.get('run_id')}: not asking again")
        record_retrain_request(settings, result["ds"], Decision(**decision), result["model_version"], run_id)
        extra = {"ds": result["ds"], "model_version": result["model_version"], "reasons": decision["reasons"],
                 "numbers": decision["numbers"], "signals": decision["fired_signals"], "report": result["report_path"]}
        outlet_events[RETRAIN_REQUESTED].extra = extra
        return extra

    emit_retrain(decide(compute_signals()))


feedback_monitor_dag = feedback_monitor()
