"""ONNX serving end to end on a tiny transformer: trained and registered by the real training
pipeline (which exports ONNX and checks it on the golden set), then scored nightly.

The tiny BERT and the templated reviews come from tests/train/conftest.py (importable as
``train.conftest``: pytest puts tests/ on sys.path for the rootless tests/conftest.py).
"""

from __future__ import annotations

import datetime as dt
import json

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from fbk_tasks.score.onnx import choose_backend

AT = dt.datetime(2026, 11, 3, tzinfo=dt.timezone.utc)


def test_choose_backend_prefers_the_fastest_export_that_passed():
    meta = {"backend": "onnx_int8", "exports": {"onnx_fp32": {"passed": True}, "onnx_int8": {"passed": True}}}
    assert choose_backend(meta) == "onnx_int8"
    assert choose_backend(meta, "torch") == "torch"
    assert choose_backend(meta, "onnx_fp32") == "onnx_fp32"
    failed_int8 = {"backend": "onnx_fp32", "exports": {"onnx_fp32": {"passed": True}, "onnx_int8": {"passed": False}}}
    assert choose_backend(failed_int8) == "onnx_fp32"
    assert choose_backend(failed_int8, "onnx_int8") == "torch"  # an explicit request for a failed export is refused
    assert choose_backend(None) == "torch"  # a champion logged before ONNX export existed
    assert choose_backend({"backend": "torch", "exports": {}}) == "torch"


def test_check_export_applies_both_tolerances():
    import numpy as np

    from fbk_tasks.score.onnx import check_export

    ref = np.eye(3)[[0, 1, 2, 0, 1, 2, 0, 1, 2, 0]]
    y = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    same = check_export(ref, ref, y, max_f1_drop=0.0, min_agreement=1.0)
    assert same["passed"] and same["label_agreement"] == 1.0 and same["macro_f1_drop"] == 0.0
    flipped = ref.copy()
    flipped[0] = [0, 1, 0]  # one of ten labels changes: agreement 0.9, F1 drops
    res = check_export(ref, flipped, y, max_f1_drop=0.5, min_agreement=0.95)
    assert not res["passed"] and "agreement 0.9000 < 0.95" in res["reason"]
    res = check_export(ref, flipped, y, max_f1_drop=0.01, min_agreement=0.5)
    assert not res["passed"] and "macro-F1 drop" in res["reason"]
    assert check_export(ref, flipped, y, max_f1_drop=0.5, min_agreement=0.5)["passed"]


@pytest.fixture
def tiny_env(tmp_path, monkeypatch):
    """FBK_* for a tmp data root, the tiny BERT and fast training settings; curated reviews written."""
    from train.conftest import TINY_ENV, make_reviews, write_partition  # tests/train/conftest.py

    from fbk_tasks.settings import load_settings

    base = _tiny_base_model(tmp_path / "tiny-bert")
    monkeypatch.setenv("FBK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FBK_TRAIN__BASE_MODEL", str(base))
    for k, v in TINY_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("FBK_SCORE__THREADS", "1")
    monkeypatch.setenv("FBK_SCORE__ONNX_MIN_SPEEDUP", "0")  # no timing condition: deterministic choices
    s = load_settings()
    write_partition(s.curated_dir, make_reviews(240, seed=4, ds="2026-11-01"))
    return monkeypatch


def _tiny_base_model(out):
    from train.conftest import make_reviews
    from transformers import BertModel

    from fbk_tasks.train.pretrain import small_bert_config, train_wordpiece

    texts = [r["text"] for r in make_reviews(600, seed=99, zh_share=0.5).to_pylist()]
    tok = train_wordpiece(texts, vocab_size=400, out_dir=out)
    cfg = small_bert_config(len(tok), hidden=32, layers=2, heads=2, max_length=64, pad_token_id=tok.pad_token_id)
    BertModel(cfg).save_pretrained(out)
    return out


def _train_register_champion():
    from fbk_tasks.settings import load_settings
    from fbk_tasks.train import registry
    from fbk_tasks.train.pipeline import assemble, register_candidate, train_candidate

    s = load_settings()
    reg = register_candidate(s, train_candidate(s, assemble(s), "transformer"))
    client = registry.client_for(s)
    client.set_registered_model_alias(s.mlflow.registered_model_name, "champion", reg["version"])
    mv = client.get_model_version(s.mlflow.registered_model_name, reg["version"])
    return s, reg, client, mv


def _scores(s):
    files = sorted(str(p) for p in s.scores_dir.glob("ds=*/*.parquet"))
    rows = pads.dataset(files, format="parquet").to_table().to_pylist()
    return {r["review_id"]: r for r in rows}, files


