"""The one typed settings object that carries all configuration.

Precedence (highest first): explicit keyword arguments, ``FBK_*`` environment variables
(nested with ``__``, e.g. ``FBK_INGEST__MAX_TEXT_CHARS=2000``), the YAML file named by
``FBK_SETTINGS_FILE`` (default ``include/settings.yaml``), then the defaults below.

Nothing else in the project reads the environment for configuration: functions take a
``Settings`` and DAG tasks build one with :func:`load_settings`.
"""

from __future__ import annotations

import os
import re
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
    gx_docs_index_limit: int = Field(200, ge=1, description="Newest validation results the Data Docs index page lists (GX reads each listed result on every rebuild, after every file; older pages stay on disk).")
    max_duplicate_share: Share = Field(0.2, description="A file whose duplicate share exceeds this fails the run.")
    dedup_window_days: int = Field(30, ge=0, description="Window for (product, normalised text) duplicates across days.")
    future_tolerance_minutes: int = Field(5, ge=0, description="Clock skew allowed before a timestamp counts as future.")

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
    verify_timeout_s: int = Field(
        900, ge=10, description="Limit for the promotion gate's fresh-process load-and-predict check (seconds)."
    )


class TrainSettings(_Section):
    """Fine-tuning, baseline and the promotion gate (see fbk_tasks/train)."""

    base_model: str = Field("minilm", description="'minilm' (packaged all-MiniLM-L6-v2), a local directory, or a hub id.")
    max_length: int = Field(64, ge=8, le=4096, description="Token length cap for fine-tuning and prediction.")
    batch_size: int = Field(32, ge=1, description="Training batch size on CPU.")
    learning_rate: float = Field(1e-4, gt=0, description="Peak AdamW learning rate of the fine-tune.")
    epochs: float = Field(3.0, gt=0, description="Fine-tuning epochs (fractions allowed: stops after that share of steps).")
    warmup_ratio: Share = Field(0.06, description="Share of steps of linear learning-rate warm-up.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not on biases and LayerNorm).")
    seed: int = Field(13, description="Seed of splits, golden sample, batching and model init.")
    early_stopping_patience: int = Field(1, ge=0, description="Training stops after this many epochs in a row without a dev macro-F1 gain (0 acts as 1); the best epoch is restored.")
    class_weights: bool = Field(True, description="Balanced class weights in the fine-tune loss.")
    tune_class_bias: bool = Field(
        False,
        description="After fine-tuning, add per-class offsets to the classifier bias that maximise dev macro-F1 "
        "(n_classes - 1 numbers, grid search; the checkpoint stays a plain model). Off: over 8 airline runs they "
        "changed test macro-F1 by -0.77 to +0.34 points, -0.08 on average.",
    )
    ema_decay: float | None = Field(
        None, gt=0, lt=1,
        description="Exponential moving average of the trainable weights (e.g. 0.995; None: off): dev evaluation, "
        "early stopping and the saved model use the averaged weights.",
    )
    rdrop_alpha: float = Field(
        1.0, ge=0,
        description="R-Drop: each batch runs twice with different dropout and the two predictions are pulled "
        "together by this weight on their symmetric KL divergence (0: off; about 2x the training time).",
    )
    max_epoch_minutes: float | None = Field(
        5.0, gt=0,
        description="CPU training: a probe before the first step estimates an epoch with R-Drop; over this many "
        "minutes the run trains without R-Drop (MLflow param transformer.rdrop_alpha_used, metrics epoch_estimate_*). "
        "None: no probe, R-Drop as set.",
    )
    label_confidence_power: float = Field(
        1.0, ge=0, le=8,
        description="Weight each training row's loss by its label_confidence (the source's annotator agreement, "
        "see a mapping's label_confidence_column) to this power; rows without one weigh 1 (0: all rows weigh 1).",
    )
    layer_lr_decay: float = Field(
        1.0, gt=0, le=1,
        description="Layer-wise learning-rate decay: a layer k levels below the head trains at learning_rate * this^k "
        "(1: one rate for all; BERT-style models only).",
    )
    max_train_samples: int | None = Field(None, ge=1, description="Cap on training rows (quick runs, demo).")
    min_rows_per_class: int = Field(20, ge=1, description="Fewer labelled rows in a present class refuses training.")
    golden_fraction: Share = Field(0.2, description="Share of labelled rows taken (once) as the golden set.")
    golden_max_rows: int = Field(5000, ge=10, description="Cap on golden-set rows.")
    dev_fraction: Share = Field(0.1, description="Share of non-golden rows held out for early stopping.")
    min_slice_rows: int = Field(50, ge=1, description="Golden rows a slice needs to get a per-slice F1 (and a gate check).")
    min_slice_class_rows: int = Field(10, ge=1, description="A slice's F1 averages only over the classes with at least this many of its golden rows (one prediction on a class with two rows would move the slice's F1 by a third).")
    min_delta: float = Field(0.0, ge=0, le=1, description="Macro-F1 a candidate must gain over the champion.")
    slice_tolerance: Share = Field(0.05, description="Largest per-slice F1 loss the gate allows.")
    candidates: list[str] = Field(["baseline", "transformer"], description="Candidates to train.")
    pretrain: bool = Field(False, description="Domain pre-train a small BERT first (languages without a base model).")
    pretrain_language: str = Field("zh", description="Language of the curated text used for pre-training.")
    pretrain_vocab_size: int = Field(8000, ge=100, description="WordPiece vocabulary size of pre-training.")
    pretrain_steps: int = Field(2000, ge=1, description="Masked-LM optimisation steps.")
    pretrain_from: str | None = Field(
        None,
        description="None: a new WordPiece tokenizer and small BERT from scratch. 'minilm', a local directory or a hub id: "
        "continue masked-LM training of that BERT-style model (its tokenizer kept) on the curated text "
        "(task-adaptive pre-training); use a smaller pretrain_learning_rate (1e-4) then. 'pretrained:latest': each run "
        "adds an instalment to the last pre-trained model (from scratch when there is none yet; steps add up in its lineage).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA (bf16 autocast) when present, else CPU.")
    torch_threads: int | None = Field(None, ge=1, description="Default: the number of cores.")
    eval_batch_size: int = Field(64, ge=1, description="Batch size for dev/golden evaluation and pyfunc prediction.")
    cuda_batch_size: int = Field(128, ge=1, description="Training batch size used instead of batch_size on CUDA.")
    length_group_factor: int = Field(
        50, ge=1, description="Length-grouped batching: sort by length within mega-batches of batch_size * this."
    )
    log_every_steps: int = Field(50, ge=1, description="Plain progress log line every N steps when not on a TTY.")
    pooling: Literal["cls", "mean"] = Field(
        "mean",
        description="Fine-tune head input: 'cls' ([CLS] + pooler, as loaded) or 'mean' (one appended standard encoder layer "
        "that makes [CLS] the masked mean, as sentence-transformers were trained; still a plain BERT checkpoint).",
    )
    freeze_word_embeddings: bool = Field(True, description="Keep the word-embedding matrix fixed while fine-tuning.")
    emoji_to_text: bool = Field(
        True,
        description="Give the model emoji and symbols its vocabulary lacks as their Unicode names ('😡' -> 'pouting face'); "
        "stored with the tokenizer so that scoring applies the same rule.",
    )
    cpu_bf16: Literal["auto", "on", "off"] = Field(
        "auto",
        description="bf16 autocast for CPU training and pre-training (auto: only when the CPU has avx512_bf16/AMX and a "
        "probe step on a real batch runs at least 5% faster than in fp32); prediction stays fp32.",
    )
    fused_adamw: bool = Field(False, description="Fused AdamW kernel (torch >= 2.4 on CPU).")
    gpu_queue: str | None = Field(
        None,
        description="Distributed mode: Celery queue (and pool of the same name, which must exist) for the "
        "transformer training task; None runs every candidate on the default queue.",
    )
    baseline_max_features: int = Field(200_000, ge=100, description="Vocabulary cap of each TF-IDF vectorizer.")
    ece_bins: int = Field(10, ge=2, description="Bins of the expected calibration error.")
    pretrain_max_length: int = Field(128, ge=8, description="Sequence length of masked-LM pre-training.")
    pretrain_hidden_size: int = Field(256, ge=16, description="Hidden size of the pre-trained small BERT.")
    pretrain_layers: int = Field(4, ge=1, description="Transformer layers of the pre-trained small BERT.")
    pretrain_heads: int = Field(4, ge=1, description="Attention heads of the pre-trained small BERT.")
    pretrain_batch_size: int = Field(64, ge=1, description="Batch size of masked-LM pre-training.")
    pretrain_learning_rate: float = Field(5e-4, gt=0, description="Peak learning rate of masked-LM pre-training.")
    pretrain_max_minutes: float | None = Field(
        None, gt=0, description="Time budget of pre-training: stop after this many minutes even if pretrain_steps are not done; the learning-rate warm-up and decay then follow whichever of steps and minutes runs out first."
    )

    _share_checks = field_validator("warmup_ratio", "golden_fraction", "dev_fraction", "slice_tolerance")(_check_share)


