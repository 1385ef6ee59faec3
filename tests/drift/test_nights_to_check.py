"""Which nights a monitor run checks (``nights_to_check``) and how the nights of one run are
decided together (``decide_nights``): on hand-made score and metrics files, no model."""

from __future__ import annotations

import pyarrow as pa
import pytest

from fbk_tasks.drift.monitor import (
    NightMeasurement,
    decide_nights,
    metrics_path,
    nights_to_check,
    read_retrain_requests,
    record_no_reference,
    record_retrain_request,
    retrain_candidate,
)
from fbk_tasks.drift.policy import SignalResult, apply_thresholds, decide


def _score(settings, ds: str, version: int, n: int = 3, part: str = "a") -> None:
    from fbk_tasks.io.atomic import write_parquet

    write_parquet(pa.table({"review_id": [f"{ds}-{i}" for i in range(n)], "model_name": ["m"] * n,
                            "model_version": pa.array([version] * n, pa.int64()), "label": ["positive"] * n}),
                  settings.scores_dir / f"ds={ds}" / f"part-{version}-{part}.parquet")


def _measurement(settings, ds: str, version: int = 1, drifted: bool = False) -> NightMeasurement:
    rs = apply_thresholds([SignalResult("prediction_psi", "all", 0.9 if drifted else 0.01),
                           SignalResult("domain_auc", "all", 0.5)], settings.drift)
    return NightMeasurement(ds=ds, model_name="m", model_version=version, n_rows=400, reference_partitions=["2026-02-28"],
                            reference_source="training lineage", results=[r.to_dict() for r in rs],
                            info={"features": "char_ngrams"}, computed_at="2026-03-09T04:00:00+00:00")


def _checked(settings, ds: str, version: int = 1, drifted: bool = False) -> None:
    """Metrics for the night as the monitor writes them (decision row included)."""
    from fbk_tasks.drift.monitor import write_metrics

    meas = _measurement(settings, ds, version, drifted)
    write_metrics(settings, meas, decide(meas.signal_results(), settings.drift, meas.n_rows, ds))


NIGHTS = ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05"]


def test_picks_unchecked_nights_newest_first_within_the_limit(settings):
    for ds in NIGHTS:
        _score(settings, ds, 1)
    assert nights_to_check(settings, "2026-03-05", 7) == NIGHTS[::-1]  # nothing checked yet
    assert nights_to_check(settings, "2026-03-05", 2) == ["2026-03-05", "2026-03-04"]  # the limit holds
    assert nights_to_check(settings, "2026-03-03", 7) == ["2026-03-03", "2026-03-02", "2026-03-01"]  # up to the run's date
    for ds in NIGHTS:
        if ds != "2026-03-03":
            _checked(settings, ds)
    # 03-03 was scored late (backfilled) after newer nights were checked: it is picked, the others are not
    assert nights_to_check(settings, "2026-03-05", 7) == ["2026-03-03"]
    _checked(settings, "2026-03-03")
    assert nights_to_check(settings, "2026-03-05", 7) == []
    _score(settings, "2026-03-06", 1)
    (settings.scores_dir / "ds=2026-03-07").mkdir()  # a partition without score files is not a scored night
    assert nights_to_check(settings, "2026-03-09", 1) == ["2026-03-06"]
    with pytest.raises(ValueError):
        nights_to_check(settings, "2026-03-09", 0)


def test_what_counts_as_checked(settings):
    for ds in NIGHTS:
        _score(settings, ds, 1)
        _checked(settings, ds)
    # a new champion (v2) scores every partition: only the latest night is measured again
    for ds in NIGHTS:
        _score(settings, ds, 2, part="b")
    assert nights_to_check(settings, "2026-03-05", 7) == ["2026-03-05"]
    _checked(settings, "2026-03-05", version=2)
    assert nights_to_check(settings, "2026-03-05", 7) == []
    # metrics that decided a retrain nobody recorded (`fbk drift` only prints) keep the night due...
    _checked(settings, "2026-03-02", drifted=True)
    assert nights_to_check(settings, "2026-03-05", 7) == ["2026-03-02"]
    # ...until the request is recorded
    meas = _measurement(settings, "2026-03-02", drifted=True)
    record_retrain_request(settings, "2026-03-02", decide(meas.signal_results(), settings.drift, 400, "2026-03-02"), 1, "run-1")
    assert nights_to_check(settings, "2026-03-05", 7) == []
    # a damaged metrics file: checked again
    metrics_path(settings, "2026-03-04").write_bytes(b"not parquet")
    assert nights_to_check(settings, "2026-03-05", 7) == ["2026-03-04"]


