"""Duplicate look-up against curated history: peak memory and time, as ratios against the
approach it replaced, in the same invocation.

Ingestion must quarantine a review whose ``review_id`` any other curated partition already
holds. Each variant runs in a fresh child process (so peak RSS is its own) over the same
generated history (``--history`` ids in ``--partitions`` partitions outside the dedup window)
and the same night (``--night`` ids, ``--overlap`` of them already in history):

  baseline  what ingestion did before: load every history review_id into a Python set, then
            ``isin`` the night's ids against it (memory grows with history).
  fbk       ``fbk_tasks.ingest.pipeline._history`` + ``History.seen_ids``: a DuckDB semi-join
            of the night's ids against the Parquet files, under ``score.duckdb_memory_mb``.

Both must find the same ids; the script fails if they do not.

    .venv/bin/python benchmarks/bench_ingest_history.py [--history 5000000] [--partitions 50]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NIGHT_DS = "2027-06-30"


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _ids(lo: int, hi: int) -> list[str]:
    return [f"rev-{i:012d}" for i in range(lo, hi)]


def build(work: Path, history: int, partitions: int, night: int, overlap: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    per = history // partitions
    for k in range(partitions):
        out = work / "data" / "curated" / "reviews" / f"ds=2026-{1 + k // 28:02d}-{1 + k % 28:02d}"
        out.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"review_id": _ids(k * per, (k + 1) * per)}), out / "part-0.parquet", compression="zstd")
    rng = np.random.default_rng(7)
    old = rng.choice(history, size=overlap, replace=False)
    ids = [f"rev-{i:012d}" for i in old] + _ids(history + 1, history + 1 + night - overlap)
    (work / "night.json").write_text(json.dumps(ids))


def child(kind: str, work: str) -> dict:
    import pandas as pd

    ids = pd.Series(json.loads(Path(work, "night.json").read_text()))
    base = _peak_rss_mb()
    t0 = time.perf_counter()
    if kind == "baseline":
        import pyarrow.dataset as pads

        seen: set[str] = set()
        for part in sorted(Path(work, "data", "curated", "reviews").glob("ds=*")):
            seen.update(pads.dataset(part, format="parquet").to_table(columns=["review_id"])["review_id"].to_pylist())
        found = set(ids[ids.isin(seen)])
    else:
        os.environ["FBK_DATA_DIR"] = f"{work}/data"
        from fbk_tasks.ingest.pipeline import _history
        from fbk_tasks.settings import load_settings

        settings = load_settings()
        found = _history(settings, NIGHT_DS).seen_ids(settings, ids)
    return {"kind": kind, "seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(_peak_rss_mb(), 1),
            "rss_before_mb": round(base, 1), "found": len(found), "found_hash": hash(frozenset(found)) & 0xFFFFFFFF}


def run(kind: str, work: Path) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(work)], capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--history", type=int, default=5_000_000, help="review_ids already curated")
    ap.add_argument("--partitions", type=int, default=50)
    ap.add_argument("--night", type=int, default=100_000, help="review_ids in the night's file")
    ap.add_argument("--overlap", type=int, default=1_000, help="of them already in history")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    with tempfile.TemporaryDirectory(prefix="fbk-bench-hist-") as tmp:
        work = Path(tmp)
        build(work, args.history, args.partitions, args.night, args.overlap)
        base, fbk = run("baseline", work), run("fbk", work)
    if (base["found"], base["found_hash"]) != (fbk["found"], fbk["found_hash"]) or fbk["found"] != args.overlap:
        raise SystemExit(f"the two look-ups disagree: {base} vs {fbk}")
    for r in (base, fbk):
        r["grew_mb"] = round(r["peak_rss_mb"] - r["rss_before_mb"], 1)
    print(json.dumps({"history_ids": args.history, "partitions": args.partitions, "night_ids": args.night,
                      "already_curated": args.overlap, "baseline": base, "fbk": fbk,
                      "peak_rss_ratio": round(fbk["peak_rss_mb"] / base["peak_rss_mb"], 3),
                      "growth_ratio": round(fbk["grew_mb"] / base["grew_mb"], 3) if base["grew_mb"] > 0 else None,
                      "time_ratio": round(fbk["seconds"] / base["seconds"], 3)}, indent=2))


if __name__ == "__main__":
    main()
