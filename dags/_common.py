"""Helpers shared by the DAG files. Light imports only: DAG files are parsed often."""

from __future__ import annotations

from datetime import timedelta

import pendulum

START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")


def on_failure(context) -> None:
    """Every task's failure callback: log, and post/e-mail per the `alerts` settings (never raises)."""
    from fbk_tasks.alerts import notify_failure

    notify_failure(context)


def on_run_failure(context) -> None:
    """Every DAG's own failure callback. A failed task already alerted through its callback, so
    this alerts only when the run itself timed out (``schedule.<dag>_timeout_minutes``): the
    scheduler then skips the unfinished tasks, which run no callback of their own."""
    if context.get("reason") != "timed_out":
        return
    from fbk_tasks.alerts import notify_failure

    dag = context.get("dag")
    timeout = getattr(dag, "dagrun_timeout", None)
    notify_failure({**context, "kind": "run_timed_out",
                    "exception": f"run still unfinished after its dagrun_timeout ({timeout}); unfinished tasks were skipped"})


def run_timeout(name: str) -> timedelta | None:
    """``schedule.<name>_timeout_minutes`` as a ``dagrun_timeout``, read when the DAG file is parsed."""
    minutes = getattr(parse_time_settings().schedule, f"{name}_timeout_minutes")
    return timedelta(minutes=minutes) if minutes else None


DEFAULT_ARGS = {
    "owner": "fbk",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "on_failure_callback": on_failure,
}


def parse_time_settings():
    """Settings for the few choices a DAG makes when it is parsed (schedules, timeouts, queue
    routing, deadline). A settings problem must not break parsing: the defaults here, and the
    tasks then fail with the real message when they load the settings themselves."""
    from fbk_tasks.settings import Settings, load_settings

    try:
        return load_settings()
    except Exception:
        return Settings.model_construct()  # every default, nothing read from the environment


def schedule_cron(name: str) -> str:
    """``schedule.<name>`` (a cron in UTC) of the settings, read when the DAG file is parsed."""
    return getattr(parse_time_settings().schedule, name)


def is_backfill(context) -> bool:
    """Whether this run belongs to a backfill (``airflow backfill create``)."""
    run_type = context["dag_run"].run_type
    return getattr(run_type, "value", run_type) == "backfill"


def logical_ds(context) -> str:
    """The partition a run works on: its logical date, or (manual runs without one) the day it ran."""
    when = context.get("logical_date") or context["dag_run"].run_after
    return pendulum.instance(when).in_timezone("UTC").to_date_string()