def test_a_night_without_reference_is_noted_and_not_tried_again(settings):
    _score(settings, "2026-03-01", 1)
    _score(settings, "2026-03-02", 1)
    _checked(settings, "2026-03-02")
    assert nights_to_check(settings, "2026-03-02", 7) == ["2026-03-01"]
    record_no_reference(settings, "2026-03-01", 1, "no reference")
    assert nights_to_check(settings, "2026-03-02", 7) == []
    # the latest night noted for an older version than the one scoring it now is tried again
    _score(settings, "2026-03-03", 1)
    record_no_reference(settings, "2026-03-03", 1, "no reference")
    assert nights_to_check(settings, "2026-03-03", 7) == []
    _score(settings, "2026-03-03", 2, n=5, part="b")
    assert nights_to_check(settings, "2026-03-03", 7) == ["2026-03-03"]


def _statuses(summaries) -> dict[str, str]:
    return {s["ds"]: s["decision"]["status"] for s in summaries}


def test_one_run_asks_for_one_retrain_the_newest(settings):
    for ds in ("2026-03-02", "2026-03-03", "2026-03-04"):
        _score(settings, ds, 1)
    nights = [_measurement(settings, "2026-03-04", drifted=True), _measurement(settings, "2026-03-02", drifted=True),
              _measurement(settings, "2026-03-03")]
    summaries = decide_nights(settings, nights)
    assert [s["ds"] for s in summaries] == ["2026-03-02", "2026-03-03", "2026-03-04"]  # oldest first
    assert _statuses(summaries) == {"2026-03-02": "superseded", "2026-03-03": "no_drift", "2026-03-04": "retrain"}
    assert retrain_candidate(summaries)["ds"] == "2026-03-04"
    assert all(metrics_path(settings, ds).exists() for ds in ("2026-03-02", "2026-03-03", "2026-03-04"))


def test_a_late_night_does_not_ask_again_after_a_later_request(settings):
    for ds in ("2026-03-02", "2026-03-03", "2026-03-10"):
        _score(settings, ds, 1)
    late = _measurement(settings, "2026-03-03", drifted=True)
    assert _statuses(decide_nights(settings, [late])) == {"2026-03-03": "retrain"}  # nothing asked after it yet
    # a retrain was requested for 03-10 and answered; the backfilled 03-03 is checked after it
    req = _measurement(settings, "2026-03-10", drifted=True)
    record_retrain_request(settings, "2026-03-10", decide(req.signal_results(), settings.drift, 400, "2026-03-10"), 1, "run-1")
    summaries = decide_nights(settings, [late])
    assert _statuses(summaries) == {"2026-03-03": "superseded"} and retrain_candidate(summaries) is None
    # a night that asked itself is decided as before (a re-run stays idempotent)
    record_retrain_request(settings, "2026-03-02", decide(req.signal_results(), settings.drift, 400, "2026-03-02"), 1, "run-0")
    assert _statuses(decide_nights(settings, [_measurement(settings, "2026-03-02", drifted=True)])) == {"2026-03-02": "retrain"}
    assert [e["ds"] for e in read_retrain_requests(settings)] == ["2026-03-02", "2026-03-10"]


def test_a_late_night_is_cooled_down_by_a_recent_retrain(settings):
    """Cooldown by ds alone would let a night older than the last promotion ask right after it."""
    for ds in ("2026-03-03", "2026-03-08"):
        _score(settings, ds, 1)
    late = _measurement(settings, "2026-03-03", drifted=True)
    late.info["version_tags"] = {"fbk.gate.at": "2026-03-07T05:00:00+00:00"}  # the scoring version was promoted on 03-07
    (s,) = decide_nights(settings, [late])
    assert s["decision"]["status"] == "cooldown" and s["decision"]["last_retrain"] == "2026-03-07"


def test_a_late_nights_request_cools_down_the_nights_after_the_latest(settings):
    """The request of a backfilled night is dated by the night clock when it was made (the latest
    scored night), so the next drifted night cannot ask again the day after."""
    for ds in ("2026-01-01", "2026-06-10"):
        _score(settings, ds, 1)
    (late,) = decide_nights(settings, [_measurement(settings, "2026-01-01", drifted=True)])
    assert late["decision"]["status"] == "retrain"
    record_retrain_request(settings, "2026-01-01", decide(_measurement(settings, "2026-01-01", drifted=True).signal_results(),
                                                          settings.drift, 400, "2026-01-01"), 1, "run-1")
    assert read_retrain_requests(settings)[0]["asof"] == "2026-06-10"
    _score(settings, "2026-06-11", 1)
    (nxt,) = decide_nights(settings, [_measurement(settings, "2026-06-11", drifted=True)])
    assert nxt["decision"]["status"] == "cooldown" and nxt["decision"]["last_retrain"] == "2026-06-10"


