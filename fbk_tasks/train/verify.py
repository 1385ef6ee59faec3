"""Fresh-process reload check used by the promotion gate.

``python -m fbk_tasks.train.verify --model-uri models:/NAME/V --expected golden_predictions.parquet
--golden golden.parquet`` (stores from ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI``, or
``--tracking-uri`` / ``--registry-uri``) loads the model from the registry
in a new interpreter, predicts the golden rows and compares with the predictions the candidate
made in memory at training time. Prints one JSON line; exit 0 when they agree, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ATOL = 1e-4


def compare(expected: pd.DataFrame, got: pd.DataFrame, atol: float = ATOL) -> dict:
    prob_cols = [c for c in expected.columns if c.startswith("prob_")]
    if list(got.columns[: 2]) != ["label", "confidence"] or sorted(c for c in got.columns if c.startswith("prob_")) != sorted(prob_cols):
        return {"ok": False, "reason": f"output columns {list(got.columns)} differ from {['label', 'confidence', *prob_cols]}"}
    diff = np.abs(expected[prob_cols].to_numpy(float) - got[prob_cols].to_numpy(float))
    label_mismatch = int((expected["label"].to_numpy() != got["label"].to_numpy()).sum())
    max_diff = float(diff.max()) if diff.size else 0.0
    ok = max_diff <= atol and label_mismatch == 0
    return {"ok": ok, "rows": len(expected), "max_abs_prob_diff": max_diff, "label_mismatches": label_mismatch,
            "reason": "" if ok else f"{label_mismatch} label mismatch(es), max prob diff {max_diff:.2e} > {atol}"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fbk_tasks.train.verify")
    ap.add_argument("--model-uri", required=True)
    ap.add_argument("--golden", required=True, type=Path)
    ap.add_argument("--expected", required=True, type=Path)
    # without them MLflow reads MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI itself (what the gate
    # passes: a store URI may carry a password, which argv shows in `ps`)
    ap.add_argument("--tracking-uri")
    ap.add_argument("--registry-uri")
    ap.add_argument("--atol", type=float, default=ATOL)
    args = ap.parse_args(argv)

    import mlflow

    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    if args.registry_uri:
        mlflow.set_registry_uri(args.registry_uri)
    golden = pd.read_parquet(args.golden)
    expected = pd.read_parquet(args.expected).set_index("review_id").loc[golden["review_id"]].reset_index(drop=True)
    model = mlflow.pyfunc.load_model(args.model_uri)
    got = model.predict(pd.DataFrame({"text": golden["text"].tolist()}))
    result = compare(expected, got, args.atol)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


def verify_in_fresh_process(model_uri: str, golden: Path, expected: Path, tracking_uri: str, registry_uri: str,
                            timeout_s: int) -> dict:
    """Run :func:`main` in a new interpreter; returns its JSON verdict (``ok`` False on any failure)."""
    cmd = [sys.executable, "-m", "fbk_tasks.train.verify", "--model-uri", model_uri, "--golden", str(golden),
           "--expected", str(expected)]
    # on the CPU whatever the gate's worker has: the expected predictions were made there in fp32;
    # the store URIs through the environment, not argv (which `ps` shows, with any password)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_REGISTRY_URI": registry_uri}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"ok": False, "reason": f"fresh-process load did not finish within {timeout_s}s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if lines:
        return json.loads(lines[-1])
    tail = (proc.stderr or "").strip().splitlines()[-3:]
    return {"ok": False, "reason": f"fresh-process load failed (exit {proc.returncode}): {' | '.join(tail)}"}


if __name__ == "__main__":
    sys.exit(main())