@pytest.mark.slow
def test_exported_at_registration_and_served_via_onnx_with_the_same_labels(tiny_env):
    from fbk_tasks.score.run import run_scoring
    from fbk_tasks.settings import load_settings

    tiny_env.setenv("FBK_SCORE__ONNX_INT8", "false")  # fp32 only: labels must equal PyTorch's exactly
    s, reg, client, mv = _train_register_champion()

    # the check ran on the golden set and its numbers are on the run and the version
    run = client.get_run(reg["run_id"])
    assert run.data.metrics["onnx_fp32_golden_label_agreement"] == 1.0
    assert run.data.metrics["onnx_fp32_passed"] == 1.0
    assert abs(run.data.metrics["onnx_fp32_golden_macro_f1_drop"]) < 1e-9
    assert mv.tags["fbk.onnx.backend"] == "onnx_fp32"
    assert mv.tags["fbk.onnx.onnx_fp32"].startswith("passed; agreement 1.0000")
    check = json.loads(open(client.download_artifacts(reg["run_id"], "evaluation/onnx_check.json")).read())
    assert check["golden_rows"] > 0 and check["backend"] == "onnx_fp32"

    onnx_summary = run_scoring(s, run_id="night-onnx", scored_at=AT, build=False)
    assert onnx_summary["backend"] == "onnx_fp32"
    assert onnx_summary["scored"] == 240
    onnx_rows, files = _scores(s)
    assert {pq.read_schema(f).metadata[b"fbk.backend"] for f in files} == {b"onnx_fp32"}

    # on a CUDA worker, auto serves PyTorch (on the GPU) rather than ONNX on the CPU
    import mlflow
    import torch

    inner = mlflow.pyfunc.load_model(reg["model_uri"]).unwrap_python_model()
    assert inner.use_backend("auto") == "onnx_fp32"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.cuda, "is_available", lambda: True)
        assert inner.use_backend("auto") == "torch"

    # the same version served by PyTorch (score.backend=torch), every review scored again
    tiny_env.setenv("FBK_SCORE__BACKEND", "torch")
    torch_summary = run_scoring(load_settings(), run_id="night-torch", scored_at=AT, rescore=True, build=False)
    assert torch_summary["backend"] == "torch"
    torch_rows, _ = _scores(s)
    assert onnx_rows.keys() == torch_rows.keys() and len(onnx_rows) == 240
    assert all(onnx_rows[k]["label"] == torch_rows[k]["label"] for k in onnx_rows)
    assert max(abs(onnx_rows[k]["prob_positive"] - torch_rows[k]["prob_positive"]) for k in onnx_rows) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("case", ["impossible_tolerance", "impossible_speedup", "no_export"])
def test_version_without_a_passing_export_is_served_by_pytorch(tiny_env, case):
    import mlflow

    from fbk_tasks.score.run import run_scoring

    if case == "impossible_tolerance":
        tiny_env.setenv("FBK_SCORE__ONNX_MAX_F1_DROP", "-1")  # demands a one-point F1 gain: nothing passes
    elif case == "impossible_speedup":
        tiny_env.setenv("FBK_SCORE__ONNX_MIN_SPEEDUP", "1000")  # agrees, but is not 1000x faster than PyTorch
    else:
        tiny_env.setenv("FBK_SCORE__ONNX", "false")  # like a champion registered before ONNX export existed
    s, reg, client, mv = _train_register_champion()
    if case == "impossible_tolerance":
        assert mv.tags["fbk.onnx.backend"] == "torch"
        assert mv.tags["fbk.onnx.onnx_fp32"].startswith("failed; agreement")
        assert mv.tags["fbk.onnx.onnx_int8"].startswith("failed;")
        # the exports are still in the pyfunc, but serving refuses them
        inner = mlflow.pyfunc.load_model(reg["model_uri"]).unwrap_python_model()
        assert inner.onnx_meta["exports"]["onnx_fp32"]["passed"] is False
        assert inner.use_backend("onnx_fp32") == "torch"
    elif case == "impossible_speedup":
        assert mv.tags["fbk.onnx.backend"] == "torch"
        assert "PyTorch's speed < 1000" in mv.tags["fbk.onnx.onnx_fp32"]
        metrics = client.get_run(reg["run_id"]).data.metrics
        assert metrics["torch_golden_rows_per_second"] > 0 and metrics["onnx_fp32_golden_speedup_vs_torch"] > 0
    else:
        assert not any(k.startswith("fbk.onnx.") for k in mv.tags)
        assert "onnx_fp32_passed" not in client.get_run(reg["run_id"]).data.metrics
    summary = run_scoring(s, run_id="night-1", scored_at=AT, build=False)
    assert summary["backend"] == "torch" and summary["scored"] == 240
