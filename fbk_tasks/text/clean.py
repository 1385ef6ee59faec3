"""Vectorised cleaning of review text (pyarrow.compute RE2 kernels + numpy byte scans).

Pipeline of :func:`clean_and_redact` (what the nightly DAG calls):

1. normalise: fold full-width ASCII to half-width (``１２３ＡＢＣ！`` -> ``123ABC!``, also
   U+3000 ideographic space and ``￥``/``￡``/``￠``); decode HTML entities (``&amp;``,
   ``&#64;``, ``&nbsp;`` ...) and only then drop tags (``<script>``/``<style>`` blocks and
   comments with their content); drop control characters (C0 except whitespace, DEL, C1) and
   invisible format characters (U+200B/C/E/F, U+2060-2064, bidi controls, soft hyphen,
   U+FEFF BOM). U+200D ZWJ is kept only between two emoji (``👨‍👩‍👧``).
2. :func:`fbk_tasks.text.pii.redact_core` — e-mails, phones, IDs, cards, IPs, person URLs
   become ``[EMAIL]`` ... ``[URL]`` (so ``john&#64;x.com`` is caught).
3. drop remaining (non-personal) ``http(s)://``/``ftp://``/``www.`` links, ``http:t.cn/x``
   (no ``//``), bare short links (``t.cn/x``, ``bit.ly/x``; :data:`SHORT_LINK_HOSTS`) and
   advertising boilerplate (:data:`AD_PATTERNS`). Neither pattern can match inside
   ``[PLACEHOLDER]``; an ad phrase right before one ('加微信 [PHONE]') goes, the placeholder stays.
4. collapse every whitespace run (incl. NBSP, U+3000, line/paragraph separators) to one
   space and trim. A non-null input never gives null; it may give ``''``.

Why not NFKC: it would also rewrite emoji and symbols (``ℹ️`` -> ``i``, ``‼️`` -> ``!!``,
``™`` -> ``TM``, ``①`` -> ``1``, ``🈚`` -> ``無``). Only the full-width block is folded; Chinese
punctuation outside it (``。、「」《》“”``) is untouched, while full-width ``，！？：（）`` become
their ASCII forms exactly as NFKC would do.

Work is restricted to "dirty" rows found by byte scans over the Arrow data buffer; a plain
row (letters, spaces, common punctuation) is only trimmed. Columns are cut into ~16 MB slices
that run on a thread per core (the RE2 and numpy kernels release the GIL); each slice is
cleaned on its own, so the result does not depend on the slicing or the thread count.
"""

from __future__ import annotations

import html
import re
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fbk_tasks.text.pii import (
    PII_TYPES,
    URL_CHARS,
    URL_END,
    RedactionResult,
    _np_bool,
    _pii_candidates,
    apply_masked,
    as_string_array,
    chunk_slices,
    concat_strings,
    from_np,
    map_chunks,
    np_views,
    redact_core,
    row_any,
    row_sum,
    run_parallel,
    valid_mask,
)

__all__ = ["AD_PATTERNS", "clean_and_redact", "clean_and_redact_many", "clean_text", "normalize_for_dedup"]

# --------------------------------------------------------------------------------------
# Patterns
# --------------------------------------------------------------------------------------

# Entities decoded by vectorised literal replacement; '&amp;' goes last so that '&amp;lt;'
# decodes once to '&lt;'. Rows holding any other entity (&hellip; &#8217; &#x4e2d; ...) are
# decoded with html.unescape instead (a minority of a minority of rows).
COMMON_ENTITIES: tuple[tuple[str, str], ...] = (
    ("&lt;", "<"),
    ("&gt;", ">"),
    ("&quot;", '"'),
    ("&apos;", "'"),
    ("&#39;", "'"),
    ("&nbsp;", "\u00a0"),
    ("&amp;", "&"),
)
_COMMON_ENTITY_RE = r"&(?:lt|gt|quot|apos|#39|nbsp|amp);"
_ANY_ENTITY_RE = r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"

TAG_RE = (
    r"(?is)<(?:script|style)\b[^>]*>.*?</(?:script|style)\s*>"  # script/style with content
    r"|<(?:script|style)\b[^>]*>.*$"  # unclosed script/style: drop the rest
    r"|<!--.*?-->|<!--.*$"  # comments
    r"|</?[a-z][a-z0-9:\-]*(?:\s[^<>]*)?/?>"  # ordinary tags (not '<3', not 'a < b')
    r"|<![a-z\[][^>]*>"  # <!DOCTYPE ...>, <![CDATA[
)

