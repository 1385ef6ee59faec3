"""The synthetic review generator: shape, determinism, shares, coherence, drift, writing."""

from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
import pytest

from fbk_tasks.demo.generator import COLUMNS, DriftSpec, generate_reviews, write_reviews

DS = "2026-01-01"
CLEAN = dict(bad_share=0.0, pii_share=0.0, noise_share=0.0, duplicate_share=0.0)

CJK = r"[\u4e00-\u9fff]"
ISO = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"
NOISE = re.compile(
    r"<[a-z/]|&\w+;|&#\d+;|https?://|www\.|\.(?:com|net|cc)\b|加微信|加V|加QQ|【广告】|关注店铺"
    r"|[\U0001F300-\U0001FAFF\u2764]|[\uFF10-\uFF19\uFF21-\uFF3A\uFF41-\uFF5A]|\s{2,}|^\s|\s$|\t"
)
CARD = r"\b(?:\d{4} \d{4} \d{4} \d{4}|\d{16})\b"
CN_ID = r"\b\d{17}[\dX]\b"


@pytest.fixture(scope="module")
def default_frame() -> pd.DataFrame:
    return generate_reviews(20_000, seed=11)


@pytest.fixture(scope="module")
def clean_frame() -> pd.DataFrame:
    return generate_reviews(20_000, seed=11, **CLEAN)


def bad_mask(df: pd.DataFrame, ds: str = DS) -> pd.Series:
    """Rows a quality gate must reject (each generated bad row has exactly one of these)."""
    text = df["text"].fillna("")
    rating = df["rating"].astype("string")
    created = pd.to_datetime(df["created_at"], format="%Y-%m-%dT%H:%M:%SZ", errors="coerce", utc=True)
    day_end = pd.Timestamp(ds, tz="UTC") + pd.Timedelta(days=1)
    return (
        (text.str.strip() == "")
        | (text.str.len() > 5000)
        | ~text.str.contains(r"\w", regex=True)
        | (rating.notna() & ~rating.isin(list("12345")))
        | created.isna()
        | (created >= day_end)
    )


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()][::-1]
    total = sum(digits[0::2]) + sum(sum(divmod(2 * d, 10)) for d in digits[1::2])
    return total % 10 == 0


def cn_id_ok(number: str) -> bool:
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    return "10X98765432"[sum(int(c) * w for c, w in zip(number[:17], weights)) % 11] == number[17]


# ---------------------------------------------------------------------------- shape and ids


@pytest.mark.parametrize("n", [0, 1, 7, 1000])
def test_exact_rows_and_columns(n):
    df = generate_reviews(n)
    assert list(df.columns) == COLUMNS
    assert len(df) == n
    assert (df["source"] == "generated").all()
    assert df.index.equals(pd.RangeIndex(n))


def test_deterministic_and_seeded():
    kwargs = dict(seed=3, ds="2026-02-03", days=4, drift=DriftSpec(new_category=True, sentiment_flip=True))
    first = generate_reviews(3000, **kwargs)
    pd.testing.assert_frame_equal(first, generate_reviews(3000, **kwargs))
    other = generate_reviews(3000, **{**kwargs, "seed": 4})
    assert not first["text"].equals(other["text"])


def test_review_ids_and_duplicates():
    n, share = 5000, 0.02
    df = generate_reviews(n, id_prefix="demo", ds="2026-03-04", duplicate_share=share)
    assert df["review_id"].str.fullmatch(r"demo-2026-03-04-\d{7}").all()
    n_dup = round(n * share)
    assert df["review_id"].duplicated().sum() == n_dup
    assert df.duplicated().sum() == n_dup  # exact copies, not just the id
    assert df["review_id"].nunique() == n - n_dup
    # Unique ids are numbered 0..unique-1 in order; every copy comes after its original.
    first = df.drop_duplicates("review_id")
    assert first["review_id"].is_monotonic_increasing
    assert first["review_id"].iloc[-1] == f"demo-2026-03-04-{n - n_dup - 1:07d}"
    assert generate_reviews(500, duplicate_share=0.0)["review_id"].is_unique


def test_created_at_within_window():
    df = generate_reviews(5000, ds="2026-03-10", days=3, **CLEAN)
    assert df["created_at"].str.match(ISO).all()
    assert df["created_at"].min() >= "2026-03-08T00:00:00Z"
    assert df["created_at"].max() <= "2026-03-10T23:59:59Z"
    assert df["created_at"].str[:10].nunique() == 3


def test_catalogue(default_frame):
    df = default_frame
    assert set(df["product_category"]) == {"electronics", "home", "beauty", "books", "food", "clothing"}
    assert df["product_id"].str.fullmatch(r"P\d{4}").all()
    assert 25 <= df["product_id"].nunique() <= 35
    assert (df.groupby("product_id")["product_category"].nunique() == 1).all()
    names = df["product_name"]
    assert names.str.contains(CJK).any() and (~names.str.contains(CJK)).any()


