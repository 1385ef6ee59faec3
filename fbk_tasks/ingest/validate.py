"""The Great Expectations gate (GX Core 1.x) for one ingested file.

The suite lives in ``include/gx/curated_reviews_suite.json``. Each expectation carries
``meta.level``: ``row`` expectations describe what sends a row to quarantine (the pipeline
computes those masks itself, because GX returns at most 200 unexpected rows, and this module
checks that GX counted the same number); ``batch`` expectations fail the run. Validation
results are kept in a file-backed GX project under ``<data>/gx`` and rendered as Data Docs
under ``<data>/reports/gx``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fbk_tasks.settings import Settings

log = logging.getLogger(__name__)

SITE_NAME = "fbk_data_docs"
# expectation meta.reason -> the pipeline's mask names that must add up to GX's count
REASON_MASKS = {
    "text_empty": ("text_empty",),
    "text_length": ("text_too_short", "text_too_long"),
    "rating_out_of_range": ("rating_out_of_range",),
    "rating_invalid": ("rating_invalid",),
    "timestamp_unparseable": ("timestamp_unparseable",),
    "timestamp_in_future": ("timestamp_in_future",),
    "language_unknown": ("language_unknown",),
    "invalid_encoding": ("invalid_encoding",),
}


class BatchRejected(ValueError):
    """A batch-level expectation failed; the message names it and the numbers."""


@dataclass
class GateResult:
    success: bool
    batch_failures: list[str] = field(default_factory=list)
    row_counts: dict[str, int] = field(default_factory=dict)  # reason -> GX unexpected_count
    docs_index: Path | None = None


def load_suite_dict(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def validation_frame(frame: pd.DataFrame, masks: dict[str, np.ndarray], columns: list[str]) -> pd.DataFrame:
    """The frame GX sees: canonical columns (empty text as null, language null where there
    is no text), rating as float, plus the indicator columns the suite refers to."""
    v = frame[columns].copy()
    v["text"] = v["text"].where(v["text"].fillna("").str.len() > 0, None)
    v["language"] = v["language"].where(v["text"].notna(), None)
    # the parsed number, out-of-range values included, so GX sees what the row said
    v["rating"] = frame["rating_parsed"].astype(float) if "rating_parsed" in frame else v["rating"].astype("Float64").astype(float)
    v["_rating_invalid"] = masks["rating_invalid"]
    v["_timestamp_unparseable"] = masks["timestamp_unparseable"]
    v["_invalid_encoding"] = masks["invalid_encoding"]
    quarantined = np.zeros(len(v), dtype=bool)
    for m in masks.values():
        quarantined |= m
    v["_quarantined"] = quarantined
    v["_duplicate"] = masks["duplicate"]
    return v


def _context(settings: Settings):
    import great_expectations as gx

    root = settings.data_dir / "gx"
    root.mkdir(parents=True, exist_ok=True)
    ctx = gx.get_context(mode="file", project_root_dir=str(root))
    bars = ctx.variables.progress_bars
    if bars is None or (bars.get("globally", True) if isinstance(bars, dict) else bars.globally):
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        ctx.variables.save()
    if SITE_NAME not in ctx.get_site_names():
        ctx.add_data_docs_site(
            site_name=SITE_NAME,
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(settings.reports_dir / "gx")},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return ctx


def run_gate(
    settings: Settings,
    vframe: pd.DataFrame,
    *,
    batch_name: str,
    now: datetime,
    masks: dict[str, np.ndarray],
    max_quarantine_share: float | None = None,
    max_duplicate_share: float | None = None,
) -> GateResult:
    """Validate one file's frame with the suite; render Data Docs; cross-check row counts."""
    import great_expectations as gx

    cfg = settings.ingest
    ctx = _context(settings)
    suite_dict = load_suite_dict(cfg.gx_suite_file)
    suite = ctx.suites.add_or_update(gx.ExpectationSuite(**suite_dict))
    source = ctx.data_sources.add_or_update_pandas("reviews")
    asset_names = {a.name for a in source.assets}
    asset = source.get_asset("landed_file") if "landed_file" in asset_names else source.add_dataframe_asset("landed_file")
    bd_names = {b.name for b in asset.batch_definitions}
    batch_def = asset.get_batch_definition("whole") if "whole" in bd_names else asset.add_batch_definition_whole_dataframe("whole")
    vd = ctx.validation_definitions.add_or_update(gx.ValidationDefinition(name=f"{suite.name}-landed_file", data=batch_def, suite=suite))
    checkpoint = ctx.checkpoints.add_or_update(
        gx.Checkpoint(
            name="curated_reviews_gate",
            validation_definitions=[vd],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[SITE_NAME])],
            result_format={"result_format": "SUMMARY"},
        )
    )
    params = {
        "min_text_chars": cfg.min_text_chars,
        "max_text_chars": cfg.max_text_chars,
        "allowed_languages": list(cfg.allowed_languages),
        "max_quarantine_share": cfg.max_quarantine_share if max_quarantine_share is None else max_quarantine_share,
        "max_duplicate_share": cfg.max_duplicate_share if max_duplicate_share is None else max_duplicate_share,
        "now": now.isoformat(),
        "columns": list(vframe.columns),
    }
    from great_expectations.core.run_identifier import RunIdentifier

    # the run name says which file and date a Data Docs page belongs to
    result = checkpoint.run(
        batch_parameters={"dataframe": vframe},
        expectation_parameters=params,
        run_id=RunIdentifier(run_name=batch_name, run_time=now),
    )

    gate = GateResult(success=True)
    for run_result in result.run_results.values():
        for r in run_result.results:
            cfg_ = r.expectation_config
            level = (cfg_.meta or {}).get("level")
            reason = (cfg_.meta or {}).get("reason")
            if level == "batch" and not r.success:
                observed = r.result.get("observed_value")
                kwargs = {k: v for k, v in cfg_.kwargs.items() if k not in ("batch_id",)}
                if isinstance(observed, (list, tuple)) and len(observed) > 8:
                    observed = f"{len(observed)} columns"
                gate.batch_failures.append(f"{cfg_.type}({_fmt_kwargs(kwargs, params)}): observed {_fmt(observed)}")
            elif level == "row" and reason:
                gate.row_counts[reason] = int(r.result.get("unexpected_count") or 0)
    gate.success = not gate.batch_failures
    _cross_check(gate.row_counts, masks, vframe)
    site = settings.reports_dir / "gx" / "index.html"
    gate.docs_index = site if site.exists() else None
    return gate


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _fmt_kwargs(kwargs: dict[str, Any], params: dict[str, Any]) -> str:
    parts = []
    for k, v in kwargs.items():
        if isinstance(v, dict) and "$PARAMETER" in v:
            v = params.get(v["$PARAMETER"], v)
        if isinstance(v, list) and len(v) > 8:
            v = f"[{len(v)} items]"
        parts.append(f"{k}={v}")
    return ", ".join(parts)


def _cross_check(gx_counts: dict[str, int], masks: dict[str, np.ndarray], vframe: pd.DataFrame) -> None:
    """GX and the pipeline must agree on how many rows each row-level expectation fails."""
    # malformed rows have no text; GX's not-null expectation counts them too
    malformed = masks.get("malformed_row")
    for reason, count in gx_counts.items():
        names = REASON_MASKS.get(reason)
        if not names:
            continue
        ours = int(sum(int(masks[n].sum()) for n in names))
        if reason == "text_empty" and malformed is not None:
            ours = int((masks["text_empty"] | malformed).sum())
        if ours != count:
            raise AssertionError(f"GX counted {count} rows failing '{reason}' but the quarantine mask has {ours}")
