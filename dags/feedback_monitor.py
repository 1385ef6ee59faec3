"""
### feedback_monitor: nightly drift check of the scored reviews against the champion's training data

Runs whenever scoring updates `Asset('review_scores')`.

**Which nights.** With param `ds`: that night only. Without it: the scored nights on or before
the run's date that have no drift metrics yet (`fbk_tasks.drift.monitor.nights_to_check`): the
latest scored night (again when a new champion scored it), then late or backfilled nights,
newest first, at most `drift.max_nights_per_run` (the rest wait for the next run). Nothing
unchecked: the run is skipped.

1. **compute_signals**: for each night, loads it and the model version that scored it; the
   reference is that version's training partitions (MLflow lineage), sampled, scored once and
   cached under `state/drift/`. Measures prediction drift (PSI of predicted classes, overall
   and per category), input drift (category / language mix PSI, text-length PSI, [UNK]-token
   share, a domain classifier's cross-validated ROC AUC on MiniLM embeddings, or on character
   n-grams for Chinese-dominant batches, and frequent never-seen terms) and live quality
   (prediction vs rating agreement drop). A night without a reference (the model was trained
   on it, nothing before it) is skipped and noted, so it is not tried again; a night whose
   inputs are broken does not stop the others (see **alert_unmeasured**).
2. **decide**: the policy of `drift.*` settings (minimum rows, agreeing signals, severe single
   signal, cooldown after a retrain; a night checked late does not ask again when a later night
   already asked), oldest night first; writes `drift/ds=D/part-0.parquet` (the warehouse's
   `drift_metrics`) and `reports/drift/drift-D.html` per night. When several nights would ask
   for a retrain, the newest wins and the older ones are recorded as `superseded`.
3. **emit_retrain**: only when a night's decision is a retrain (one request per run, the newest
   such night): records the request (cooldown state) and updates `Asset('retrain_requested')`
   with the reasons and numbers, which schedules `feedback_train`. Otherwise skipped.
4. **alert_unmeasured**: fails (and so alerts) when a night could not be measured for another
   reason than a missing reference, after the other nights were decided. After
   `drift.max_night_failures` failed runs a night is no longer checked automatically (the
   alert says so); trigger this DAG with `ds` to measure it again.

Failures are logged and, when configured (`alerts.webhook_url`, `alerts.email`),
posted / e-mailed. The same path runs without Airflow as `fbk drift [--ds D]`.
"""

from __future__ import annotations

from _common import DEFAULT_ARGS, START_DATE, logical_ds, on_run_failure, run_timeout
from airflow.sdk import Asset, Param, dag, get_current_context, task

REVIEW_SCORES = Asset("review_scores")
RETRAIN_REQUESTED = Asset("retrain_requested")


def _nights(context) -> list[str]:
    """The nights to check: [param ds], else the unchecked scored nights on or before the run's
    date (newest first, at most drift.max_nights_per_run); [] when every one is checked."""
    ds = context["params"].get("ds")
    if ds:
        return [ds]
    from fbk_tasks.drift.monitor import nights_to_check, scored_nights
    from fbk_tasks.settings import load_settings

    settings = load_settings()
    upto = logical_ds(context)
    nights = nights_to_check(settings, upto, settings.drift.max_nights_per_run)
    if not nights and not scored_nights(settings, upto):
        raise ValueError(f"no scored partition on or before {upto} under {settings.scores_dir}")
    return nights


@dag(
    dag_id="feedback_monitor",
    schedule=[REVIEW_SCORES],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=run_timeout("monitor"),
    on_failure_callback=on_run_failure,
    doc_md=__doc__,
    tags=["fbk", "monitoring", "drift"],
    default_args=DEFAULT_ARGS,  # includes the failure alert (per task, with its exception)
    params={"ds": Param(None, type=["null", "string"], format="date",
                        description="Night to check (YYYY-MM-DD); default: the unchecked scored nights, newest first.")},
)
def feedback_monitor():
    @task
    def compute_signals() -> dict:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from fbk_tasks.drift.monitor import measure_nights
        from fbk_tasks.settings import load_settings

        settings = load_settings()
        nights = _nights(get_current_context())
        if not nights:
            raise AirflowSkipException("every scored night up to this run's date is checked already")
        done = measure_nights(settings, nights, run_id=get_current_context()["run_id"])
        if not done["measured"]:
            why = "; ".join(f"{d}: {w}" for d, w in {**done["skipped"], **done["failed"]}.items())
            if done["failed"]:  # missing inputs: a retry finds the same, fail with the reason
                raise AirflowFailException(f"no night could be measured: {why}")
            raise AirflowSkipException(why)  # no reference (first night of a model): a normal state
        return done

    @task
    def decide(measured: dict) -> dict:
        from fbk_tasks.drift.monitor import NightMeasurement, decide_nights, retrain_candidate
        from fbk_tasks.settings import load_settings

        summaries = decide_nights(load_settings(), [NightMeasurement.load(f) for f in measured["measured"]])
        return {"nights": summaries, "request": retrain_candidate(summaries),
                "skipped": measured["skipped"], "failed": measured["failed"]}

    @task(outlets=[RETRAIN_REQUESTED])
    def emit_retrain(decided: dict, *, outlet_events=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        result = decided["request"]
        if not result:
            raise AirflowSkipException("no retrain requested: " + "; ".join(
                f"{s['ds']} {s['decision']['status']}" for s in decided["nights"]))
        decision = result["decision"]
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

    @task
    def alert_unmeasured(decided: dict) -> dict:
        """Fail (so the failure callback alerts) when a night could not be measured; the other
        nights were decided and emitted already. Nights without a reference are not failures."""
        from airflow.sdk.exceptions import AirflowFailException

        if decided["failed"]:
            raise AirflowFailException("nights not measured: " + "; ".join(
                f"{d}: {w}" for d, w in decided["failed"].items()))
        return {"checked": [s["ds"] for s in decided["nights"]], "skipped": decided["skipped"]}

    decided = decide(compute_signals())
    emit_retrain(decided)
    alert_unmeasured(decided)


feedback_monitor_dag = feedback_monitor()
