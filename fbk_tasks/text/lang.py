"""Offline language tagging: ``'zh'`` | ``'en'`` | ``'other'`` (null stays null).

Letters are counted per script straight from the UTF-8 bytes of the Arrow buffer (numpy;
a code point's script block is decided by its lead byte, and for U+3xxx by the second byte):

* ``han``    CJK unified ideographs U+3400-U+9FFF (lead bytes E3 90+, E4-E9) and the
             supplementary ideograph planes U+20000-U+3FFFF
* ``latin``  ASCII letters; ``latin_ext``: Latin-1/Latin Extended-A/B letters (lead bytes
             C3-C9) and Latin Extended Additional (U+1E00-1EFF, Vietnamese)
* ``kana``   hiragana/katakana U+3040-U+30FF, except the marks that kaomoji are built from
             and that are no letters of a word on their own: ー ・ ヽ ヾ ゝ ゞ ゛ ゜ ゠ and ノ
             (``ヾ(@⌒ー⌒@)ノ`` in a Chinese review is not Japanese)
* ``hangul`` Hangul syllables and compatibility jamo (lead bytes EA-ED, U+3130-U+318F)
* ``other``  Greek, Cyrillic, Armenian, Hebrew, Arabic, Indic, Thai, Georgian, Ethiopic ...
             (lead bytes CD-DF, E0, E1 except U+1E00-1EFF)

Decision, per row:

1. no letters at all (empty, emoji-only, digits/punctuation-only) -> ``other``;
2. Japanese: at least 2 kana and kana >= 20 % of han -> the han count goes to ``other``;
3. in a row with CJK letters, Latin letters of capitalised or alphanumeric tokens
   (``iPhone XS Max``, ``Mate 20 Pro``, ``5G``, placeholders) are product names or codes, not
   words against the CJK text: only the other Latin letters count (``iPhone XS Max好用`` is zh);
4. scores: ``zh = HAN_WEIGHT * han`` (one Han character carries about as much text as
   2-3 Latin letters; we use :data:`HAN_WEIGHT` = 2.5), ``latin + latin_ext``, and
   ``other = HAN_WEIGHT * (kana + hangul) + other letters``;
5. ``zh`` when the zh score is the largest (a zh/latin tie goes to zh);
6. when the Latin score is the largest: ``en`` unless the text looks like another Latin
   language. Evidence for English is a short list of English function/review words
   (:data:`EN_WORDS`); evidence against is a list of common French/German/Spanish/Italian/
   Portuguese/Dutch words (:data:`FOREIGN_WORDS`): at least 2 distinct ones, or >= 2
   accented Latin letters. Short foreign words (<= 3 letters) count in lower case or
   capitalised only, never in capitals (``LA``, ``LAS``, ``IL``, ``EST`` are places, states,
   time zones, sign-offs), and words English tweets use too (``la``, ``non``, ``um``, ``com``,
   ``toll`` ...) are not in the list. No evidence either way (``Great!``, ``OK``,
   ``Perfect fit. Fast shipping``, ``El Paso deals``) -> ``en``; only foreign evidence ->
   ``other``; both -> whichever has more hits (accented letters count half each), a tie ->
   ``en``.
7. otherwise ``other``.

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

__all__ = ["EN_WORDS", "FOREIGN_WORDS", "HAN_WEIGHT", "LANGUAGES", "MIN_FOREIGN_WORDS", "detect_language", "script_counts"]

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
# Not in the list, because English (tweets) use them too: la, las, y, non, um, lo, est, et,
# com, des, il, ne, toll, mit ('LA', 'Las Vegas', 'non revs', 'um wut', 'amazon.com', 'Des
# Moines', 'toll-free'; 'y' for 'why').
FOREIGN_WORDS: tuple[str, ...] = (
    # fr
    "le", "les", "une", "du", "je", "très", "pas", "avec", "pour",
    "mais", "c'est", "ce", "cette", "qui", "que", "sur", "bien", "produit", "j'ai",
    "elle", "nous", "vous", "au", "aux", "été", "être", "tout", "vraiment", "acheté",
    "qualité", "livraison", "parfait", "bon", "bonne", "génial", "de", "en",
    # de
    "der", "das", "und", "ist", "nicht", "sehr", "ich", "ein", "eine", "einen", "für",
    "auf", "zu", "es", "gut", "gute", "auch", "aber", "dem", "wie", "wir", "sie", "sind",
    "habe", "produkt", "qualität", "schnell", "gekauft", "leider", "kein", "keine",
    # es
    "el", "los", "muy", "pero", "para", "por", "una", "del", "bueno",
    "buena", "producto", "calidad", "está", "todo", "más", "compra", "recomiendo", "perfecto",
    # it / pt / nl
    "di", "che", "è", "molto", "ottimo", "prodotto", "della", "sono", "não", "muito",
    "uma", "produto", "é", "ótimo", "bom", "het", "een", "niet", "zeer", "goed",
    "ik",
)  # fmt: skip
# Foreign words of at most this many letters count in lower case or capitalised only.
SHORT_WORD_LETTERS = 3
# Foreign evidence needs this many distinct foreign words (or >= 2 accented letters).
MIN_FOREIGN_WORDS = 2


# Unicode-aware word boundaries (RE2's \b is ASCII-only); apostrophes and hyphens join
_WORD_SEP = r"[^\p{L}\p{N}'’\-]"


def _alts(words) -> str:
    return "|".join(sorted((w.replace("'", "['’]") for w in words), key=len, reverse=True))


def _words_re(words: tuple[str, ...]) -> str:
    return rf"(?i)(?:^|{_WORD_SEP})(?:{_alts(words)})(?:{_WORD_SEP}|$)"


def _is_short(word: str) -> bool:
    return sum(ch.isalpha() for ch in word) <= SHORT_WORD_LETTERS


def _short_forms(words) -> frozenset[str]:
    """Lower-case and capitalised spellings of the short words, never the all-caps one."""
    return frozenset(f for w in words if _is_short(w) for f in (w, w[:1].upper() + w[1:]) if f != w.upper())


def _foreign_re(words: tuple[str, ...]) -> str:
    long_alts = _alts(w for w in words if not _is_short(w))
    short_alts = _alts(_short_forms(words))
    return rf"(?:^|{_WORD_SEP})(?:(?i:{long_alts})|{short_alts})(?:{_WORD_SEP}|$)"


EN_RE = _words_re(EN_WORDS)
FOREIGN_RE = _foreign_re(FOREIGN_WORDS)
_EN_SET = pa.array(sorted(EN_WORDS), pa.string())
_FOREIGN_LONG_SET = pa.array(sorted(w for w in FOREIGN_WORDS if not _is_short(w)), pa.string())
_FOREIGN_SHORT_SET = pa.array(sorted(_short_forms(FOREIGN_WORDS)), pa.string())
# Product names and codes written in Latin letters inside CJK text: a run of ASCII letters
# and digits holding a capital or a digit ('iPhone', 'XS', 'Pro', 'P30', '5G', 'EMAIL').
PRODUCT_TOKEN_RE = r"[A-Za-z0-9]*[A-Z0-9][A-Za-z0-9]*"


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
        b2 = data[np.minimum(p + 2, data.size - 1)]
        kaomoji = ((b1 == 0x82) & (((b2 >= 0x99) & (b2 <= 0x9E)) | (b2 == 0xA0))) | (
            (b1 == 0x83) & (((b2 >= 0xBB) & (b2 <= 0xBE)) | (b2 == 0x8E))
        )  # U+3099-309E, U+30A0, U+30FB-30FE (ー・ヽヾ ゝゞ ゛゜ ...) and U+30CE ノ
        add_sparse("kana", p[(b1 >= 0x81) & (b1 <= 0x83) & ~kaomoji])
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


def _word_hits(sub: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: English word hits, foreign word hits, distinct foreign words (the words of
    :data:`EN_WORDS` / :data:`FOREIGN_WORDS` under the same boundaries and case rules as
    :data:`EN_RE` / :data:`FOREIGN_RE`)."""
    n = len(sub)
    tokens = pc.split_pattern_regex(pc.replace_substring(sub, "’", "'"), r"[^\p{L}\p{N}'\-]+")
    lengths = _np_int(pc.list_value_length(tokens))
    flat = pc.list_flatten(tokens)
    rows = np.repeat(np.arange(n), lengths)
    lower = pc.utf8_lower(flat)
    en = _np_bool(pc.is_in(lower, value_set=_EN_SET))
    fr = _np_bool(pc.is_in(lower, value_set=_FOREIGN_LONG_SET)) | _np_bool(pc.is_in(flat, value_set=_FOREIGN_SHORT_SET))
    en_n = np.bincount(rows[en], minlength=n)
    fr_n = np.bincount(rows[fr], minlength=n)
    fr_distinct = np.zeros(n, np.int64)
    if fr.any():
        pairs = pa.table({"row": pa.array(rows[fr]), "word": lower.filter(pa.array(fr))}).group_by(["row", "word"]).aggregate([])
        fr_distinct = np.bincount(pairs["row"].to_numpy(), minlength=n)
    return en_n, fr_n, fr_distinct


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
    # Latin product names/codes inside CJK text are not words against it
    mixed = ((c["han"] + c["kana"] + c["hangul"]) > 0) & (c["latin"] > 0)
    if mixed.any():
        idx = np.flatnonzero(mixed)
        kept = pc.replace_substring_regex(arr.take(pa.array(idx)), PRODUCT_TOKEN_RE, "")
        k_off, k_data = np_views(kept)
        latin[idx] = row_sum(((k_data | np.uint8(0x20)) - np.uint8(0x61)) < 26, k_off)
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
        # candidates: any foreign word (a regex pass), then exact counts on those rows only
        cand = _np_bool(pc.match_substring_regex(sub, FOREIGN_RE)) | (accents >= 2)
        is_en = ~cand  # no evidence, or English-only evidence
        if cand.any():
            fidx = np.flatnonzero(cand)
            en_n, fr_n, fr_distinct = _word_hits(sub.take(pa.array(fidx)))
            acc = accents[fidx]
            foreign = (fr_distinct >= MIN_FOREIGN_WORDS) | (acc >= 2)
            fr_score = fr_n + np.where(acc >= 2, acc / 2, 0)
            # both: whichever has more hits, a tie goes to English
            is_en[fidx] = ~foreign | ((en_n > 0) & (en_n >= fr_score))
        result[idx[is_en]] = 1
    langs = pa.array(LANGUAGES, type=pa.string())
    out = langs.take(pa.array(result))
    if arr.null_count:
        out = pc.if_else(pa.array(valid_mask(arr)), out, pa.scalar(None, pa.string()))
    return out