# C0 controls except \t \n \v \f \r, DEL, C1 (except U+0085 NEL = a line break), soft hyphen,
# Mongolian vowel separator, zero-width space/non-joiner, LRM/RLM, bidi embeddings/isolates,
# word joiner & invisible operators, BOM / zero-width no-break space, interlinear annotations.
INVISIBLE_RE = (
    r"[\x00-\x08\x0E-\x1F\x7F\x{80}-\x{84}\x{86}-\x{9F}\x{AD}\x{180E}\x{200B}\x{200C}"
    r"\x{200E}\x{200F}\x{202A}-\x{202E}\x{2060}-\x{2064}\x{2066}-\x{206F}\x{FEFF}\x{FFF9}-\x{FFFB}]+"
)
# Code points that may sit on either side of a ZWJ inside an emoji sequence (pictographs,
# dingbats, arrows/technical/geometric symbols used as emoji, VS16, skin tones, tag chars).
_EMOJI = (
    r"[\x{1F000}-\x{1FAFF}\x{2600}-\x{27BF}\x{2B00}-\x{2BFF}\x{2190}-\x{21FF}\x{2300}-\x{23FF}"
    r"\x{25A0}-\x{25FF}\x{2934}\x{2935}\x{3030}\x{303D}\x{3297}\x{3299}\x{A9}\x{AE}\x{203C}"
    r"\x{2049}\x{2122}\x{2139}\x{24C2}\x{FE0F}\x{E0020}-\x{E007F}]"
)
_ZWJ_AFTER_NON_EMOJI_RE = rf"(^|[^{_EMOJI[1:-1]}])\x{{200D}}+"
_ZWJ_BEFORE_NON_EMOJI_RE = rf"\x{{200D}}+([^{_EMOJI[1:-1]}]|$)"

WHITESPACE_RE = r"[\s\x0B\x{85}\p{Z}]+"
# Same effect when followed by trimming, but single ASCII spaces (most of them) are no match:
_WS_CHANGE_RE = (
    r" [\s\x0B\x{85}\p{Z}]+"
    r"|[\t\n\f\r\x0B\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}][\s\x0B\x{85}\p{Z}]*"
)

# Schemeless short-link hosts (Weibo and Twitter shorteners, Chinese/English URL shorteners).
SHORT_LINK_HOSTS: tuple[str, ...] = ("t.cn", "t.co", "bit.ly", "dwz.cn", "url.cn")
# A link: http(s)/ftp with '//', www., 'http:' with 0-1 slashes before a host and a path
# ('http:t.cn/zl7Xr4E', as Weibo exports write it), or a bare short link with a path
# ('t.cn/zl7Xr4E'). Every form holds a '/' or 'www.', which the candidate scan relies on.
_LINK = (
    rf"(?:https?://|ftp://|www\.){URL_CHARS}*{URL_END}"
    rf"|https?:/?[a-z0-9\-]+(?:\.[a-z0-9\-]+)+/(?:{URL_CHARS}*{URL_END})?"
    rf"|\b(?:{'|'.join(re.escape(h) for h in SHORT_LINK_HOSTS)})/{URL_CHARS}*{URL_END}"
)
# A Weibo check-in ('我在:http:t.cn/...', '我在这里:...') goes with its link: alone it is noise.
LINK_RE = rf"(?i:(?:我在(?:这里)?[:：]\s*)?(?:{_LINK}))"

# A redaction placeholder after an ad phrase ('加微信 [PHONE]', 'click here: [URL]'): the
# phrase goes, the placeholder is written back (a capturing group, see AD_REPLACEMENT).
_KEEP_PLACEHOLDER = rf"(\[(?:{'|'.join(re.escape(t) for t in PII_TYPES)})\])"
# A contact id: WeChat ids start with a letter (5-20 chars here), QQ numbers are 5-12 digits.
_LETTER_ID = r"[A-Za-z][A-Za-z0-9_\-]{4,19}"
_DIGIT_ID = r"[0-9]{5,12}"
_CONTACT_ID = rf"(?:{_LETTER_ID}|{_DIGIT_ID})"


def _bare_v(v: str) -> str:
    """A bare V ('加V', '+V') and its id: a letter id only when separated ('加VIP' is no ad), or digits."""
    return rf"{v}(?:\s*[:：]\s*|\s+){_LETTER_ID}|{v}\s*[:：]?\s*{_DIGIT_ID}"


_WECHAT = r"(?:微信|薇信|威信|徽信|[vV]信|[vV][xX]|[wW][xX]|[wW]eixin|[wW]e[cC]hat)"
# English calls to action count only right before a link (or a redacted one): without it,
# 'click here', 'buy now' are what customers write ("I could not buy now, site kept crashing").
_BEFORE_LINK = rf"\s*[:：\-–>»]*\s*(?:(?i:{_LINK})|{_KEEP_PLACEHOLDER})"

