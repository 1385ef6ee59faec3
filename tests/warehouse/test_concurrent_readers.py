"""Analysts query the warehouse while scoring and rebuilds run: no lock errors, no half files."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
import time

import pytest

READER = textwrap.dedent(
    """
    import json, os, sys, time
    import duckdb
    path, stop, max_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
    ok, errors, seen = 0, [], set()
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline and not os.path.exists(stop):
        if not os.path.exists(path):
            time.sleep(0.01); continue
        try:
            con = duckdb.connect(path, read_only=True)
            try:
                n, d = con.execute("SELECT count(*), count(DISTINCT review_id) FROM review_scores").fetchone()
                con.execute("SELECT * FROM daily_product_sentiment").fetchall()
                con.execute("SELECT count(*) FROM score_rejections").fetchone()
                if n != d:
                    errors.append(f"duplicates: {n} rows, {d} distinct")
                seen.add(n)
                ok += 1
            finally:
                con.close()
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        time.sleep(0.02)
    print(json.dumps({"ok": ok, "errors": errors[:5], "n_errors": len(errors), "seen": sorted(seen)}))
    """
)


@pytest.mark.slow
def test_readers_never_fail_while_scoring_and_rebuilding(settings, tmp_path):
    from fbk_tasks.score.run import run_scoring
    from fbk_tasks.score.testing import register_keyword_model, write_curated
    from fbk_tasks.warehouse.build import build_warehouse

    write_curated(settings, "2026-06-01", [f"good item {i}" for i in range(30)])
    register_keyword_model(settings)
    run_scoring(settings, run_id="n0", scored_at=dt.datetime(2026, 6, 2, tzinfo=dt.timezone.utc))

    stop = tmp_path / "stop"
    script = tmp_path / "reader.py"
    script.write_text(READER)
    readers = [
        # they read until the stop file appears; the cap only ends orphans if the test process dies
        subprocess.Popen([sys.executable, str(script), str(settings.warehouse_path), str(stop), "3600"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    try:
        time.sleep(1.5)  # let the readers start their loops
        for night in range(1, 5):
            write_curated(settings, "2026-06-01", [f"bad item {night}-{i}" for i in range(20)], start_row=1000 * night)
            run_scoring(settings, run_id=f"n{night}", scored_at=dt.datetime(2026, 6, 2 + night, tzinfo=dt.timezone.utc))
            build_warehouse(settings)
            build_warehouse(settings)
    finally:
        stop.touch()
        outs = [r.communicate() for r in readers]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    for rep, (_, err) in zip(reports, outs):
        assert rep["n_errors"] == 0, (rep["errors"], err[-2000:])
        assert rep["ok"] >= 5
    # readers saw the warehouse grow (30 -> 110 scored reviews) without ever failing
    assert max(max(r["seen"]) for r in reports) == 110