class ScoreSettings(_Section):
    """Nightly batch scoring (see fbk_tasks/score) and the analysts' warehouse."""

    shards: int = Field(2, ge=1, description="Shards each partition of a scoring run is split into, by hash of review_id: one mapped Airflow task each, up to score.max_mapped_tasks.")
    plan_retention_days: int | None = Field(14, ge=1, description="Days a scoring run's plan folder (state/score_plans/<run>/) is kept after it was last written; a finished run removes older ones. None keeps every plan.")
    max_parallel_shards: int = Field(4, ge=1, description="Most `score_shard` tasks of one run that run at once (Airflow `max_active_tis_per_dagrun`; read when the DAG file is parsed). Raise it with `score.shards` and the workers to score wider.")
    max_mapped_tasks: int = Field(512, ge=1, description="Most mapped `score_shard` tasks one run creates (keep it under Airflow's `core.max_map_length`, 1024 by default). A run with more shards (partitions x `score.shards`: a new champion's first night or a rescore over many nights) deals them into this many tasks, balanced by planned reviews.")
    batch_size: int = Field(1024, ge=1, description="Reviews read from Parquet and sent to the model per predict call (the model sorts them by length and runs sub-batches of train.eval_batch_size, so larger means less padding).")
    deadline_minutes: float | None = Field(
        None,
        gt=0,
        description="A scoring run must finish this many minutes after it was queued (cron, asset-triggered, manual and "
        "backfill runs alike), or an alert fires (None: no deadline). Off by default: dag.test() in Airflow 3.3.2 crashes "
        "on DAGs with a deadline (apache/airflow#73428).",
    )
    model_alias: str = Field("champion", min_length=1, description="Registry alias whose version a scoring run pins (resolved once per run).")
    scan_batch_rows: int = Field(8192, ge=1, description="Rows per Arrow batch when scanning curated Parquet (planning and scoring).")
    max_error_detail_chars: int = Field(500, ge=20, description="Longest model-error message kept in a rejection row.")
    duckdb_memory_mb: int = Field(256, ge=64, description="Memory cap (MiB) of the DuckDB sorts that plan a scoring run, find a shard's planned rows in curated storage and reconcile the outputs, and of ingestion's look-up of a file's review_ids in curated history; beyond it DuckDB spills to <data>/state/duckdb_tmp. A cap too small for the night fails with DuckDB's Out of Memory error (128 and 256 ran 10M reviews a night).")
    onnx: bool = Field(True, description="Export each transformer candidate to ONNX (fp32) inside its pyfunc and check it against PyTorch on the golden set.")
    onnx_int8: bool = Field(True, description="Also export a dynamically int8-quantised ONNX model and check it the same way.")
    onnx_int8_recheck_margin: float = Field(
        0.15, ge=0, lt=1,
        description="Serving int8: rows whose top-two class-probability margin is below this are scored again by the fp32 "
        "export (0: off). The golden-set check runs the same way and the margin is stored with the export.",
    )
    onnx_max_f1_drop: float = Field(0.005, ge=-1, le=1, description="Largest golden macro-F1 loss (vs PyTorch) an ONNX export may have to be served (a negative value demands a gain: no export is served).")
    onnx_min_agreement: Share = Field(0.98, description="Smallest golden label agreement with PyTorch an ONNX export needs to be served.")
    onnx_min_speedup: float = Field(1.0, ge=0, description="An export is served only if, timed on the golden set at registration, it ran at least this many times as fast as PyTorch (0: no speed condition).")
    backend: Literal["auto", "torch"] = Field("auto", description="auto: serve the fastest export that passed its check (int8, else fp32, else PyTorch; PyTorch on a CUDA worker); torch: always PyTorch.")
    threads: int | None = Field(None, ge=1, description="Inference threads of a scoring process (PyTorch and ONNX Runtime); default: the number of cores.")

    _share_checks = field_validator("onnx_min_agreement")(_check_share)


