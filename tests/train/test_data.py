"""Training data assembly, corrections, degenerate data, golden set and the split (fast, no models)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.metrics import f1_score

from fbk_tasks.schema import CURATED_SCHEMA
from fbk_tasks.train.data import (
    PreparedData,
    TrainingDataError,
    class_scheme,
    content_hash,
    current_golden,
    load_labelled,
    prepare_training_data,
    row_weights,
    take_golden,
)
from fbk_tasks.train.evaluate import evaluate, expected_calibration_error
from fbk_tasks.train.transformer import length_grouped_batches

from .conftest import make_reviews, write_partition


def _settings(settings, **train):
    for k, v in {"min_rows_per_class": 5, **train}.items():
        setattr(settings.train, k, v)
    return settings


def test_assembly_applies_corrections_drops_unlabelled_and_filters_range(settings):
    s = _settings(settings)
    t1 = make_reviews(60, ds="2026-11-01", seed=1)
    labels = t1.column("label").to_pylist()
    labels[0] = None
    labels[1] = None
    t1 = t1.set_column(t1.schema.get_field_index("label"), "label", pa.array(labels, pa.string()))
    write_partition(s.curated_dir, t1)
    write_partition(s.curated_dir, make_reviews(30, ds="2026-11-05", seed=2))
    rid = t1.column("review_id")[3].as_py()
    old = t1.column("label")[3].as_py()
    new = "positive" if old != "positive" else "negative"
    s.labels_dir.mkdir(parents=True)
    pd.DataFrame({"review_id": [rid, t1.column("review_id")[0].as_py()], "label": [new, "neutral"]}).to_csv(
        s.labels_dir / "fix.csv", index=False)

    got = load_labelled(s)
    assert got.partitions == ["2026-11-01", "2026-11-05"]
    assert got.rows_read == 90 and got.dropped_unlabelled == 1  # row 0 gained a label from the correction
    assert got.corrections_applied == 2
    frame = got.frame.set_index("review_id")
    assert frame.loc[rid, "label"] == new
    assert load_labelled(s, ds_from="2026-11-02").partitions == ["2026-11-05"]
    assert load_labelled(s, ds_to="2026-11-01").partitions == ["2026-11-01"]


def test_label_confidence_is_read_reset_by_corrections_and_absent_from_older_partitions(settings):
    """Partitions written before label_confidence existed read as null; a correction clears the
    source's confidence (the person's label weighs fully); the training split carries it."""
    s = _settings(settings)
    old = make_reviews(30, ds="2026-11-01", seed=1)
    write_partition(s.curated_dir, old.drop_columns(["label_confidence"]))  # the pre-column layout
    new = make_reviews(60, ds="2026-11-05", seed=2)
    conf = [0.67 if i % 2 else 1.0 for i in range(60)]
    new = new.set_column(new.schema.get_field_index("label_confidence"), "label_confidence", pa.array(conf, pa.float64()))
    write_partition(s.curated_dir, new)
    corrected = new.column("review_id")[1].as_py()  # confidence 0.67
    s.labels_dir.mkdir(parents=True)
    pd.DataFrame({"review_id": [corrected], "label": ["neutral"]}).to_csv(s.labels_dir / "fix.csv", index=False)

    frame = load_labelled(s).frame.set_index("review_id")
    assert frame.loc[frame["ds"] == "2026-11-01", "label_confidence"].isna().all()
    assert pd.isna(frame.loc[corrected, "label_confidence"])
    assert (frame.loc[frame["ds"] == "2026-11-05", "label_confidence"].dropna() > 0.6).all()
    assert frame["label_confidence"].notna().sum() == 59

    prep = prepare_training_data(s)
    train = pd.read_parquet(prep.train_path)
    assert prep.train_rows_with_label_confidence == int(train["label_confidence"].notna().sum()) > 0
    assert 0.67 < prep.train_label_confidence_mean < 1.0
    assert PreparedData.load(prep.dir).train_rows_with_label_confidence == prep.train_rows_with_label_confidence


def test_row_weights_are_confidence_to_the_power_and_one_without_it():
    frame = pd.DataFrame({"label_confidence": [1.0, 0.5, None, 0.0]})
    assert row_weights(frame, 2.0).tolist() == [1.0, 0.25, 1.0, 0.0]
    assert row_weights(frame, 0.0) is None  # off
    assert row_weights(pd.DataFrame({"label_confidence": [None, None]}), 2.0) is None  # no source gave one
    assert row_weights(pd.DataFrame({"text": ["a"]}), 2.0) is None  # prepared before the column existed
    with pytest.raises(TrainingDataError, match="label_confidence 0"):
        row_weights(pd.DataFrame({"label_confidence": [0.0, 0.0]}), 1.0)


@pytest.mark.parametrize(
    "case, message",
    [
        ("one_class", "only one class"),
        ("too_few", "fewer than min_rows_per_class"),
        ("empty_text", "empty text"),
        ("no_labels", "no labelled rows"),
        ("no_partitions", "no curated partitions"),
    ],
)
def test_degenerate_data_is_refused(settings, case, message):
    s = _settings(settings)
    if case == "one_class":
        write_partition(s.curated_dir, make_reviews(40, classes=("positive",)))
    elif case == "too_few":
        t = make_reviews(40, classes=("negative", "positive"))
        t2 = make_reviews(2, classes=("neutral",), prefix="n")
        write_partition(s.curated_dir, pa.concat_tables([t, t2]))
    elif case == "empty_text":
        t = make_reviews(40)
        texts = t.column("text").to_pylist()
        texts[5] = "   "
        write_partition(s.curated_dir, t.set_column(t.schema.get_field_index("text"), "text", pa.array(texts)))
    elif case == "no_labels":
        t = make_reviews(40)
        write_partition(s.curated_dir, t.set_column(t.schema.get_field_index("label"), "label", pa.nulls(40, pa.string())))
    with pytest.raises(TrainingDataError, match=message):
        prepare_training_data(s)
    assert not (s.data_dir / "mlflow").exists()  # nothing logged or registered
    assert current_golden(s) is None


def test_data_refused_after_the_golden_draw_fixes_no_golden_set(settings):
    """Enough neutral rows in all, too few once the golden set takes its share: refused, and no
    golden set is kept (it would have fixed the golden set of every later run)."""
    s = _settings(settings, golden_fraction=0.2, min_rows_per_class=20)
    t = make_reviews(120, classes=("negative", "positive"))
    write_partition(s.curated_dir, pa.concat_tables([t, make_reviews(21, classes=("neutral",), prefix="n")]))
    assert len(load_labelled(s).frame) == 141  # the labelled data alone passes
    with pytest.raises(TrainingDataError, match="fewer than min_rows_per_class"):
        prepare_training_data(s)
    assert current_golden(s) is None and not (s.data_dir / "golden").exists()


def test_data_refused_after_the_dev_split_fixes_no_golden_set(settings):
    """Enough neutral rows after the golden draw, too few once dev takes its share: refused by
    the second check, and still no golden set kept."""
    s = _settings(settings, golden_fraction=0.2, min_rows_per_class=20)
    t = make_reviews(120, classes=("negative", "positive"))
    write_partition(s.curated_dir, pa.concat_tables([t, make_reviews(26, classes=("neutral",), prefix="n")]))
    with pytest.raises(TrainingDataError, match="fewer than min_rows_per_class"):
        prepare_training_data(s)
    assert current_golden(s) is None and not (s.data_dir / "golden").exists()


def test_a_golden_set_that_moved_is_found_and_one_that_is_gone_or_changed_is_an_error(settings, tmp_path):
    """golden.json names its file relative to itself (an older absolute path still works when it
    exists); a missing file is an error, never a reason to draw a new set from rows the champion
    trained on, and a file changed after it was taken fails its content hash."""
    import shutil

    s = _settings(settings, golden_fraction=0.2)
    write_partition(s.curated_dir, make_reviews(300, seed=3))
    g = prepare_training_data(s) and current_golden(s)
    meta = s.data_dir / "golden" / "golden.json"
    assert json.loads(meta.read_text())["path"] == g.path.name

    from fbk_tasks.settings import load_settings

    moved = load_settings(data_dir=tmp_path / "elsewhere", train=s.train.model_dump())
    shutil.copytree(s.data_dir, moved.data_dir)
    shutil.rmtree(s.data_dir / "golden")
    assert current_golden(moved).sha256 == g.sha256 and len(current_golden(moved).load()) == g.rows
    old_style = json.loads((moved.data_dir / "golden" / "golden.json").read_text())
    (moved.data_dir / "golden" / "golden.json").write_text(json.dumps({**old_style, "path": str(g.path)}))  # gone now
    assert current_golden(moved).path == moved.data_dir / "golden" / g.path.name
    assert prepare_training_data(moved).golden_sha256 == g.sha256

    gold = current_golden(moved).load()
    gold.loc[0, "label"] = "positive" if gold.loc[0, "label"] != "positive" else "negative"
    gold.to_parquet(current_golden(moved).path)
    with pytest.raises(TrainingDataError, match="does not match its recorded sha256"):
        prepare_training_data(moved)
    current_golden(moved).path.unlink()
    with pytest.raises(TrainingDataError, match="is missing from"):
        prepare_training_data(moved)
    assert json.loads((moved.data_dir / "golden" / "golden.json").read_text())["sha256"] == g.sha256  # not re-taken


def test_unknown_correction_label_is_refused(settings):
    s = _settings(settings)
    write_partition(s.curated_dir, make_reviews(40))
    s.labels_dir.mkdir(parents=True)
    (s.labels_dir / "bad.csv").write_text("review_id,label\nx,great\n")
    with pytest.raises(TrainingDataError, match="unknown label"):
        load_labelled(s)


def test_golden_set_is_taken_once_hashed_and_never_trained_on(settings):
    s = _settings(settings, golden_fraction=0.2, dev_fraction=0.1, max_train_samples=None)
    write_partition(s.curated_dir, make_reviews(300, seed=3))
    prep = prepare_training_data(s)
    golden = current_golden(s)
    gold = golden.load()
    train, dev = pd.read_parquet(prep.train_path), pd.read_parquet(prep.dev_path)
    assert len(gold) == 60 and golden.sha256 == content_hash(gold) == prep.golden_sha256
    assert json.loads((s.data_dir / "golden" / "golden.json").read_text())["sha256"] == golden.sha256
    assert not set(gold.review_id) & set(train.review_id)
    assert not set(gold.review_id) & set(dev.review_id)
    assert not set(dev.review_id) & set(train.review_id)
    assert len(train) + len(dev) + len(gold) == 300
    # stratified: every class in every split, proportions kept
    for part in (gold, dev, train):
        assert class_scheme(part.label) == ["negative", "neutral", "positive"]
    assert gold.label.value_counts().max() - gold.label.value_counts().min() <= 1

    # more data arrives: the golden set stays, its rows stay out of training
    write_partition(s.curated_dir, make_reviews(90, ds="2026-11-02", seed=4))
    prep2 = prepare_training_data(s)
    assert prep2.golden_sha256 == golden.sha256
    assert not set(gold.review_id) & set(pd.read_parquet(prep2.train_path).review_id)
    assert PreparedData.load(prep2.dir).train_rows == prep2.train_rows
    assert prep2.lineage()["data.partitions"] == "2026-11-01,2026-11-02"

    # an explicit re-take changes it
    again = take_golden(s, load_labelled(s).frame)
    assert again.sha256 != golden.sha256 and current_golden(s).sha256 == again.sha256


def test_a_golden_text_under_another_id_is_not_trained_on(settings):
    """The same review re-posted under a new id (beyond ingestion's dedup window, or under
    another product) must not train a model that is then scored on it in the golden set."""
    s = _settings(settings, golden_fraction=0.2, dev_fraction=0.1, max_train_samples=None)
    write_partition(s.curated_dir, make_reviews(300, seed=3))
    prepare_training_data(s)
    gold = current_golden(s).load()
    later = make_reviews(30, ds="2026-11-20", seed=9).to_pandas()
    reposted = later.index[:3]
    later.loc[reposted, "text"] = ["  " + t.upper() + "!!" for t in gold.text[:3]]  # same text, other case and punctuation
    later.loc[reposted, "product_id"] = "other-shop"
    write_partition(s.curated_dir, pa.Table.from_pandas(later, schema=CURATED_SCHEMA, preserve_index=False))

    prep = prepare_training_data(s)
    seen = pd.concat([pd.read_parquet(prep.train_path), pd.read_parquet(prep.dev_path)])
    assert not set(later.review_id[reposted]) & set(seen.review_id)
    assert set(later.review_id[3:]) <= set(seen.review_id)  # the rest of the night trains
    assert prep.golden_text_overlap == 3 and prep.lineage()["data.golden_text_overlap"] == "3"
    assert prep.train_rows + prep.dev_rows == 300 - len(gold) + 27


def test_no_text_is_in_both_train_and_dev(settings):
    """Dev F1 picks the epoch: a dev review whose text is also a training row (re-posted under
    another id) would reward memorising. Such rows stay out of train, counted in the lineage."""
    from fbk_tasks.text.clean import normalize_for_dedup

    s = _settings(settings, golden_fraction=0.2, dev_fraction=0.2, max_train_samples=None)
    frame = make_reviews(300, seed=4).to_pandas()
    frame.loc[150:, "text"] = frame.loc[:149, "text"].to_numpy()  # every text twice, under two ids
    write_partition(s.curated_dir, pa.Table.from_pandas(frame, schema=CURATED_SCHEMA, preserve_index=False))
    prep = prepare_training_data(s)

    def texts(path):
        return set(normalize_for_dedup(pa.array(pd.read_parquet(path)["text"], pa.string())).to_pylist())

    assert not texts(prep.train_path) & texts(prep.dev_path)
    assert prep.dev_text_overlap > 0 and prep.lineage()["data.dev_text_overlap"] == str(prep.dev_text_overlap)
    assert prep.train_rows + prep.dev_rows + prep.dev_text_overlap + prep.golden_text_overlap == 300 - current_golden(s).rows


def test_outside_golden_matches_normalised_text_and_keeps_missing_text(tmp_path):
    from fbk_tasks.train.data import outside_golden

    golden = pd.DataFrame({"review_id": ["g1", "g2"], "text": ["Great!", None]})
    frame = pd.DataFrame({"review_id": ["a", "b", "c", "g2", "d"], "text": ["great", " GREAT !!!", np.nan, "other", "not great"]})
    kept, overlap = outside_golden(frame, golden)
    assert kept["review_id"].tolist() == ["c", "d"] and overlap == 2  # a missing text is left to check_trainable


def test_max_train_samples_caps_training_rows(settings):
    s = _settings(settings, max_train_samples=60)
    write_partition(s.curated_dir, make_reviews(300, seed=5))
    prep = prepare_training_data(s)
    assert prep.train_rows == 60 and set(prep.rows_per_class.values()) == {20}


def test_length_grouped_batches_cover_every_row_once_and_group_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=1000)
    batches = length_grouped_batches(lengths, batch_size=16, group_factor=8, rng=np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    # padding waste far below random batching
    waste = sum(lengths[b].max() * len(b) - lengths[b].sum() for b in batches)
    random_batches = np.array_split(rng.permutation(1000), len(batches))
    random_waste = sum(lengths[b].max() * len(b) - lengths[b].sum() for b in random_batches)
    assert waste < 0.3 * random_waste


def test_evaluation_metrics_slices_and_ece():
    frame = pd.DataFrame({
        "label": ["negative", "positive"] * 50,
        "language": ["en"] * 60 + ["zh"] * 40,
        "product_category": ["a"] * 100,
    })
    proba = np.tile([[0.9, 0.1], [0.2, 0.8]], (50, 1))
    ev = evaluate(frame, proba, ["negative", "positive"], min_slice_rows=50)
    assert ev.macro_f1 == 1.0 and ev.accuracy == 1.0
    assert set(ev.slices) == {"language=en", "product_category=a"}  # zh has 40 < 50 rows
    assert ev.ece == pytest.approx(0.15, abs=1e-6)
    assert expected_calibration_error(np.array([1.0, 1.0]), np.array([True, True])) == 0.0
    assert "golden_slice_f1.language.en" in ev.metrics("golden")


def test_macro_f1_runs_over_the_classes_present():
    """A slice fed by a binary source (no neutral) is judged on its two classes, not given a 0 for
    neutral; a golden class the model cannot predict counts, with F1 0."""
    classes = ["negative", "neutral", "positive"]
    frame = pd.DataFrame({"label": ["negative", "positive"] * 30 + ["neutral"] * 20,
                          "language": ["zh"] * 60 + ["en"] * 20, "product_category": ["a"] * 80})
    proba = np.array([[0.9, 0.05, 0.05], [0.05, 0.05, 0.9]] * 30 + [[0.1, 0.8, 0.1]] * 20)
    ev = evaluate(frame, proba, classes, min_slice_rows=20)
    assert ev.macro_f1 == 1.0 and ev.slices["language=zh"] == 1.0  # was 2/3 over all three classes

    binary = evaluate(frame, proba[:, [0, 2]], ["negative", "positive"], min_slice_rows=20)
    assert binary.per_class["neutral"]["f1"] == 0.0 and binary.per_class["neutral"]["support"] == 20
    assert binary.macro_f1 == pytest.approx(sum(binary.per_class[c]["f1"] for c in classes) / 3)
    assert binary.macro_f1 < 0.9 and binary.classes == ["negative", "positive", "neutral"]


def test_a_stray_prediction_of_a_class_the_slice_lacks_costs_recall_not_a_third():
    """One neutral prediction among 60 rows of a binary slice: the slice is still averaged over its
    two classes (the wrong row lowers the true class's recall), so a 3-class candidate is not
    refused by the gate's slice check for one row (with the predicted class counted it was 0.66)."""
    classes = ["negative", "neutral", "positive"]
    frame = pd.DataFrame({"label": ["negative", "positive"] * 30, "language": ["zh"] * 60})
    proba = np.array([[0.9, 0.05, 0.05], [0.05, 0.05, 0.9]] * 30)
    proba[0] = [0.1, 0.8, 0.1]  # a negative row predicted neutral
    ev = evaluate(frame, proba, classes, min_slice_rows=20)
    expected = f1_score(frame["label"], ["neutral"] + list(frame["label"][1:]), labels=["negative", "positive"],
                        average="macro")
    assert ev.slices["language=zh"] == pytest.approx(expected) and ev.macro_f1 == pytest.approx(expected)
    assert ev.macro_f1 > 0.98 and ev.per_class["neutral"]["support"] == 0


def test_a_class_with_one_row_in_a_slice_does_not_swing_the_slice():
    """A 60-row slice with 40 negative, 19 positive and 1 neutral row: a candidate that gets only
    the neutral row wrong scored 0.66 on the slice (the neutral class's F1 of 0 averaged in), so
    the gate's slice check refused it against a champion perfect on the slice but worse overall.
    Classes under train.min_slice_class_rows true rows in a slice are left out of its average;
    the overall macro-F1 still counts the miss."""
    classes = ["negative", "neutral", "positive"]
    frame = pd.DataFrame({"label": ["negative"] * 40 + ["positive"] * 19 + ["neutral"], "language": ["xx"] * 60})
    proba = np.array([[0.9, 0.05, 0.05]] * 40 + [[0.05, 0.05, 0.9]] * 19 + [[0.8, 0.1, 0.1]])
    ev = evaluate(frame, proba, classes, min_slice_rows=50)
    assert ev.slices["language=xx"] == pytest.approx(f1_score(
        frame["label"], ["negative"] * 40 + ["positive"] * 19 + ["negative"], labels=["negative", "positive"], average="macro"))
    assert ev.slices["language=xx"] > 0.98 and ev.macro_f1 < 0.7  # the overall score still sees it
    every_class = evaluate(frame, proba, classes, min_slice_rows=50, min_slice_class_rows=1)
    assert every_class.slices["language=xx"] < 0.7
    assert evaluate(frame, proba, classes, min_slice_rows=50, min_slice_class_rows=41).slices == {}


@pytest.mark.parametrize("value", ["Books/", "a//b", "Home/./Garden", "x" * 300, "Home Garden", "Home/Garden"])
def test_slice_values_give_metric_names_mlflow_accepts_and_never_share_one(value, tmp_path):
    """Product categories become metric names: MLflow refuses path-like names ('Books/', 'a//b')
    and names over 250 characters, which failed every training run while such a category had
    enough golden rows; two values that clean to the same text keep apart."""
    import mlflow

    from fbk_tasks.train.evaluate import _metric_safe

    names = {_metric_safe(v) for v in ("Home Garden", "Home/Garden", "Home_Garden", "Home?Garden")}
    assert len(names) == 4
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/m.db")
    with mlflow.start_run():
        mlflow.log_metrics({f"golden_slice_f1.product_category.{_metric_safe(value)}": 0.5})
