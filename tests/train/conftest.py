"""Fixtures for the training stage: templated curated partitions and a tiny BERT built from a config."""

from __future__ import annotations

import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from fbk_tasks.schema import CURATED_SCHEMA

PRODUCTS = {"phone": "electronics", "kettle": "kitchen", "jacket": "clothes", "novel": "books"}
EN = {
    "positive": ["love this {p}", "great {p}, works perfectly", "excellent {p}, very happy", "the {p} is wonderful",
                 "best {p} I ever bought", "amazing quality {p}, recommend it"],
    "negative": ["terrible {p}, broke in a day", "awful {p}, want a refund", "the {p} is junk", "worst {p} ever",
                 "poor quality {p}, very disappointed", "{p} stopped working, horrible"],
    "neutral": ["the {p} arrived on tuesday", "it is a {p}", "{p} is okay, nothing special", "average {p}, as described",
                "the {p} comes in a box", "ordinary {p}, fine i guess"],
}
ZH = {
    "positive": ["这个{p}非常好", "{p}质量很好很满意", "很喜欢这个{p}", "{p}超值推荐"],
    "negative": ["{p}太差了", "{p}质量很差不满意", "{p}坏了要退货", "垃圾{p}后悔"],
    "neutral": ["{p}收到了", "{p}一般般吧", "这是一个{p}", "{p}还行"],
}
ZH_PRODUCTS = {"phone": "手机", "kettle": "水壶", "jacket": "外套", "novel": "小说"}
FILLER = ["", " today", " from the shop", " for my mom", " last week", " again"]


def _order(prefix: str, seed: int, ds: str, i: int) -> int:
    return zlib.crc32(f"{prefix}{seed}-{ds}-{i}".encode())


def make_reviews(n: int, ds: str = "2026-11-01", seed: int = 0, zh_share: float = 0.3,
                 classes: tuple[str, ...] = ("negative", "neutral", "positive"), prefix: str = "r",
                 unique: bool = True) -> pa.Table:
    """``n`` templated reviews in CURATED_SCHEMA, classes balanced, ``zh_share`` Chinese. With
    ``unique`` each text ends with its own order number, so no two reviews share a text (as after
    ingestion's near-duplicate check; training keeps golden texts out by text as well as by id);
    without it, the bare templates (for tests of what a model learns from them)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = classes[i % len(classes)]
        prod = list(PRODUCTS)[rng.integers(len(PRODUCTS))]
        if rng.random() < zh_share:
            lang, text = "zh", ZH[label][rng.integers(len(ZH[label]))].format(p=ZH_PRODUCTS[prod]) + (f" 订单{_order(prefix, seed, ds, i)}" if unique else "")
        else:
            lang = "en"
            text = EN[label][rng.integers(len(EN[label]))].format(p=prod) + FILLER[rng.integers(len(FILLER))] + (f" #{_order(prefix, seed, ds, i)}" if unique else "")
        rows.append({
            "review_id": f"{prefix}{seed}-{ds}-{i:05d}", "product_id": prod, "product_name": prod,
            "product_category": PRODUCTS[prod], "rating": {"negative": 1, "neutral": 3, "positive": 5}[label],
            "title": None, "text": text, "language": lang, "created_at": datetime(2026, 11, 1, tzinfo=timezone.utc),
            "source": "test", "source_file": "test.csv", "ingested_at": datetime(2026, 11, 2, tzinfo=timezone.utc),
            "label": label, "row_number": i, "ds": ds,
        })
    return pa.Table.from_pylist(rows, schema=CURATED_SCHEMA)


def write_partition(curated_dir: Path, table: pa.Table, ds: str | None = None, part: int = 0) -> Path:
    ds = ds or table.column("ds")[0].as_py()
    out = curated_dir / f"ds={ds}"
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / f"part-{part:05d}.parquet")
    return out / f"part-{part:05d}.parquet"


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory) -> Path:
    """A ~0.2M-parameter BERT (random init) with a WordPiece vocab trained on the templates."""
    from transformers import BertModel

    from fbk_tasks.train.pretrain import small_bert_config, train_wordpiece

    out = tmp_path_factory.mktemp("tiny-bert")
    texts = [r["text"] for r in make_reviews(600, seed=99, zh_share=0.5, unique=False).to_pylist()]
    tok = train_wordpiece(texts, vocab_size=400, out_dir=out)
    cfg = small_bert_config(len(tok), hidden=32, layers=2, heads=2, max_length=64, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)  # the same random init in every session: learning tests do not depend on luck
    model = BertModel(cfg)
    model.save_pretrained(out)
    return out


# Settings that make a tiny transformer train in seconds on 2 shared cores.
TINY_ENV = {
    "FBK_TRAIN__EPOCHS": "3",
    "FBK_TRAIN__BATCH_SIZE": "16",
    "FBK_TRAIN__LEARNING_RATE": "0.003",
    "FBK_TRAIN__MAX_LENGTH": "32",
    "FBK_TRAIN__TORCH_THREADS": "1",
    "FBK_TRAIN__MIN_ROWS_PER_CLASS": "10",
    "FBK_TRAIN__MIN_SLICE_ROWS": "10",
    "FBK_TRAIN__GOLDEN_FRACTION": "0.2",
    "FBK_TRAIN__DEV_FRACTION": "0.15",
    "FBK_TRAIN__EARLY_STOPPING_PATIENCE": "1",
    "FBK_TRAIN__DEVICE": "cpu",
    # the tiny BERT is random-init: its word embeddings must train (frozen, [CLS] stays at chance)
    "FBK_TRAIN__FREEZE_WORD_EMBEDDINGS": "false",
}


@pytest.fixture
def train_env(tmp_path, monkeypatch, tiny_base_model):
    """FBK_* environment for a tmp data root and the tiny model; returns a loader of Settings."""
    from fbk_tasks.settings import load_settings

    monkeypatch.setenv("FBK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FBK_TRAIN__BASE_MODEL", str(tiny_base_model))
    for k, v in TINY_ENV.items():
        monkeypatch.setenv(k, v)
    return load_settings
