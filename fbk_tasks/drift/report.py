"""The nightly drift report: one self-contained HTML file (charts embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from fbk_tasks.drift.monitor import NightMeasurement
    from fbk_tasks.drift.policy import Decision
    from fbk_tasks.settings import Settings


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _bars(title: str, shares: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ref, night = shares.get("reference", {}), shares.get("night", {})
    keys = sorted(set(ref) | set(night))
    fig, ax = plt.subplots(figsize=(6, 2.8))
    x = np.arange(len(keys))
    ax.bar(x - 0.2, [ref.get(k, 0) for k in keys], 0.4, label="reference")
    ax.bar(x + 0.2, [night.get(k, 0) for k in keys], 0.4, label="night")
    ax.set_xticks(x, keys, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("share")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def _hist(title: str, values: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ref, night = np.asarray(values.get("reference", []), float), np.asarray(values.get("night", []), float)
    fig, ax = plt.subplots(figsize=(6, 2.8))
    both = np.r_[ref, night]
    bins = np.linspace(0, np.quantile(both, 0.99) if len(both) else 1, 30)
    ax.hist(ref, bins=bins, alpha=0.5, density=True, label="reference")
    ax.hist(night, bins=bins, alpha=0.5, density=True, label="night")
    ax.set_xlabel("characters")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.3f}"


def _request_section(meas: "NightMeasurement", request: dict | None) -> list[str]:
    """What became of the retrain this night requested, or of the latest earlier request."""
    if not request:
        return []
    from fbk_tasks.drift.monitor import outcome_text

    out = request.get("outcome") or {}
    title = "Retrain outcome" if request["ds"] == meas.ds else f"Latest retrain request ({request['ds']})"
    css = {"promoted": "ok", "refused": "refused"}.get(out.get("verdict", ""), "")
    return [f"<h2>{html.escape(title)}</h2>", f"<p class='{css}'>{html.escape(outcome_text(request))}</p>"]


def render_report(meas: "NightMeasurement", decision: "Decision", request: dict | None = None) -> str:
    """The report's HTML text. ``request``: the latest retrain request on or before the night
    (``retrain_requests.jsonl`` entry, with the gate's ``outcome`` once answered)."""
    e = html.escape
    info = meas.info
    verdict = "RETRAIN REQUESTED" if decision.retrain else decision.status.replace("_", " ")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Drift report {e(meas.ds)}</title>",
        "<style>body{font-family:sans-serif;max-width:980px;margin:1em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}.fired{background:#fdd}.sev{font-weight:bold}.refused{background:#fdd}.ok{background:#dfd}</style>",
        "</head><body>",
        f"<h1>Drift report {e(meas.ds)}</h1>",
        f"<p><b>Model</b> {e(meas.model_name)} v{meas.model_version} &middot; <b>night rows</b> {meas.n_rows} &middot; "
        f"<b>reference</b> {info.get('n_reference')} sampled rows from {len(meas.reference_partitions)} partition(s) "
        f"({e(meas.reference_source)})</p>",
        f"<h2>Decision: {e(verdict)}</h2><ul>",
        *[f"<li>{e(r)}</li>" for r in decision.reasons or ["no signal reached its threshold"]],
        "</ul>",
        f"<p>Fired signals: {e(', '.join(decision.fired_signals) or 'none')}; severe: "
        f"{e(', '.join(decision.severe_signals) or 'none')}; last retrain: {e(str(decision.last_retrain))}</p>",
        *_request_section(meas, request),
        *[f"<p><b>Categories never seen in the reference:</b> {e(', '.join(r.detail.get('unseen_categories') or []))}</p>"
          for r in meas.signal_results() if r.signal == "category_mix_psi" and r.detail.get("unseen_categories")],
        f"<p><b>Text features used by the domain classifier:</b> {e(str(info.get('features')))} "
        f"({e(str(info.get('features_why', '')))})</p>",
        "<h2>Signals</h2><table><tr><th>signal</th><th>scope</th><th>value</th><th>threshold</th><th>severe at</th><th>fired</th></tr>",
    ]
    for r in meas.signal_results():
        cls = " class='fired'" if r.fired else ""
        parts.append(f"<tr{cls}><td>{e(r.signal)}</td><td>{e(r.scope)}</td><td>{_fmt(r.value)}</td><td>{_fmt(r.threshold)}</td>"
                     f"<td>{_fmt(r.severe_threshold)}</td><td class='{'sev' if r.severe else ''}'>"
                     f"{'SEVERE' if r.severe else ('yes' if r.fired else 'no')}</td></tr>")
    parts.append("</table>")
    terms = info.get("separating_terms") or {}
    parts.append("<h2>Words that separate the night from the reference</h2>"
                 "<p>Largest weights of a logistic regression on TF-IDF terms (night vs reference); shares are of reviews containing the term.</p>"
                 "<table><tr><th>night-side term</th><th>weight</th><th>night share</th><th>reference share</th></tr>")
    for t in terms.get("night", []):
        parts.append(f"<tr><td>{e(t['term'])}</td><td>{t['weight']:.2f}</td><td>{t['night_share']:.3f}</td><td>{t['reference_share']:.3f}</td></tr>")
    parts.append("</table>")
    novel = info.get("novel_terms") or []
    parts.append("<h3>Frequent terms never seen in the reference</h3><p>"
                 + (e(", ".join(f"{t['term']} ({t['night_share']:.1%})" for t in novel)) or "none") + "</p>")
    parts.append("<h2>Charts</h2>")
    for title, key in (("Predicted class shares", "prediction_shares"), ("Product categories", "category_shares"),
                       ("Languages", "language_shares")):
        if info.get(key):
            parts.append(f"<img alt='{e(title)}' src='data:image/png;base64,{_bars(title, info[key])}'>")
    if info.get("lengths"):
        parts.append(f"<img alt='Text length' src='data:image/png;base64,{_hist('Text length', info['lengths'])}'>")
    parts.append(f"<p><small>computed at {e(meas.computed_at)}</small></p></body></html>")
    return "\n".join(parts)


def write_report(settings: "Settings", meas: "NightMeasurement", decision: "Decision", path: Path,
                 request: dict | None = None) -> Path:
    from fbk_tasks.io.atomic import write_text

    return write_text(render_report(meas, decision, request), path)


__all__ = ["render_report", "write_report"]
