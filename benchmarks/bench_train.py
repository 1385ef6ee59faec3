"""Training benchmark on real data (../shared/datasets), outside MLflow and Airflow.

airline:  airline_tweets.csv, 3 classes, fixed seed, fixed 80/20 stratified split (dev for early
          stopping = 10% of the 80%). Baseline TF-IDF word 1-2 grams + LR vs MiniLM fine-tune with
          the project's default ``train.*`` settings (include/settings.yaml), changed with --set.
          With --pretrain-steps N, MiniLM first gets N more masked-LM steps on the training tweets
          (train.pretrain_from=minilm, task-adaptive pre-training) and the fine-tune starts from that.
shopping: online_shopping_10_cats.csv.gz, 2 classes. Char 1-3 gram baseline, and with
          --pretrain-steps N a small BERT pre-trained (MLM, N steps) on the training texts then
          fine-tuned.

speed:    training samples/s of fine-tune variants (fp32 / bf16 autocast / frozen word embeddings /
          mean-pooling layer / R-Drop) on the same airline batches, variants interleaved over rounds so that
          load from other jobs hits them alike; ratios against fp32 + [CLS] (the old default).
emoji:    tokenizing the airline tweets with and without the emoji rule (train.emoji_to_text),
          rounds interleaved: the ratio, and the tweets holding an [UNK] before and after.

Prints one JSON line per model: macro-F1, accuracy, training seconds per epoch, samples/s.

    .venv/bin/python benchmarks/bench_train.py --part airline --epochs 2
    .venv/bin/python benchmarks/bench_train.py --part airline --set learning_rate=5e-5 --set pooling=cls
    .venv/bin/python benchmarks/bench_train.py --part airline --epochs 3 --pretrain-steps 800
    .venv/bin/python benchmarks/bench_train.py --part speed
    .venv/bin/python benchmarks/bench_train.py --part speed --speed-variants fp32   # a CPU without native bf16
    .venv/bin/python benchmarks/bench_train.py --part emoji
    .venv/bin/python benchmarks/bench_train.py --part shopping --pretrain-steps 2000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
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


def _overrides(pairs: list[str]) -> dict:
    """``--set key=value`` (value parsed as YAML: numbers, booleans, strings) -> train overrides."""
    import yaml

    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key.strip().removeprefix("train.")] = yaml.safe_load(value)
    return out


FINE_TUNE_KEYS = ("base_model", "batch_size", "max_length", "learning_rate", "epochs", "warmup_ratio", "weight_decay",
                  "class_weights", "tune_class_bias", "early_stopping_patience", "pooling", "freeze_word_embeddings", "cpu_bf16",
                  "fused_adamw", "length_group_factor", "torch_threads", "emoji_to_text", "rdrop_alpha", "max_epoch_minutes",
                   "label_confidence_power")


def _config(s) -> dict:
    return {k: getattr(s.train, k) for k in FINE_TUNE_KEYS}


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


def baseline(name: str, features: str, train: pd.DataFrame, test: pd.DataFrame, s, weights=None) -> dict:
    from fbk_tasks.train.baseline import build_pipeline

    pipe = build_pipeline(features, s.train, len(train))
    start = time.perf_counter()
    pipe.fit(train.text.tolist(), train.label.tolist(), **({} if weights is None else {"clf__sample_weight": weights}))
    secs = time.perf_counter() - start
    return _scores(name, test, pipe.predict(test.text.tolist()),
                   {"train_rows": len(train), "train_seconds": round(secs, 1), "samples_per_second": round(len(train) / secs, 1)})


def fine_tune(name: str, fit: pd.DataFrame, dev: pd.DataFrame, test: pd.DataFrame, classes: list[str], s,
              base_model: str | None = None, extra: dict | None = None, weights=None, label_column: str = "label") -> dict:
    """``label_column``: what the model learns (e.g. ``fine_label``, sentiment split by complaint
    reason); its classes are collapsed to ``classes`` (the part before '/') for scoring."""
    import numpy as np

    from fbk_tasks.train.transformer import fine_tune as ft, predict_proba

    learned = sorted(set(fit[label_column])) if label_column != "label" else classes
    cpu0 = time.process_time()
    res = ft(fit.text.tolist(), fit[label_column].tolist(), dev.text.tolist(), dev[label_column].tolist(), learned, s,
             base_model, train_weights=weights)
    cpu_seconds = time.process_time() - cpu0  # all threads: with other jobs on the machine, wall time overstates
    start = time.perf_counter()
    proba = predict_proba(res.model, res.tokenizer, test.text.tolist(), s.train.eval_batch_size, s.train.max_length)
    predict_secs = time.perf_counter() - start
    if learned is not classes:  # sum the fine classes' probabilities into their coarse class
        member = np.array([[c.split("/")[0] == k for k in classes] for c in learned], dtype=float)
        proba = proba @ member
    pred = np.asarray(classes, dtype=object)[proba.argmax(1)]
    bias_extra = {}
    if res.class_bias is not None:  # what the same checkpoint gives without the dev-tuned offsets
        raw = (np.log(np.clip(proba, 1e-12, None)) - np.asarray(res.class_bias)).argmax(1)
        raw_pred = np.asarray(classes, dtype=object)[raw]
        bias_extra = {"class_bias": res.class_bias, "dev_macro_f1_before_bias": round(res.dev_macro_f1_before_bias, 4),
                      "macro_f1_without_bias": round(f1_score(test.label, raw_pred, average="macro"), 4),
                      "accuracy_without_bias": round(accuracy_score(test.label, raw_pred), 4)}
    if os.environ.get("BENCH_SAVE_PROBA"):  # for offline analysis of decision rules
        dev_proba = predict_proba(res.model, res.tokenizer, dev.text.tolist(), s.train.eval_batch_size, s.train.max_length)
        if learned is not classes:
            dev_proba = dev_proba @ member
        np.savez(os.environ["BENCH_SAVE_PROBA"], test_proba=proba, test_label=test.label.to_numpy(dtype=str),
                 dev_proba=dev_proba, dev_label=dev.label.to_numpy(dtype=str), classes=np.asarray(classes),
                 class_bias=np.asarray(res.class_bias or [0.0] * len(classes)))
    return _scores(name, test, pred, {**bias_extra,
        "train_rows": len(fit), "epochs_run": res.epochs_run, "best_epoch": res.best_epoch,
        "seconds_per_epoch": [round(x, 1) for x in res.epoch_seconds], "samples_per_second": round(res.samples_per_second, 1),
        "dev_macro_f1": [round(h["dev_macro_f1"], 4) for h in res.history], "threads": res.threads, "device": res.device,
        "predict_rows_per_second": round(len(test) / predict_secs, 1), "fine_tune_cpu_seconds": round(cpu_seconds, 1),
        "rdrop_alpha_used": res.rdrop_alpha, **{k: round(v, 3) for k, v in res.epoch_probe.items()},
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
    df = pd.read_csv(DATASETS / "airline_tweets.csv", usecols=["airline_sentiment", "airline_sentiment_confidence", "text",
                                                               "negativereason"])
    df = df.rename(columns={"airline_sentiment": "label", "airline_sentiment_confidence": "label_confidence"})
    df = df.dropna(subset=["label", "label_confidence", "text"])
    # sentiment split by complaint reason (negative/Late Flight, ...): --fine-labels trains on these
    df["fine_label"] = df.label.where(df.label != "negative", "negative/" + df.negativereason.fillna("unknown").astype(str))
    train, fit, dev, test = _split(df, args.max_train_samples)
    classes = ["negative", "neutral", "positive"]
    with tempfile.TemporaryDirectory() as tmp:
        s = _settings(Path(tmp), epochs=args.epochs, early_stopping_patience=args.patience, **_overrides(args.set))
        padding_report(fit.text.tolist(), s)
        from fbk_tasks.train.data import row_weights

        power = s.train.label_confidence_power if args.confidence_power is None else args.confidence_power
        out = [baseline("airline baseline tfidf word 1-2 + LR", "word", train, test, s, row_weights(train, power))]
        if not args.skip_transformer:
            base, extra = s.train.base_model, {}
            if args.pretrain_steps:  # task-adaptive: more masked-LM on the training tweets (unlabelled; test unseen)
                from fbk_tasks.train.pretrain import pretrain_mlm

                ps = _settings(Path(tmp), **{"pretrain_from": "minilm", "pretrain_learning_rate": 1e-4,
                                             "pretrain_steps": args.pretrain_steps, **_overrides(args.set)})
                stats = pretrain_mlm(fit.text.tolist(), ps, Path(tmp) / "pretrained")
                print(json.dumps({"pretrain": stats}), flush=True)
                base = str(Path(tmp) / "pretrained")
                extra = {"pretrain_steps": stats["steps"], "pretrain_seconds": round(stats["seconds"], 1),
                         "pretrain_mlm_loss": [round(stats["first_mlm_loss"], 3), round(stats["final_mlm_loss"], 3)],
                         "pretrain_learning_rate": ps.train.pretrain_learning_rate}
            for variant in args.variants or [{}]:  # each: train.* overrides on top of --set (one fine-tune each)
                variant = dict(variant)
                fine = variant.pop("fine_labels", args.fine_labels)
                # full_train: the fine-tune also trains on the dev rows (the whole 80%); dev macro-F1 is then
                # not a held-out figure, yet it still picks the epoch kept (best_epoch in the output says
                # which: a dev set it trains on rises every epoch, so normally the last one)
                full = variant.pop("full_train", False)
                rows = train if full else fit
                vs = _settings(Path(tmp), epochs=args.epochs, early_stopping_patience=args.patience,
                               **{**_overrides(args.set), **variant, **({"class_weights": False} if fine else {})})
                weights = row_weights(rows, power)
                if fine:  # balanced weights of the three sentiments (not of the 12 fine classes), as class_weights gives
                    share = rows.label.map(rows.label.value_counts(normalize=True)).to_numpy()
                    weights = (1.0 if weights is None else weights) / (len(classes) * share)
                out.append(fine_tune("airline MiniLM fine-tune" + (" (after continued MLM)" if args.pretrain_steps else "")
                                     + (" on sentiment x complaint reason" if fine else ""),
                                     rows, dev, test, classes, vs, base,
                                     {"config": _config(vs), "label_confidence_power": power, **extra,
                                      **({"full_train": True} if full else {}),
                                      **({"variant": variant} if variant else {}), **({"fine_labels": True} if fine else {})},
                                     weights, "fine_label" if fine else "label"))
    return out


def shopping(args) -> list[dict]:
    df = pd.read_csv(DATASETS / "online_shopping_10_cats.csv.gz", usecols=["label", "review"])
    df = df.rename(columns={"review": "text"}).dropna()
    df = df[df.text.str.strip() != ""]
    df["label"] = df.label.map({1: "positive", 0: "negative"})
    train, fit, dev, test = _split(df, args.max_train_samples)
    with tempfile.TemporaryDirectory() as tmp:
        base_settings = {"batch_size": 32, "max_length": 128, "learning_rate": 1e-4, "epochs": args.epochs,
                         "early_stopping_patience": args.patience, "pretrain_steps": max(args.pretrain_steps, 1),
                         "pretrain_max_length": 128}
        s = _settings(Path(tmp), **{**base_settings, **_overrides(args.set)})
        out = [baseline("shopping baseline tfidf char 1-3 + LR", "char", train, test, s)]
        if (args.pretrain_steps or args.pretrained) and not args.skip_transformer:
            from fbk_tasks.train.pretrain import pretrain_mlm

            if args.pretrained:  # a model an earlier run pre-trained (--save-pretrained): fine-tune only
                stats = {"steps": f"from {args.pretrained}", "seconds": 0.0}
            else:
                stats = pretrain_mlm(fit.text.tolist(), s, Path(tmp) / "pretrained")  # all training texts, unlabelled
                print(json.dumps({"pretrain": stats}), flush=True)
                if args.save_pretrained:
                    shutil.copytree(Path(tmp) / "pretrained", args.save_pretrained, dirs_exist_ok=True)
            if args.fine_tune_rows and args.fine_tune_rows < len(fit):  # labelled subset; same dev and test
                fit = fit.sample(n=args.fine_tune_rows, random_state=SEED)
                out.append(baseline(f"shopping baseline tfidf char 1-3 + LR on the same {len(fit)} rows", "char", fit, test, s))
            for variant in args.variants or [{}]:  # each: fine-tune overrides, all from the same pre-trained model
                vs = _settings(Path(tmp), **{**base_settings, **_overrides(args.set), **variant})
                out.append(fine_tune("shopping small BERT (domain pre-trained) fine-tune", fit, dev, test,
                                     ["negative", "positive"], vs, args.pretrained or str(Path(tmp) / "pretrained"),
                                     {"pretrain_steps": stats["steps"], "pretrain_seconds": round(stats["seconds"], 1),
                                      "config": {**_config(vs), "base_model": "pre-trained above"},
                                      **({"variant": variant} if variant else {})}))
    return out


SPEED_VARIANTS = {
    "fp32 cls (old default)": {"cpu_bf16": "off", "freeze_word_embeddings": False, "pooling": "cls"},
    "fp32 cls frozen-emb": {"cpu_bf16": "off", "freeze_word_embeddings": True, "pooling": "cls"},
    "bf16 cls": {"cpu_bf16": "on", "freeze_word_embeddings": False, "pooling": "cls"},
    "bf16 cls frozen-emb": {"cpu_bf16": "on", "freeze_word_embeddings": True, "pooling": "cls"},
    "bf16 mean frozen-emb": {"cpu_bf16": "on", "freeze_word_embeddings": True, "pooling": "mean"},
    "bf16 mean frozen-emb fused": {"cpu_bf16": "on", "freeze_word_embeddings": True, "pooling": "mean", "fused_adamw": True},
    "bf16 mean frozen-emb R-Drop (default)": {"cpu_bf16": "on", "freeze_word_embeddings": True, "pooling": "mean",
                                              "rdrop_alpha": 1.0},
    # what a CPU without native bf16 trains (cpu_bf16=auto falls back to fp32): with and without R-Drop
    "fp32 mean frozen-emb": {"cpu_bf16": "off", "freeze_word_embeddings": True, "pooling": "mean"},
    "fp32 mean frozen-emb R-Drop": {"cpu_bf16": "off", "freeze_word_embeddings": True, "pooling": "mean", "rdrop_alpha": 1.0},
}


def speed(args) -> list[dict]:
    """Training-step throughput of each variant on the same length-grouped airline batches
    (forward, backward, clipping and the AdamW step, as in fine_tune; no scheduler). Variants run in turn within each
    round, so a burst of load from other jobs lands on one round rather than one variant; the
    figure per variant is its median round."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from fbk_tasks.train.transformer import (_autocast, add_mean_pooling_layer, batch_loss, length_grouped_batches, pad_batch,
                                             resolve_base_model, set_threads, use_cpu_bf16)

    df = pd.read_csv(DATASETS / "airline_tweets.csv", usecols=["airline_sentiment", "text"]).dropna()
    _, fit, _, _ = _split(df.rename(columns={"airline_sentiment": "label"}), None)
    with tempfile.TemporaryDirectory() as tmp:
        s = _settings(Path(tmp), **_overrides(args.set))
        threads = set_threads(s)
        base = resolve_base_model(s, "minilm")
        tok = AutoTokenizer.from_pretrained(base)
        enc = tok(fit.text.tolist(), truncation=True, max_length=s.train.max_length)["input_ids"]
        y = torch.as_tensor(pd.Categorical(fit.label).codes.astype("int64"))
        rng = np.random.default_rng(SEED)
        batches = length_grouped_batches([len(e) for e in enc], s.train.batch_size, s.train.length_group_factor, rng)
        batches = batches[: args.speed_steps + 2]
        rows = [len(b) for b in batches[2:]]

        def one(cfg: dict) -> float:
            torch.manual_seed(SEED)
            model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=3)
            if cfg["pooling"] == "mean":
                add_mean_pooling_layer(model)
            if cfg["freeze_word_embeddings"]:
                model.get_input_embeddings().weight.requires_grad_(False)
            params = [p for p in model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=1e-4, **({"fused": True} if cfg.get("fused_adamw") else {}))
            bf16 = use_cpu_bf16(cfg["cpu_bf16"])
            model.train()
            elapsed = 0.0
            for k, b in enumerate(batches):  # the first two steps warm up and are not timed
                ids, mask = pad_batch([enc[i] for i in b], tok.pad_token_id or 0)
                t0 = time.perf_counter()
                rdrop = cfg.get("rdrop_alpha", 0.0)
                if rdrop:  # as fine_tune: the batch twice in one pass
                    ids, mask = torch.cat([ids, ids]), torch.cat([mask, mask])
                with _autocast(torch.device("cpu"), bf16):
                    logits = model(input_ids=ids, attention_mask=mask).logits.float()
                loss = batch_loss(logits, y[b], torch.ones(len(b)), torch.ones(3), rdrop)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                if k >= 2:
                    elapsed += time.perf_counter() - t0
            return sum(rows) / elapsed

        one(SPEED_VARIANTS["fp32 cls (old default)"])  # process warm-up (allocator, oneDNN kernels), not counted
        chosen = {name: cfg for name, cfg in SPEED_VARIANTS.items()
                  if not args.speed_variants or name == "fp32 cls (old default)" or any(k in name for k in args.speed_variants)}
        runs: dict[str, list[float]] = {name: [] for name in chosen}
        loads = []
        for _ in range(args.speed_rounds):
            for name, cfg in chosen.items():
                runs[name].append(one(cfg))
                loads.append(os.getloadavg()[0])
        ref = float(np.median(runs["fp32 cls (old default)"]))
        out = []
        for name, values in runs.items():
            med = float(np.median(values))
            row = {"speed_variant": name, "samples_per_second_median": round(med, 1),
                   "samples_per_second_rounds": [round(v, 1) for v in values], "vs_fp32_cls": round(med / ref, 2),
                   "epoch_minutes_at_median": round(len(enc) / med / 60, 1), "threads": threads,
                   "timed_rows_per_round": sum(rows)}
            print(json.dumps(row), flush=True)
            out.append(row)
        print(json.dumps({"speed_load_average_min_max": [round(min(loads), 2), round(max(loads), 2)]}), flush=True)
    return out


