"""The one typed settings object that carries all configuration.

Precedence (highest first): explicit keyword arguments, ``FBK_*`` environment variables
(nested with ``__``, e.g. ``FBK_INGEST__MAX_TEXT_CHARS=2000``), the YAML file named by
``FBK_SETTINGS_FILE`` (default ``include/settings.yaml``), then the defaults below.

Nothing else in the project reads the environment for configuration: functions take a
``Settings`` and DAG tasks build one with :func:`load_settings`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INCLUDE_DIR = PROJECT_ROOT / "include"
DEFAULT_SETTINGS_FILE = INCLUDE_DIR / "settings.yaml"

Share = float  # documented alias: a fraction in [0, 1]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _check_share(value: float, info: Any) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{info.field_name} must be within [0, 1], got {value}")
    return value


class IngestSettings(_Section):
    """Ingestion, cleaning, redaction and the data-quality gate."""

    sources_dir: Path = Field(INCLUDE_DIR / "sources", description="Folder of per-source mapping YAML files.")
    gx_suite_file: Path = Field(INCLUDE_DIR / "gx" / "curated_reviews_suite.json", description="GX expectation suite (JSON).")
    min_text_chars: int = Field(1, ge=0, description="Shortest cleaned text accepted.")
    max_text_chars: int = Field(5000, ge=1, description="Longest cleaned text accepted; longer rows are quarantined.")
    allowed_languages: list[str] = Field(["zh", "en"], description="Languages accepted into curated storage.")
    max_quarantine_share: Share = Field(0.5, description="A file whose quarantined share exceeds this fails the run.")
    max_duplicate_share: Share = Field(0.2, description="A file whose duplicate share exceeds this fails the run.")
    dedup_window_days: int = Field(30, ge=0, description="Window for (product, normalised text) duplicates across days.")
    future_tolerance_minutes: int = Field(5, ge=0, description="Clock skew allowed before a timestamp counts as future.")
    redact_pii: bool = Field(True, description="Redact personal data before curated storage (never turn off in production).")

    _share_checks = field_validator("max_quarantine_share", "max_duplicate_share")(_check_share)

    @model_validator(mode="after")
    def _bounds(self) -> "IngestSettings":
        if self.min_text_chars > self.max_text_chars:
            raise ValueError("ingest.min_text_chars must not exceed ingest.max_text_chars")
        return self


class MlflowSettings(_Section):
    """MLflow tracking and registry."""

    tracking_uri: str | None = Field(None, description="Tracking URI; default: a SQLite store under the data root.")
    registry_uri: str | None = Field(None, description="Registry URI; default: same as tracking.")
    artifact_location: str | None = Field(None, description="Artifact root for new experiments; default: under the data root.")
    experiment_prefix: str = Field("fbk", description="Experiments are named <prefix>-<task>.")
    registered_model_name: str = Field("review-sentiment", description="Registered model name.")


class TrainSettings(_Section):
    """Fine-tuning, baseline and the promotion gate (see fbk_tasks/train)."""

    base_model: str = Field("minilm", description="'minilm' (packaged all-MiniLM-L6-v2), a local directory, or a hub id.")
    max_length: int = Field(64, ge=8, le=4096)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    epochs: float = Field(2.0, gt=0)
    warmup_ratio: Share = Field(0.06)
    weight_decay: float = Field(0.01, ge=0)
    seed: int = 13
    early_stopping_patience: int = Field(1, ge=0)
    class_weights: bool = True
    max_train_samples: int | None = Field(None, ge=1, description="Cap on training rows (quick runs, demo).")
    min_rows_per_class: int = Field(20, ge=1)
    golden_fraction: Share = Field(0.2)
    golden_max_rows: int = Field(5000, ge=10)
    dev_fraction: Share = Field(0.1)
    min_slice_rows: int = Field(50, ge=1)
    min_delta: float = Field(0.0, ge=0, le=1, description="Macro-F1 a candidate must gain over the champion.")
    slice_tolerance: Share = Field(0.05, description="Largest per-slice F1 loss the gate allows.")
    candidates: list[str] = Field(["baseline", "transformer"], description="Candidates to train.")
    pretrain: bool = Field(False, description="Domain pre-train a small BERT first (languages without a base model).")
    pretrain_language: str = "zh"
    pretrain_vocab_size: int = Field(8000, ge=100)
    pretrain_steps: int = Field(2000, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    torch_threads: int | None = Field(None, ge=1, description="Default: the number of cores.")

    _share_checks = field_validator("warmup_ratio", "golden_fraction", "dev_fraction", "slice_tolerance")(_check_share)


class ScoreSettings(_Section):
    """Nightly batch scoring."""

    shards: int = Field(2, ge=1)
    batch_size: int = Field(64, ge=1)
    use_onnx: bool = True


class DriftSettings(_Section):
    """Drift monitoring policy."""

    min_batch_rows: int = Field(200, ge=1)
    psi_threshold: float = Field(0.2, ge=0)
    auc_threshold: Share = Field(0.7)
    agreement_drop: Share = Field(0.1)
    signals_required: int = Field(2, ge=1)
    cooldown_days: int = Field(3, ge=0)

    _share_checks = field_validator("auc_threshold", "agreement_drop")(_check_share)


class Settings(BaseSettings):
    """All configuration of the pipeline. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="FBK_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    data_dir: Path = Field(Path("data"), description="Data root: landing, curated, quarantine, scores, reports, stores.")
    timezone: str = Field("UTC", description="Time zone of logical dates.")
    demo_seed: int = 7
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    score: ScoreSettings = Field(default_factory=ScoreSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = Path(os.environ.get("FBK_SETTINGS_FILE", DEFAULT_SETTINGS_FILE))
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))

    @field_validator("data_dir")
    @classmethod
    def _data_dir_usable(cls, value: Path) -> Path:
        value = value.expanduser().absolute()
        probe = value
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            raise ValueError(f"data_dir {value} is not a writable directory (checked {probe})")
        return value

    @model_validator(mode="after")
    def _paths_readable(self) -> "Settings":
        for key, path in (("ingest.sources_dir", self.ingest.sources_dir), ("ingest.gx_suite_file", self.ingest.gx_suite_file)):
            if not path.exists() or not os.access(path, os.R_OK):
                raise ValueError(f"{key}: {path} does not exist or is not readable")
        return self

    # -- the data layout (derived, never configured separately) -----------------------------
    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing"

    @property
    def curated_dir(self) -> Path:
        return self.data_dir / "curated" / "reviews"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine" / "reviews"

    @property
    def ledger_dir(self) -> Path:
        return self.data_dir / "ledger" / "ingest"

    @property
    def labels_dir(self) -> Path:
        return self.data_dir / "labels"

    @property
    def scores_dir(self) -> Path:
        return self.data_dir / "scores"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "state"

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def airflow_home(self) -> Path:
        return self.data_dir / "airflow"

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{self.data_dir / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_registry_uri(self) -> str:
        return self.mlflow.registry_uri or self.mlflow_tracking_uri

    @property
    def mlflow_artifact_location(self) -> str:
        return self.mlflow.artifact_location or (self.data_dir / "mlflow" / "artifacts").as_uri()


class SettingsError(ValueError):
    """A setting is invalid; the message names the key."""


def _unknown_env_keys() -> list[str]:
    """FBK_* variables that match no setting (pydantic-settings ignores them silently)."""
    known_top = {name.upper() for name in Settings.model_fields}
    sections = {
        name.upper(): field.annotation
        for name, field in Settings.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }
    unknown = []
    for key in os.environ:
        if not key.startswith("FBK_") or key == "FBK_SETTINGS_FILE":
            continue
        parts = key[4:].split("__")
        if parts[0] not in known_top:
            unknown.append(key)
        elif len(parts) > 1:
            section = sections.get(parts[0])
            if section is None or parts[1] not in {n.upper() for n in section.model_fields} or len(parts) > 2:
                unknown.append(key)
    return unknown


def load_settings(**overrides: Any) -> Settings:
    """Build and validate the settings; raise :class:`SettingsError` naming each bad key."""
    unknown = _unknown_env_keys()
    if unknown:
        raise SettingsError(f"unknown setting(s) in the environment: {', '.join(sorted(unknown))}")
    yaml_file = Path(os.environ.get("FBK_SETTINGS_FILE", DEFAULT_SETTINGS_FILE))
    if not yaml_file.is_file() or not os.access(yaml_file, os.R_OK):
        raise SettingsError(f"FBK_SETTINGS_FILE: {yaml_file} does not exist or is not readable")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "settings"
            problems.append(f"{key}: {err['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


def describe_settings() -> list[tuple[str, str, str]]:
    """(key, default, description) for every setting, for the README and `fbk settings`."""
    rows: list[tuple[str, str, str]] = []
    for name, field in Settings.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            for sub, sf in ann.model_fields.items():
                rows.append((f"{name}.{sub}", repr(sf.get_default(call_default_factory=True)), sf.description or ""))
        else:
            rows.append((name, repr(field.get_default(call_default_factory=True)), field.description or ""))
    return rows


__all__ = ["Settings", "SettingsError", "load_settings", "describe_settings", "PROJECT_ROOT", "INCLUDE_DIR"]