class DriftSettings(_Section):
    """Drift monitoring: signals against the champion's training reference, and the retrain policy
    (see fbk_tasks/drift and docs/drift.md). Every threshold is an effect size, never a p-value."""

    min_batch_rows: int = Field(200, ge=1, description="Scored reviews a night needs before the policy may fire.")
    min_category_rows: int = Field(100, ge=1, description="Rows a category needs (night and reference) for per-category signals.")
    psi_threshold: float = Field(0.2, ge=0, description="PSI at which a share signal (predictions, categories, languages, text length) fires.")
    severe_psi_threshold: float = Field(0.5, ge=0, description="PSI at which a share signal fires the retrain alone.")
    auc_threshold: Share = Field(0.7, description="Domain-classifier ROC AUC (reference vs night, cross-validated) at which input drift fires.")
    severe_auc_threshold: Share = Field(0.9, description="Domain-classifier AUC that fires the retrain alone.")
    agreement_drop: Share = Field(0.1, description="Drop of prediction/rating agreement (reference minus night) that fires.")
    severe_agreement_drop: Share = Field(0.25, description="Agreement drop that fires the retrain alone.")
    novel_term_share: Share = Field(0.05, description="Share of night reviews containing a frequent term never seen in the reference that fires.")
    severe_novel_term_share: Share = Field(0.2, description="Novel-term share that fires the retrain alone.")
    unk_rate_increase: Share = Field(0.05, description="Increase of the mean [UNK]-token share (MiniLM tokenizer) that fires.")
    severe_unk_rate_increase: Share = Field(0.3, description="[UNK]-share increase that fires the retrain alone.")
    signals_required: int = Field(2, ge=1, description="Distinct signals that must fire together to request a retrain.")
    cooldown_days: int = Field(3, ge=0, description="Days after a retrain (request or champion promotion) during which no retrain is requested.")
    max_nights_per_run: int = Field(7, ge=1, description="Unchecked scored nights one monitor run (or `fbk drift` without --ds) checks: the latest, then late or backfilled ones, newest first; the rest wait for the next run.")
    max_night_failures: int = Field(3, ge=1, description="Monitor runs that may fail to measure a night before it is no longer checked automatically (noted under `state/drift/failures/`, alerted each time); a run with that `ds`, or `fbk drift --ds`, measures it again.")
    reference_max_rows: int = Field(2000, ge=50, description="Cap on reference reviews sampled (and scored once per champion version, cached).")
    domain_max_rows: int = Field(2000, ge=20, description="Cap per side (reference, night) of the balanced domain-classifier sample.")
    domain_cv_folds: int = Field(5, ge=2, le=20, description="Cross-validation folds of the domain classifier.")
    cjk_dominant_share: Share = Field(0.5, description="Chinese share (night or reference) above which the domain classifier uses character n-grams instead of MiniLM embeddings.")
    reference_fallback_partitions: int = Field(7, ge=1, description="Without training lineage on the champion, the latest N curated partitions before the night are the reference.")
    use_encoder: bool = Field(True, description="Use the packaged MiniLM encoder (embeddings, [UNK] share); off: character n-grams only.")
    embed_max_length: int = Field(64, ge=8, le=512, description="Token cap of the MiniLM sentence encoder.")
    top_terms: int = Field(15, ge=1, description="Separating terms listed in the report.")
    seed: int = Field(17, description="Seed of every sample and fold split.")

    _share_checks = field_validator(
        "auc_threshold", "severe_auc_threshold", "agreement_drop", "severe_agreement_drop", "novel_term_share",
        "severe_novel_term_share", "unk_rate_increase", "severe_unk_rate_increase", "cjk_dominant_share",
    )(_check_share)

    @model_validator(mode="after")
    def _severe_above_normal(self) -> "DriftSettings":
        for normal, severe in (("psi_threshold", "severe_psi_threshold"), ("auc_threshold", "severe_auc_threshold"),
                               ("agreement_drop", "severe_agreement_drop"), ("novel_term_share", "severe_novel_term_share"),
                               ("unk_rate_increase", "severe_unk_rate_increase")):
            if getattr(self, severe) < getattr(self, normal):
                raise ValueError(f"drift.{severe} must not be below drift.{normal}")
        return self


