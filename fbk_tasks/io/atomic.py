"""Atomic writes: readers see the old file or the new one, never half of one.

Every write goes to a hidden temporary file in the destination folder (same file system),
is flushed to disk, and is renamed over the destination with os.replace.
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # hidden, and not ending in the destination's suffix, so that globs such as *.parquet
    # (pathlib, DuckDB) never pick up a file that is still being written
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)


def write_parquet(table: pa.Table, path: Path, **kwargs) -> Path:
    """Write a Parquet file atomically (zstd by default)."""
    kwargs.setdefault("compression", "zstd")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)
    return Path(path)


def write_bytes(data: bytes, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(text: str, path: Path) -> Path:
    return write_bytes(text.encode("utf-8"), path)


def copy_file(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` atomically (a reader of ``dst`` never sees a partial copy)."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)