# Advertising / spam boilerplate. Each entry: (what it is, RE2 pattern, example it removes).
# Only the promotional phrase (plus the contact id / code / link right after it) is removed,
# never the rest of the sentence: a review that says "在淘宝店铺买的" keeps its words, and so
# do phrases customers write ("加VIP", "联系vivo客服", "DM me", "follow me"): a pattern needs
# an actual id, a bracketed shop name, a link or a network name to count as an ad.
AD_PATTERNS: tuple[tuple[str, str, str], ...] = (
    (
        "add me on WeChat/QQ + id",
        r"(?:加|添加|加我|联系)\s*(?:"
        rf"(?:{_WECHAT}|QQ|qq|扣扣)(?:号|群号?)?\s*[:：]?\s*{_CONTACT_ID}"
        rf"|{_bare_v('[vV]')}"
        rf"|(?:{_WECHAT}|QQ|qq|扣扣|[vV])(?:号|群号?)?\s*[:：]?\s*{_KEEP_PLACEHOLDER}"
        r")",
        "加微信 abc123 / 加V abc12345 / 加V:12345678 / 加QQ 12345678",
    ),
    (
        "+V / +微信 shorthand + id",
        r"\+(?:"
        rf"(?:微信|[vV]信|[vV][xX]|[wW][xX])\s*[:：]?\s*{_CONTACT_ID}"
        rf"|{_bare_v('V')}"
        rf"|(?:微信|[vV]信|[vV][xX]|[wW][xX]|V)\s*[:：]?\s*{_KEEP_PLACEHOLDER}"
        r")",
        "+V abc123",
    ),
    (
        "WeChat id with colon",
        rf"(?:微信|[vV]信|[wW]e[cC]hat)(?:号|ID|id)?\s*[:：]\s*(?:{_CONTACT_ID}|{_KEEP_PLACEHOLDER})",
        "微信：abc123",
    ),
    (
        "QQ group / QQ number",
        rf"(?:QQ|qq|扣扣)(?:(?:群号?|号)\s*[:：]?|\s*[:：])\s*(?:[0-9]{{5,12}}|{_KEEP_PLACEHOLDER})",
        "QQ群 123456 / QQ：12345678",
    ),
    (
        "click the link (zh)",
        r"点击(?:下方|下面|此|这个|该|以下)?链接(?:领取|购买|查看|进入|下单|了解)?",
        "点击链接",
    ),
    (
        "shop names / search-our-shop lines (zh): a bracketed name, or 'shop name:'",
        r"(?:淘宝|天猫|京东|拼多多|微店|闲鱼|抖音)?(?:店铺|小店|网店)(?:名|名称|地址)?\s*[:：]?\s*[【「][^\s，。！？!?,;；」】]{1,30}[」】]"
        r"|(?:淘宝|天猫|京东|拼多多|微店|闲鱼|抖音)?(?:店铺|小店|网店)(?:名|名称)\s*[:：]\s*[^\s，。！？!?,;；]{1,20}"
        r"|(?:淘宝|天猫|京东|拼多多)(?:搜索|搜)\s*[:：]?\s*[【「][^\s，。！？!?,;；」】]{1,30}[」】]",
        "淘宝店铺名：小王数码 / 淘宝店铺【小王数码】 / 淘宝搜索【小王数码】",
    ),
    (
        "follow our official account / scan the QR code / DM for coupons (zh)",
        r"(?:关注|搜索)(?:微信)?公众号(?:\s*[:：]\s*|\s*[「【“\"《])[^\s，。！？!?,;；」】”\"》]*[」】”\"》]?"
        r"|扫(?:描)?(?:二维)?码(?:关注|加群|加好友|领取|下单)"
        r"|私信(?:我|小编|客服)?(?:领取|获取|购买)"
        r"|(?:进群|加群)(?:领取?|有|送|抢)(?:福利|优惠券?|红包)"
        r"|(?:优惠码|优惠券码|邀请码|推荐码|券码)\s*[:：]?\s*[A-Za-z0-9_\-]{3,20}",
        "关注公众号：好物推荐 / 扫码关注 / 私信领取 / 进群领福利 / 优惠码 SAVE20",
    ),
    (
        "click here + link (en)",
        rf"\b(?i:click)\s+(?i:here|the\s+link|this\s+link|on\s+the\s+link|link\s+below){_BEFORE_LINK}",
        "click here: https://shop.example.com/deal",
    ),
    (
        "buy/order/shop now + link (en)",
        rf"\b(?i:buy|order|shop)\s+(?i:now)(?:\s+(?i:at|on|via|here))?{_BEFORE_LINK}",
        "buy now https://shop.example.com/p/1",
    ),
    (
        "promo code XXX (en; the code must be upper-case/digits)",
        r"\b(?i:promo|coupon|discount|voucher|referral|invite)\s*(?i:code)\s*[:：]?\s*[A-Z0-9][A-Z0-9_\-]{2,19}\b",
        "promo code SAVE20",
    ),
    (
        "follow me/us on <network> (@handle) (en)",
        r"\b(?i:follow\s+(?:me|us)\s+on\s+(?:instagram|ig|insta|tiktok|twitter|facebook|fb|youtube|weibo|douyin|xiaohongshu|x))\b(?:\s*@[A-Za-z0-9_.]{2,30})?",
        "follow me on instagram @bob",
    ),
    (
        "visit/check out our store (en)",
        r"\b(?i:visit|check\s+out)\s+(?i:our|my)\s+(?i:online\s+)?(?i:store|shop|website|site|page|channel)\b",
        "visit our store",
    ),
    (
        "subscribe / message me on WhatsApp/Telegram/WeChat (en)",
        r"\b(?i:subscribe\s+to\s+(?:my|our)\s+(?:channel|youtube|newsletter)|(?:dm|message|text|whatsapp)\s+me\s+on\s+(?:whatsapp|telegram|wechat))\b",
        "subscribe to my channel / message me on whatsapp",
    ),
    (
        "Amazon review-widget tail (en)",
        r"(?i:(?:[0-9][0-9,]*\s+of\s+)?[0-9][0-9,]*\s+(?:people|person)\s+found\s+this\s+helpful\.?\s*"
        r"was\s+this\s+review\s+helpful\s+to\s+you\??\s*yes\s*no)"
        r"(?:\s*An\s+Amazon\.com\s+official\s+commented\s+on\s+this\s+review\b)?",
        "11,064 people found this helpful. Was this review helpful to you Yes No",
    ),
)
AD_RE = "|".join(f"(?:{p})" for _, p, _ in AD_PATTERNS)


