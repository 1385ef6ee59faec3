"""Fine-tune options: the mean-pooling layer (a plain BERT checkpoint), frozen word embeddings, CPU bf16."""

from __future__ import annotations

import pytest
import torch

from .conftest import make_reviews


def _tiny_classifier(tiny_base_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_base_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_base_model, num_labels=3).eval()
    return tok, model


def test_mean_pooling_layer_makes_cls_the_masked_mean_and_stays_a_plain_bert(tiny_base_model, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from fbk_tasks.train.transformer import add_mean_pooling_layer, pad_batch

    tok, model = _tiny_classifier(tiny_base_model)
    texts = ["love this phone today", "the kettle is junk", "it is a novel from the shop for my mom", "ok"]
    enc = tok(texts)["input_ids"]
    ids, mask = pad_batch(enc, tok.pad_token_id)
    layers = model.config.num_hidden_layers
    with torch.no_grad():
        h = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        mean = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        assert add_mean_pooling_layer(model)
        cls = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
        target = torch.nn.functional.layer_norm(mean, mean.shape[-1:], eps=model.config.layer_norm_eps)
        cos = torch.nn.functional.cosine_similarity(cls, target)
        assert cos.min().item() > 0.99, cos  # [CLS] now carries LayerNorm(mean) (+ cls/scale)
        # padding does not leak into the mean: each text alone gives the batched logits
        batched = model(input_ids=ids, attention_mask=mask).logits
        for i, e in enumerate(enc):
            alone = model(input_ids=torch.tensor([e])).logits[0]
            assert torch.allclose(alone, batched[i], atol=1e-5)
    assert model.config.num_hidden_layers == layers + 1
    model.save_pretrained(tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()  # no custom code
    assert type(again).__name__ == "BertForSequenceClassification" and again.config.num_hidden_layers == layers + 1
    with torch.no_grad():
        assert torch.allclose(again(input_ids=ids, attention_mask=mask).logits, batched, atol=1e-6)


def test_mean_pooling_layer_refuses_models_without_a_bert_encoder():
    from fbk_tasks.train.transformer import add_mean_pooling_layer

    assert add_mean_pooling_layer(torch.nn.Linear(4, 3)) is False


def test_cpu_bf16_setting():
    from fbk_tasks.train.transformer import cpu_has_bf16, use_cpu_bf16

    assert use_cpu_bf16("on") and not use_cpu_bf16("off")
    assert use_cpu_bf16("auto") == cpu_has_bf16()


class _FakeClock:
    """A clock that only the probe's steps move: fp32 steps take ``fp32`` s, bf16 steps ``bf16`` s."""

    def __init__(self, fp32: float, bf16: float):
        self.now, self.cost = 0.0, {False: fp32, True: bf16}
        self.calls: list[bool] = []

    def __call__(self) -> float:
        return self.now

    def step(self, bf16: bool) -> None:
        self.calls.append(bf16)
        self.now += self.cost[bf16]


@pytest.mark.parametrize(("fp32", "bf16", "flag", "expected"), [
    (1.0, 0.5, True, True),     # bf16 twice as fast: taken
    (1.0, 1.3, True, False),    # bf16 slower (the Xeon of 2026-11-30): fp32
    (1.0, 0.98, True, False),   # under the 5% margin: fp32
    (1.0, 0.5, False, False),   # no native bf16 on the CPU: not even probed
])
def test_cpu_bf16_auto_measures_before_choosing(monkeypatch, fp32, bf16, flag, expected):
    from fbk_tasks.train import transformer

    monkeypatch.setattr(transformer, "cpu_has_bf16", lambda: flag)
    clock = _FakeClock(fp32, bf16)
    chosen, probe = transformer.choose_cpu_bf16("auto", clock.step, rounds=3, clock=clock)
    assert chosen is expected
    if flag:
        assert clock.calls == [False, True] + [False, True] * 3  # warm-up, then alternating rounds
        assert probe == pytest.approx({"cpu_bf16_probe_fp32_seconds": fp32, "cpu_bf16_probe_bf16_seconds": bf16})
    else:
        assert clock.calls == [] and probe == {}
    for setting in ("on", "off"):  # set explicitly: no probe, as asked
        clock.calls.clear()
        assert transformer.choose_cpu_bf16(setting, clock.step, clock=clock) == (setting == "on", {})
        assert clock.calls == []


def test_the_bf16_probe_does_not_change_what_training_learns(train_env, monkeypatch):
    """The probe runs real forward and backward passes (dropout draws, gradients) on the model
    before training; when it picks fp32 the fine-tune must equal one with cpu_bf16=off."""
    from fbk_tasks.train import transformer

    real = transformer.choose_cpu_bf16
    probed = []

    def probe_then_pick_fp32(setting, step, **kw):
        clock = _FakeClock(1.0, 2.0)

        def timed(bf16):
            step(bf16)
            clock.step(bf16)
        out = real(setting, timed, clock=clock, **kw)
        probed.append(len(clock.calls))
        return out

    monkeypatch.setattr(transformer, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(transformer, "choose_cpu_bf16", probe_then_pick_fp32)
    _, auto = _fine_tune(train_env, monkeypatch, cpu_bf16="auto", rdrop_alpha="1.0")
    assert probed == [8] and auto.cpu_bf16 is False
    assert set(auto.cpu_bf16_probe) == {"cpu_bf16_probe_fp32_seconds", "cpu_bf16_probe_bf16_seconds"}
    _, off = _fine_tune(train_env, monkeypatch, cpu_bf16="off", rdrop_alpha="1.0")
    assert off.cpu_bf16_probe == {}
    for (name, a), b in zip(auto.model.state_dict().items(), off.model.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(("with_rdrop", "without", "budget", "kept"), [
    (0.5, 0.2, 5.0, True),     # 600 batches x 0.5 s = 5.0 min: fits
    (1.8, 0.8, 5.0, False),    # fp32 on a 2-core AVX2 CPU: 18 min with R-Drop -> off (8 min, still over)
    (1.8, 0.8, None, True),    # no budget: no probe, R-Drop as set
])
def test_rdrop_stays_on_only_when_an_epoch_with_it_fits_the_budget(with_rdrop, without, budget, kept):
    from fbk_tasks.train import transformer

    clock = _FakeClock(without, with_rdrop)  # the fake's "bf16" flag stands for "R-Drop on" here
    chosen, figures = transformer.fit_rdrop_to_budget(budget, 600, clock.step, rounds=3, clock=clock)
    assert chosen is kept
    if budget is None:
        assert clock.calls == [] and figures == {}
        return
    expected = {"epoch_probe_rdrop_step_seconds": with_rdrop, "epoch_estimate_rdrop_minutes": with_rdrop * 10}
    if not kept:
        expected.update(epoch_probe_step_seconds=without, epoch_estimate_minutes=without * 10)
    assert figures == pytest.approx(expected)
    assert clock.calls == [True] * 4 + ([] if kept else [False] * 4)  # a warm-up step, then three timed


def _fine_tune(train_env, monkeypatch, **env):
    from fbk_tasks.train.transformer import fine_tune

    for k, v in env.items():
        monkeypatch.setenv(f"FBK_TRAIN__{k.upper()}", v)
    s = train_env()
    rows = make_reviews(240, seed=3, zh_share=0.0, unique=False).to_pylist()
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    return s, fine_tune(texts[:200], labels[:200], texts[200:], labels[200:], ["negative", "neutral", "positive"], s)


def test_a_max_length_beyond_the_models_positions_is_refused_before_training(train_env, monkeypatch):
    """The tiny BERT has 64 positions (like a small BERT pre-trained here at pretrain_max_length
    64): train.max_length 128 is a clear error up front, not an IndexError on the first long text."""
    with pytest.raises(ValueError, match=r"train.max_length=128 is longer than .* \(64 positions\)"):
        _fine_tune(train_env, monkeypatch, max_length="128")


def test_frozen_word_embeddings_stay_while_the_encoder_trains(train_env, monkeypatch):
    from transformers import AutoModel

    from fbk_tasks.train.transformer import resolve_base_model

    s, res = _fine_tune(train_env, monkeypatch, freeze_word_embeddings="true", cpu_bf16="on", pooling="cls")
    base = AutoModel.from_pretrained(resolve_base_model(s))
    assert torch.equal(res.model.get_input_embeddings().weight.detach(), base.get_input_embeddings().weight.detach())
    q = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(res.model.bert.state_dict()[q], base.state_dict()[q])


@pytest.mark.parametrize("bf16", ["off", "on"])
def test_mean_pooling_fine_tune_learns_the_templates(train_env, monkeypatch, bf16):
    # a random-init tiny BERT: with [CLS] + pooler it stays near chance for two epochs on these
    # rows (dev macro-F1 0.16, 0.48, 0.95); the mean layer separates them from the first epoch
    _, res = _fine_tune(train_env, monkeypatch, pooling="mean", cpu_bf16=bf16, freeze_word_embeddings="false")
    assert res.model.config.num_hidden_layers == 3
    assert res.history[0]["dev_macro_f1"] > 0.8


def test_row_weights_let_a_fine_tune_ignore_rows_it_should_not_trust(train_env, monkeypatch):
    """Every training template also appears twice with a wrong label. Weighted 0, the wrong copies
    are ignored and the model learns the templates; unweighted, the wrong label is the majority and
    the model learns it (one wrong copy only ties the labels, and a tie can fall either way)."""
    from fbk_tasks.train.transformer import fine_tune

    monkeypatch.setenv("FBK_TRAIN__FREEZE_WORD_EMBEDDINGS", "false")
    s = train_env()
    classes = ["negative", "neutral", "positive"]
    rows = make_reviews(240, seed=3, zh_share=0.0, unique=False).to_pylist()
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    wrong = [classes[(classes.index(lab) + 1) % 3] for lab in labels[:200]]
    train_texts, train_labels = texts[:200] * 3, labels[:200] + wrong + wrong
    weights = [1.0] * 200 + [0.0] * 400
    weighted = fine_tune(train_texts, train_labels, texts[200:], labels[200:], classes, s, train_weights=weights)
    plain = fine_tune(train_texts, train_labels, texts[200:], labels[200:], classes, s)
    assert weighted.best_dev_macro_f1 > 0.8
    assert plain.best_dev_macro_f1 < weighted.best_dev_macro_f1 - 0.2
    with pytest.raises(ValueError, match="train_weights"):
        fine_tune(train_texts, train_labels, texts[200:], labels[200:], classes, s, train_weights=[1.0] * 10)


def test_batch_loss_is_class_weighted_cross_entropy_and_rdrop_adds_the_disagreement():
    from fbk_tasks.train.transformer import batch_loss

    torch.manual_seed(0)
    logits, labels = torch.randn(8, 3), torch.randint(0, 3, (8,))
    cw, rw = torch.tensor([0.5, 2.0, 1.3]), torch.rand(8)
    plain = torch.nn.CrossEntropyLoss(weight=cw)(logits, labels)
    assert torch.allclose(batch_loss(logits, labels, torch.ones(8), cw), plain)
    per_row = torch.nn.CrossEntropyLoss(weight=cw, reduction="none")(logits, labels)
    assert torch.allclose(batch_loss(logits, labels, rw, cw), (per_row * rw).sum() / (cw[labels] * rw).sum())
    # R-Drop: two identical passes cost nothing extra; two that disagree cost more
    assert torch.allclose(batch_loss(torch.cat([logits, logits]), labels, torch.ones(8), cw, 1.0), plain)
    other = logits + torch.randn(8, 3)
    mean_ce = (plain + torch.nn.CrossEntropyLoss(weight=cw)(other, labels)) / 2
    assert batch_loss(torch.cat([logits, other]), labels, torch.ones(8), cw, 1.0) > mean_ce + 0.01


def test_rdrop_fine_tune_runs_each_batch_twice_and_learns(train_env, monkeypatch):
    from transformers import BertForSequenceClassification

    sizes = []
    forward = BertForSequenceClassification.forward

    def spy(self, *a, **kw):
        if self.training:
            sizes.append(kw["input_ids"].shape[0])
        return forward(self, *a, **kw)

    monkeypatch.setattr(BertForSequenceClassification, "forward", spy)
    s, res = _fine_tune(train_env, monkeypatch, rdrop_alpha="1.0", freeze_word_embeddings="false", batch_size="16")
    assert sizes and sizes[0] == 32 and all(n % 2 == 0 for n in sizes)
    assert res.samples_per_second > 0 and res.history[-1]["dev_macro_f1"] > 0.8


def test_tune_class_bias_moves_the_boundary_to_the_macro_f1_optimum():
    import numpy as np

    from fbk_tasks.train.transformer import macro_f1_of, tune_class_bias

    rng = np.random.default_rng(0)
    y = rng.choice(3, size=900, p=[0.6, 0.25, 0.15])
    logits = rng.normal(size=(900, 3))
    logits[np.arange(900), y] += 1.5
    logits[:, 2] -= 1.0  # a model that under-predicts the minority class
    bias, before, after = tune_class_bias(logits, y)
    assert bias[0] == 0.0 and bias[2] > 0.3
    assert after > before + 0.02
    assert after == macro_f1_of(y, (logits + bias).argmax(1), 3)
    # already at the optimum (perfect separation): nothing moves
    clean = np.eye(3)[y] * 5.0
    bias0, b0, a0 = tune_class_bias(clean, y)
    assert b0 == a0 == 1.0 and not bias0.any()


def test_fine_tune_folds_the_tuned_offsets_into_the_classifier_bias(train_env, monkeypatch):
    import numpy as np

    from fbk_tasks.train.transformer import predict_proba

    s, res = _fine_tune(train_env, monkeypatch, tune_class_bias="true", epochs="1", pooling="cls")
    assert res.class_bias is not None and len(res.class_bias) == 3 and res.class_bias[0] == 0.0
    assert res.best_dev_macro_f1 >= res.dev_macro_f1_before_bias
    # the saved classifier bias carries the offsets: removing them gives the untuned model back
    rows = make_reviews(240, seed=3, zh_share=0.0, unique=False).to_pylist()[200:]
    texts = [r["text"] for r in rows]
    tuned = predict_proba(res.model, res.tokenizer, texts, 16, s.train.max_length)
    with torch.no_grad():
        res.model.classifier.bias.sub_(torch.tensor(res.class_bias))
    untuned = predict_proba(res.model, res.tokenizer, texts, 16, s.train.max_length)
    expected = np.log(untuned) + np.asarray(res.class_bias)
    expected -= np.log(np.exp(expected).sum(1, keepdims=True))
    np.testing.assert_allclose(np.log(tuned), expected, atol=1e-4)


def test_layer_depth_orders_embeddings_below_layers_below_the_head():
    from fbk_tasks.train.transformer import layer_depth

    assert layer_depth("bert.embeddings.LayerNorm.weight", 3) == 0
    assert layer_depth("bert.encoder.layer.0.attention.self.query.weight", 3) == 1
    assert layer_depth("bert.encoder.layer.2.output.dense.bias", 3) == 3
    assert layer_depth("bert.pooler.dense.weight", 3) == 4
    assert layer_depth("classifier.weight", 3) == 4


def test_ema_update_is_a_warmed_up_moving_average():
    from fbk_tasks.train.transformer import ema_update

    shadow, param = [torch.zeros(3)], [torch.ones(3)]
    ema_update(shadow, param, 0.99, step=0)  # d = min(0.99, 1/10): mostly the new weights
    torch.testing.assert_close(shadow[0], torch.full((3,), 0.9))
    ema_update(shadow, param, 0.5, step=1000)  # d = 0.5
    torch.testing.assert_close(shadow[0], torch.full((3,), 0.95))
    assert torch.equal(param[0], torch.ones(3))  # the live weights are never touched


def test_fine_tune_with_ema_serves_the_averaged_weights_and_decays_lower_layers(train_env, monkeypatch):
    from sklearn.metrics import f1_score

    from fbk_tasks.train import transformer as tr

    captured = {"calls": 0}
    real_adamw, real_update = torch.optim.AdamW, tr.ema_update

    def adamw_spy(groups, **kw):
        captured["lrs"] = sorted({g["lr"] for g in groups})
        return real_adamw(groups, **kw)

    def update_spy(shadow, params, decay, step):
        captured["calls"] += 1
        captured["shadow"], captured["params"] = shadow, params
        return real_update(shadow, params, decay, step)

    monkeypatch.setattr(torch.optim, "AdamW", adamw_spy)
    monkeypatch.setattr(tr, "ema_update", update_spy)
    s, res = _fine_tune(train_env, monkeypatch, ema_decay="0.9", layer_lr_decay="0.5", epochs="1", pooling="cls",
                        tune_class_bias="false", freeze_word_embeddings="false")
    lr, n = s.train.learning_rate, res.model.config.num_hidden_layers
    assert captured["lrs"] == pytest.approx(sorted(lr * 0.5**k for k in range(n + 2)))
    assert captured["calls"] == res.steps > 1
    # one epoch: the model returned holds the moving average, not the last step's weights
    assert all(torch.equal(p.detach(), sh) for p, sh in zip(captured["params"], captured["shadow"]))
    # and its dev macro-F1 is the one recorded
    rows = make_reviews(240, seed=3, zh_share=0.0, unique=False).to_pylist()[200:]
    proba = tr.predict_proba(res.model, res.tokenizer, [r["text"] for r in rows], 16, s.train.max_length)
    classes = ["negative", "neutral", "positive"]
    f1 = f1_score([r["label"] for r in rows], [classes[i] for i in proba.argmax(1)], labels=classes,
                  average="macro", zero_division=0)
    assert f1 == pytest.approx(res.best_dev_macro_f1, abs=1e-9)


def test_fine_tune_records_the_emoji_rule_in_the_saved_tokenizer(train_env, monkeypatch, tmp_path):
    from transformers import AutoTokenizer

    from fbk_tasks.text.emoji import enabled
    from fbk_tasks.train.transformer import save

    _, res = _fine_tune(train_env, monkeypatch, epochs="1")
    assert enabled(res.tokenizer)  # train.emoji_to_text defaults to on
    assert enabled(AutoTokenizer.from_pretrained(save(res, tmp_path / "model")))
    _, off = _fine_tune(train_env, monkeypatch, epochs="1", emoji_to_text="false")
    assert not enabled(AutoTokenizer.from_pretrained(save(off, tmp_path / "off")))


def test_early_stopping_stops_after_patience_epochs_without_a_gain(train_env, monkeypatch):
    """train.early_stopping_patience=1: the first epoch without a dev gain ends training (as
    Keras and Hugging Face count patience) and the best epoch is restored."""
    import sklearn.metrics

    scores = iter([0.6, 0.5, 0.9, 0.9, 0.9])  # dev macro-F1 per epoch, as the loop computes it
    real = sklearn.metrics.f1_score
    monkeypatch.setattr(sklearn.metrics, "f1_score",
                        lambda *a, **k: next(scores) if k.get("average") == "macro" else real(*a, **k))
    s, res = _fine_tune(train_env, monkeypatch, epochs="4", early_stopping_patience="1", pooling="cls")
    assert res.epochs_run == 2 and res.best_epoch == 1
    assert [h["dev_macro_f1"] for h in res.history] == [0.6, 0.5]


def test_over_the_epoch_budget_the_run_trains_as_without_rdrop(train_env, monkeypatch):
    """The budget probe runs real passes on the model; a run it turns R-Drop off for must be the
    very run that rdrop_alpha=0 gives, and one that fits must be the run without a probe
    (precision fixed: cpu_bf16=auto could pick differently by timing)."""
    _, over = _fine_tune(train_env, monkeypatch, rdrop_alpha="1.0", max_epoch_minutes="1e-9", cpu_bf16="off")
    assert over.rdrop_alpha == 0.0
    assert set(over.epoch_probe) == {"epoch_probe_rdrop_step_seconds", "epoch_estimate_rdrop_minutes",
                                     "epoch_probe_step_seconds", "epoch_estimate_minutes"}
    _, plain = _fine_tune(train_env, monkeypatch, rdrop_alpha="0", max_epoch_minutes="1e-9", cpu_bf16="off")
    assert plain.epoch_probe == {}  # nothing to decide, no probe
    for (name, a), b in zip(over.model.state_dict().items(), plain.model.state_dict().values()):
        assert torch.equal(a, b), name
    _, within = _fine_tune(train_env, monkeypatch, rdrop_alpha="1.0", max_epoch_minutes="600", cpu_bf16="off")
    assert within.rdrop_alpha == 1.0 and set(within.epoch_probe) == {"epoch_probe_rdrop_step_seconds",
                                                                      "epoch_estimate_rdrop_minutes"}
    _, unprobed = _fine_tune(train_env, monkeypatch, rdrop_alpha="1.0", max_epoch_minutes="null", cpu_bf16="off")
    assert unprobed.epoch_probe == {} and unprobed.rdrop_alpha == 1.0
    for (name, a), b in zip(within.model.state_dict().items(), unprobed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, b) for a, b in zip(within.model.state_dict().values(), plain.model.state_dict().values()))


def test_a_run_that_drops_rdrop_chooses_its_precision_without_it(train_env, monkeypatch):
    """cpu_bf16=auto first times R-Drop's doubled batches; when the budget then drops R-Drop, the
    precision is chosen again on plain batches, as a run with rdrop_alpha=0 would."""
    from transformers import BertForSequenceClassification

    from fbk_tasks.train import transformer

    sizes, probes = [], []
    forward, real = BertForSequenceClassification.forward, transformer.choose_cpu_bf16

    def spy(self, *a, **kw):
        sizes.append(kw["input_ids"].shape[0])
        return forward(self, *a, **kw)

    def recording(setting, step, **kw):
        start = len(sizes)
        out = real(setting, step, **kw)
        probes.append(sorted(set(sizes[start:])))
        return out

    monkeypatch.setattr(BertForSequenceClassification, "forward", spy)
    monkeypatch.setattr(transformer, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(transformer, "choose_cpu_bf16", recording)
    _, res = _fine_tune(train_env, monkeypatch, cpu_bf16="auto", rdrop_alpha="1.0", max_epoch_minutes="1e-9")
    assert res.rdrop_alpha == 0.0 and probes == [[32], [16]]  # batch 16 doubled, then plain
    probes.clear()
    _, res = _fine_tune(train_env, monkeypatch, cpu_bf16="auto", rdrop_alpha="1.0", max_epoch_minutes="600")
    assert res.rdrop_alpha == 1.0 and probes == [[32]]  # R-Drop kept: chosen once, on what it trains