_CRON_PRESETS = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")


def _check_cron(value: str) -> str:
    """Five fields (or an Airflow preset) that fire: croniter also takes a sixth field as seconds
    ('0 0 3 * * *' would fire every second of a minute) and dates that never come ('0 3 31 2 *'),
    on which Airflow's scheduler would fail instead of parsing."""
    from croniter import croniter

    if value.strip() not in _CRON_PRESETS:
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"not a five-field cron expression: {value!r} (e.g. '0 3 * * *', minute hour day month weekday)")
        try:
            it = croniter(value)
            it.get_next()
            it.get_prev()
        except Exception as exc:  # noqa: BLE001 - croniter's CroniterBadDateError and kin
            raise ValueError(f"cron {value!r} never fires ({exc})") from None
    return value


class ScheduleSettings(_Section):
    """When the scheduler starts each DAG by the clock (cron, UTC), and how long a run may take
    (read when the DAG files are parsed)."""

    ingest_cron: str = Field("0 0 * * *", description="feedback_ingest: each run ingests the files landed for the night of its logical date.")
    score_cron: str = Field("0 3 * * *", description="feedback_score, besides every update of Asset('curated_reviews').")
    train_cron: str = Field("0 3 * * 0", description="feedback_train (weekly by default), besides every Asset('retrain_requested').")
    ingest_timeout_minutes: int | None = Field(360, ge=1, description="A feedback_ingest run still running this long after it started is failed (Airflow `dagrun_timeout`; its unfinished tasks are skipped) and alerted, so a hung run (a stuck lock holder, a stalled volume) does not silently hold back every later run (`max_active_runs=1`). None: no limit.")
    score_timeout_minutes: int | None = Field(720, ge=1, description="The same for feedback_score (a new champion's first pass over a long history is its longest run).")
    monitor_timeout_minutes: int | None = Field(180, ge=1, description="The same for feedback_monitor.")
    train_timeout_minutes: int | None = Field(1440, ge=1, description="The same for feedback_train (domain pre-training plus fine-tuning; the training task itself stops after 8 hours).")

    _crons = field_validator("ingest_cron", "score_cron", "train_cron")(_check_cron)


