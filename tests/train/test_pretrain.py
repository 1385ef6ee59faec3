"""Domain pre-training: WordPiece + small BERT MLM, its own MLflow run, then used as the base model."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import make_reviews, write_partition

pytestmark = pytest.mark.slow

PRETRAIN_ENV = {
    "FBK_TRAIN__PRETRAIN_STEPS": "30",
    "FBK_TRAIN__PRETRAIN_HIDDEN_SIZE": "32",
    "FBK_TRAIN__PRETRAIN_LAYERS": "1",
    "FBK_TRAIN__PRETRAIN_HEADS": "2",
    "FBK_TRAIN__PRETRAIN_VOCAB_SIZE": "300",
    "FBK_TRAIN__PRETRAIN_BATCH_SIZE": "16",
    "FBK_TRAIN__PRETRAIN_MAX_LENGTH": "32",
    "FBK_TRAIN__PRETRAIN_LEARNING_RATE": "0.003",
    "FBK_TRAIN__LOG_EVERY_STEPS": "10",
}


def test_pretrain_then_fine_tune_from_pretrained_latest(train_env, monkeypatch):
    from mlflow import MlflowClient

    from fbk_tasks.train.data import current_golden, list_partitions, read_curated
    from fbk_tasks.train.pipeline import assemble, train_candidate
    from fbk_tasks.train.pretrain import pretrain, resolve_pretrained

    for k, v in PRETRAIN_ENV.items():
        monkeypatch.setenv(k, v)
    s = train_env()
    write_partition(s.curated_dir, make_reviews(240, seed=5, zh_share=0.7))
    prepared = assemble(s)  # takes the golden set first: pre-training must not see it
    path = Path(pretrain(s))
    assert resolve_pretrained(s, "latest") == path and (path / "config.json").exists()

    client = MlflowClient(s.mlflow_tracking_uri)
    exp = client.get_experiment_by_name(f"{s.mlflow.experiment_prefix}-pretrain")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.metrics["steps"] == 30
    assert run.data.metrics["final_mlm_loss"] < run.data.metrics["first_mlm_loss"]
    assert "pretrained_model/config.json" in {f.path for f in client.list_artifacts(run.info.run_id, "pretrained_model")}
    gold = set(current_golden(s).load().review_id)
    curated = read_curated(s, list_partitions(s))
    zh_not_golden = curated[(curated.language == "zh") & ~curated.review_id.isin(gold)]
    assert int(run.data.params["data.texts"]) == len(zh_not_golden)  # golden rows held out, zh only

    monkeypatch.setenv("FBK_TRAIN__BASE_MODEL", "pretrained:latest")
    s2 = train_env()
    trained = train_candidate(s2, prepared, "transformer")
    data = MlflowClient(s2.mlflow_tracking_uri).get_run(trained["run_id"]).data
    assert data.params["transformer.base_model_path"] == str(path)
    # R-Drop (default) fits the epoch budget for a tiny model: kept, and the probe's estimate logged
    assert data.params["transformer.rdrop_alpha_used"] == "1.0" and 0 < data.metrics["epoch_estimate_rdrop_minutes"] < 5
    assert 0.0 <= trained["golden_macro_f1"] <= 1.0


def test_masked_lm_loss_equals_the_full_head_loss():
    import torch
    from transformers import BertForMaskedLM

    from fbk_tasks.train.pretrain import mask_tokens, masked_lm_loss, small_bert_config

    torch.manual_seed(0)
    model = BertForMaskedLM(small_bert_config(200, hidden=32, layers=1, heads=2, max_length=32)).eval()
    ids = torch.randint(5, 200, (4, 20))
    attn = torch.ones_like(ids)
    attn[2:, 15:] = 0
    ids[2:, 15:] = 0
    inputs, labels = mask_tokens(ids, attn == 0, 4, 200, torch.Generator().manual_seed(1))
    assert (labels != -100).any()
    with torch.no_grad():
        full = model(input_ids=inputs, attention_mask=attn, labels=labels).loss
        assert torch.allclose(masked_lm_loss(model, inputs, attn, labels), full, atol=1e-6)


def test_continued_pretraining_starts_from_the_base_model_and_keeps_its_tokenizer(train_env, monkeypatch, tiny_base_model):
    """train.pretrain_from: more masked-LM training of an existing encoder (which, like the packaged
    sentence-transformer, has no MLM head), then a fine-tune from the result."""
    import torch
    from mlflow import MlflowClient
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from fbk_tasks.train.pipeline import assemble, train_candidate
    from fbk_tasks.train.pretrain import pretrain

    for k, v in {**PRETRAIN_ENV, "FBK_TRAIN__PRETRAIN_FROM": str(tiny_base_model), "FBK_TRAIN__PRETRAIN_LANGUAGE": "en",
                 "FBK_TRAIN__FREEZE_WORD_EMBEDDINGS": "true", "FBK_TRAIN__PRETRAIN_LEARNING_RATE": "0.001"}.items():
        monkeypatch.setenv(k, v)
    s = train_env()
    write_partition(s.curated_dir, make_reviews(240, seed=6, zh_share=0.2))
    prepared = assemble(s)
    path = Path(pretrain(s))

    assert AutoTokenizer.from_pretrained(path).get_vocab() == AutoTokenizer.from_pretrained(tiny_base_model).get_vocab()
    base = load_file(tiny_base_model / "model.safetensors")
    after = {k.removeprefix("bert."): v for k, v in load_file(path / "model.safetensors").items()}
    key = next(k for k in base if "word_embeddings" in k)
    assert torch.equal(after[key.removeprefix("bert.")], base[key])  # frozen, as the fine-tune keeps it
    q = next(k for k in base if k.endswith("layer.0.attention.self.query.weight"))
    from transformers import BertConfig, BertModel

    torch.manual_seed(1)
    fresh = BertModel(BertConfig.from_pretrained(tiny_base_model)).state_dict()[q.removeprefix("bert.")]
    moved = (after[q.removeprefix("bert.")] - base[q]).norm() / base[q].norm()
    assert 0 < moved < 0.5 * (fresh - base[q]).norm() / base[q].norm()  # trained on from the base, not from scratch

    client = MlflowClient(s.mlflow_tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name(f"{s.mlflow.experiment_prefix}-pretrain").experiment_id])
    assert run.data.params["pretrain_from"] == str(tiny_base_model)
    assert run.data.metrics["continued"] == 1.0
    assert run.data.metrics["final_mlm_loss"] < run.data.metrics["first_mlm_loss"]

    monkeypatch.setenv("FBK_TRAIN__BASE_MODEL", "pretrained:latest")
    trained = train_candidate(train_env(), prepared, "transformer")
    assert 0.0 <= trained["golden_macro_f1"] <= 1.0


def test_continued_pretraining_refuses_a_model_without_a_bert_encoder(settings, tmp_path, tiny_base_model):
    import shutil

    from transformers import DistilBertConfig, DistilBertModel

    from fbk_tasks.train.pretrain import continued_model

    other = tmp_path / "distilbert"
    DistilBertModel(DistilBertConfig(vocab_size=400, dim=32, n_layers=1, n_heads=2, hidden_dim=64)).save_pretrained(other)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_base_model / f, other / f)
    s = settings.model_copy(update={"train": settings.train.model_copy(update={"pretrain_from": str(other)})})
    with pytest.raises(ValueError, match="not a BERT-style masked LM"):
        continued_model(s)


def test_time_budget_schedule_warms_up_then_decays_to_zero():
    from fbk_tasks.train.pretrain import budget_schedule

    assert budget_schedule(0.0) == 0.0 and budget_schedule(0.03) == pytest.approx(0.5)
    assert budget_schedule(0.06) == pytest.approx(1.0) and budget_schedule(0.53) == pytest.approx(0.5)
    assert budget_schedule(1.0) == 0.0 and budget_schedule(1.7) == 0.0


def test_weekly_instalments_continue_their_own_latest_model(train_env, monkeypatch):
    """train.pretrain_from=pretrained:latest: the first run (nothing pre-trained yet) starts from
    scratch instead of failing; the next continues that model (its vocabulary, its weights) and
    the steps add up in the model's lineage and the MLflow run."""
    import json

    from mlflow import MlflowClient
    from transformers import AutoTokenizer

    from fbk_tasks.train.pretrain import LINEAGE_FILE, pretrain, resolve_pretrained

    for k, v in {**PRETRAIN_ENV, "FBK_TRAIN__PRETRAIN_FROM": "pretrained:latest",
                 "FBK_TRAIN__FREEZE_WORD_EMBEDDINGS": "false"}.items():
        monkeypatch.setenv(k, v)
    s = train_env()
    write_partition(s.curated_dir, make_reviews(240, seed=8, zh_share=0.7))
    first = Path(pretrain(s))
    second = Path(pretrain(train_env()))
    assert first != second and resolve_pretrained(s, "latest") == second

    assert json.loads((first / LINEAGE_FILE).read_text())["instalments"] == 1
    lineage = json.loads((second / LINEAGE_FILE).read_text())
    assert lineage["instalments"] == 2 and lineage["total_steps"] == 60 and lineage["continued_from"] == str(first)
    assert AutoTokenizer.from_pretrained(second).get_vocab() == AutoTokenizer.from_pretrained(first).get_vocab()

    client = MlflowClient(s.mlflow_tracking_uri)
    exp = client.get_experiment_by_name(f"{s.mlflow.experiment_prefix}-pretrain")
    runs = {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}
    r1, r2 = runs[first.name], runs[second.name]
    assert r1.data.metrics["continued"] == 0.0 and "fbk.pretrain_parent_run" not in r1.data.tags
    assert r2.data.metrics["continued"] == 1.0 and r2.data.tags["fbk.pretrain_parent_run"] == first.name
    assert r2.data.metrics["total_steps"] == 60 and r2.data.metrics["instalments"] == 2
    # it trained on from the first model's weights (from scratch, the same seed and data would give
    # the first run's losses exactly): it starts below where the first one started
    assert r2.data.metrics["first_mlm_loss"] < r1.data.metrics["first_mlm_loss"] - 0.2


