"""Offline language tagging: ``'zh'`` | ``'en'`` | ``'other'`` (null stays null).

Letters are counted per script straight from the UTF-8 bytes of the Arrow buffer (numpy;
a code point's script block is decided by its lead byte, and for U+3xxx by the second byte):

* ``han``    CJK unified ideographs U+3400-U+9FFF (lead bytes E3 90+, E4-E9) and the
             supplementary ideograph planes U+20000-U+3FFFF
* ``latin``  ASCII letters; ``latin_ext``: Latin-1/Latin Extended-A/B letters (lead bytes
             C3-C9) and Latin Extended Additional (U+1E00-1EFF, Vietnamese)
* ``kana``   hiragana/katakana U+3040-U+30FF
* ``hangul`` Hangul syllables and compatibility jamo (lead bytes EA-ED, U+3130-U+318F)
* ``other``  Greek, Cyrillic, Armenian, Hebrew, Arabic, Indic, Thai, Georgian, Ethiopic ...
             (lead bytes CD-DF, E0, E1 except U+1E00-1EFF)

Decision, per row:

1. no letters at all (empty, emoji-only, digits/punctuation-only) -> ``other``;
2. Japanese: at least 2 kana and kana >= 20 % of han -> the han count goes to ``other``;
3. scores: ``zh = HAN_WEIGHT * han`` (one Han character carries about as much text as
   2-3 Latin letters; we use :data:`HAN_WEIGHT` = 2.5), ``latin + latin_ext``, and
   ``other = HAN_WEIGHT * (kana + hangul) + other letters``;
4. ``zh`` when the zh score is the largest (a zh/latin tie goes to zh);
5. when the Latin score is the largest: ``en`` unless the text looks like another Latin
   language. Evidence for English is a short list of English function/review words
   (:data:`EN_WORDS`); evidence against is a list of common French/German/Spanish/Italian/
   Portuguese/Dutch words (:data:`FOREIGN_WORDS`) or >= 2 accented Latin letters. No
   evidence either way (``Great!``, ``OK``, ``Perfect fit. Fast shipping``) -> ``en``;
   only foreign evidence -> ``other``; both -> whichever has more hits (accented letters
   count half each), a tie -> ``other``.
6. otherwise ``other``.

Pipeline placeholders (``[EMAIL]``, ``[URL]`` ...) are not counted as Latin letters.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fbk_tasks.text.pii import (
    PLACEHOLDERS,
    _np_bool,
    _np_int,
    as_string_array,
    map_chunks,
    np_views,
    row_any,
    row_sum,
    valid_mask,
)

__all__ = ["EN_WORDS", "FOREIGN_WORDS", "HAN_WEIGHT", "LANGUAGES", "detect_language", "script_counts"]

LANGUAGES: tuple[str, ...] = ("zh", "en", "other")
HAN_WEIGHT = 2.5

EN_WORDS: tuple[str, ...] = (
    "the", "and", "is", "are", "was", "were", "be", "been", "it", "its", "it's", "this", "that",
    "these", "those", "with", "for", "of", "to", "from", "but", "not", "very", "have", "has",
    "had", "i", "i'm", "i've", "you", "your", "my", "we", "our", "they", "them", "their", "he",
    "she", "his", "her", "will", "would", "could", "should", "can't", "don't", "doesn't",
    "didn't", "isn't", "wasn't", "won't", "just", "so", "too", "really", "great", "good",
    "nice", "love", "loved", "like", "works", "worked", "recommend", "awesome", "perfect",
    "bad", "poor", "terrible", "quality", "price", "product", "item", "bought", "buy", "fast",
    "shipping", "easy", "well", "all", "what", "which", "when", "after", "before", "about",
    "if", "or", "as", "at", "by", "an", "one", "out", "up", "get", "got", "use", "used",
    "thanks", "thank", "happy", "disappointed", "broke", "broken", "cheap", "again",
)  # fmt: skip
FOREIGN_WORDS: tuple[str, ...] = (
    # fr
    "le", "la", "les", "et", "est", "une", "des", "du", "je", "très", "pas", "avec", "pour",
    "mais", "c'est", "ce", "cette", "qui", "que", "sur", "bien", "produit", "j'ai", "il",
    "elle", "nous", "vous", "ne", "au", "aux", "été", "être", "tout", "vraiment", "acheté",
    "qualité", "livraison", "parfait", "bon", "bonne", "génial", "de", "en",
    # de
    "der", "das", "und", "ist", "nicht", "sehr", "ich", "mit", "ein", "eine", "einen", "für",
    "auf", "zu", "es", "gut", "gute", "auch", "aber", "dem", "wie", "wir", "sie", "sind",
    "habe", "produkt", "qualität", "schnell", "gekauft", "leider", "kein", "keine", "toll",
    # es
    "el", "los", "las", "y", "muy", "pero", "para", "por", "una", "lo", "del", "bueno",
    "buena", "producto", "calidad", "está", "todo", "más", "compra", "recomiendo", "perfecto",
    # it / pt / nl
    "di", "che", "è", "non", "molto", "ottimo", "prodotto", "della", "sono", "não", "muito",
    "com", "um", "uma", "produto", "é", "ótimo", "bom", "het", "een", "niet", "zeer", "goed",
    "ik",
)  # fmt: skip


def _words_re(words: tuple[str, ...]) -> str:
    alts = "|".join(sorted((w.replace("'", "['’]") for w in words), key=len, reverse=True))
    # Unicode-aware word boundaries (RE2's \b is ASCII-only); apostrophes and hyphens join
    return rf"(?i)(?:^|[^\p{{L}}\p{{N}}'’\-])(?:{alts})(?:[^\p{{L}}\p{{N}}'’\-]|$)"


EN_RE = _words_re(EN_WORDS)
FOREIGN_RE = _words_re(FOREIGN_WORDS)


def script_counts(arr: pa.Array) -> dict[str, np.ndarray]:
    """Per-row letter counts by script (see module doc); int32 arrays."""
    off, data = np_views(arr)
    n = len(arr)
    out = {k: np.zeros(n, np.int32) for k in ("latin", "latin_ext", "han", "kana", "hangul", "other")}
    if data.size == 0:
        return out
    out["latin"] = row_sum(((data | np.uint8(0x20)) - np.uint8(0x61)) < 26, off)
    out["han"] = row_sum((data - np.uint8(0xE4)) < 6, off)

    def add_sparse(key: str, positions: np.ndarray) -> None:
        if positions.size:
            out[key] += np.bincount(np.searchsorted(off, positions, side="right") - 1, minlength=n).astype(np.int32)

    add_sparse("latin_ext", np.flatnonzero((data - np.uint8(0xC3)) < 7))
    add_sparse("other", np.flatnonzero((data - np.uint8(0xCD)) < 21))  # CD..E1
    add_sparse("hangul", np.flatnonzero((data - np.uint8(0xEA)) < 4))  # EA..ED
    if data.size > 2:
        p = np.flatnonzero(data[:-1] == 0xE3)
        b1 = data[p + 1]
        add_sparse("kana", p[(b1 >= 0x81) & (b1 <= 0x83)])
        add_sparse("han", p[b1 >= 0x90])
        add_sparse("hangul", p[(b1 >= 0x84) & (b1 <= 0x86)])
        p = np.flatnonzero(data[:-1] == 0xE1)
        b1 = data[p + 1]
        vi = p[(b1 >= 0xB8) & (b1 <= 0xBB)]  # U+1E00-1EFF Latin Extended Additional
        if vi.size:
            c = np.bincount(np.searchsorted(off, vi, side="right") - 1, minlength=n).astype(np.int32)
            out["other"] -= c
            out["latin_ext"] += c
        p = np.flatnonzero(data[:-1] == 0xF0)
        b1 = data[p + 1]
        add_sparse("han", p[(b1 >= 0xA0) & (b1 <= 0xBF)])
    return out


def detect_language(texts) -> pa.Array:
    """'zh' | 'en' | 'other' per row (string array, nulls preserved); see the module doc."""
    return map_chunks(as_string_array(texts), _detect_chunk)


def _detect_chunk(arr: pa.Array) -> pa.Array:
    n = len(arr)
    if n == 0:
        return pa.array([], type=pa.string())
    c = script_counts(arr)
    latin = c["latin"].astype(np.float64)
    # placeholders left by redaction are not words of the review
    off, data = np_views(arr)
    has_bracket = row_any(data == 0x5B, off)
    if has_bracket.any():
        idx = np.flatnonzero(has_bracket)
        sub = arr.take(pa.array(idx))
        for ph in PLACEHOLDERS.values():
            letters = sum(ch.isalpha() for ch in ph)
            latin[idx] -= letters * _np_int(pc.count_substring(sub, ph))
    han = c["han"].astype(np.float64)
    kana = c["kana"].astype(np.float64)
    japanese = (kana >= 2) & (kana >= 0.2 * han)
    zh_score = np.where(japanese, 0.0, HAN_WEIGHT * han)
    latin_score = latin + c["latin_ext"]
    other_score = HAN_WEIGHT * (kana + c["hangul"]) + c["other"] + np.where(japanese, HAN_WEIGHT * han, 0.0)
    any_letter = (zh_score + latin_score + other_score) > 0

    result = np.full(n, 2, np.int8)  # index into LANGUAGES
    zh = any_letter & (zh_score >= latin_score) & (zh_score > other_score)
    result[zh] = 0
    latin_dom = any_letter & ~zh & (latin_score > other_score)
    if latin_dom.any():
        idx = np.flatnonzero(latin_dom)
        sub = arr.take(pa.array(idx))
        accents = c["latin_ext"][idx]
        foreign = _np_bool(pc.match_substring_regex(sub, FOREIGN_RE)) | (accents >= 2)
        is_en = ~foreign  # no evidence, or English-only evidence
        if foreign.any():
            fidx = np.flatnonzero(foreign)
            fsub = sub.take(pa.array(fidx))
            en_hit = _np_bool(pc.match_substring_regex(fsub, EN_RE))
            if en_hit.any():  # both: compare hit counts
                bidx = fidx[en_hit]
                # a match consumes its boundary characters: double the spaces so that
                # adjacent words are each counted
                spaced = pc.replace_substring(fsub.filter(pa.array(en_hit)), " ", "  ")
                en_n = _np_int(pc.count_substring_regex(spaced, EN_RE))
                fr_n = _np_int(pc.count_substring_regex(spaced, FOREIGN_RE)) + np.where(
                    accents[bidx] >= 2, accents[bidx] / 2, 0
                )
                is_en[bidx] = en_n > fr_n
        result[idx[is_en]] = 1
    langs = pa.array(LANGUAGES, type=pa.string())
    out = langs.take(pa.array(result))
    if arr.null_count:
        out = pc.if_else(pa.array(valid_mask(arr)), out, pa.scalar(None, pa.string()))
    return out
