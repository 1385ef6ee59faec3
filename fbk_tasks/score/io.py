"""Small Parquet helpers: atomic writes (temp file + os.replace in the same folder)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_parquet_atomic(table, path: Path) -> Path:
    """Write ``table`` to ``path`` so readers see the old file or the complete new one.

    The temporary name does not end in ``.parquet``, so ``*.parquet`` globs never match it.
    """
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
