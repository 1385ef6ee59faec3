#!/usr/bin/env bash
# GPU smoke test of the training loop: fine-tunes the packaged MiniLM for a few hundred steps on
# CUDA (bf16 autocast, cuda_batch_size, pinned memory, length-grouped batches) and prints
# samples/s. Uses ../shared/datasets/airline_tweets.csv when present, generated reviews otherwise.
#
#   scripts/gpu_smoke.sh [STEPS]        (default 300)
#
# Fails at once, with a message, when torch sees no CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STEPS=${1:-300}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MLFLOW_ENABLE_TELEMETRY=false

"$PY" - "$STEPS" <<'EOF'
import json, math, sys, tempfile, time
from pathlib import Path

import torch

if not torch.cuda.is_available():
    sys.exit(f"gpu_smoke: no CUDA device visible to torch {torch.__version__} "
             f"(built for CUDA {torch.version.cuda}); this check needs a GPU machine")

import pandas as pd

from fbk_tasks.settings import load_settings
from fbk_tasks.train.transformer import fine_tune, predict_proba

steps = int(sys.argv[1])
data = Path("../shared/datasets/airline_tweets.csv")
if data.exists():
    df = pd.read_csv(data, usecols=["airline_sentiment", "text"]).rename(columns={"airline_sentiment": "label"}).dropna()
else:
    words = {"negative": "terrible awful broken late rude", "neutral": "arrived ordinary fine okay box",
             "positive": "great love excellent perfect happy"}
    rows = [(lab, f"review {i}: " + " ".join(words[lab].split()[i % 5:] * 3)) for i in range(12000)
            for lab in [("negative", "neutral", "positive")[i % 3]]]
    df = pd.DataFrame(rows, columns=["label", "text"])
df = df.sample(frac=1.0, random_state=13).reset_index(drop=True)
dev, train = df.iloc[:1000], df.iloc[1000:]
classes = ["negative", "neutral", "positive"]

with tempfile.TemporaryDirectory() as tmp:
    # no early stop: the smoke runs the steps it was asked for (generated data reaches dev F1 1.0 early)
    s = load_settings(data_dir=tmp, train={"device": "cuda", "max_length": 64, "learning_rate": 5e-5,
                                           "early_stopping_patience": 10**6})
    per_epoch = math.ceil(len(train) / s.train.cuda_batch_size)
    s.train.epochs = max(steps / per_epoch, 0.01)
    torch.cuda.synchronize()
    res = fine_tune(train.text.tolist(), train.label.tolist(), dev.text.tolist(), dev.label.tolist(), classes, s)  # base: train.base_model (FBK_TRAIN__BASE_MODEL)
    torch.cuda.synchronize()
    start = time.perf_counter()
    proba = predict_proba(res.model, res.tokenizer, dev.text.tolist(), 256, 64)
    torch.cuda.synchronize()
    pred_rate = len(dev) / (time.perf_counter() - start)
    assert res.device == "cuda", res.device
    print(json.dumps({
        "gpu": torch.cuda.get_device_name(0), "steps": res.steps, "batch_size": s.train.cuda_batch_size,
        "train_samples_per_second": round(res.samples_per_second, 1),
        "seconds_per_epoch": [round(x, 1) for x in res.epoch_seconds],
        "dev_macro_f1": round(res.best_dev_macro_f1, 4), "predict_rows_per_second": round(pred_rate, 1),
        "max_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }))
EOF