def test_pretrain_from_a_missing_run_is_an_error(settings):
    from fbk_tasks.train.pretrain import continue_from

    s = settings.model_copy(update={"train": settings.train.model_copy(update={"pretrain_from": "pretrained:0123abcd"})})
    with pytest.raises(FileNotFoundError, match="no pre-trained model '0123abcd'"):
        continue_from(s)
    latest = settings.model_copy(update={"train": settings.train.model_copy(update={"pretrain_from": "pretrained:latest"})})
    assert continue_from(latest) is None


def test_fbk_train_with_pretrain_fine_tunes_from_the_model_it_pre_trained(train_env, monkeypatch):
    """`fbk train` (run_training) with train.pretrain: the transformer starts from the model just
    pre-trained, as in the DAG, not from train.base_model."""
    from mlflow import MlflowClient

    from fbk_tasks.train.pipeline import run_training
    from fbk_tasks.train.pretrain import resolve_pretrained

    for k, v in {**PRETRAIN_ENV, "FBK_TRAIN__PRETRAIN": "true"}.items():
        monkeypatch.setenv(k, v)
    s = train_env()
    write_partition(s.curated_dir, make_reviews(240, seed=5, zh_share=0.7))
    result = run_training(s, candidates=["transformer"])
    (version,) = result["verdicts"]
    client = MlflowClient(s.mlflow_tracking_uri)
    run_id = client.get_model_version(s.mlflow.registered_model_name, version).run_id
    assert client.get_run(run_id).data.params["transformer.base_model_path"] == str(resolve_pretrained(s, "latest"))


