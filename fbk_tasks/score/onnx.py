"""Fast CPU inference for a Hugging Face sequence classifier: batched length-sorted PyTorch,
ONNX export (dynamic batch and sequence axes), optional dynamic int8 quantisation, and a check
that the ONNX model agrees with PyTorch.

Heavy libraries (torch, transformers, onnxruntime) are imported inside the functions.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class OnnxExport:
    model_path: str
    quantized_path: str | None
    opset: int
    inputs: list[str]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_classifier(model_dir: str | Path, num_labels: int = 3, seed: int = 13):
    """(model, tokenizer) in eval mode. A checkpoint without a classification head (such as the
    packaged MiniLM sentence encoder) gets a randomly initialised head, seeded."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=num_labels)
    model.eval()
    return model, tokenizer


def length_sorted_batches(texts: Sequence[str], batch_size: int) -> list[list[int]]:
    """Index batches of texts with similar length (less padding); order restored by the caller."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _batched_proba(texts: Sequence[str], batch_size: int, run: Callable[[list[str]], Any]):
    import numpy as np

    out: Any = None
    for idx in length_sorted_batches(texts, batch_size):
        probs = run([texts[i] for i in idx])
        if out is None:
            out = np.zeros((len(texts), probs.shape[1]), dtype=np.float32)
        out[idx] = probs
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def torch_predict_proba(model, tokenizer, texts: Sequence[str], *, max_length: int = 128, batch_size: int = 64):
    """Class probabilities (n, k) in input order: length-sorted batches, dynamic padding, no grad."""
    import torch

    def run(batch: list[str]):
        enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            logits = model(**enc).logits
        return torch.softmax(logits.float(), dim=-1).numpy()

    return _batched_proba(texts, batch_size, run)


def export_onnx(
    model,
    tokenizer,
    out_dir: str | Path,
    *,
    opset: int = 17,
    quantize: bool = False,
) -> OnnxExport:
    """Export to ``<out_dir>/model.onnx`` with dynamic batch and sequence axes (TorchScript
    exporter, ``dynamic_axes``); with ``quantize`` also write ``model.int8.onnx``
    (``onnxruntime.quantization.quantize_dynamic``, QInt8 weights)."""
    import torch

    started = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.onnx"
    sample = tokenizer(["an example review", "another, somewhat longer example review text"], padding=True, return_tensors="pt")
    names = [n for n in INPUT_NAMES if n in sample]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}

    class _Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(**dict(zip(names, args))).logits

    # The exporter restores the wrapper's training flag afterwards; a fresh Module is in
    # training mode, which would switch dropout on in the caller's model. Keep both in eval.
    wrapper = _Logits(model).eval()
    with torch.inference_mode():
        torch.onnx.export(
            wrapper,
            tuple(sample[n] for n in names),
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    model.eval()
    qpath = None
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        qpath = out / "model.int8.onnx"
        quantize_dynamic(str(path), str(qpath), weight_type=QuantType.QInt8)
        qpath = str(qpath)
    return OnnxExport(str(path), qpath, opset, names, round(time.monotonic() - started, 2))


def onnx_session(path: str | Path, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def onnx_predict_proba(session, tokenizer, texts: Sequence[str], *, max_length: int = 128, batch_size: int = 64):
    """Class probabilities (n, k) in input order from an ONNX session (length-sorted batches)."""
    import numpy as np

    wanted = {i.name for i in session.get_inputs()}

    def run(batch: list[str]):
        enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        feeds = {k: v.astype(np.int64) for k, v in enc.items() if k in wanted}
        (logits,) = session.run(["logits"], feeds)
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    return _batched_proba(texts, batch_size, run)


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> float:
    f1s = []
    for c in range(n_classes):
        tp = sum(1 for t, p in zip(y_true, y_pred) if t == c and p == c)
        fp = sum(1 for t, p in zip(y_true, y_pred) if t != c and p == c)
        fn = sum(1 for t, p in zip(y_true, y_pred) if t == c and p != c)
        denom = 2 * tp + fp + fn
        f1s.append(0.0 if denom == 0 else 2 * tp / denom)
    return sum(f1s) / n_classes


def compare(reference_proba, candidate_proba, y_true: Sequence[int] | None = None) -> dict[str, float]:
    """Label agreement and largest probability difference of a candidate vs the reference
    (PyTorch); with true labels also both macro-F1 scores and their difference."""
    import numpy as np

    ref = np.asarray(reference_proba)
    cand = np.asarray(candidate_proba)
    ref_lab, cand_lab = ref.argmax(1), cand.argmax(1)
    res = {
        "n": int(len(ref)),
        "label_agreement": float((ref_lab == cand_lab).mean()) if len(ref) else 1.0,
        "max_abs_prob_diff": float(np.abs(ref - cand).max()) if len(ref) else 0.0,
    }
    if y_true is not None:
        k = ref.shape[1]
        res["macro_f1_reference"] = macro_f1(list(y_true), ref_lab.tolist(), k)
        res["macro_f1_candidate"] = macro_f1(list(y_true), cand_lab.tolist(), k)
        res["macro_f1_delta"] = res["macro_f1_candidate"] - res["macro_f1_reference"]
    return res