def test_invalid_arguments():
    with pytest.raises(ValueError):
        generate_reviews(10, bad_share=1.5)
    with pytest.raises(ValueError):
        generate_reviews(10, ds="2026-13-01")
    with pytest.raises(ValueError):
        generate_reviews(10, days=0)
    with pytest.raises(ValueError):
        generate_reviews(-1)
    with pytest.raises(ValueError):
        generate_reviews(10, bad_share=0.5, pii_share=0.3, noise_share=0.3)


# ---------------------------------------------------------------------------- ratings


def test_rating_is_int64_without_bad_rows(clean_frame):
    rating = clean_frame["rating"]
    assert rating.dtype == "Int64"
    assert set(rating.dropna().unique()) == {1, 2, 3, 4, 5}
    assert 0.03 < rating.isna().mean() < 0.07
    assert 0.05 < clean_frame["title"].isna().mean() < 0.15


def test_rating_is_strings_with_bad_rows(default_frame):
    rating = default_frame["rating"]
    assert pd.api.types.is_string_dtype(rating)
    values = set(rating.dropna().unique())
    assert set("12345") <= values
    assert values - set("12345") <= {"0", "6", "five", "four stars"}
    assert "five" in values


def test_rating_agrees_with_text(clean_frame):
    text, rating = clean_frame["text"], clean_frame["rating"]
    positive = text.str.contains("Highly recommend|Love it|Worth every penny|五星好评|会回购|值得入手")
    negative = text.str.contains("Waste of money|Never again|Would not recommend|不会再买了|大家别买|差评")
    assert positive.sum() > 1000 and negative.sum() > 500
    share_pos = (rating[positive] >= 4).mean()
    share_neg = (rating[negative] <= 2).mean()
    # Coherent, but not a lookup table: label noise and mixed templates keep it below 1.
    assert 0.75 < share_pos < 0.97
    assert 0.70 < share_neg < 0.97
    labels = pd.cut(rating.astype("float"), [0, 2, 3, 5], labels=["negative", "neutral", "positive"])
    shares = labels.value_counts(normalize=True)
    assert 0.18 < shares["negative"] < 0.35 and 0.10 < shares["neutral"] < 0.25 and shares["positive"] > 0.45


def test_text_variety_and_languages(clean_frame):
    text = clean_frame["text"]
    assert text.nunique() > 15_000
    zh = text.str.contains(CJK)
    assert 0.26 < zh.mean() < 0.34
    assert text[zh].str.contains("，").mean() > 0.9  # Chinese punctuation, not translated English
    assert text[~zh].str.contains(r"^[A-Z]").mean() > 0.95


# ---------------------------------------------------------------------------- injected rows


def test_bad_rows_match_share():
    n, share = 8000, 0.05
    df = generate_reviews(n, bad_share=share, duplicate_share=0.0, seed=2)
    bad = bad_mask(df)
    assert bad.sum() == round(n * share)
    text = df["text"]
    assert (text == "").any()
    assert (text.str.strip() == "").sum() > (text == "").sum()  # whitespace-only ones too
    assert (text.str.len() >= 6000).any()
    assert df["rating"].isin(["0", "6"]).any() and df["rating"].isin(["five", "four stars"]).any()
    assert (df["created_at"] == "yesterday").any() or df["created_at"].isin(["last week", "32/13/2025"]).any()
    assert (df["created_at"].str[:10] == "2026-01-31").any()  # ds + 30 days
    assert (bad_mask(generate_reviews(3000, **CLEAN)) == 0).all()


def test_noise_rows_match_share():
    n, share = 6000, 0.2
    noisy = generate_reviews(n, noise_share=share, bad_share=0, pii_share=0, duplicate_share=0)
    flagged = noisy["text"].str.contains(NOISE)
    assert abs(flagged.mean() - share) < 0.02
    assert noisy["text"].str.contains("<p>|<div|<b>|<span").any()
    assert noisy["text"].str.contains("加微信|deals-shop").any()
    clean = generate_reviews(n, **CLEAN)
    assert clean["text"].str.contains(NOISE).sum() == 0


def test_pii_rows_and_harmless_numbers():
    n, share = 6000, 0.2
    df = generate_reviews(n, pii_share=share, bad_share=0, noise_share=0, duplicate_share=0)
    text = df["text"]
    patterns = {
        "email": r"[\w.]+@[\w-]+\.\w+",
        "phone_us": r"(?:\+1 )?\(?\b\d{3}\)?[ -]\d{3}-\d{4}\b",
        "phone_cn": r"(?<!\d)1[3-9]\d{9}(?!\d)",
        "card": CARD,
        "cn_id": CN_ID,
        "ipv4": r"\b\d{1,3}(?:\.\d{1,3}){3}\b",
    }
    hits = pd.concat({k: text.str.contains(p) for k, p in patterns.items()}, axis=1)
    assert hits.any().all()  # every kind occurs
    assert abs(hits.any(axis=1).mean() - share) < 0.03
    cards = text.str.extract(f"({CARD})")[0].dropna()
    assert len(cards) > 50 and cards.map(luhn_ok).all()
    ids = text.str.extract(f"({CN_ID})")[0].dropna()
    assert len(ids) > 20 and ids.map(cn_id_ok).all()
    # Numbers that are not PII, to be kept by masking.
    for pattern in (r"\$\d+\.\d\d", r"¥\d+", r"SKU-\d{5}", r"\bx\d\b|\d件", r"20\d\d-\d\d-\d\d"):
        assert text.str.contains(pattern).mean() > 0.01, pattern
    assert generate_reviews(3000, **CLEAN)["text"].str.contains(patterns["email"]).sum() == 0


