"""Vectorised review-text processing: cleaning, PII redaction, language tagging.

All functions take a pyarrow string Array/ChunkedArray or a pandas Series of str (nulls
allowed) and return pyarrow arrays of the same length with nulls preserved. The nightly
pipeline calls :func:`clean_and_redact` on titles and texts, then :func:`detect_language`.
Names are re-exported lazily (so ``python -m fbk_tasks.text.clean`` runs cleanly).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AD_PATTERNS": "clean",
    "clean_and_redact": "clean",
    "clean_text": "clean",
    "normalize_for_dedup": "clean",
    "LANGUAGES": "lang",
    "detect_language": "lang",
    "PII_TYPES": "pii",
    "RedactionResult": "pii",
    "redact_pii": "pii",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"fbk_tasks.text.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'fbk_tasks.text' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
