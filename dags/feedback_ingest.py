"""
### feedback_ingest

Nightly ingestion of new customer reviews, partitioned by logical date. Runs at
`schedule.ingest_cron` (default 00:00 UTC).

1. **claim_files**: files dropped in `<data>/landing/` (or `landing/<source mapping>/`) are
   moved to `landing/ds=<ds>/<mapping>/`; a re-run of the date processes the same files (a
   re-run of the newest date also claims files dropped since: waiting files belong to it).
2. **ingest**: each file is read (CSV/TSV/JSONL/Parquet; UTF-8, BOM, GB18030), mapped to the
   canonical schema with its mapping from `include/sources/`, cleaned, PII-redacted and
   validated by the Great Expectations suite `include/gx/curated_reviews_suite.json`.
   Failing rows go to `quarantine/reviews/ds=<ds>/` with their reasons; the rest to
   `curated/reviews/ds=<ds>/`; a ledger row per file (`ledger/ingest/`) reconciles the counts.
   A file that cannot be read or fails a batch expectation fails this task with the reason.
3. **publish**: emits the `curated_reviews` Asset with the partition and counts; skipped (no
   event, so no scoring run) when no file was ingested.

Data Docs: `<data>/reports/gx/index.html`. Logic: `fbk_tasks.ingest.pipeline`
(also runnable as `fbk ingest`).
"""

from __future__ import annotations

from airflow.sdk import Asset, CronTriggerTimetable, dag, get_current_context, task

from _common import DEFAULT_ARGS, START_DATE, is_backfill, logical_ds, on_run_failure, run_timeout, schedule_cron

CURATED_REVIEWS = Asset("curated_reviews")


@dag(
    dag_id="feedback_ingest",
    schedule=CronTriggerTimetable(schedule_cron("ingest_cron"), timezone="UTC"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=run_timeout("ingest"),
    on_failure_callback=on_run_failure,
    default_args=DEFAULT_ARGS,
    tags=["fbk", "ingest", "data-quality"],
    doc_md=__doc__,
)
def feedback_ingest():
    @task
    def claim_files() -> list[str]:
        from fbk_tasks.ingest.pipeline import claim_landed_files
        from fbk_tasks.settings import load_settings

        settings = load_settings()
        context = get_current_context()
        # a backfill reprocesses the files its dates claimed; new files wait for the next regular run
        files = claim_landed_files(settings, logical_ds(context), claim=not is_backfill(context))
        names = [str(p.relative_to(settings.landing_dir)) for p, _ in files]
        print(f"{len(names)} file(s) claimed: {names}")
        return names

    @task
    def ingest(files: list[str]) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from fbk_tasks.ingest.pipeline import IngestError, ingest_partition
        from fbk_tasks.settings import load_settings

        context = get_current_context()
        try:
            report = ingest_partition(load_settings(), logical_ds(context), run_id=context["run_id"],
                                      claim=not is_backfill(context))
        except IngestError as exc:
            if exc.__cause__ is not None:
                raise  # an unexpected error (a flaky volume, a library hiccup): Airflow retries the night
            # the data decides this, so a retry would fail the same way: fail now, with the
            # reasons; fix or remove the file, then clear the task
            raise AirflowFailException(str(exc)) from exc
        for f in report.files:
            print(f"{f.source_file}: {f.status} read={f.rows_read} curated={f.rows_curated} quarantined={f.rows_quarantined} duplicates={f.rows_duplicate} reasons={f.reasons} pii={f.pii} {f.error or ''}")
        return report.summary()

    @task(outlets=[CURATED_REVIEWS])
    def publish(summary: dict, *, outlet_events=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        if not summary["files_ingested"]:
            # nothing curated changed: no event, so no scoring run (and drift run) for nothing;
            # the nightly cron run of feedback_score still comes
            raise AirflowSkipException(f"no file ingested for ds={summary['ds']} ({summary['files']} claimed): curated_reviews unchanged")
        outlet_events[CURATED_REVIEWS].extra = {k: v for k, v in summary.items() if k != "data_docs"}
        print(f"curated_reviews updated: {summary}")
        return summary

    publish(ingest(claim_files()))


feedback_ingest()
