"""`fbk demo` starts from an empty data root: its own earlier data is removed, anyone else's is refused."""

from __future__ import annotations

import pytest

from fbk_tasks.demo.commands import DEMO_MARKER, reset_demo_root


def test_a_previous_demo_is_removed_and_other_data_refused(settings):
    root = settings.data_dir
    assert reset_demo_root(settings) is False and (root / DEMO_MARKER).is_file()
    part = root / "curated" / "reviews" / "ds=2026-03-01" / "part-0.parquet"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"a previous demo night")
    assert reset_demo_root(settings) is True  # the demo's own data: a second `make demo` starts afresh
    assert not part.exists() and [p.name for p in root.iterdir()] == [DEMO_MARKER]

    (root / DEMO_MARKER).unlink()
    part.parent.mkdir(parents=True)
    part.write_bytes(b"someone's real reviews")
    with pytest.raises(SystemExit, match="holds data the demo did not write"):
        reset_demo_root(settings)
    assert part.read_bytes() == b"someone's real reviews"