def emoji(args) -> list[dict]:
    """Cost and reach of the emoji rule (train.emoji_to_text) on the airline tweets: tokenizing
    every tweet with and without it, rounds interleaved; [UNK]-holding tweets before and after."""
    import numpy as np
    from transformers import AutoTokenizer

    from fbk_tasks.text.emoji import enable, model_texts
    from fbk_tasks.train.transformer import resolve_base_model

    texts = pd.read_csv(DATASETS / "airline_tweets.csv", usecols=["text"]).text.tolist()
    with tempfile.TemporaryDirectory() as tmp:
        path = resolve_base_model(_settings(Path(tmp)), "minilm")
    plain, ruled = AutoTokenizer.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    table_start = time.perf_counter()
    symbols = enable(ruled)
    table_seconds = time.perf_counter() - table_start
    times = {"without": [], "with": []}
    for _ in range(args.speed_rounds):
        for name, tok in (("without", plain), ("with", ruled)):
            start = time.perf_counter()
            tok(model_texts(tok, texts), truncation=True, max_length=64)
            times[name].append(time.perf_counter() - start)
    unk = plain.unk_token_id

    def holding_unk(tok):
        return int(sum(unk in ids for ids in tok(model_texts(tok, texts), add_special_tokens=False)["input_ids"]))

    best = {k: min(v) for k, v in times.items()}
    row = {"emoji_rule": {"tweets": len(texts), "symbols_rewritten": symbols, "table_build_seconds": round(table_seconds, 2),
                          "tweets_changed": int(sum(a != b for a, b in zip(texts, model_texts(ruled, texts)))),
                          "tweets_with_unk_before": holding_unk(plain), "tweets_with_unk_after": holding_unk(ruled),
                          "tokenize_seconds_best_of_rounds": {k: round(v, 3) for k, v in best.items()},
                          "with_vs_without": round(best["with"] / best["without"], 3),
                          "microseconds_per_tweet_added": round((best["with"] - best["without"]) / len(texts) * 1e6, 1)}}
    print(json.dumps(row), flush=True)
    return [row]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["airline", "shopping", "speed", "emoji", "all"], default="airline")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--patience", type=int, default=1)
    ap.add_argument("--max-train-samples", type=int, default=None)
    ap.add_argument("--pretrain-steps", type=int, default=0, help="MLM steps before the fine-tune (0: skip); shopping: a small BERT from scratch, "
                    "airline: more MLM of MiniLM on the training tweets")
    ap.add_argument("--save-pretrained", default=None, metavar="DIR", help="shopping: keep the pre-trained model in DIR")
    ap.add_argument("--pretrained", default=None, metavar="DIR",
                    help="shopping: fine-tune from DIR (saved by --save-pretrained) instead of pre-training")
    ap.add_argument("--skip-transformer", action="store_true")
    ap.add_argument("--fine-tune-rows", type=int, default=None,
                    help="shopping: fine-tune on this many labelled rows (pre-training still sees all training texts)")
    ap.add_argument("--confidence-power", type=float, default=None,
                    help="airline: weight each training row's loss by airline_sentiment_confidence (annotator agreement) "
                    "to this power (default: train.label_confidence_power; 0: unweighted)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="train.* setting override (repeatable)")
    ap.add_argument("--fine-labels", action="store_true",
                    help="airline: the fine-tune learns sentiment split by complaint reason (negativereason: 12 classes), "
                    "collapsed back to the three sentiments for scoring (a variant may set \"fine_labels\": true instead)")
    ap.add_argument("--variants", type=json.loads, default=None, metavar="JSON",
                    help='airline, shopping: a JSON list of train.* override dicts, one fine-tune each on the same split '
                    '(shopping: from the same pre-trained model; airline: "full_train": true also trains on the dev rows), '
                    'e.g. \'[{"seed": 7}, {"seed": 21, "learning_rate": 5e-5}]\'')
    ap.add_argument("--speed-rounds", type=int, default=3, help="speed: rounds over the variants")
    ap.add_argument("--speed-steps", type=int, default=12, help="speed: timed steps per variant and round")
    ap.add_argument("--speed-variants", type=lambda v: v.split(","), default=None, metavar="TEXT,...",
                    help="speed: only the variants whose name contains one of these (the fp32 [CLS] reference always runs)")
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
    if args.part == "speed":
        speed(args)
    if args.part == "emoji":
        emoji(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
