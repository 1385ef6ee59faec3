"""Training benchmark on real data (../shared/datasets), outside MLflow and Airflow.

airline:  airline_tweets.csv, 3 classes, fixed seed, fixed 80/20 stratified split (dev for early
          stopping = 10% of the 80%). Baseline TF-IDF word 1-2 grams + LR vs MiniLM fine-tune
          (batch 32, max length 64, lr 5e-5, length-grouped batches, threads = cores).
shopping: online_shopping_10_cats.csv.gz, 2 classes. Char 1-3 gram baseline, and with
          --pretrain-steps N a small BERT pre-trained (MLM, N steps) on the training texts then
          fine-tuned.

Prints one JSON line per model: macro-F1, accuracy, training seconds per epoch, samples/s.

    .venv/bin/python benchmarks/bench_train.py --part airline --epochs 2
    .venv/bin/python benchmarks/bench_train.py --part shopping --pretrain-steps 2000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pandas as pd  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"
SEED = 13


def _settings(tmp: Path, **train):
    from fbk_tasks.settings import load_settings

    return load_settings(data_dir=tmp, train={"seed": SEED, "device": "auto", **train})


def _split(df: pd.DataFrame, max_train: int | None):
    train, test = train_test_split(df, test_size=0.2, stratify=df.label, random_state=SEED)
    if max_train and len(train) > max_train:
        train = train.sample(n=max_train, random_state=SEED)
    fit, dev = train_test_split(train, test_size=0.1, stratify=train.label, random_state=SEED)
    return train, fit, dev, test


def _scores(name: str, test: pd.DataFrame, pred, extra: dict) -> dict:
    row = {"model": name, "macro_f1": round(f1_score(test.label, pred, average="macro"), 4),
           "accuracy": round(accuracy_score(test.label, pred), 4), "test_rows": len(test), **extra}
    print(json.dumps(row), flush=True)
    return row


def baseline(name: str, features: str, train: pd.DataFrame, test: pd.DataFrame, s) -> dict:
    from fbk_tasks.train.baseline import build_pipeline

    pipe = build_pipeline(features, s.train, len(train))
    start = time.perf_counter()
    pipe.fit(train.text.tolist(), train.label.tolist())
    secs = time.perf_counter() - start
    return _scores(name, test, pipe.predict(test.text.tolist()),
                   {"train_rows": len(train), "train_seconds": round(secs, 1), "samples_per_second": round(len(train) / secs, 1)})


def fine_tune(name: str, fit: pd.DataFrame, dev: pd.DataFrame, test: pd.DataFrame, classes: list[str], s,
              base_model: str | None = None, extra: dict | None = None) -> dict:
    import numpy as np

    from fbk_tasks.train.transformer import fine_tune as ft, predict_proba

    cpu0 = time.process_time()
    res = ft(fit.text.tolist(), fit.label.tolist(), dev.text.tolist(), dev.label.tolist(), classes, s, base_model)
    cpu_seconds = time.process_time() - cpu0  # all threads: with other jobs on the machine, wall time overstates
    start = time.perf_counter()
    proba = predict_proba(res.model, res.tokenizer, test.text.tolist(), s.train.eval_batch_size, s.train.max_length)
    predict_secs = time.perf_counter() - start
    pred = np.asarray(classes, dtype=object)[proba.argmax(1)]
    return _scores(name, test, pred, {
        "train_rows": len(fit), "epochs_run": res.epochs_run, "best_epoch": res.best_epoch,
        "seconds_per_epoch": [round(x, 1) for x in res.epoch_seconds], "samples_per_second": round(res.samples_per_second, 1),
        "dev_macro_f1": [round(h["dev_macro_f1"], 4) for h in res.history], "threads": res.threads, "device": res.device,
        "predict_rows_per_second": round(len(test) / predict_secs, 1), "fine_tune_cpu_seconds": round(cpu_seconds, 1),
        "load_average_after": [round(x, 1) for x in os.getloadavg()], **(extra or {})})


def padding_report(texts: list[str], s) -> dict:
    """Tokens the model processes per epoch (padding included): fixed max length, random batches with
    dynamic padding, length-grouped batches. Independent of machine load."""
    import numpy as np
    from transformers import AutoTokenizer

    from fbk_tasks.train.transformer import length_grouped_batches, resolve_base_model, tokenize

    tok = AutoTokenizer.from_pretrained(resolve_base_model(s, "minilm"))
    lengths = np.array([len(x) for x in tokenize(tok, texts, s.train.max_length)])
    bs = s.train.batch_size
    rng = np.random.default_rng(SEED)
    random_batches = [b for b in np.array_split(rng.permutation(len(lengths)), int(np.ceil(len(lengths) / bs)))]
    grouped = length_grouped_batches(lengths, bs, s.train.length_group_factor, rng)
    cost = {
        "fixed_max_length": int(len(lengths) * s.train.max_length),
        "random_dynamic_padding": int(sum(lengths[b].max() * len(b) for b in random_batches)),
        "length_grouped": int(sum(lengths[b].max() * len(b) for b in grouped)),
        "real_tokens": int(lengths.sum()),
    }
    row = {"padding_tokens_per_epoch": cost, "mean_length": round(float(lengths.mean()), 1),
           "grouped_vs_random": round(cost["length_grouped"] / cost["random_dynamic_padding"], 3)}
    print(json.dumps(row), flush=True)
    return row


def airline(args) -> list[dict]:
    df = pd.read_csv(DATASETS / "airline_tweets.csv", usecols=["airline_sentiment", "text"])
    df = df.rename(columns={"airline_sentiment": "label"}).dropna()
    train, fit, dev, test = _split(df, args.max_train_samples)
    classes = ["negative", "neutral", "positive"]
    with tempfile.TemporaryDirectory() as tmp:
        s = _settings(Path(tmp), batch_size=32, max_length=64, learning_rate=5e-5, epochs=args.epochs,
                      early_stopping_patience=args.patience)
        padding_report(fit.text.tolist(), s)
        out = [baseline("airline baseline tfidf word 1-2 + LR", "word", train, test, s)]
        if not args.skip_transformer:
            out.append(fine_tune("airline MiniLM fine-tune", fit, dev, test, classes, s, "minilm"))
    return out


def shopping(args) -> list[dict]:
    df = pd.read_csv(DATASETS / "online_shopping_10_cats.csv.gz", usecols=["label", "review"])
    df = df.rename(columns={"review": "text"}).dropna()
    df = df[df.text.str.strip() != ""]
    df["label"] = df.label.map({1: "positive", 0: "negative"})
    train, fit, dev, test = _split(df, args.max_train_samples)
    with tempfile.TemporaryDirectory() as tmp:
        s = _settings(Path(tmp), batch_size=32, max_length=128, learning_rate=1e-4, epochs=args.epochs,
                      pretrain_steps=max(args.pretrain_steps, 1), pretrain_max_length=128)
        out = [baseline("shopping baseline tfidf char 1-3 + LR", "char", train, test, s)]
        if args.pretrain_steps and not args.skip_transformer:
            from fbk_tasks.train.pretrain import pretrain_mlm

            stats = pretrain_mlm(fit.text.tolist(), s, Path(tmp) / "pretrained")
            print(json.dumps({"pretrain": stats}), flush=True)
            out.append(fine_tune("shopping small BERT (domain pre-trained) fine-tune", fit, dev, test,
                                 ["negative", "positive"], s, str(Path(tmp) / "pretrained"),
                                 {"pretrain_steps": stats["steps"], "pretrain_seconds": round(stats["seconds"], 1)}))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["airline", "shopping", "all"], default="airline")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--patience", type=int, default=1)
    ap.add_argument("--max-train-samples", type=int, default=None)
    ap.add_argument("--pretrain-steps", type=int, default=0, help="shopping: MLM steps before the fine-tune (0: skip)")
    ap.add_argument("--skip-transformer", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    missing = [f for f in ("airline_tweets.csv", "online_shopping_10_cats.csv.gz") if not (DATASETS / f).exists()]
    if missing:
        print(f"datasets missing under {DATASETS}: {missing}", file=sys.stderr)
        return 2
    print(json.dumps({"cores": os.cpu_count(), "load_average": os.getloadavg()}), flush=True)
    if args.part in ("airline", "all"):
        airline(args)
    if args.part in ("shopping", "all"):
        shopping(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