def test_a_superseded_night_stays_due_until_the_request_that_superseded_it_is_made(settings):
    for ds in ("2026-03-02", "2026-03-03", "2026-03-04"):
        _score(settings, ds, 1)
        _checked(settings, ds)
    summaries = decide_nights(settings, [_measurement(settings, "2026-03-02", drifted=True),
                                         _measurement(settings, "2026-03-04", drifted=True)])
    assert _statuses(summaries) == {"2026-03-02": "superseded", "2026-03-04": "retrain"}
    # emit_retrain never recorded the 03-04 request (it failed, or this was `fbk drift`): both stay due
    assert nights_to_check(settings, "2026-03-04", 7) == ["2026-03-04", "2026-03-02"]
    record_retrain_request(settings, "2026-03-04", decide(_measurement(settings, "2026-03-04", drifted=True).signal_results(),
                                                          settings.drift, 400, "2026-03-04"), 1, "run-1")
    assert nights_to_check(settings, "2026-03-04", 7) == []


def test_one_broken_night_does_not_hide_the_others(settings, monkeypatch):
    import fbk_tasks.drift.monitor as monitor

    def fake(settings_, ds, use_encoder=None):
        if ds == "2026-03-02":
            raise RuntimeError("artifacts of v0 are gone")
        return _measurement(settings_, ds)

    monkeypatch.setattr(monitor, "measure_night", fake)
    done = monitor.measure_nights(settings, ["2026-03-03", "2026-03-02", "2026-03-01"])
    assert len(done["measured"]) == 2 and list(done["failed"]) == ["2026-03-02"]
    assert "RuntimeError: artifacts of v0 are gone" in done["failed"]["2026-03-02"]
    # nothing could be measured and the error is not about the inputs (registry down): raised, so retries apply
    with pytest.raises(RuntimeError):
        monitor.measure_nights(settings, ["2026-03-02"])


def test_a_night_that_keeps_failing_is_given_up_after_max_night_failures_runs(settings, monkeypatch):
    import fbk_tasks.drift.monitor as monitor

    broken = {"2026-03-02"}

    def fake(settings_, ds, use_encoder=None):
        if ds in broken:
            raise monitor.DriftInputError("curated partition 2026-03-02 is unreadable")
        return _measurement(settings_, ds)

    monkeypatch.setattr(monitor, "measure_night", fake)
    for ds in ("2026-03-01", "2026-03-02", "2026-03-03"):
        _score(settings, ds, 1)
    _checked(settings, "2026-03-03")
    _checked(settings, "2026-03-01")
    assert settings.drift.max_night_failures == 3
    for run in (1, 2):
        nights = nights_to_check(settings, "2026-03-03", 7)
        assert nights == ["2026-03-02"]
        done = monitor.measure_nights(settings, nights, run_id=f"run-{run}")
        assert f"failure {run} of 3" in done["failed"]["2026-03-02"]
        # task retries of the same run count once
        done = monitor.measure_nights(settings, nights, run_id=f"run-{run}")
        assert f"failure {run} of 3" in done["failed"]["2026-03-02"]
    done = monitor.measure_nights(settings, ["2026-03-02"], run_id="run-3")
    assert "3 runs failed on this night: no longer checked automatically" in done["failed"]["2026-03-02"]
    note = monitor.read_failure(settings, "2026-03-02")
    assert note["given_up"] and note["failures"] == 3 and note["model_version"] == 1
    assert "unreadable" in note["last_error"]
    assert nights_to_check(settings, "2026-03-03", 7) == []  # no longer takes a place every run
    # an explicit run for the night measures it again; once it works, the note is gone
    broken.clear()
    done = monitor.measure_nights(settings, ["2026-03-02"], run_id="manual")
    assert len(done["measured"]) == 1 and not done["failed"]
    assert monitor.read_failure(settings, "2026-03-02") is None


def test_a_new_scoring_version_of_the_latest_night_counts_failures_again(settings, monkeypatch):
    import fbk_tasks.drift.monitor as monitor

    def fake(settings_, ds, use_encoder=None):
        raise monitor.DriftInputError("no curated rows")

    monkeypatch.setattr(monitor, "measure_night", fake)
    monkeypatch.setattr(settings.drift, "max_night_failures", 1)
    _score(settings, "2026-03-01", 1)
    monitor.measure_nights(settings, ["2026-03-01"], run_id="a")
    assert nights_to_check(settings, "2026-03-01", 7) == []
    _score(settings, "2026-03-01", 2, n=5, part="b")  # a new champion scored it: checked again
    assert nights_to_check(settings, "2026-03-01", 7) == ["2026-03-01"]
    note = monitor.record_failure(settings, "2026-03-01", "still broken", "b")
    assert note["model_version"] == 2 and note["failures"] == 1 and note["given_up"]


