"""The retrain policy: which measured signals fire, and whether the night requests a retrain.

Rules (all numbers from :class:`fbk_tasks.settings.DriftSettings`):

1. A night with fewer than ``min_batch_rows`` scored reviews never requests a retrain.
2. A signal fires when its value reaches its threshold; it counts once however many scopes
   (``all``, ``category=<c>``) fire.
3. A retrain is requested when at least ``signals_required`` distinct signals fire, or when one
   signal reaches its *severe* threshold (which may fire alone).
4. Within ``cooldown_days`` after the last retrain (a request this stage made, or the current
   champion's promotion) nothing is requested; the signals are still recorded.
5. A night checked after a later night already asked for a retrain (a late or backfilled night,
   or the older of two drifted nights checked in one run) does not ask again: that later request
   (pending or answered) covers it (status ``superseded``).

Thresholds are effect sizes (PSI, AUC, shares); no rule looks at a p-value.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from fbk_tasks.settings import DriftSettings

# signal name -> (threshold field, severe-threshold field) of DriftSettings
SIGNAL_THRESHOLDS: dict[str, tuple[str, str]] = {
    "prediction_psi": ("psi_threshold", "severe_psi_threshold"),
    "category_mix_psi": ("psi_threshold", "severe_psi_threshold"),
    "language_mix_psi": ("psi_threshold", "severe_psi_threshold"),
    "text_length_psi": ("psi_threshold", "severe_psi_threshold"),
    "domain_auc": ("auc_threshold", "severe_auc_threshold"),
    "novel_term_share": ("novel_term_share", "severe_novel_term_share"),
    "unk_rate_increase": ("unk_rate_increase", "severe_unk_rate_increase"),
    "agreement_drop": ("agreement_drop", "severe_agreement_drop"),
}


@dataclass
class SignalResult:
    """One measured signal in one scope (``all`` or ``category=<c>``)."""

    signal: str
    scope: str
    value: float | None  # None/NaN: not measurable (e.g. no ratings); never fires
    threshold: float = float("nan")
    severe_threshold: float = float("nan")
    fired: bool = False
    severe: bool = False
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def apply_thresholds(results: list[SignalResult], drift: DriftSettings) -> list[SignalResult]:
    """Fill threshold, severe_threshold, fired and severe of each result from the settings."""
    for r in results:
        normal, severe = SIGNAL_THRESHOLDS[r.signal]
        r.threshold, r.severe_threshold = float(getattr(drift, normal)), float(getattr(drift, severe))
        ok = r.value is not None and not math.isnan(r.value)
        r.fired = bool(ok and r.value >= r.threshold)
        r.severe = bool(ok and r.value >= r.severe_threshold)
    return results


@dataclass
class Decision:
    retrain: bool
    status: str  # "retrain" | "no_drift" | "below_threshold" | "too_few_rows" | "superseded" | "cooldown"
    reasons: list[str]
    fired_signals: list[str]
    severe_signals: list[str]
    n_rows: int
    last_retrain: str | None
    numbers: dict[str, float]  # fired signal/scope -> value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)


def decide(results: list[SignalResult], drift: DriftSettings, n_rows: int, ds: str,
           last_retrain: str | None = None, later_request: str | None = None, asof: str | None = None) -> Decision:
    """Apply the policy to thresholded results (see :func:`apply_thresholds`).

    ``later_request``: a night after ``ds`` whose retrain was already requested (rule 5).
    ``asof``: the date the cooldown is counted to (default ``ds``); for a night checked late, the
    latest scored night, so that a late night cannot ask for a retrain inside the cooldown."""
    fired = sorted({r.signal for r in results if r.fired})
    severe = sorted({r.signal for r in results if r.severe})
    numbers = {f"{r.signal}[{r.scope}]": round(float(r.value), 6) for r in results if r.fired}
    reasons = [f"{r.signal}[{r.scope}]={r.value:.3f} >= {r.severe_threshold if r.severe else r.threshold:g}"
               + (" (severe)" if r.severe else "") for r in results if r.fired]

    def out(retrain: bool, status: str, why: list[str]) -> Decision:
        return Decision(retrain, status, why, fired, severe, n_rows, last_retrain, numbers)

    if n_rows < drift.min_batch_rows:
        return out(False, "too_few_rows", [f"{n_rows} rows < min_batch_rows {drift.min_batch_rows}"])
    wants = bool(severe) or len(fired) >= drift.signals_required
    if not wants:
        status = "below_threshold" if fired else "no_drift"
        why = reasons + ([f"{len(fired)} signal(s) fired < signals_required {drift.signals_required}"] if fired else [])
        return out(False, status, why)
    if later_request and later_request > ds:
        return out(False, "superseded", reasons + [f"a retrain was already requested for a later night ({later_request}); "
                                                   "that request covers this one"])
    if last_retrain and drift.cooldown_days > 0:
        when = max(ds, asof or ds)
        days = (dt.date.fromisoformat(when) - dt.date.fromisoformat(last_retrain[:10])).days
        if 0 <= days < drift.cooldown_days:
            late = "" if when == ds else f", the latest scored night ({ds} is checked late)"
            return out(False, "cooldown", reasons + [f"last retrain {last_retrain[:10]} is {days} day(s) before {when}{late} "
                                                      f"(cooldown_days {drift.cooldown_days})"])
    return out(True, "retrain", reasons)


__all__ = ["SIGNAL_THRESHOLDS", "Decision", "SignalResult", "apply_thresholds", "decide"]
