"""Emoji and pictographic symbols as words the model's vocabulary knows.

A BERT WordPiece vocabulary such as all-MiniLM-L6-v2's has no emoji: ``😡`` becomes ``[UNK]``,
and an emoji written against a word takes the word with it (``thanks🙏`` is one ``[UNK]``, and so
is ``❤️😊``). In the airline tweets 492 of 14,640 texts hold an ``[UNK]``, nearly all of them
emoji, and emoji are among the strongest sentiment cues in short reviews.

``model_texts`` rewrites each such symbol as its lower-case Unicode name between spaces
(``😡`` -> `` pouting face ``, ``👍`` -> `` thumbs up sign ``), as BERTweet's normaliser does with
the ``emoji`` package, here from ``unicodedata`` so that nothing is downloaded. Only symbols that
this tokenizer maps to ``[UNK]`` and whose name it can spell without ``[UNK]`` in at most three
pieces a word are rewritten (a vocabulary that would spell it letter by letter, such as one
trained on Chinese reviews, keeps the symbol);
variation selectors, zero-width joiners and skin-tone modifiers are removed.

The rule travels with the model: ``enable`` records it in the tokenizer's config
(``tokenizer_config.json`` after ``save_pretrained``), and ``model_texts`` applies it wherever a
tokenizer that carries it is used (training, evaluation, pyfunc, ONNX scoring), so serving
always sees the text the way training did.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

FLAG = "fbk_emoji_to_text"

# Blocks that hold emoji and pictographs (arrows, technical, enclosed alphanumerics, geometric
# shapes, misc symbols, dingbats, supplemental arrows, misc symbols and arrows, and the
# supplementary pictograph planes). Regional indicators (flags) are left alone.
_RANGES = ((0x2190, 0x21FF), (0x2300, 0x23FF), (0x2460, 0x24FF), (0x25A0, 0x27BF), (0x2900, 0x297F),
           (0x2B00, 0x2BFF), (0x1F000, 0x1F1E5), (0x1F200, 0x1FAFF))
_DROP = "\u200d\ufe0e\ufe0f" + "".join(chr(c) for c in range(0x1F3FB, 0x1F400))  # ZWJ, VS15/16, skin tones
_CACHE_ATTR = "_fbk_emoji_rule"
_WORDS = re.compile(r"[\s-]+")


@lru_cache(maxsize=1)
def _candidates() -> tuple[tuple[str, str], ...]:
    out = []
    for lo, hi in _RANGES:
        for cp in range(lo, hi + 1):
            ch = chr(cp)
            if ch in _DROP or unicodedata.category(ch) not in ("So", "Sm"):
                continue
            name = unicodedata.name(ch, "")
            if name:
                out.append((ch, name.lower()))
    return tuple(out)


def build_table(tokenizer) -> dict[str, str]:
    """Symbol -> `` name `` for the symbols this tokenizer cannot represent but can spell."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return {}
    cands = _candidates()
    chars = tokenizer([c for c, _ in cands], add_special_tokens=False)["input_ids"]
    names = tokenizer([n for _, n in cands], add_special_tokens=False)["input_ids"]
    return {c: f" {n} " for (c, n), ids, name_ids in zip(cands, chars, names)
            if unk in ids and name_ids and unk not in name_ids and len(name_ids) <= 3 * len(_WORDS.split(n))}


def _rule(tokenizer) -> tuple[re.Pattern, dict[str, str]]:
    cached = getattr(tokenizer, _CACHE_ATTR, None)
    if cached is None:
        table = build_table(tokenizer)
        table.update({c: "" for c in _DROP})
        pattern = re.compile("[" + "".join(re.escape(c) for c in sorted(table)) + "]")
        cached = (pattern, table)
        setattr(tokenizer, _CACHE_ATTR, cached)  # built once per tokenizer object
    return cached


def enabled(tokenizer) -> bool:
    return bool(getattr(tokenizer, "init_kwargs", {}).get(FLAG, False))


def enable(tokenizer, on: bool = True) -> int:
    """Record (or clear) the rule in the tokenizer's config; returns how many symbols it rewrites."""
    tokenizer.init_kwargs[FLAG] = bool(on)
    return len(_rule(tokenizer)[1]) - len(_DROP) if on else 0


def model_texts(tokenizer, texts: Sequence) -> list[str]:
    """The strings to give ``tokenizer``: None -> '', and the emoji rule when the tokenizer carries it."""
    texts = ["" if t is None else str(t) for t in texts]
    if not enabled(tokenizer):
        return texts
    pattern, table = _rule(tokenizer)

    def spell(m: re.Match) -> str:
        return table[m.group(0)]

    return [t if t.isascii() else pattern.sub(spell, t) for t in texts]
