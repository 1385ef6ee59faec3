"""All signals of one night against one reference, from two in-memory frames.

Both frames carry ``text``, ``predicted`` (the model's label), and where known ``label`` (the
rating-derived label), ``language`` and ``product_category``. No file, registry or Airflow
access here: :mod:`fbk_tasks.drift.monitor` loads the frames, tests build them directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fbk_tasks.drift import signals as sg
from fbk_tasks.drift.policy import SignalResult, apply_thresholds
from fbk_tasks.settings import DriftSettings

FEATURES_MINILM = "minilm_embeddings"
FEATURES_CHAR = "char_ngram_tfidf"


@dataclass
class Measurement:
    results: list[SignalResult]
    info: dict[str, Any] = field(default_factory=dict)  # features used, terms, shares for charts


def _col(frame: pd.DataFrame, name: str) -> list:
    if name not in frame.columns:
        return [None] * len(frame)
    return [None if (v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA) else v for v in frame[name].tolist()]


def ensure_language(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``language`` (project's offline detector) when the frame lacks it."""
    if "language" in frame.columns:
        return frame
    import pyarrow as pa

    from fbk_tasks.text.lang import detect_language

    out = frame.copy()
    out["language"] = detect_language(pa.array([str(t) for t in frame["text"]], pa.string())).to_pylist()
    return out


def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)