def _capturing_groups(pattern: str) -> int:
    """Number of capturing groups in an RE2 pattern (escapes and classes skipped)."""
    n, i, in_class = 0, 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(" and not pattern.startswith("(?", i):
            n += 1
        i += 1
    return n


# Every capturing group of AD_RE is a kept placeholder (LINK_RE has none), so the replacement
# writes back whichever one took part in the match (the others are empty); RE2 rewrites
# know \1..\9 only.
_AD_GROUPS = _capturing_groups(AD_RE)
assert _capturing_groups(LINK_RE) == 0 and _AD_GROUPS <= 9, _AD_GROUPS
AD_REPLACEMENT = "".join(f"\\{i}" for i in range(1, _AD_GROUPS + 1))

# --------------------------------------------------------------------------------------
# Byte-level helpers
# --------------------------------------------------------------------------------------

# U+FFE0..U+FFE5 (EF BF A0..A5) -> ¢ £ ¬ ¯ ¦ ¥ (C2 xx)
_FFE_SECOND = np.array([0xA2, 0xA3, 0xAC, 0xAF, 0xA6, 0xA5], np.uint8)


def fold_fullwidth(arr: pa.Array) -> pa.Array:
    """U+FF01..U+FF5E -> U+0021..U+007E, U+3000 -> ' ', U+FFE0..U+FFE5 -> Latin-1 forms.

    Pure numpy over the UTF-8 buffer (the 3-byte sequences are rewritten in place and the
    spare bytes deleted); rows without such characters are untouched, emoji never are.
    """
    off, data = np_views(arr)
    if data.size < 3:
        return arr
    body = data[:-2]
    p_ef = np.flatnonzero(body == 0xEF)
    b1, b2 = data[p_ef + 1], data[p_ef + 2]
    one = ((b1 == 0xBC) & (b2 >= 0x81)) | ((b1 == 0xBD) & (b2 <= 0x9E))
    two = (b1 == 0xBF) & (b2 >= 0xA0) & (b2 <= 0xA5)
    p_e3 = np.flatnonzero(body == 0xE3)
    sp = p_e3[(data[p_e3 + 1] == 0x80) & (data[p_e3 + 2] == 0x80)]
    if not (one.any() or two.any() or sp.size):
        return arr
    new = data.copy()
    p1 = p_ef[one]
    new[p1] = np.where(b1[one] == 0xBC, b2[one] - np.uint8(0x60), b2[one] - np.uint8(0x20))
    p2 = p_ef[two]
    new[p2] = 0xC2
    new[p2 + 1] = _FFE_SECOND[b2[two] - 0xA0]
    new[sp] = 0x20
    keep = np.ones(data.size, bool)
    keep[p1 + 1] = False
    keep[p1 + 2] = False
    keep[p2 + 2] = False
    keep[sp + 1] = False
    keep[sp + 2] = False
    new = new[keep]
    if p2.size or sp.size:
        dels = np.sort(np.concatenate([p1 + 1, p1 + 2, p2 + 2, sp + 1, sp + 2]))
    else:  # p1 is sorted and its hits are >= 3 bytes apart
        dels = np.column_stack([p1 + 1, p1 + 2]).ravel()
    new_off = off - np.searchsorted(dels, off, side="left")
    return from_np(new_off, new, arr)


def _scan(arr: pa.Array) -> dict[str, np.ndarray]:
    """Per-row booleans telling which cleaning steps a row may need."""
    off, data = np_views(arr)
    n = len(arr)
    flags: dict[str, np.ndarray] = {}
    double_space = np.zeros(data.size, bool)
    if data.size:
        np.logical_and(data[:-1] == 0x20, data[1:] == 0x20, out=double_space[:-1])
    markup = (data == 0x3C) | (data == 0x26)
    ctrl = (data < 0x20) | (data == 0x7F)
    cand, (flags["markup"], flags["ctrl"], space) = _pii_candidates(arr, off, data, [markup, ctrl, double_space])
    invis = np.zeros(n, bool)
    if data.size:
        padded = np.concatenate([data, np.zeros(2, np.uint8)])  # a lead byte's followers
        for lead in (0xC2, 0xE1, 0xE2, 0xEF):
            p = np.flatnonzero(data == lead)
            if not p.size:
                continue
            b1 = padded[p + 1]
            if lead == 0xC2:  # C1 controls, NEL, NBSP, soft hyphen
                hit = (b1 <= 0xA0) | (b1 == 0xAD)
            else:
                b2 = padded[p + 2]
                if lead == 0xE1:  # U+180E, U+1680
                    hit = ((b1 == 0xA0) & (b2 == 0x8E)) | ((b1 == 0x9A) & (b2 == 0x80))
                elif lead == 0xE2:  # U+2000-200F, U+2028-202F, U+205F-206F
                    hit = ((b1 == 0x80) & ((b2 <= 0x8F) | ((b2 >= 0xA8) & (b2 <= 0xAF)))) | (
                        (b1 == 0x81) & (b2 >= 0x9F) & (b2 <= 0xAF)
                    )
                else:  # U+FEFF, U+FFF9-FFFB
                    hit = ((b1 == 0xBB) & (b2 == 0xBF)) | ((b1 == 0xBF) & (b2 >= 0xB9) & (b2 <= 0xBB))
            p = p[hit]
            if p.size:
                invis[np.searchsorted(off, p, side="right") - 1] = True
    flags["space"] = space
    flags["invis"] = invis
    flags.update(cand)
    valid = valid_mask(arr)
    return {k: v & valid for k, v in flags.items()}


# --------------------------------------------------------------------------------------
# Steps (each takes and returns a string array of the same length)
# --------------------------------------------------------------------------------------


def _decode_entities(sub: pa.Array) -> pa.Array:
    stripped = pc.replace_substring_regex(sub, _COMMON_ENTITY_RE, "")
    rare = _np_bool(pc.match_substring_regex(stripped, _ANY_ENTITY_RE))

    def vectorised(a: pa.Array) -> pa.Array:
        for ent, ch in COMMON_ENTITIES:
            a = pc.replace_substring(a, ent, ch)
        return a

    def python(a: pa.Array) -> pa.Array:
        return pa.array([None if t is None else html.unescape(t) for t in a.to_pylist()], type=pa.string())

    out, _ = apply_masked(sub, ~rare, vectorised)
    out, _ = apply_masked(out, rare, python)
    return out


def _strip_markup(sub: pa.Array) -> pa.Array:
    out = sub
    for _ in range(2):  # scraped reviews are often escaped twice ('&amp;quot;')
        out, ch = apply_masked(out, _np_bool(pc.match_substring_regex(out, _ANY_ENTITY_RE)), _decode_entities)
        if not ch.any():
            break
    out, _ = apply_masked(out, _np_bool(pc.match_substring(out, "<")), lambda a: pc.replace_substring_regex(a, TAG_RE, " "))
    return fold_fullwidth(out)


def _fix_zwj(a: pa.Array) -> pa.Array:
    a = pc.replace_substring_regex(a, _ZWJ_AFTER_NON_EMOJI_RE, r"\1")
    return pc.replace_substring_regex(a, _ZWJ_BEFORE_NON_EMOJI_RE, r"\1")


def _strip_invisible(sub: pa.Array) -> pa.Array:
    out = pc.replace_substring_regex(sub, INVISIBLE_RE, "")
    out, _ = apply_masked(out, _np_bool(pc.match_substring(out, "\u200d")), _fix_zwj)
    return out


def _normalise(sub: pa.Array) -> pa.Array:
    """Entities, tags, control and invisible characters (rows pre-selected by _scan)."""
    off, data = np_views(sub)
    markup = row_any((data == 0x3C) | (data == 0x26), off)
    out, _ = apply_masked(sub, markup & valid_mask(sub), _strip_markup)
    # whitespace too, so that PII split by NBSP/tabs/newlines is seen with plain spaces
    return _collapse(_strip_invisible(out))


def _collapse(a: pa.Array) -> pa.Array:
    return pc.replace_substring_regex(a, _WS_CHANGE_RE, " ")


_LINKS_AND_ADS_RE = f"{LINK_RE}|{AD_RE}"


def _strip_links_and_ads(a: pa.Array) -> pa.Array:
    return pc.replace_substring_regex(a, _LINKS_AND_ADS_RE, AD_REPLACEMENT)


def _strip_links(a: pa.Array) -> pa.Array:
    return pc.replace_substring_regex(a, LINK_RE, "")


def _strip_ads(a: pa.Array) -> pa.Array:
    return pc.replace_substring_regex(a, AD_RE, AD_REPLACEMENT)


# --------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------


def _process(sub: pa.Array, f: dict[str, np.ndarray], redact: bool):
    n = len(sub)
    touched = np.zeros(n, bool)
    counts = {t: 0 for t in PII_TYPES}
    row_counts = np.zeros(n, np.int32)

    sub, ch = apply_masked(sub, f["markup"] | f["ctrl"] | f["invis"], _normalise)
    touched |= ch
    if ch.any():
        # Decoded entities may hold anything and removed invisibles may join words: rescan
        # the changed rows, so that every later mask stays a superset of the rows its
        # pattern can match (results must not depend on how rows are batched).
        idx = np.flatnonzero(ch)
        for k, v in _scan(sub.take(pa.array(idx))).items():
            f[k][idx] |= v
        f["ads"][idx] = True
    if redact:
        sub, counts, row_counts, ch = redact_core(sub, f)
        touched |= ch
        if ch.any():
            # an ad phrase may now stand before a placeholder ('加微信 [PHONE]') where the
            # raw text did not match ('加微信 138-0013-8000'): keep the ads mask a superset
            idx = np.flatnonzero(ch & ~f["ads"])
            if idx.size:
                f["ads"][idx] = _np_bool(pc.match_substring_regex(sub.take(pa.array(idx)), AD_RE))
    # one pass when rows need both (big batches), else only the pattern that is needed
    if f["url"].any() and f["ads"].any():
        sub, ch = apply_masked(sub, f["url"] | f["ads"], _strip_links_and_ads)
    elif f["url"].any():
        sub, ch = apply_masked(sub, f["url"], _strip_links)
    else:
        sub, ch = apply_masked(sub, f["ads"], _strip_ads)
    touched |= ch
    sub, _ = apply_masked(sub, f["ctrl"] | f["space"] | f["invis"] | touched, _collapse)
    return sub, counts, row_counts


def _run(texts, redact: bool) -> tuple[pa.Array, dict[str, int], np.ndarray]:
    return _run_many([texts], redact)[0]


def _run_many(columns: list, redact: bool) -> list[tuple[pa.Array, dict[str, int], np.ndarray]]:
    """Clean several string columns; all their slices share one thread pool. Each slice is
    cleaned on its own (the result does not depend on the slicing, see ``_process``), so
    the output equals the sequential one."""
    arrays = [as_string_array(t) for t in columns]
    jobs = [(i, a, b) for i, arr in enumerate(arrays) for a, b in (chunk_slices(arr) or [(0, 0)])]
    done = run_parallel(lambda job: _run_chunk(arrays[job[0]].slice(job[1], job[2] - job[1]), redact), jobs)
    out = []
    for i in range(len(arrays)):
        parts = [r for job, r in zip(jobs, done, strict=True) if job[0] == i]
        counts = {t: 0 for t in PII_TYPES}
        for _, c, _ in parts:
            for k, v in c.items():
                counts[k] += v
        out.append((concat_strings([p[0] for p in parts]), counts, np.concatenate([p[2] for p in parts])))
    return out


def _run_chunk(arr: pa.Array, redact: bool) -> tuple[pa.Array, dict[str, int], np.ndarray]:
    n = len(arr)
    counts = {t: 0 for t in PII_TYPES}
    row_counts = np.zeros(n, np.int32)
    if n == 0:
        return arr, counts, row_counts
    arr = fold_fullwidth(arr)
    flags = _scan(arr)
    flags["ads"] = _np_bool(pc.match_substring_regex(arr, AD_RE))
    dirty = np.zeros(n, bool)
    for v in flags.values():
        dirty |= v
    if dirty.any():
        if dirty.all():
            arr, counts, row_counts = _process(arr, flags, redact)
        else:
            idx = np.flatnonzero(dirty)
            sub = arr.take(pa.array(idx))
            new, counts, sub_counts = _process(sub, {k: v[idx] for k, v in flags.items()}, redact)
            if new.type != arr.type:
                new = new.cast(arr.type)
            arr = pc.replace_with_mask(arr, pa.array(dirty), new)
            row_counts[idx] = sub_counts
    return pc.utf8_trim_whitespace(arr), counts, row_counts


def clean_text(texts) -> pa.Array:
    """Strip HTML, entities, links, ad boilerplate, control/invisible chars; fold full-width;
    collapse whitespace; trim. Emoji (incl. ZWJ sequences and skin tones) and the review's
    words are kept. Nulls stay null; a non-null input never becomes null (it may become '').
    Person URLs are removed like any other ``http(s)``/``www.`` link (use
    :func:`clean_and_redact` to turn them into ``[URL]`` instead).
    """
    out, _, _ = _run(texts, redact=False)
    return out


def clean_and_redact(texts) -> RedactionResult:
    """normalise (HTML/entities/control/zero-width/full-width) -> redact PII -> drop the other
    links and ad boilerplate -> collapse whitespace/trim. Returns text, per-type counts and
    per-row counts (``row_counts`` is 0 on null rows)."""
    out, counts, row_counts = _run(texts, redact=True)
    return RedactionResult(text=out, counts=counts, row_counts=pa.array(row_counts, type=pa.int32()))


def clean_and_redact_many(columns: list) -> list[RedactionResult]:
    """:func:`clean_and_redact` of several columns at once (their slices share the threads)."""
    return [
        RedactionResult(text=out, counts=counts, row_counts=pa.array(rc, type=pa.int32()))
        for out, counts, rc in _run_many(columns, redact=True)
    ]


# --------------------------------------------------------------------------------------
# Dedup key
# --------------------------------------------------------------------------------------

_DEDUP_DROP_RE = r"[\p{P}\s\x0B\x{85}\p{Z}\x{FE00}-\x{FE0F}\x{200B}-\x{200D}\x{2060}\x{FEFF}]+"

# ASCII emoticons carry the sentiment of many short reviews ('Great flight :)' vs ':('): in the
# dedup key they become fixed emoji (so ':)' and ':-)' collide, and '<3' with '❤️'), instead
# of being dropped with the other punctuation. (pattern, emoji); the group is the character
# after the emoticon, written back ('<30 min' and ':Done' hold no emoticon). Order matters.
DEDUP_EMOTICONS: tuple[tuple[str, str], ...] = (
    (r"</3($|[^0-9])", "\U0001F494"),  # 💔
    (r"<3($|[^0-9])", "\u2764"),  # ❤
    (r":-?\)()", "\U0001F642"),  # 🙂
    (r":-?\(()", "\U0001F641"),  # 🙁
    (r";-?\)()", "\U0001F609"),  # 😉
    (r":-?[Dd]($|[^A-Za-z0-9])", "\U0001F600"),  # 😀
    (r":-?[Pp]($|[^A-Za-z0-9])", "\U0001F61B"),  # 😛
)
_EMOTICON_ANY_RE = "|".join(p for p, _ in DEDUP_EMOTICONS)


def normalize_for_dedup(texts) -> pa.Array:
    """Key for near-duplicate detection: full-width folded, lower-cased, without punctuation
    (all ASCII punctuation/symbols and Unicode \\p{P}), whitespace, zero-width characters and
    emoji variation selectors (so '👍🏻' vs '👍🏻️' and 'Great!!' vs 'great' collide). ASCII
    emoticons (:) :( :-( :D ;) <3 </3 :P) are kept as fixed emoji (:data:`DEDUP_EMOTICONS`),
    so 'Great flight :)' and 'Great flight :(' do not collide."""
    return map_chunks(as_string_array(texts), _dedup_chunk)


def _emoticons_to_emoji(a: pa.Array) -> pa.Array:
    for pattern, emoji in DEDUP_EMOTICONS:
        a = pc.replace_substring_regex(a, pattern, emoji + r"\1")
    return a


def _dedup_chunk(arr: pa.Array) -> pa.Array:
    arr = fold_fullwidth(arr)
    off, data = np_views(arr)
    maybe = row_any((data == 0x3A) | (data == 0x3B) | (data == 0x3C), off) & valid_mask(arr)  # : ; <
    if maybe.any():
        maybe[maybe] = _np_bool(pc.match_substring_regex(arr.filter(pa.array(maybe)), _EMOTICON_ANY_RE))
        arr, _ = apply_masked(arr, maybe, _emoticons_to_emoji, exact=True)
    arr = pc.utf8_lower(arr)
    off, data = np_views(arr)
    lo = data | np.uint8(0x20)
    alnum = ((lo - np.uint8(0x61)) < 26) | ((data - np.uint8(0x30)) < 10)
    drop = (data < 0x80) & ~alnum
    if drop.any():
        removed = row_sum(drop, off)
        new_off = np.concatenate([[0], np.cumsum(off[1:] - off[:-1] - removed)])
        arr = from_np(new_off, data[~drop], arr)
        off, data = np_views(arr)
    non_ascii = row_any(data >= 0x80, off)
    arr, _ = apply_masked(arr, non_ascii & valid_mask(arr), lambda a: pc.replace_substring_regex(a, _DEDUP_DROP_RE, ""))
    return arr


# --------------------------------------------------------------------------------------
# Benchmark (not a test): python -m fbk_tasks.text.clean [rows]
# --------------------------------------------------------------------------------------


def _bench_rows(n: int, seed: int = 0) -> pa.Array:
    """n synthetic reviews (~100 chars): zh/en/other mix with HTML, links, PII, ads, emoji."""
    rng = np.random.default_rng(seed)
    en = (
        "the battery lasts long and the screen is bright, shipping was fast; would buy again. "
        "Terrible quality, it broke after two days and support never answered my emails. "
        "Great value for money, my kids love it and the colour matches the photos exactly. "
    ).split(" ")
    zh = list("这个产品非常好用质量不错物流很快包装完好值得购买推荐给大家下次还会再来客服态度一般屏幕清晰电池耐用")
    zh_punct = ["，", "。", "！", "？", "、"]
    extras = [
        "<br/>", "&amp;", "&nbsp;", "<b>bold</b>", "<script>x()</script>", "https://shop.example.com/p/123?ref=a",
        "www.example.com", "john.doe@example.com", "+1 415 555 0100", "13800138000", "4111 1111 1111 1111",
        "11010519491231002X", "192.168.0.1", "https://weibo.com/u/1234567", "加微信 abc12345", "click here",
        "👍", "👨\u200d👩\u200d👧", "😂😂", "\u200b", "\ufeff", "ＡＢＣ１２３", "¥299", "2024-03-15", "x3", "qty 12",
        "SKU-88213", "promo code SAVE20", "Très bon produit", "Отличный товар", "とても良いです",
    ]  # fmt: skip
    base = 20_000
    rows = []
    for i in range(base):
        kind = rng.random()
        if kind < 0.45:
            words = rng.choice(en, size=int(rng.integers(12, 22)))
            text = " ".join(words)
        elif kind < 0.9:
            chars = rng.choice(zh, size=int(rng.integers(25, 40)))
            text = "".join(chars[:15]) + rng.choice(zh_punct) + "".join(chars[15:]) + rng.choice(zh_punct)
        else:
            text = str(rng.choice(extras[-3:])) + " " + " ".join(rng.choice(en, size=5))
        if rng.random() < 0.35:  # ~35% of rows carry one special token
            tok = str(rng.choice(extras))
            cut = int(rng.integers(0, len(text)))
            text = text[:cut] + " " + tok + " " + text[cut:]
        rows.append(text)
    arr = pa.array(rows, type=pa.string())
    reps = -(-n // base)
    return pa.concat_arrays([arr] * reps).slice(0, n)


def _bench(n: int = 1_000_000) -> dict[str, float]:
    from fbk_tasks.text.lang import detect_language

    arr = _bench_rows(n)
    mb = arr.nbytes / 1e6
    w0, c0 = time.perf_counter(), time.process_time()
    res = clean_and_redact(arr)
    w1, c1 = time.perf_counter(), time.process_time()
    lang = detect_language(res.text)
    w2, c2 = time.perf_counter(), time.process_time()
    from fbk_tasks.text.pii import worker_count

    print(f"{n:,} rows, {mb:.0f} MB (wall s / CPU s; 16 MB slices on {worker_count()} thread(s), fbk_tasks.text.pii.THREADS)")
    print(f"clean_and_redact: {w1 - w0:6.2f} / {c1 - c0:6.2f}  ({n / (c1 - c0):,.0f} rows per CPU-s)  counts={res.counts}")
    print(f"detect_language:  {w2 - w1:6.2f} / {c2 - c1:6.2f}  ({n / (c2 - c1):,.0f} rows per CPU-s)")
    print(f"   languages: { {d['values']: d['counts'] for d in pc.value_counts(lang).to_pylist()} }")
    print(f"total:            {w2 - w0:6.2f} / {c2 - c0:6.2f}  ({n / (w2 - w0):,.0f} rows/s wall, {n / (c2 - c0):,.0f} rows per CPU-s)")
    return {"wall_s": w2 - w0, "cpu_s": c2 - c0, "rows_per_s": n / (w2 - w0)}


if __name__ == "__main__":
    import sys

    _bench(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
