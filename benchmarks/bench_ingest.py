"""Ingestion throughput and peak memory, as ratios against DuckDB in the same invocation.

For each input the script times, in a fresh child process each (so peak RSS is the child's own):
  baseline  DuckDB reads the CSV and writes Parquet (no cleaning, no checks): the I/O floor.
  fbk       the full ingestion path: read, map, clean, redact PII, detect language, find
            duplicates, validate with GX, write curated + quarantine + ledger.

  fbk cold  (with --cold) the same in a process that has not imported great_expectations yet,
            as a fresh worker would: the import (seconds) runs on a thread while the file is
            read and cleaned, and is part of this time.

Inputs: N generated reviews (default 1,000,000) and, when ../shared/datasets exists, the
62,774 real Chinese reviews of online_shopping_10_cats.

    .venv/bin/python benchmarks/bench_ingest.py [--rows 1000000] [--cold]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT.parent / "shared" / "datasets" / "online_shopping_10_cats.csv.gz"


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). ru_maxrss would not do: Linux carries it over
    exec from the parent, which holds the generated frame."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(kind: str, src: str, work: str) -> dict:
    t0 = time.perf_counter()
    out: dict = {}
    if kind == "duckdb":
        import duckdb

        con = duckdb.connect()
        con.execute(f"COPY (SELECT * FROM read_csv('{src}', all_varchar=true)) TO '{work}/out.parquet' (FORMAT parquet, COMPRESSION zstd)")
        out["rows"] = con.execute(f"SELECT count(*) FROM '{work}/out.parquet'").fetchone()[0]
    else:
        os.environ["FBK_DATA_DIR"] = f"{work}/data"
        os.environ["FBK_INGEST__MAX_QUARANTINE_SHARE"] = "1.0"
        os.environ["FBK_INGEST__MAX_DUPLICATE_SHARE"] = "1.0"
        from fbk_tasks.ingest.pipeline import ingest_partition, land_files
        from fbk_tasks.settings import load_settings

        settings = load_settings()
        land_files(settings, [Path(src)], "2026-01-01")
        if kind == "fbk":
            t_import = time.perf_counter()
            import great_expectations  # noqa: F401  (a fixed cost per worker process, reported apart)

            out["gx_import_seconds"] = round(time.perf_counter() - t_import, 2)
        t0 = time.perf_counter()  # landing is a file copy, not ingestion
        report = ingest_partition(settings, "2026-01-01")
        (f,) = report.files
        out.update(rows=f.rows_read, curated=f.rows_curated, quarantined=f.rows_quarantined, stages=f.seconds, pii=f.pii)
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def run(kind: str, src: Path) -> dict:
    with tempfile.TemporaryDirectory() as work:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", kind, str(src), work], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise SystemExit(f"{kind} on {src} failed:\n{proc.stderr[-4000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


def report(name: str, src: Path, cold: bool = False) -> None:
    base = run("duckdb", src)
    ours = run("fbk", src)
    cold_run = run("fbk-cold", src) if cold else None
    print(f"\n## {name}  ({ours['rows']:,} rows, {src.stat().st_size / 1e6:.0f} MB on disk)")
    print(f"  duckdb csv->parquet : {base['seconds']:7.2f} s  {base['rows'] / base['seconds']:>10,.0f} rows/s  peak {base['peak_rss_mb']:6.0f} MB")
    print(f"  fbk ingest          : {ours['seconds']:7.2f} s  {ours['rows'] / ours['seconds']:>10,.0f} rows/s  peak {ours['peak_rss_mb']:6.0f} MB")
    print(f"  ratio fbk/duckdb    : {ours['seconds'] / base['seconds']:7.1f}x time, {ours['peak_rss_mb'] / base['peak_rss_mb']:.1f}x memory")
    print(f"  stages (s)          : {ours['stages']}  (+ GX import {ours['gx_import_seconds']} s once per process)")
    if cold_run:
        print(f"  fbk ingest, cold    : {cold_run['seconds']:7.2f} s  {cold_run['rows'] / cold_run['seconds']:>10,.0f} rows/s  peak {cold_run['peak_rss_mb']:6.0f} MB  (GX imported during the run)")
        print(f"  stages, cold (s)    : {cold_run['stages']}")
    print(f"  curated {ours['curated']:,}, quarantined {ours['quarantined']:,}, pii redacted {ours['pii']}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(_child(sys.argv[2], sys.argv[3], sys.argv[4]), default=str))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cold", action="store_true", help="also time a process that has not imported GX yet")
    args = ap.parse_args()
    print(f"load average before: {Path('/proc/loadavg').read_text().strip()}")
    print(f"cores: {os.cpu_count()}, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        from fbk_tasks.demo.generator import generate_reviews, write_reviews

        t0 = time.perf_counter()
        gen = write_reviews(generate_reviews(args.rows, seed=1, ds="2026-01-01"), Path(tmp) / "generated.csv", "csv")
        print(f"generated {args.rows:,} reviews in {time.perf_counter() - t0:.1f} s (not part of the timings)")
        report(f"{args.rows:,} generated reviews", gen, args.cold)
    if REAL.exists():
        report("online_shopping_10_cats (real, Chinese)", REAL, args.cold)
    else:
        print(f"\n(skipped the real Chinese reviews: {REAL} is absent)")
    print(f"\nload average after: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
