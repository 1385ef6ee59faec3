"""The GX gate validates the data it is given (only the columns its suite names) and the
pipeline's masks must agree with GX's own counts."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from fbk_tasks.ingest.validate import VALIDATION_COLUMNS, _no_frame_fingerprint, run_gate, validation_frame

NOW = datetime(2026, 3, 2, tzinfo=timezone.utc)


def _frame_and_masks():
    texts = ["Great kettle, works well", "", "这个水壶很好用", "Le produit est cassé et pas bon"]
    frame = pd.DataFrame(
        {
            "review_id": ["a", "b", "c", "d"],
            "text": pd.array(texts, dtype="str"),
            "language": pd.array(["en", "other", "zh", "other"], dtype="str"),
            "rating_parsed": [5.0, 4.0, 9.0, np.nan],
            "rating": pd.array([5, 4, None, None], dtype="Int8"),
            "created_at": pd.to_datetime(["2026-03-01T00:00:00Z"] * 3 + ["2027-01-01T00:00:00Z"], utc=True).astype("datetime64[us, UTC]"),
            "product_id": ["P1"] * 4,
        }
    )
    z = np.zeros(4, dtype=bool)
    masks = {name: z.copy() for name in ("invalid_encoding", "text_too_short", "text_too_long", "rating_invalid", "label_invalid", "label_confidence_invalid", "timestamp_unparseable", "duplicate", "malformed_row")}
    masks["text_empty"] = np.array([False, True, False, False])
    masks["rating_out_of_range"] = np.array([False, False, True, False])
    masks["timestamp_in_future"] = np.array([False, False, False, True])
    masks["language_unknown"] = np.array([False, False, False, True])
    return frame, masks


def test_gate_counts_agree_and_only_named_columns_are_validated(settings):
    settings.ingest.max_quarantine_share = 1.0
    frame, masks = _frame_and_masks()
    v = validation_frame(frame, masks)
    assert list(v.columns) == VALIDATION_COLUMNS
    assert v["text"].isna().tolist() == [False, True, False, False]
    assert v["language"].isna().tolist() == [False, True, False, False]
    gate = run_gate(settings, v, batch_name="t", now=NOW, masks=masks)
    assert gate.success
    assert gate.row_counts["text_empty"] == 1
    assert gate.row_counts["rating_out_of_range"] == 1
    assert gate.row_counts["timestamp_in_future"] == 1
    assert gate.row_counts["language_unknown"] == 1
    assert (settings.reports_dir / "gx" / "index.html").exists()


def test_gate_fails_loudly_when_a_mask_disagrees_with_gx(settings):
    settings.ingest.max_quarantine_share = 1.0
    frame, masks = _frame_and_masks()
    v = validation_frame(frame, masks)
    wrong = dict(masks, language_unknown=np.zeros(4, dtype=bool))  # GX still sees the French row
    with pytest.raises(AssertionError, match="language_unknown"):
        run_gate(settings, v, batch_name="t", now=NOW, masks=wrong)


def test_fingerprint_switch_is_restored():
    from great_expectations.execution_engine import pandas_execution_engine as engine

    before = engine.HASH_THRESHOLD
    with pytest.raises(RuntimeError), _no_frame_fingerprint():
        assert engine.HASH_THRESHOLD == 0
        raise RuntimeError
    assert engine.HASH_THRESHOLD == before


def test_data_docs_index_lists_only_the_newest_results(settings):
    """GX reads every validation result its index lists on each rebuild (after every file), so an
    unbounded index grows with every file ever ingested; ingest.gx_docs_index_limit bounds it,
    and a data root set up with another limit (or none, by an earlier version) is updated."""
    import re

    settings.ingest.max_quarantine_share = 1.0
    frame, masks = _frame_and_masks()
    v = validation_frame(frame, masks)

    def listed() -> int:
        html = (settings.reports_dir / "gx" / "index.html").read_text()
        return len(set(re.findall(r"validations/[^\"']+\.html", html)))

    for i in range(3):
        run_gate(settings, v, batch_name=f"b{i}", now=NOW, masks=masks)
    assert listed() == 3
    settings.ingest.gx_docs_index_limit = 2
    run_gate(settings, v, batch_name="b3", now=NOW, masks=masks)
    assert listed() == 2
    assert len(list((settings.reports_dir / "gx" / "validations").rglob("*.html"))) == 4  # older pages stay
