"""Training data: curated partitions + human corrections -> a labelled frame, the golden set, the split.

The golden set is taken once and kept under ``<data_dir>/golden/`` with its content hash; its
review_ids, and its texts under other ids, never reach training. ``prepare_training_data`` writes train/dev Parquet plus a
``meta.json`` (label scheme, lineage) under ``<models_dir>/prepared/<content hash>/`` so that
DAG tasks pass one path between them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fbk_tasks.io import atomic
from fbk_tasks.schema import CURATED_SCHEMA, SENTIMENT_CLASSES
from fbk_tasks.settings import Settings

log = logging.getLogger(__name__)

# Columns kept for training, evaluation and slicing.
KEEP_COLUMNS = ["review_id", "text", "label", "label_confidence", "language", "product_category", "ds"]


class TrainingDataError(ValueError):
    """The data cannot train a useful model (the message says why); nothing is registered."""


@dataclass
class LabelledData:
    frame: pd.DataFrame  # KEEP_COLUMNS, one row per review_id, label not null
    partitions: list[str]  # ds values read
    rows_read: int
    dropped_unlabelled: int
    corrections_applied: int
    duplicates_dropped: int


@dataclass
class GoldenSet:
    path: Path
    sha256: str
    rows: int
    rows_per_class: dict[str, int]
    created_at: str

    def load(self) -> pd.DataFrame:
        """The golden rows, checked against the content hash they were taken with."""
        frame = pd.read_parquet(self.path)
        if content_hash(frame) != self.sha256:
            raise TrainingDataError(
                f"golden set {self.path} does not match its recorded sha256 {self.sha256[:12]}: it was changed "
                "after it was taken; restore it, or re-take it with `fbk golden refresh` (re-scores the champion)")
        return frame


@dataclass
class PreparedData:
    """What a training task needs; serialised as ``meta.json`` beside train/dev Parquet."""

    dir: Path
    classes: list[str]
    partitions: list[str]
    golden_path: str
    golden_sha256: str
    rows_per_class: dict[str, int]  # training rows
    dev_rows: int
    train_rows: int
    rows_read: int
    dropped_unlabelled: int
    corrections_applied: int
    duplicates_dropped: int
    language_share: dict[str, float] = field(default_factory=dict)
    train_rows_with_label_confidence: int = 0  # training rows whose source gave a label confidence
    train_label_confidence_mean: float | None = None
    golden_text_overlap: int = 0  # rows kept out of train/dev: their text is a golden row's under another id
    dev_text_overlap: int = 0  # rows kept out of train: their text is a dev row's under another id

    @property
    def train_path(self) -> Path:
        return self.dir / "train.parquet"

    @property
    def dev_path(self) -> Path:
        return self.dir / "dev.parquet"

    def lineage(self) -> dict[str, str]:
        """Flat string lineage for MLflow params/tags."""
        return {
            "data.partitions": ",".join(self.partitions),
            "data.golden_sha256": self.golden_sha256,
            "data.classes": ",".join(self.classes),
            "data.train_rows": str(self.train_rows),
            "data.dev_rows": str(self.dev_rows),
            "data.rows_read": str(self.rows_read),
            "data.dropped_unlabelled": str(self.dropped_unlabelled),
            "data.corrections_applied": str(self.corrections_applied),
            "data.duplicates_dropped": str(self.duplicates_dropped),
            **{f"data.rows.{k}": str(v) for k, v in self.rows_per_class.items()},
            "data.train_rows_with_label_confidence": str(self.train_rows_with_label_confidence),
            "data.train_label_confidence_mean": str(self.train_label_confidence_mean),
            "data.golden_text_overlap": str(self.golden_text_overlap),
            "data.dev_text_overlap": str(self.dev_text_overlap),
        }

    def save(self) -> None:
        meta = asdict(self)
        meta["dir"] = str(self.dir)
        _write_json_atomic(self.dir / "meta.json", meta)

    @classmethod
    def load(cls, directory: str | Path) -> "PreparedData":
        directory = Path(directory)
        meta = json.loads((directory / "meta.json").read_text())
        meta["dir"] = directory
        return cls(**meta)


# -- reading -------------------------------------------------------------------------------


def list_partitions(settings: Settings, ds_from: str | None = None, ds_to: str | None = None) -> list[str]:
    """ds values of curated partitions within [ds_from, ds_to] (inclusive, ISO dates compare as text)."""
    root = settings.curated_dir
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.glob("ds=*")):
        ds = p.name.split("=", 1)[1]
        if (ds_from and ds < ds_from) or (ds_to and ds > ds_to):
            continue
        if any(p.glob("*.parquet")):
            out.append(ds)
    return out


def read_curated(settings: Settings, partitions: list[str]) -> pd.DataFrame:
    tables = []
    for ds in partitions:
        for f in sorted((settings.curated_dir / f"ds={ds}").glob("*.parquet")):
            present = set(pq.read_schema(f).names)
            t = pq.read_table(f, columns=[c for c in KEEP_COLUMNS if c in present])
            for c in KEEP_COLUMNS:  # a partition written before a column existed: null there
                if c not in present:
                    t = t.append_column(c, pa.nulls(len(t), CURATED_SCHEMA.field(c).type))
            tables.append(t.select(KEEP_COLUMNS).cast(pa.schema([CURATED_SCHEMA.field(c) for c in KEEP_COLUMNS])))
    if not tables:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in KEEP_COLUMNS})
    return pa.concat_tables(tables).to_pandas()


def read_corrections(settings: Settings) -> pd.Series:
    """review_id -> label from ``labels_dir/*.csv``; later files (by name) win."""
    frames = []
    for f in sorted(settings.labels_dir.glob("*.csv")) if settings.labels_dir.is_dir() else []:
        df = pd.read_csv(f, dtype=str, keep_default_na=False)
        missing = {"review_id", "label"} - set(df.columns)
        if missing:
            raise TrainingDataError(f"label corrections {f} lack column(s) {sorted(missing)}")
        df["label"] = df["label"].str.strip().str.lower()
        bad = sorted(set(df["label"]) - set(SENTIMENT_CLASSES))
        if bad:
            raise TrainingDataError(f"label corrections {f} have unknown label(s) {bad}; allowed {list(SENTIMENT_CLASSES)}")
        frames.append(df[["review_id", "label"]])
    if not frames:
        return pd.Series(dtype="object")
    allc = pd.concat(frames, ignore_index=True).drop_duplicates("review_id", keep="last")
    return allc.set_index("review_id")["label"]


def load_labelled(settings: Settings, ds_from: str | None = None, ds_to: str | None = None) -> LabelledData:
    """Curated rows with corrections applied, unlabelled rows dropped, checked for degeneracy."""
    partitions = list_partitions(settings, ds_from, ds_to)
    if not partitions:
        raise TrainingDataError(
            f"no curated partitions under {settings.curated_dir} for ds range [{ds_from or '-'}, {ds_to or '-'}]"
        )
    df = read_curated(settings, partitions)
    rows_read = len(df)
    # A review re-ingested on a later day: its latest partition wins.
    df = df.sort_values(["ds"], kind="stable")
    before = len(df)
    df = df.drop_duplicates("review_id", keep="last")
    duplicates = before - len(df)

    corrections = read_corrections(settings)
    applied = 0
    if len(corrections):
        hit = df["review_id"].isin(corrections.index)
        new = df.loc[hit, "review_id"].map(corrections)
        applied = int((new != df.loc[hit, "label"]).sum())
        df.loc[hit, "label"] = new
        df.loc[hit, "label_confidence"] = np.nan  # a person's correction is not weighed down by the source's doubt
    unlabelled = int(df["label"].isna().sum())
    df = df[df["label"].notna()].reset_index(drop=True)
    bad = sorted(set(df["label"]) - set(SENTIMENT_CLASSES))
    if bad:
        raise TrainingDataError(f"curated rows carry unknown label(s) {bad}")
    check_trainable(df, settings.train.min_rows_per_class)
    log.info(
        "assembled %d labelled rows from %d partition(s); %d unlabelled dropped, %d corrections applied",
        len(df), len(partitions), unlabelled, applied,
    )
    return LabelledData(df[KEEP_COLUMNS], partitions, rows_read, unlabelled, applied, duplicates)


def row_weights(frame: pd.DataFrame, power: float) -> np.ndarray | None:
    """Per-row training weights ``label_confidence ** power`` (rows without a confidence: 1), or
    None when weighting is off (power 0) or no row carries a confidence."""
    if not power or "label_confidence" not in frame or not frame["label_confidence"].notna().any():
        return None
    conf = frame["label_confidence"].astype(float).fillna(1.0).clip(0.0, 1.0).to_numpy()
    weights = conf ** float(power)
    if weights.sum() <= 0:
        raise TrainingDataError("every training row has label_confidence 0: nothing to learn from")
    return weights


def class_scheme(labels: pd.Series | list[str]) -> list[str]:
    """Classes present, in SENTIMENT_CLASSES order."""
    present = set(labels)
    return [c for c in SENTIMENT_CLASSES if c in present]


def check_trainable(df: pd.DataFrame, min_rows_per_class: int) -> None:
    if df.empty:
        raise TrainingDataError("no labelled rows: every curated row lacks a label")
    empty = df["text"].isna() | (df["text"].astype(str).str.strip() == "")
    if empty.any():
        ids = df.loc[empty, "review_id"].head(5).tolist()
        raise TrainingDataError(f"{int(empty.sum())} labelled row(s) have empty text (e.g. {ids})")
    counts = df["label"].value_counts()
    classes = class_scheme(df["label"])
    if len(classes) < 2:
        raise TrainingDataError(f"only one class present ({classes}): a classifier needs at least two")
    small = {c: int(counts[c]) for c in classes if counts[c] < min_rows_per_class}
    if small:
        raise TrainingDataError(f"class(es) with fewer than min_rows_per_class={min_rows_per_class} rows: {small}")


# -- golden set ----------------------------------------------------------------------------


def golden_dir(settings: Settings) -> Path:
    return settings.data_dir / "golden"


def content_hash(df: pd.DataFrame) -> str:
    """sha256 over sorted ``review_id<TAB>label`` lines: independent of Parquet encoding."""
    lines = sorted(f"{r}\t{lab}" for r, lab in zip(df["review_id"], df["label"]))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def stratified_sample(df: pd.DataFrame, n: int, seed: int) -> pd.Index:
    """Index of ``n`` rows drawn per class in proportion (at least one per class)."""
    rng = np.random.default_rng(seed)
    counts = df["label"].value_counts()
    total = len(df)
    chosen: list = []
    for cls, cnt in counts.items():
        k = max(1, int(round(n * cnt / total)))
        k = min(k, cnt - 1) if cnt > 1 else 0  # always leave the class in the remainder
        idx = df.index[df["label"] == cls].to_numpy()
        chosen.extend(rng.choice(idx, size=k, replace=False).tolist())
    return pd.Index(sorted(chosen))


def current_golden(settings: Settings) -> GoldenSet | None:
    """The golden set recorded in ``golden/golden.json``, or None when none was taken yet.

    The file is found beside ``golden.json`` (older records hold an absolute path, honoured when
    it still exists), so a data directory that moved, or is mounted elsewhere in a container,
    keeps its golden set. A record whose file is gone is an error, never a reason to draw a new
    set: that one would come from rows the champion trained on."""
    root = golden_dir(settings)
    meta = root / "golden.json"
    if not meta.exists():
        return None
    m = json.loads(meta.read_text())
    recorded = Path(m["path"])
    path = recorded if recorded.is_absolute() and recorded.exists() else root / recorded.name
    if not path.exists():
        raise TrainingDataError(
            f"{meta} records golden set {recorded.name}, which is missing from {root}: restore it, or re-take the "
            "golden set with `fbk golden refresh` (re-scores the champion on the new one)")
    return GoldenSet(path, m["sha256"], m["rows"], m["rows_per_class"], m["created_at"])


def draw_golden(settings: Settings, labelled: pd.DataFrame, exclude: set[str] | None = None) -> pd.DataFrame:
    """A stratified ``train.golden_fraction`` of ``labelled`` (at most ``golden_max_rows``), not
    written. ``exclude``: review ids not to draw (the champion's training rows, on a refresh);
    the size is still reckoned on all of ``labelled``, as far as the other rows allow."""
    t = settings.train
    n = min(t.golden_max_rows, max(len(class_scheme(labelled["label"])), int(round(len(labelled) * t.golden_fraction))))
    pool = labelled if not exclude else labelled[~labelled["review_id"].isin(exclude)]
    return pool.loc[stratified_sample(pool, min(n, len(pool)), t.seed)].sort_values("review_id").reset_index(drop=True)


def take_golden(settings: Settings, labelled: pd.DataFrame, gold: pd.DataFrame | None = None) -> GoldenSet:
    """(Re-)take the golden set from ``labelled`` (or write ``gold``, drawn from it); replaces any existing one."""
    gold = draw_golden(settings, labelled) if gold is None else gold
    out = golden_dir(settings)
    out.mkdir(parents=True, exist_ok=True)
    sha = content_hash(gold)
    path = out / f"golden-{sha[:12]}.parquet"
    atomic.write_parquet(pa.Table.from_pandas(gold, preserve_index=False), path)
    g = GoldenSet(
        path=path,
        sha256=sha,
        rows=len(gold),
        rows_per_class={k: int(v) for k, v in gold["label"].value_counts().sort_index().items()},
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    _write_json_atomic(out / "golden.json", {**asdict(g), "path": path.name})
    log.info("golden set taken: %d rows, sha256 %s", g.rows, sha[:12])
    return g


# -- split ---------------------------------------------------------------------------------


def outside_golden(frame: pd.DataFrame, gold: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Rows that may be trained on: not a golden ``review_id``, and not a golden row's text
    (normalised as ingestion's near-duplicate check does) under another id: a tweet re-posted
    beyond the dedup window, or under another product, would otherwise be learnt and then
    scored on the golden set. Returns the rows and how many were kept out for their text."""
    from fbk_tasks.text.clean import normalize_for_dedup

    def norm(texts: pd.Series) -> pd.Series:
        return pd.Series(normalize_for_dedup(pa.array(texts, pa.string(), from_pandas=True)).to_pylist(), dtype=object)

    gold_texts = set(norm(gold["text"])) - {"", None}
    by_id = frame["review_id"].isin(set(gold["review_id"])).to_numpy()
    by_text = norm(frame["text"]).isin(gold_texts).to_numpy()
    overlap = int((by_text & ~by_id).sum())
    if overlap:
        log.info("%d row(s) kept out of training: same text as a golden row under another review_id", overlap)
    return frame[~(by_id | by_text)].reset_index(drop=True), overlap


def prepare_training_data(
    settings: Settings, ds_from: str | None = None, ds_to: str | None = None, labelled: LabelledData | None = None
) -> PreparedData:
    """Assemble, exclude the golden set, split train/dev and write them with their lineage."""
    t = settings.train
    labelled = labelled or load_labelled(settings, ds_from, ds_to)
    golden = current_golden(settings)
    gold = golden.load() if golden is not None else draw_golden(settings, labelled.frame)
    pool, overlap = outside_golden(labelled.frame, gold)
    check_trainable(pool, t.min_rows_per_class)
    classes = class_scheme(pool["label"])
    n_dev = max(len(classes), int(round(len(pool) * t.dev_fraction)))
    dev_idx = stratified_sample(pool, n_dev, t.seed + 1)
    dev = pool.loc[dev_idx]
    # the same text under another id (a re-post beyond the dedup window, another product) stays
    # out of train, as for the golden set: dev F1 picks the epoch and the class offsets, and a
    # learnt copy of a dev row would favour the epoch that memorises
    train, dev_overlap = outside_golden(pool.drop(index=dev_idx), dev)
    if t.max_train_samples and len(train) > t.max_train_samples:
        train = train.loc[stratified_sample(train, t.max_train_samples, t.seed + 2)]
    check_trainable(train, min(t.min_rows_per_class, len(train)))
    if golden is None:  # the first run: the golden set is kept only once the data is found trainable
        golden = take_golden(settings, labelled.frame, gold)
    train = train.sample(frac=1.0, random_state=t.seed).reset_index(drop=True)
    dev = dev.reset_index(drop=True)

    key = hashlib.sha256(
        "|".join([content_hash(train), content_hash(dev), golden.sha256]).encode()
    ).hexdigest()[:16]
    out = settings.models_dir / "prepared" / key
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in (("train", train), ("dev", dev)):
        atomic.write_parquet(pa.Table.from_pandas(frame, preserve_index=False), out / f"{name}.parquet")
    lang = train["language"].fillna("other").value_counts(normalize=True)
    prepared = PreparedData(
        dir=out,
        classes=classes,
        partitions=labelled.partitions,
        golden_path=str(golden.path),
        golden_sha256=golden.sha256,
        rows_per_class={c: int((train["label"] == c).sum()) for c in classes},
        dev_rows=len(dev),
        train_rows=len(train),
        rows_read=labelled.rows_read,
        dropped_unlabelled=labelled.dropped_unlabelled,
        corrections_applied=labelled.corrections_applied,
        duplicates_dropped=labelled.duplicates_dropped,
        language_share={k: round(float(v), 4) for k, v in lang.items()},
        train_rows_with_label_confidence=int(train["label_confidence"].notna().sum()),
        train_label_confidence_mean=(round(float(train["label_confidence"].mean()), 4)
                                     if train["label_confidence"].notna().any() else None),
        golden_text_overlap=overlap,
        dev_text_overlap=dev_overlap,
    )
    prepared.save()
    return prepared


def _write_json_atomic(path: Path, obj: object) -> None:
    atomic.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str), path)
