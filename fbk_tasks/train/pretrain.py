"""Domain pre-training for languages without a suitable base model, and continued pre-training.

A WordPiece tokenizer trained on curated text of ``train.pretrain_language``, a small
``BertForMaskedLM`` built from a config, masked-LM training for ``train.pretrain_steps`` (or
``train.pretrain_max_minutes``); or, with ``train.pretrain_from``, more masked-LM training of an
existing BERT-style model (its tokenizer kept) on that text: task-adaptive pre-training. The
result is logged as its own MLflow run (experiment ``<prefix>-pretrain``) with the model
directory as artifact, and kept under ``<models_dir>/pretrained/<run_id>/`` with a ``LATEST``
pointer so that ``train.base_model = 'pretrained:latest'`` fine-tunes from it.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from fbk_tasks.io import atomic
from fbk_tasks.settings import Settings

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(texts: Iterable[str], vocab_size: int, out_dir: Path, lowercase: bool = True):
    """Train a BERT-style WordPiece tokenizer (CJK characters split individually) and save it
    to ``out_dir`` as a transformers tokenizer; returns the tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=SPECIAL_TOKENS)
    tok.train_from_iterator((t for t in texts if t), trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_input_names=["input_ids", "attention_mask"],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def small_bert_config(vocab_size: int, hidden: int, layers: int, heads: int, max_length: int, pad_token_id: int = 0):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=hidden * 4, max_position_embeddings=max(max_length, 64), pad_token_id=pad_token_id,
    )


def mask_tokens(ids, special_mask, mask_id: int, vocab_size: int, gen, probability: float = 0.15):
    """BERT masking: of the chosen 15%, 80% [MASK], 10% random, 10% unchanged; labels -100 elsewhere."""
    import torch

    labels = ids.clone()
    prob = torch.full(ids.shape, probability)
    prob.masked_fill_(special_mask, 0.0)
    chosen = torch.bernoulli(prob, generator=gen).bool()
    labels[~chosen] = -100
    replace = torch.bernoulli(torch.full(ids.shape, 0.8), generator=gen).bool() & chosen
    ids = ids.clone()
    ids[replace] = mask_id
    rand = torch.bernoulli(torch.full(ids.shape, 0.5), generator=gen).bool() & chosen & ~replace
    ids[rand] = torch.randint(vocab_size, ids.shape, generator=gen)[rand]
    return ids, labels


def masked_lm_loss(model, input_ids, attention_mask, labels):
    """``BertForMaskedLM``'s loss, with the vocabulary projection computed only at the ~15% masked
    positions instead of at every position (the same value; the projection to the vocabulary is
    the largest single matmul of a small BERT)."""
    import torch

    hidden = model.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    chosen = labels != -100
    logits = model.cls(hidden[chosen])
    return torch.nn.functional.cross_entropy(logits.float(), labels[chosen])


LINEAGE_FILE = "pretrain_lineage.json"


def continue_from(settings: Settings) -> str | None:
    """The model directory ``train.pretrain_from`` names, or None to pre-train from scratch.

    ``pretrained:latest`` before any pre-training has run also means from scratch, so that a
    weekly DAG set to keep training its own latest model starts itself on its first run; any other
    name that does not resolve is an error."""
    from fbk_tasks.train.transformer import resolve_base_model

    name = settings.train.pretrain_from
    if not name:
        return None
    if name == "pretrained:latest" and not (settings.models_dir / "pretrained" / "LATEST").exists():
        log.info("train.pretrain_from=pretrained:latest: no earlier pre-trained model, so this one starts from scratch")
        return None
    return resolve_base_model(settings, name)


def read_lineage(model_dir: str | Path | None) -> dict:
    """What a pre-trained model directory records about the instalments that made it (empty when
    it records nothing, e.g. the packaged MiniLM)."""
    path = Path(model_dir) / LINEAGE_FILE if model_dir else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else {}