# ---------------------------------------------------------------------------- drift


def _drift_stats(df: pd.DataFrame) -> dict[str, float]:
    text = df["text"]
    return {
        "new_category": (df["product_category"] == "smart_glasses").mean(),
        "new_complaints": text.str.contains("subscription fee|swelling|bulging|log into|login|订阅费|鼓包|登录").mean(),
        "sentiment_flip": (df["rating"] <= 2).mean(),
        "language_shift": text.str.contains(CJK).mean(),
    }


def test_each_drift_flag_moves_its_distribution():
    base = _drift_stats(generate_reviews(6000, seed=5, **CLEAN))
    assert base["new_category"] == 0 and base["new_complaints"] == 0
    for flag in ("new_category", "new_complaints", "sentiment_flip", "language_shift"):
        drifted = _drift_stats(generate_reviews(6000, seed=5, drift=DriftSpec(**{flag: True}), **CLEAN))
        assert drifted[flag] > base[flag] + 0.15, (flag, base[flag], drifted[flag])
        for other in set(base) - {flag}:  # and leaves the other distributions alone
            assert abs(drifted[other] - base[other]) < 0.05, (flag, other)
    assert generate_reviews(2000, seed=5, drift=DriftSpec(), **CLEAN).equals(generate_reviews(2000, seed=5, **CLEAN))


def test_drift_magnitudes():
    glasses = generate_reviews(4000, drift=DriftSpec(new_category=True), **CLEAN)
    assert (glasses["product_category"] == "smart_glasses").mean() > 0.5
    assert glasses["product_name"].str.contains("智能眼镜").any()
    flipped = generate_reviews(4000, drift=DriftSpec(sentiment_flip=True), **CLEAN)
    assert (flipped["rating"] <= 2).mean() > 0.55
    shifted = generate_reviews(4000, drift=DriftSpec(language_shift=True), **CLEAN)
    assert shifted["text"].str.contains(CJK).mean() > 0.75


# ---------------------------------------------------------------------------- writing


def _normalised(df: pd.DataFrame) -> pd.DataFrame:
    return df.astype("string").fillna("").reset_index(drop=True)


def _read(path, fmt: str) -> pd.DataFrame:
    if fmt == "csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    if fmt == "tsv":
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding="utf-8")
    if fmt == "jsonl":
        return pd.read_json(path, lines=True, dtype=False, convert_dates=False)
    return pd.read_parquet(path)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
@pytest.mark.parametrize("bad_share", [0.0, 0.1])
def test_write_reviews_round_trips(tmp_path, fmt, bad_share):
    df = generate_reviews(1500, seed=9, bad_share=bad_share, noise_share=0.2, pii_share=0.1)
    path = tmp_path / "out" / f"reviews.{fmt}"
    assert write_reviews(df, path, fmt) == path
    back = _read(path, fmt)
    assert list(back.columns) == COLUMNS
    if fmt == "jsonl" and df["rating"].dtype == "Int64":
        back["rating"] = back["rating"].astype("Int64")  # JSON numbers with nulls read back as floats
    pd.testing.assert_frame_equal(_normalised(back), _normalised(df))
    if fmt == "parquet":
        pd.testing.assert_frame_equal(back, df)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_write_reviews_replaces_atomically(tmp_path):
    path = tmp_path / "reviews.csv"
    write_reviews(generate_reviews(50), path)
    write_reviews(generate_reviews(20), path)
    assert len(pd.read_csv(path)) == 20
    assert path.read_bytes().decode("utf-8")
    with pytest.raises(ValueError):
        write_reviews(generate_reviews(5), tmp_path / "x.xml", "xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.csv"]


# ---------------------------------------------------------------------------- scale


@pytest.mark.slow
def test_one_million_rows():
    start = time.perf_counter()
    df = generate_reviews(1_000_000)
    elapsed = time.perf_counter() - start
    print(f"generate_reviews(1_000_000): {elapsed:.2f}s")
    assert len(df) == 1_000_000
    assert df["review_id"].nunique() == 1_000_000 - 10_000
    assert np.isclose((df["text"].str.strip() == "").mean(), 0.02 * 2 / 8, atol=0.002)