def compute_signals(reference: pd.DataFrame, night: pd.DataFrame, drift: DriftSettings, *,
                    reference_embeddings: np.ndarray | None = None, use_encoder: bool = True) -> Measurement:
    """Measure every signal (scope ``all`` and, where rows suffice, ``category=<c>``) and apply
    the thresholds of ``drift``. ``reference_embeddings`` (rows aligned with ``reference``)
    saves re-encoding a cached reference. ``use_encoder=False`` never loads MiniLM (the domain
    classifier then uses character n-grams and the [UNK] signal is not measured)."""
    reference, night = ensure_language(reference), ensure_language(night)
    ref_text = [str(t) for t in reference["text"]]
    cur_text = [str(t) for t in night["text"]]
    res: list[SignalResult] = []
    info: dict[str, Any] = {"n_reference": len(reference), "n_night": len(night)}
    classes = sorted((set(_col(reference, "predicted")) | set(_col(night, "predicted"))) - {None})

    # 1. prediction drift
    ref_pred, cur_pred = sg.shares(_col(reference, "predicted"), classes), sg.shares(_col(night, "predicted"), classes)
    res.append(SignalResult("prediction_psi", "all", sg.psi(ref_pred, cur_pred), detail={"reference": ref_pred, "night": cur_pred}))
    info["prediction_shares"] = {"reference": ref_pred, "night": cur_pred}
    ref_cat, cur_cat = _col(reference, "product_category"), _col(night, "product_category")
    cats = sorted({c for c in cur_cat if c is not None})
    rp, cp = np.array(_col(reference, "predicted"), dtype=object), np.array(_col(night, "predicted"), dtype=object)
    rc, cc = np.array(ref_cat, dtype=object), np.array(cur_cat, dtype=object)
    per_cat_ok = [c for c in cats if (rc == c).sum() >= drift.min_category_rows and (cc == c).sum() >= drift.min_category_rows]
    for c in per_cat_ok:
        a, b = sg.shares(rp[rc == c], classes), sg.shares(cp[cc == c], classes)
        res.append(SignalResult("prediction_psi", f"category={c}", sg.psi(a, b),
                                detail={"reference": a, "night": b, "n_night": int((cc == c).sum())}))

    # 2. input drift: structured mixes and text length
    a, b = sg.shares(ref_cat), sg.shares(cur_cat)
    unseen = sorted(k for k, v in b.items() if v > 0 and a.get(k, 0) == 0)
    res.append(SignalResult("category_mix_psi", "all", sg.mix_psi(a, b), detail={"reference": a, "night": b, "unseen_categories": unseen}))
    info["category_shares"] = {"reference": a, "night": b}
    a, b = sg.shares(_col(reference, "language")), sg.shares(_col(night, "language"))
    res.append(SignalResult("language_mix_psi", "all", sg.mix_psi(a, b), detail={"reference": a, "night": b}))
    info["language_shares"] = {"reference": a, "night": b}
    rl, cl = sg.text_lengths(ref_text), sg.text_lengths(cur_text)
    value, edges = sg.binned_psi(rl, cl)
    res.append(SignalResult("text_length_psi", "all", value, detail={
        "reference_median": float(np.median(rl)) if len(rl) else None, "night_median": float(np.median(cl)) if len(cl) else None,
        "bin_edges": edges}))
    rng = np.random.default_rng(drift.seed)  # a sample is enough for the report's histogram
    info["lengths"] = {k: (v if len(v) <= 5000 else rng.choice(v, 5000, replace=False)).tolist()
                       for k, v in (("reference", rl), ("night", cl))}

    # 3. input drift on the text itself
    zh_ref, zh_cur = sg.cjk_share(ref_text), sg.cjk_share(cur_text)
    if use_encoder:
        ur, uc = sg.unk_rates(ref_text), sg.unk_rates(cur_text)
        res.append(SignalResult("unk_rate_increase", "all", float(uc.mean() - ur.mean()) if len(ur) and len(uc) else None,
                                detail={"reference": float(ur.mean()) if len(ur) else None, "night": float(uc.mean()) if len(uc) else None}))
    ir, ic = sg.balanced_indices(len(ref_text), len(cur_text), drift.domain_max_rows, drift.seed)
    cjk_dominant = max(zh_ref, zh_cur) > drift.cjk_dominant_share
    features = FEATURES_MINILM if (use_encoder and not cjk_dominant) else FEATURES_CHAR
    why = ("Chinese-dominant batch (the English encoder cannot read it)" if cjk_dominant else
           "encoder disabled" if not use_encoder else "English-dominant batch")
    if len(ir) >= drift.domain_cv_folds:
        if features == FEATURES_MINILM:
            xr = reference_embeddings[ir] if reference_embeddings is not None else sg.embed([ref_text[i] for i in ir], drift.embed_max_length)
            xc = sg.embed([cur_text[i] for i in ic], drift.embed_max_length)
        else:
            xr, xc = sg.char_ngram_features([ref_text[i] for i in ir], [cur_text[i] for i in ic])
        auc = sg.domain_auc(xr, xc, drift.domain_cv_folds, drift.seed)
    else:
        auc = float("nan")
    terms = sg.separating_terms([ref_text[i] for i in ir], [cur_text[i] for i in ic], drift.top_terms, drift.seed)
    res.append(SignalResult("domain_auc", "all", auc, detail={
        "features": features, "why": why, "rows_per_side": int(len(ir)), "cjk_share_reference": round(zh_ref, 4),
        "cjk_share_night": round(zh_cur, 4), "top_night_terms": [t["term"] for t in terms["night"][:10]]}))
    info.update(features=features, features_why=why, separating_terms=terms)
    share, novel = sg.novel_terms(ref_text, cur_text, top=drift.top_terms)
    res.append(SignalResult("novel_term_share", "all", share, detail={"terms": novel}))
    info["novel_terms"] = novel

    # 4. live quality where labels exist: against the reference rows the model did not train on
    # (its training rows agree at training accuracy, which would read as a drop every night)
    rt, ct = np.array(_col(reference, "label"), dtype=object), np.array(_col(night, "label"), dtype=object)
    trained_on = _col(reference, "trained_on")
    known = any(v is not None for v in trained_on)
    held_out = ~np.array([v is not None and bool(v) for v in trained_on], dtype=bool)
    ra, rn = sg.agreement(rp[held_out], rt[held_out])
    rows = "not trained on" if known else "all (which rows the model trained on is not known)"
    if rn < drift.min_category_rows:
        ra = None  # too few held-out labelled rows to say what the model does on new ones
    ca, cn = sg.agreement(_col(night, "predicted"), _col(night, "label"))
    drop = None if ra is None or ca is None or cn < drift.min_category_rows else ra - ca
    res.append(SignalResult("agreement_drop", "all", drop, detail={"reference": _num(ra), "night": _num(ca), "rated_night_rows": cn,
                                                                   "reference_rows": rn, "reference_rows_used": rows}))
    info["agreement"] = {"reference": ra, "night": ca, "reference_rows": rn, "reference_rows_used": rows}
    for c in per_cat_ok:
        m = held_out & (rc == c)
        a, na = sg.agreement(rp[m], rt[m])
        b, nb = sg.agreement(cp[cc == c], ct[cc == c])
        if a is not None and b is not None and min(na, nb) >= drift.min_category_rows:
            res.append(SignalResult("agreement_drop", f"category={c}", a - b, detail={"reference": _num(a), "night": _num(b), "rated_night_rows": nb}))
    return Measurement(apply_thresholds(res, drift), info)


__all__ = ["FEATURES_CHAR", "FEATURES_MINILM", "Measurement", "compute_signals", "ensure_language"]
