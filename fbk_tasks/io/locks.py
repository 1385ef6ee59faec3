"""An exclusive advisory lock on a file (processes on one host, or a shared file system that
supports flock): the ingestion runs and the drift request file's read-modify-write use it."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


@contextmanager
def exclusive_lock(path: Path, what: str, logger: logging.Logger = log) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created with its folder) for the block; when another
    process holds it, log (on the caller's ``logger``) that this one waits for ``what``, and for
    how long. Not re-entrant."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for %s (another process holds %s)", what, path)
            started = time.monotonic()
            fcntl.flock(handle, fcntl.LOCK_EX)
            logger.info("lock %s acquired after %.1f s", path, time.monotonic() - started)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