class AlertSettings(_Section):
    """Where failures and missed deadlines of every DAG are reported (always also logged)."""

    webhook_url: str | None = Field(None, description="POST a JSON alert here when a task fails or a deadline is missed (None: log only).")
    email: str | None = Field(None, description="Also e-mail alerts here through Airflow's SMTP settings (None: no e-mail).")
    timeout_s: float = Field(10.0, gt=0, description="Timeout of the alert webhook call.")


class Settings(BaseSettings):
    """All configuration of the pipeline. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="FBK_",
        env_nested_delimiter="__",
        env_parse_none_str="null",  # FBK_TRAIN__MAX_EPOCH_MINUTES=null: None, as `null` in the YAML
        extra="forbid",
        validate_assignment=True,
    )

    data_dir: Path = Field(Path("data"), description="Data root: landing, curated, quarantine, scores, reports, stores.")
    demo_seed: int = Field(7, description="Seed of the demo's generated reviews.")
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    score: ScoreSettings = Field(default_factory=ScoreSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)

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


# scheme://user:password@host...: the password runs to the last "@" (a raw "@" or "/" in it stays masked)
_URI_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@]*):.*@(?P<host>[^@]*)$", re.DOTALL)


def redact_uri(value: str) -> str:
    """``value`` with the password of a ``scheme://user:password@host/...`` URI replaced by ``***``
    (scheme, user, host and database kept, so a run still says which store it used)."""
    return _URI_PASSWORD.sub(r"\g<head>:***@\g<host>", value)


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