def continued_model(settings: Settings, base: str | None = None):
    """(tokenizer, masked-LM model) to continue pre-training ``train.pretrain_from`` with: its own
    tokenizer (with the emoji rule of ``train.emoji_to_text``) and encoder; an MLM head the
    checkpoint lacks (sentence-transformers keep only the encoder) starts fresh, its decoder tied
    to the word embeddings as in BERT."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from fbk_tasks.text.emoji import enable as enable_emoji_rule
    from fbk_tasks.train.transformer import resolve_base_model

    base = base or resolve_base_model(settings, settings.train.pretrain_from)
    tokenizer = AutoTokenizer.from_pretrained(base)
    enable_emoji_rule(tokenizer, settings.train.emoji_to_text)
    model = AutoModelForMaskedLM.from_pretrained(base)
    if not (hasattr(model, "bert") and hasattr(model, "cls")):
        raise ValueError(f"train.pretrain_from={settings.train.pretrain_from!r}: {type(model).__name__} is not a BERT-style "
                         "masked LM; continued pre-training supports BERT encoders (MiniLM, BERT, small BERTs made here)")
    if tokenizer.mask_token_id is None:
        raise ValueError(f"train.pretrain_from={settings.train.pretrain_from!r}: its tokenizer has no mask token")
    return tokenizer, model


def budget_schedule(progress: float, warmup: float = 0.06) -> float:
    """Learning-rate factor at ``progress`` (0..1) of the budget: linear warm-up over the first
    ``warmup`` share, then linear decay to 0 at the end."""
    progress = min(max(progress, 0.0), 1.0)
    return progress / warmup if progress < warmup else (1.0 - progress) / (1.0 - warmup)


def pretrain_mlm(texts: Sequence[str], settings: Settings, out_dir: Path) -> dict:
    """Masked-LM training on ``texts``, saved to ``out_dir``: a new WordPiece tokenizer and small
    BERT from scratch, or (``train.pretrain_from``) more training of an existing BERT."""
    import torch
    from transformers import BertForMaskedLM, get_linear_schedule_with_warmup

    from fbk_tasks.train.transformer import (_autocast, choose_cpu_bf16, length_grouped_batches, pad_batch, probe_rows,
                                             seed_everything, select_device, set_threads, tokenize)

    t = settings.train
    threads = set_threads(settings)
    seed_everything(t.seed)
    device = select_device(t.device)
    deadline = None if t.pretrain_max_minutes is None else time.perf_counter() + 60 * t.pretrain_max_minutes
    base = continue_from(settings)
    if base is not None:
        tokenizer, model = continued_model(settings, base)
        if t.freeze_word_embeddings:  # as the fine-tune will; the tied decoder then stays fixed too, its bias learns
            model.get_input_embeddings().weight.requires_grad_(False)
        enc = tokenize(tokenizer, list(texts), min(t.pretrain_max_length, model.config.max_position_embeddings))
    else:
        tokenizer = train_wordpiece(texts, t.pretrain_vocab_size, out_dir)
        config = small_bert_config(len(tokenizer), t.pretrain_hidden_size, t.pretrain_layers, t.pretrain_heads,
                                   t.pretrain_max_length, tokenizer.pad_token_id)
        model = BertForMaskedLM(config)
        enc = tokenizer(list(texts), truncation=True, max_length=t.pretrain_max_length)["input_ids"]
    model.to(device)
    enc = [e for e in enc if len(e) > 2]
    lengths = [len(e) for e in enc]
    special = {tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id}

    def masked_batch(rows, generator):
        ids, attn = pad_batch([enc[i] for i in rows], tokenizer.pad_token_id)
        special_mask = torch.zeros_like(ids, dtype=torch.bool)
        for s_id in special:
            special_mask |= ids == s_id
        inputs, labels = mask_tokens(ids, special_mask, tokenizer.mask_token_id, len(tokenizer), generator)
        return inputs, attn, labels

    model.train()
    cpu_bf16, bf16_probe = False, {}
    if device.type == "cpu" and enc:
        p_inputs, p_attn, p_labels = masked_batch(probe_rows(lengths, t.pretrain_batch_size), torch.Generator().manual_seed(0))

        def probe_step(bf16: bool) -> None:
            if (p_labels != -100).any():
                with _autocast(device, bf16):
                    masked_lm_loss(model, p_inputs, p_attn, p_labels).backward()
                model.zero_grad(set_to_none=True)

        cpu_bf16, bf16_probe = choose_cpu_bf16(t.cpu_bf16, probe_step)
    seed_everything(t.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.pretrain_learning_rate, weight_decay=t.weight_decay)
    start = time.perf_counter()
    if deadline is None:
        scheduler = get_linear_schedule_with_warmup(optimizer, int(0.06 * t.pretrain_steps), t.pretrain_steps)
    else:  # a time budget: warm-up and linear decay over whichever runs out first, steps or the minutes left
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda n: budget_schedule(
            max(n / t.pretrain_steps, (time.perf_counter() - start) / max(deadline - start, 1e-9))))
    rng = np.random.default_rng(t.seed)
    gen = torch.Generator().manual_seed(t.seed)
    step, seen, losses = 0, 0, []
    stopped_by_time = False
    while step < t.pretrain_steps and not stopped_by_time:
        for batch in length_grouped_batches(lengths, t.pretrain_batch_size, t.length_group_factor, rng):
            if step >= t.pretrain_steps:
                break
            if deadline is not None and time.perf_counter() > deadline:
                stopped_by_time = True
                log.info("pretrain: time budget of %.1f min reached after %d steps", t.pretrain_max_minutes, step)
                break
            inputs, attn, labels = masked_batch(batch, gen)
            if not (labels != -100).any():
                continue  # nothing masked in this (tiny) batch
            with _autocast(device, cpu_bf16):
                loss = masked_lm_loss(model, inputs.to(device), attn.to(device), labels.to(device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seen += len(batch)
            losses.append(loss.detach().item())
            if step % t.log_every_steps == 0 or step == t.pretrain_steps:
                log.info("pretrain step %d/%d mlm loss %.4f", step, t.pretrain_steps, float(np.mean(losses[-t.log_every_steps:])))
    secs = time.perf_counter() - start
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    earlier = read_lineage(base)  # instalments add up: a weekly run that continues last week's model
    lineage = {"instalments": earlier.get("instalments", 0) + 1, "total_steps": earlier.get("total_steps", 0) + step,
               "total_seconds": earlier.get("total_seconds", 0.0) + secs, "continued_from": base}
    atomic.write_text(json.dumps(lineage, indent=2), Path(out_dir) / LINEAGE_FILE)
    n = max(1, min(len(losses), t.log_every_steps))
    return {"steps": step, "seconds": secs, "samples_per_second": seen / max(secs, 1e-9), "final_mlm_loss": float(np.mean(losses[-n:])),
            "first_mlm_loss": float(np.mean(losses[:n])),
            "vocab_size": len(tokenizer), "parameters": sum(p.numel() for p in model.parameters()), "threads": threads,
            "texts": len(enc), "device": device.type, "cpu_bf16": cpu_bf16, "stopped_by_time": stopped_by_time,
            "continued": base is not None, "continued_from": base, "instalments": lineage["instalments"],
            "total_steps": lineage["total_steps"], "total_seconds": lineage["total_seconds"], **bf16_probe}


def pretrain(settings: Settings, ds_from: str | None = None, ds_to: str | None = None) -> str:
    """Pre-train on curated text of ``pretrain_language`` (labelled or not; golden rows, and
    golden texts under other ids, excluded),
    log it as an MLflow run and return the model directory (also the new ``pretrained:latest``)."""
    import mlflow

    from fbk_tasks.train import registry
    from fbk_tasks.train.data import (TrainingDataError, current_golden, list_partitions, load_labelled, outside_golden,
                                      read_curated, take_golden)

    t = settings.train
    frame = read_curated(settings, list_partitions(settings, ds_from, ds_to))
    frame = frame[frame["language"] == t.pretrain_language]
    g = current_golden(settings)
    if g is None:
        # pre-training before the first fine-tune: take the golden set now, so that its texts are
        # never seen by a model it will judge (as the first training run would take it)
        try:
            g = take_golden(settings, load_labelled(settings, ds_from, ds_to).frame)
            log.info("no golden set yet: took it before pre-training (%d rows), so pre-training leaves it out", g.rows)
        except TrainingDataError as exc:  # unlabelled text only, or too few labels: nothing to fine-tune on yet
            log.warning("no golden set to leave out (%s): a golden set taken later may include texts this model "
                        "was pre-trained on", exc)
    if g is not None:
        frame, _ = outside_golden(frame, g.load())
    texts = frame["text"].dropna().astype(str).tolist()
    if len(texts) < 10:
        raise TrainingDataError(f"only {len(texts)} curated '{t.pretrain_language}' texts: too few to pre-train")
    with mlflow.start_run(experiment_id=registry.experiment_id(settings, "pretrain"), run_name=f"pretrain-{t.pretrain_language}") as run:
        out = settings.models_dir / "pretrained" / run.info.run_id
        mlflow.set_tags({"fbk.kind": "pretrain", "fbk.language": t.pretrain_language,
                         "fbk.golden_sha256": g.sha256 if g is not None else ""})
        registry.log_params_flat({k: v for k, v in settings.train.model_dump().items() if k.startswith("pretrain") or k in ("seed", "weight_decay", "length_group_factor")
                                    or (t.pretrain_from and k in ("emoji_to_text", "freeze_word_embeddings"))}
                                 | {"data.texts": len(texts), "data.partitions": ",".join(sorted(frame["ds"].unique()))})
        stats = pretrain_mlm(texts, settings, out)
        mlflow.log_metrics({k: float(v) for k, v in stats.items() if isinstance(v, (int, float))})
        if stats["continued_from"]:  # lineage: which model this instalment trained on (a pre-train run id when it was one)
            parent = Path(stats["continued_from"])
            own = parent.resolve().parent == (settings.models_dir / "pretrained").resolve()
            mlflow.set_tags({"fbk.pretrain_continued_from": str(parent), **({"fbk.pretrain_parent_run": parent.name} if own else {})})
        mlflow.log_artifacts(str(out), "pretrained_model")
    latest = settings.models_dir / "pretrained" / "LATEST"
    atomic.write_text(run.info.run_id, latest)
    log.info("pre-trained %s (%d steps, final MLM loss %.3f) -> %s", t.pretrain_language, stats["steps"], stats["final_mlm_loss"], out)
    return str(out)


def resolve_pretrained(settings: Settings, which: str = "latest") -> Path:
    """``latest`` or a pre-train run id -> the local model directory."""
    root = settings.models_dir / "pretrained"
    run_id = (root / "LATEST").read_text().strip() if which == "latest" and (root / "LATEST").exists() else which
    path = root / run_id
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no pre-trained model '{which}' under {root}: run pre-training first (train.pretrain=true)")
    return path
