"""Signal functions on small hand-made inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fbk_tasks.drift import signals as sg


def test_psi_is_zero_for_equal_shares_and_grows_with_shift():
    a = {"negative": 0.25, "neutral": 0.15, "positive": 0.6}
    assert sg.psi(a, a) == pytest.approx(0.0, abs=1e-12)
    flipped = {"negative": 0.65, "neutral": 0.10, "positive": 0.25}
    assert sg.psi(a, flipped) == pytest.approx(0.71, abs=0.01)
    assert sg.psi(a, {"negative": 0.3, "neutral": 0.15, "positive": 0.55}) < 0.02


def test_psi_of_a_new_class_is_large_but_finite():
    v = sg.psi({"a": 1.0}, {"a": 0.4, "b": 0.6})
    assert math.isfinite(v) and v > 3


def test_shares_keeps_listed_categories_and_drops_nulls():
    assert sg.shares(["a", "a", None, "b"], ["a", "b", "c"]) == {"a": 2 / 3, "b": 1 / 3, "c": 0.0}


def test_a_mix_with_no_values_on_one_side_is_not_measured():
    """A night from a source without categories (all null) against a reference with them: not a
    PSI against a made-up uniform mix (0.88 against a 90/10 reference, 0 against one category)."""
    reference = sg.shares(["electronics"] * 9 + ["books"])
    night = sg.shares([None] * 50)
    assert sg.psi(reference, night) > 0.8  # what measuring it anyway gave
    assert sg.mix_psi(reference, night) is None and sg.mix_psi(night, reference) is None
    assert sg.mix_psi(sg.shares(["books"]), sg.shares([None])) is None
    assert sg.mix_psi(reference, sg.shares(["electronics"] * 5 + ["books"] * 5)) == pytest.approx(
        sg.psi(reference, sg.shares(["electronics"] * 5 + ["books"] * 5)))


def test_binned_psi():
    rng = np.random.default_rng(0)
    ref = rng.normal(100, 20, 2000)
    assert sg.binned_psi(ref, rng.normal(100, 20, 500))[0] < 0.05
    assert sg.binned_psi(ref, rng.normal(160, 20, 500))[0] > 1.0


def test_agreement_ignores_rows_without_rating():
    share, n = sg.agreement(["positive", "negative", "neutral"], ["positive", None, "negative"])
    assert (share, n) == (0.5, 2)
    assert sg.agreement(["positive"], [None]) == (None, 0)


def test_cjk_share():
    assert sg.cjk_share(["质量很好", "great product", "很好很好 ok", "好 okay"]) == pytest.approx(2 / 4)


def test_novel_terms_find_new_vocabulary_only():
    ref = ["the screen is great", "bad screen and slow delivery", "great price"] * 20
    night = ["the screen is great"] * 30 + ["battery started swelling, bad"] * 10
    share, terms = sg.novel_terms(ref, night)
    assert share == pytest.approx(0.25)
    assert {"battery", "swelling", "started swelling"} <= {t["term"] for t in terms}
    assert sg.novel_terms(ref, ref[:30])[0] == 0.0


def test_separating_terms_name_the_night_side():
    ref = ["good phone", "nice screen", "fast delivery", "good price"] * 10
    night = ["app login failed", "subscription fee again", "good phone"] * 10
    terms = sg.separating_terms(ref, night, top=3)
    assert {t["term"] for t in terms["night"]} & {"app", "login", "subscription", "fee", "app login", "subscription fee"}


def test_domain_auc_separable_vs_identical():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (200, 5)), rng.normal(0, 1, (200, 5))
    assert abs(sg.domain_auc(a, b, seed=1) - 0.5) < 0.1
    assert sg.domain_auc(a, b + 2.0, seed=1) > 0.95


def test_balanced_indices_caps_both_sides():
    i, j = sg.balanced_indices(1000, 300, 200, seed=0)
    assert len(i) == len(j) == 200 and len(set(i)) == 200 and j.max() < 300


@pytest.mark.slow
def test_minilm_embeddings_and_unknown_tokens():
    emb = sg.embed(["the battery is great", "the battery is excellent", "terrible delivery service"])
    assert emb.shape == (3, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]
    unk = sg.unk_rates(["great product", "质量非常好，很满意"])
    assert unk[0] == 0.0 and unk[1] > 0.3
    # emoji reach the model as their names (train.emoji_to_text): they are not unknown to it
    assert sg.unk_rates(["thanks🙏 so much", "🇺🇸"]).tolist() == [0.0, 1.0]


def test_novel_terms_not_fooled_by_a_small_reference_and_a_sentiment_flip():
    """A flipped night makes negative words common; with only 200 reference reviews some of them
    are absent from the sample by chance. The expected-count floor keeps them from counting as new."""
    from fbk_tasks.demo.generator import DriftSpec
    from fbk_tasks.drift.testing import generated_frame

    ref = generated_frame(200, seed=1, ds="2026-03-01")["text"].tolist()
    flipped = generated_frame(200, seed=10, ds="2026-03-02", drift=DriftSpec(sentiment_flip=True))["text"].tolist()
    complaints = generated_frame(200, seed=10, ds="2026-03-02", drift=DriftSpec(new_complaints=True))["text"].tolist()
    assert sg.novel_terms(ref, flipped)[0] < 0.05
    assert sg.novel_terms(ref, complaints)[0] > 0.1
