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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fbk_tasks.settings import Settings

log = logging.getLogger(__name__)

SITE_NAME = "fbk_data_docs"
# expectation meta.reason -> the pipeline's mask names that must add up to GX's count
REASON_MASKS = {
    "text_empty": ("text_empty",),
    "text_length": ("text_too_short", "text_too_long"),
    "rating_out_of_range": ("rating_out_of_range",),
    "rating_invalid": ("rating_invalid",),
    "label_invalid": ("label_invalid",),
    "label_confidence_invalid": ("label_confidence_invalid",),
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


# What GX sees: only the columns its expectations name (GX filters and copies the whole frame
# for every row-level metric, so each extra column costs time). The schema expectation checks
# exactly this list.
VALIDATION_COLUMNS: list[str] = [
    "review_id",
    "text",
    "language",
    "rating",
    "created_at",
    "_rating_invalid",
    "_label_invalid",
    "_label_confidence_invalid",
    "_timestamp_unparseable",
    "_invalid_encoding",
    "_quarantined",
    "_duplicate",
]


def validation_frame(frame: pd.DataFrame, masks: dict[str, np.ndarray], columns: list[str] | None = None) -> pd.DataFrame:
    """The frame GX sees (:data:`VALIDATION_COLUMNS`): review_id, text (empty text as null),
    language (null where there is no text), rating as float (the parsed number, out-of-range
    values included), created_at, plus the indicator columns the suite refers to.

    String columns are Arrow-backed (pandas ``str``), so GX's null checks, lengths, set
    membership and uniqueness run on Arrow buffers instead of a million Python objects.
    ``columns`` is accepted for compatibility and ignored."""
    text = _arrow_str(frame["text"])
    has_text = pc.fill_null(pc.greater(pc.utf8_length(text), 0), False)
    null = pa.scalar(None, pa.string())
    text = pc.if_else(has_text, text, null)
    language = pc.if_else(has_text, _arrow_str(frame["language"]), null)
    v = pd.DataFrame(
        {
            "review_id": _str_series(_arrow_str(frame["review_id"])),
            "text": _str_series(text),
            "language": _str_series(language),
            # the parsed number, out-of-range values included, so GX sees what the row said; a
            # rating that is not a whole number is rating_invalid alone (as in the quarantine mask)
            "rating": np.where(masks["rating_invalid"], np.nan, frame["rating_parsed"].astype(float).to_numpy())
            if "rating_parsed" in frame else frame["rating"].astype("Float64").astype(float).to_numpy(),
            "created_at": frame["created_at"].reset_index(drop=True),
        },
        index=pd.RangeIndex(len(frame)),
    )
    v["_rating_invalid"] = masks["rating_invalid"]
    v["_label_invalid"] = masks["label_invalid"]
    v["_label_confidence_invalid"] = masks["label_confidence_invalid"]
    v["_timestamp_unparseable"] = masks["timestamp_unparseable"]
    v["_invalid_encoding"] = masks["invalid_encoding"]
    quarantined = np.zeros(len(v), dtype=bool)
    for m in masks.values():
        quarantined |= m
    v["_quarantined"] = quarantined
    v["_duplicate"] = masks["duplicate"]
    return v[VALIDATION_COLUMNS]


def _arrow_str(col: pd.Series) -> pa.Array:
    """A pandas string column (object or str dtype) as one pyarrow string array."""
    arr = pa.array(col, type=pa.string(), from_pandas=True)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _str_series(arr: pa.Array) -> pd.Series:
    """pandas ``str`` dtype (Arrow-backed, NaN for missing: plain numpy booleans out of
    comparisons), wrapping the Arrow buffers without converting to Python objects."""
    return arr.to_pandas()


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
    site_config = {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(settings.reports_dir / "gx")},
        # the index page lists the newest results only: GX reads every result it lists on each
        # rebuild (after every file), which otherwise grows with every file ever ingested
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder",
                               "validation_results_limit": settings.ingest.gx_docs_index_limit},
    }
    sites = ctx.variables.data_docs_sites or {}
    if SITE_NAME not in sites:
        ctx.add_data_docs_site(site_name=SITE_NAME, site_config=site_config)
    elif dict(sites[SITE_NAME]) != site_config:  # a data root set up by an earlier version or setting
        ctx.update_data_docs_site(site_name=SITE_NAME, site_config=site_config)
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
        # the same horizon as the quarantine mask: a sender's clock may run this far ahead
        "future_horizon": (now + timedelta(minutes=cfg.future_tolerance_minutes)).isoformat(),
        "columns": list(VALIDATION_COLUMNS),
    }
    from great_expectations.core.run_identifier import RunIdentifier

    # the run name says which file and date a Data Docs page belongs to
    with _no_frame_fingerprint():
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


@contextmanager
def _no_frame_fingerprint() -> Iterator[None]:
    """Skip GX's ``pandas_data_fingerprint`` batch marker while validating.

    GX 1.x hashes every in-memory frame under ``HASH_THRESHOLD`` bytes (md5 over
    ``pandas.util.hash_pandas_object``) only to store the digest as a batch marker; on a
    million reviews that is seconds of work and nothing reads it. The batch is identified by
    the run name instead, which carries the file's SHA-256 prefix. Validation itself is
    unchanged. If a GX upgrade drops the constant, GX simply hashes again."""
    try:
        from great_expectations.execution_engine import pandas_execution_engine as engine
    except ImportError:  # pragma: no cover - GX layout changed
        yield
        return
    if not hasattr(engine, "HASH_THRESHOLD"):
        yield
        return
    saved = engine.HASH_THRESHOLD
    engine.HASH_THRESHOLD = 0
    try:
        yield
    finally:
        engine.HASH_THRESHOLD = saved


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
