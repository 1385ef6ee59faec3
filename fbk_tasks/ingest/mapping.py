"""Source mappings: how one source's columns become the canonical review schema.

A mapping is a YAML file in ``include/sources/``. See ``include/sources/generic.yaml`` for
the annotated format.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fbk_tasks.schema import SENTIMENT_CLASSES

MAPPED_FIELDS = ("review_id", "product_id", "product_name", "product_category", "rating", "title", "text", "created_at")


class MappingError(ValueError):
    """A mapping file is invalid or no mapping fits a file."""


class SourceMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    description: str = ""
    file_patterns: list[str] = Field(default_factory=list, description="fnmatch patterns that select this mapping.")
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = "auto"
    encoding: Literal["auto", "utf-8", "gb18030"] = "auto"
    # canonical field -> source column (null: the source has no such column)
    columns: dict[str, str | None] = Field(default_factory=dict)
    # canonical field -> constant value for every row
    constants: dict[str, str] = Field(default_factory=dict)
    id_from_content: bool | Literal["if_missing"] = Field(
        False, description="Derive review_id from a hash of the row's content (if_missing: when the file has no id column)."
    )
    columns_optional: bool = Field(False, description="Mapped columns other than text may be absent from a file.")
    id_note: str = ""
    timestamp_format: str | None = Field(None, description="strptime format; default ISO 8601.")
    rating_scale: int = Field(5, description="Ratings are rescaled to 1-5 from this scale.")
    max_duplicate_share: float | None = Field(None, ge=0, le=1, description="Overrides ingest.max_duplicate_share for this source.")
    max_quarantine_share: float | None = Field(None, ge=0, le=1, description="Overrides ingest.max_quarantine_share for this source.")
    label_column: str | None = None
    label_values: dict[str, str] = Field(default_factory=dict, description="source label value -> class name")
    label_confidence_column: str | None = Field(
        None, description="Column with the annotators' confidence in the label, a number in [0, 1] (e.g. the share "
        "of annotators who agreed); training can weight rows by it (train.label_confidence_power).",
    )

    @model_validator(mode="after")
    def _check(self) -> "SourceMapping":
        unknown = set(self.columns) - set(MAPPED_FIELDS)
        if unknown:
            raise ValueError(f"columns: unknown canonical field(s) {sorted(unknown)}; allowed {list(MAPPED_FIELDS)}")
        unknown = set(self.constants) - set(MAPPED_FIELDS)
        if unknown:
            raise ValueError(f"constants: unknown canonical field(s) {sorted(unknown)}")
        if not self.columns.get("text"):
            raise ValueError("columns.text is required")
        if not self.columns.get("review_id") and not self.id_from_content:
            raise ValueError("no review_id column: set id_from_content: true and say why in id_note")
        bad = {v for v in self.label_values.values() if v not in SENTIMENT_CLASSES}
        if bad:
            raise ValueError(f"label_values: unknown class(es) {sorted(bad)}; allowed {list(SENTIMENT_CLASSES)}")
        if self.label_column and not self.label_values:
            raise ValueError("label_column needs label_values")
        if self.label_confidence_column and not self.label_column:
            raise ValueError("label_confidence_column needs label_column")
        return self

    def source_columns(self) -> dict[str, str]:
        """canonical field -> source column, for the fields this source has."""
        return {k: v for k, v in self.columns.items() if v}

    def required_columns(self) -> list[str]:
        """Source columns a file must have: every mapped one (and the label column), or only
        the text (plus an id that cannot be derived) when the mapping's columns are optional."""
        if not self.columns_optional:
            return list(self.source_columns().values()) + [c for c in (self.label_column, self.label_confidence_column) if c]
        cols = [self.columns["text"]]
        if self.columns.get("review_id") and self.id_from_content is False:
            cols.append(self.columns["review_id"])
        return cols

    def matches(self, filename: str) -> bool:
        return any(fnmatch.fnmatch(filename, p) for p in self.file_patterns)


def load_mappings(sources_dir: Path) -> dict[str, SourceMapping]:
    mappings: dict[str, SourceMapping] = {}
    for path in sorted(Path(sources_dir).glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            mapping = SourceMapping(**data)
        except (ValidationError, yaml.YAMLError, TypeError) as exc:
            raise MappingError(f"invalid source mapping {path}: {exc}") from None
        if mapping.name != path.stem:
            raise MappingError(f"{path}: name '{mapping.name}' must equal the file name '{path.stem}'")
        mappings[mapping.name] = mapping
    if "generic" not in mappings:
        raise MappingError(f"{sources_dir} has no generic.yaml mapping")
    return mappings


def choose_mapping(mappings: dict[str, SourceMapping], filename: str, explicit: str | None = None) -> SourceMapping:
    """The mapping named explicitly, else the first whose file pattern matches, else `generic`."""
    if explicit:
        if explicit not in mappings:
            raise MappingError(f"unknown source mapping '{explicit}'; known: {', '.join(sorted(mappings))}")
        return mappings[explicit]
    for mapping in mappings.values():
        if mapping.name != "generic" and mapping.matches(filename):
            return mapping
    return mappings["generic"]
