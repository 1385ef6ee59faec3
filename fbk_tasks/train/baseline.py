"""Baseline candidate: TF-IDF (word 1-2 grams for English, char 1-3 grams for Chinese) + logistic regression."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.feature_extraction.text import TfidfVectorizer

from fbk_tasks.settings import TrainSettings

# Share of one language above which the baseline uses only that language's features.
SINGLE_LANGUAGE_SHARE = 0.9


def choose_features(language_share: dict[str, float]) -> str:
    """'word' (English), 'char' (Chinese) or 'union' (mixed) from the training language mix."""
    if language_share.get("zh", 0.0) >= SINGLE_LANGUAGE_SHARE:
        return "char"
    if language_share.get("en", 0.0) >= SINGLE_LANGUAGE_SHARE:
        return "word"
    return "union"


def build_pipeline(features: str, t: TrainSettings, n_rows: int) -> Pipeline:
    min_df = 2 if n_rows >= 2000 else 1
    word = TfidfVectorizer(
        analyzer="word", ngram_range=(1, 2), lowercase=True, sublinear_tf=True, min_df=min_df,
        max_features=t.baseline_max_features, token_pattern=r"(?u)\b\w+\b|[!?]",
    )
    char = TfidfVectorizer(
        analyzer="char", ngram_range=(1, 3), lowercase=True, sublinear_tf=True, min_df=min_df,
        max_features=t.baseline_max_features,
    )
    vec = {"word": word, "char": char, "union": FeatureUnion([("word", word), ("char", char)])}[features]
    clf = LogisticRegression(class_weight="balanced", max_iter=2000, C=4.0, random_state=t.seed)
    return Pipeline([("tfidf", vec), ("clf", clf)])


@dataclass
class BaselineResult:
    model: Pipeline
    features: str
    train_seconds: float
    samples_per_second: float


def train_baseline(texts: list[str], labels: list[str], classes: list[str], language_share: dict[str, float],
                   t: TrainSettings, sample_weight: np.ndarray | None = None) -> BaselineResult:
    features = choose_features(language_share)
    pipe = build_pipeline(features, t, len(texts))
    start = time.perf_counter()
    pipe.fit(texts, labels, **({} if sample_weight is None else {"clf__sample_weight": np.asarray(sample_weight, dtype=float)}))
    secs = time.perf_counter() - start
    assert list(pipe.classes_) == sorted(classes)
    return BaselineResult(pipe, features, secs, len(texts) / max(secs, 1e-9))


def predict_proba(pipe: Pipeline, texts: list[str], classes: list[str]) -> np.ndarray:
    """Probabilities in ``classes`` order (sklearn orders classes alphabetically)."""
    proba = pipe.predict_proba(list(texts))
    order = [list(pipe.classes_).index(c) for c in classes]
    return proba[:, order]
