"""Failure and deadline alerts of every DAG: always a log line; a webhook POST and/or an e-mail
when configured (``alerts.webhook_url``, ``alerts.email``). Never raises: an alert that cannot
be sent is logged, the failure itself stays what Airflow reports."""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

log = logging.getLogger(__name__)


def _field(obj: Any, name: str) -> Any:
    """An attribute of a task instance / DAG run, or a key when it came as a dict (the
    deadline callback's context carries the DAG run as JSON)."""
    if obj is None:
        return None
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def alert_payload(context: dict[str, Any]) -> dict[str, Any]:
    ti = context.get("task_instance") or context.get("ti")
    dag_run = context.get("dag_run")
    return {
        "kind": context.get("kind", "task_failed"),
        "dag_id": _field(ti, "dag_id") or _field(dag_run, "dag_id") or _field(context.get("dag"), "dag_id"),
        "task_id": _field(ti, "task_id"),
        "run_id": _field(dag_run, "run_id") or _field(dag_run, "dag_run_id") or _field(ti, "run_id") or context.get("run_id"),
        "try_number": _field(ti, "try_number"),
        "logical_date": str(context.get("logical_date") or _field(dag_run, "logical_date")),
        "error": str(context.get("exception"))[:2000] if context.get("exception") is not None else None,
    }


def _post(url: str, payload: dict[str, Any], timeout: float) -> None:
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - URL is operator configuration
        resp.read()


def _email(to: str, payload: dict[str, Any]) -> None:
    from airflow.utils.email import send_email

    what = "missed its deadline" if payload.get("kind") == "deadline_missed" else "failed"
    send_email(to, f"[fbk] {payload['dag_id']}.{payload['task_id'] or 'run'} {what}", f"<pre>{json.dumps(payload, indent=1)}</pre>")


def notify_failure(context: dict[str, Any], settings=None, post: Callable = _post, email: Callable = _email) -> dict[str, Any]:
    """The ``on_failure_callback`` body; returns what was done (for tests)."""
    payload = alert_payload(context)
    log.error("fbk alert (%s): %s", payload["kind"], json.dumps(payload, default=str))
    done = {"payload": payload, "webhook": False, "email": False}
    try:
        if settings is None:
            from fbk_tasks.settings import load_settings

            settings = load_settings()
        d = settings.alerts
    except Exception as exc:  # settings broken: the log line is all we can do
        log.error("alert settings unavailable: %s", exc)
        return done
    if d.webhook_url:
        try:
            post(d.webhook_url, payload, d.timeout_s)
            done["webhook"] = True
        except Exception as exc:
            log.error("alert webhook %s failed: %s", d.webhook_url, exc)
    if d.email:
        try:
            email(d.email, payload)
            done["email"] = True
        except Exception as exc:
            log.error("alert e-mail to %s failed: %s", d.email, exc)
    return done


async def deadline_missed(**kwargs: Any) -> None:
    """Deadline-alert callback (runs in the triggerer): the nightly run is late."""
    import asyncio

    context = kwargs.get("context") or {}
    dag_run = context.get("dag_run") if isinstance(context, dict) else None
    fake = {
        "kind": "deadline_missed",
        "dag_run": dag_run,
        "logical_date": (context.get("logical_date") if isinstance(context, dict) else None),
        "exception": f"deadline missed: {kwargs.get('message', 'the run did not finish in time')}",
    }
    await asyncio.to_thread(notify_failure, fake)


__all__ = ["alert_payload", "notify_failure", "deadline_missed"]