def test_a_given_up_latest_night_with_unreadable_scores_does_not_stop_the_listing(settings, monkeypatch):
    import fbk_tasks.drift.monitor as monitor

    def fake(settings_, ds, use_encoder=None):
        if ds == "2026-03-02":
            raise monitor.DriftInputError("no scores for 2026-03-02")
        return _measurement(settings_, ds)

    monkeypatch.setattr(monitor, "measure_night", fake)
    monkeypatch.setattr(settings.drift, "max_night_failures", 1)
    _score(settings, "2026-03-01", 1)
    _score(settings, "2026-03-02", 1, n=0)  # a score file without rows: no scoring version
    assert nights_to_check(settings, "2026-03-02", 7) == ["2026-03-02", "2026-03-01"]
    monitor.measure_nights(settings, ["2026-03-02", "2026-03-01"], run_id="r1")
    assert monitor.read_failure(settings, "2026-03-02")["model_version"] is None
    # 03-01 was measured but not decided (no metrics written here): still due; 03-02 is given up
    assert nights_to_check(settings, "2026-03-02", 7) == ["2026-03-01"]


def test_a_night_that_always_raises_is_counted_although_the_error_is_raised(settings, monkeypatch):
    import fbk_tasks.drift.monitor as monitor

    def fake(settings_, ds, use_encoder=None):
        raise OSError("artifacts of v1 are gone")

    monkeypatch.setattr(monitor, "measure_night", fake)
    _score(settings, "2026-03-01", 1)
    for run in range(1, 4):
        for _attempt in range(2):  # the task's retries: one run
            with pytest.raises(OSError):
                monitor.measure_nights(settings, ["2026-03-01"], run_id=f"run-{run}")
        assert monitor.read_failure(settings, "2026-03-01")["failures"] == run
    assert monitor.read_failure(settings, "2026-03-01")["given_up"]
    assert nights_to_check(settings, "2026-03-01", 7) == []


def test_fbk_drift_reports_a_failing_night_without_counting_it(settings, monkeypatch):
    """A person running `fbk drift` again and again while fixing a night must not give it up:
    only feedback_monitor runs count towards drift.max_night_failures."""
    import fbk_tasks.drift.monitor as monitor
    from fbk_tasks.cli import main

    def fake(settings_, ds, use_encoder=None):
        raise monitor.DriftInputError(f"curated partition {ds} is unreadable")

    monkeypatch.setattr(monitor, "measure_night", fake)
    monkeypatch.setattr(settings.drift, "max_night_failures", 1)
    monkeypatch.setattr("fbk_tasks.settings.load_settings", lambda *a, **kw: settings)
    _score(settings, "2026-03-01", 1)
    for _ in range(3):
        assert main(["drift", "--no-encoder"]) == 2  # the reason is printed; exit 2 as for any user error
    assert monitor.read_failure(settings, "2026-03-01") is None
    assert nights_to_check(settings, "2026-03-01", 7) == ["2026-03-01"]
    done = monitor.measure_nights(settings, ["2026-03-01"], run_id="monitor-run")  # a monitor run counts
    assert "no longer checked automatically" in done["failed"]["2026-03-01"]
    assert nights_to_check(settings, "2026-03-01", 7) == []


def test_a_training_run_answers_only_the_requests_of_nights_it_trained_on(settings, monkeypatch):
    """A weekly run that assembled its data before Monday's drift request cannot answer it: the
    request stays pending for the run it triggered. The outcome is written after the tags and
    reports, so a gate retried after a failure there answers again."""
    from fbk_tasks.drift import monitor
    from fbk_tasks.drift.monitor import _write_requests, answer_retrain_requests, read_retrain_requests

    _write_requests(settings, [{"ds": "2026-03-02", "reasons": ["x"]}, {"ds": "2026-03-05", "reasons": ["y"]}])
    gate = {"changed": False, "champion_version": None, "verdicts": {}}
    ran_on = [{"version": "1", "candidate": "baseline", "partitions": ["2026-03-01", "2026-03-02"]}]

    def broken(*args):
        raise ConnectionError("report volume gone")

    with monkeypatch.context() as m:
        m.setattr(monitor, "_rerender_report", broken)
        with pytest.raises(ConnectionError):
            answer_retrain_requests(settings, gate, ran_on)
    assert all(not e.get("outcome") for e in read_retrain_requests(settings))  # still pending for the retry

    answered = answer_retrain_requests(settings, gate, ran_on)
    assert [e["ds"] for e in answered] == ["2026-03-02"]
    state = {e["ds"]: e.get("outcome") for e in read_retrain_requests(settings)}
    assert state["2026-03-02"]["verdict"] == "refused" and state["2026-03-05"] is None