def test_pretraining_before_any_training_takes_the_golden_set_first_and_leaves_it_out(train_env, monkeypatch):
    """`fbk pretrain` on a fresh deployment: the golden set is taken first (as the first training
    run would take it), so a model never pre-trains on the texts it will be judged on; the range
    given is the range read."""
    from mlflow import MlflowClient

    from fbk_tasks.train.data import current_golden, list_partitions, read_curated
    from fbk_tasks.train.pipeline import assemble
    from fbk_tasks.train.pretrain import pretrain

    for k, v in PRETRAIN_ENV.items():
        monkeypatch.setenv(k, v)
    s = train_env()
    write_partition(s.curated_dir, make_reviews(240, seed=5, zh_share=0.7))
    write_partition(s.curated_dir, make_reviews(60, ds="2026-11-09", seed=6, zh_share=0.7, prefix="late"))
    assert current_golden(s) is None
    pretrain(s, ds_to="2026-11-01")
    golden = current_golden(s)
    assert golden is not None
    gold = set(golden.load().review_id)
    curated = read_curated(s, list_partitions(s, ds_to="2026-11-01"))
    zh_not_golden = curated[(curated.language == "zh") & ~curated.review_id.isin(gold)]
    client = MlflowClient(s.mlflow_tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name(f"{s.mlflow.experiment_prefix}-pretrain").experiment_id])
    assert int(run.data.params["data.texts"]) == len(zh_not_golden) and run.data.params["data.partitions"] == "2026-11-01"
    assert run.data.tags["fbk.golden_sha256"] == golden.sha256
    assemble(s, ds_to="2026-11-01")
    assert current_golden(s).sha256 == golden.sha256  # training keeps that golden set
