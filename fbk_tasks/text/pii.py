"""Vectorised PII redaction for review text.

Every pattern is an RE2 regular expression run by ``pyarrow.compute`` over whole columns;
Python touches single rows only where a checksum decides (payment cards: Luhn + issuer
prefix; mainland-China resident IDs: ISO 7064 MOD 11-2 + birth date), and only on the rows
that hold a 13+ digit run at all.

Work is restricted to candidate rows found with cheap byte scans (numpy over the Arrow data
buffer: "has a digit", "has '@'", "has '/' or 'www.'"), so a column of plain prose costs
almost nothing.

Replacement order (each type sees the output of the previous ones):

1. ``URL``   person-identifying URLs (``/user/``, ``/u/``, ``/@name``, ``?uid=``,
             ``facebook.com/<name>``, ``t.me/<name>``, ``weibo.com/...`` ...) — first, because
             such URLs contain digits and ``@`` that later patterns would chew on.
2. ``EMAIL`` also ``name(at)host.com`` / ``name [at] host [dot] com``.
3. ``BOOKING`` airline booking references after a keyword: 6-character record locators
             after conf / confirmation / PNR / (record) locator / reservation / res# /
             record# (``confirmation # G8CVWJ``, ``PNR A3ZZ0F``; letters and digits, or six
             capitals), and 13-digit e-ticket numbers after ticket / e-ticket / those
             keywords (``ticket # 0162424965446``). The keyword is kept (``conf # [BOOKING]``);
             a list of codes (``MQXC64 & MPWNC2``) gives one placeholder per code. A
             2-character airline designator plus 4 digits (``UA1429``, ``B61234``) is a flight
             number, never a booking code.
4. ``CN_ID`` then ``CARD`` — checksum-validated (Python, candidate rows only).
5. ``IP``    IPv4 (each octet 0-255) and full or ``::``-compressed IPv6; a compressed form
             needs 3+ groups or a hex letter, so a time typed with a doubled colon
             (``12::30``, ``00：:35``) is not an address.
6. ``QQ``    QQ numbers and QQ group numbers with their keyword: ``qq42950063``,
             ``我的QQ是284210953``, ``扣扣号：12345``, ``加QQ群 123456``, ``加群8757013``
             (the keyword, and a leading ``加``/``添加``, are part of the placeholder).
7. ``PHONE`` ``+CC`` international forms with 7+ digits (``+4000元`` is a price),
             NANP ``(415) 555-0100`` / ``415-555-0100``, mainland mobiles
             ``1[3-9]xxxxxxxxx`` (with/without ``+86``/``0086``, spaces, dashes) and
             mainland landlines ``010-12345678``.

Counts are taken as "placeholders after minus placeholders before" per row, so a review
that already contains the literal text ``[EMAIL]`` is not counted twice.

Known limits (not redacted): obfuscations beyond ``(at)``/``[at]``/``(dot)``/``[dot]``
(e.g. "john at gmail dot com"), national phone formats other than NANP and mainland China
without a ``+`` country code (e.g. UK "020 7946 0958"), bare 10-digit numbers without
separators (kept: they are usually order numbers), 15-digit first-generation Chinese IDs
(no check digit), cards whose issuer prefix is outside the common brands listed in
``_card_brand``, IPv6 forms like ``::1`` and IPv4-mapped IPv6, digits written in full-width
or Chinese numerals (``clean_and_redact`` folds full-width digits first), person URLs on
hosts not listed and without a person-like path/query, phone numbers with fewer than 7
digits (and ``+CC`` numbers whose national part has fewer than 6), a card directly followed
by another group of 4+ digits ("4111 1111 1111 1111 2024" is read as one 20-digit number),
booking codes without one of the keywords, six capitals after a keyword written in capitals
without ``#``/``:``/``number`` ("CONF ABCDEF"), all-digit locators, frequent-flyer and
loyalty numbers ("SWRR# 298033455"), QQ numbers without the word QQ/扣扣/加群, names.

Over-redaction (by design or accepted): an 11-digit number ``1[3-9]\\d{9}`` standing alone is
always a mobile number; six capitals right after a booking keyword ("reservation is
BROKEN") read as a record locator; 4-part version strings ("1.2.3.4") look like IPv4; a
time with a doubled colon and 3+ groups ("12:30::45") looks like IPv6; a sentence glued
to an e-mail ("a@b.com.Thanks") loses the glued word; any first path segment on the social
hosts in ``PERSON_HOSTS`` (facebook.com/<page>) counts as a person.

This module also hosts the small Arrow/numpy helpers shared by ``clean`` and ``lang``.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import os
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Order is the ledger's column order (pii_<type>); new types go at the end.
PII_TYPES: tuple[str, ...] = ("EMAIL", "PHONE", "CN_ID", "CARD", "IP", "URL", "QQ", "BOOKING")
PLACEHOLDERS: dict[str, str] = {t: f"[{t}]" for t in PII_TYPES}


@dataclass(frozen=True)
class RedactionResult:
    text: pa.Array  # redacted text, nulls where the input was null
    counts: dict[str, int]  # total replacements per PII type (every type present)
    row_counts: pa.Array  # int32 per row: replacements in that row (0 for null rows)


# --------------------------------------------------------------------------------------
# Arrow / numpy helpers (shared with clean.py and lang.py)
# --------------------------------------------------------------------------------------

_INT32_MAX = 2**31 - 1


def as_string_array(texts) -> pa.Array:
    """Any supported input as one contiguous ``pa.string()`` (``large_string`` > 2 GiB) array."""
    if isinstance(texts, pa.ChunkedArray):
        arr = texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
    elif isinstance(texts, pa.Array):
        arr = texts
    else:
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - pandas is a project dependency
            pd = None
        if pd is not None and isinstance(texts, (pd.Series, pd.Index)):
            arr = pa.array(texts, from_pandas=True)
        else:
            arr = pa.array(list(texts), type=pa.string(), from_pandas=True)
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_null(arr.type):
        arr = arr.cast(pa.string())
    if pa.types.is_string_view(arr.type) if hasattr(pa.types, "is_string_view") else False:
        arr = arr.cast(pa.large_string())
    if pa.types.is_large_string(arr.type):
        if _byte_span(arr) <= _INT32_MAX:
            arr = arr.cast(pa.string())
    elif not pa.types.is_string(arr.type):
        raise TypeError(f"expected strings, got {arr.type}")
    return arr


CHUNK_BYTES = 16 << 20  # rows are processed in slices of about this many bytes (cache, memory)


def chunk_slices(arr: pa.Array, target_bytes: int | None = None) -> list[tuple[int, int]]:
    """(start, stop) row ranges whose data is about ``target_bytes`` each (at least one row)."""
    target_bytes = target_bytes or CHUNK_BYTES
    n = len(arr)
    if n == 0:
        return []
    off, _ = np_views(arr)
    total = int(off[-1])
    if total <= target_bytes:
        return [(0, n)]
    cuts = np.searchsorted(off, np.arange(target_bytes, total, target_bytes), side="left")
    bounds = np.unique(np.concatenate([[0], cuts, [n]]))
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


# Slices are processed on this many threads: the work is pyarrow compute kernels (RE2) and
# numpy over Arrow buffers, which release the GIL, so a second core nearly halves the wall
# time. None: one per available core, at most 4. 1: no threads.
THREADS: int | None = None


def worker_count() -> int:
    if THREADS is not None:
        return max(1, int(THREADS))
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def run_parallel(fn: Callable, items: list) -> list:
    """``[fn(x) for x in items]`` (order kept) on :func:`worker_count` threads. A fresh pool
    per call, so a function that itself calls run_parallel cannot deadlock."""
    workers = min(worker_count(), len(items))
    if workers <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fbk-text") as pool:
        return list(pool.map(fn, items))


def map_chunks(arr: pa.Array, fn: Callable[[pa.Array], pa.Array]) -> pa.Array:
    """Apply an array->array function slice by slice (in parallel) and concatenate."""
    parts = run_parallel(lambda ab: fn(arr.slice(ab[0], ab[1] - ab[0])), chunk_slices(arr))
    return concat_strings(parts) if parts else fn(arr)


def _byte_span(arr: pa.Array) -> int:
    bufs = arr.buffers()
    odt = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    if len(arr) == 0:
        return 0
    off = np.frombuffer(bufs[1], dtype=odt, count=arr.offset + len(arr) + 1)
    return int(off[-1] - off[arr.offset])


def np_views(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets as int64 starting at 0, uint8 data) of a string array, zero-copy for data."""
    n = len(arr)
    bufs = arr.buffers()
    odt = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    if n == 0 or bufs[1] is None:
        return np.zeros(n + 1, np.int64), np.zeros(0, np.uint8)
    off = np.frombuffer(bufs[1], dtype=odt, count=arr.offset + n + 1)[arr.offset :].astype(np.int64)
    base, end = int(off[0]), int(off[-1])
    off -= base
    data = np.frombuffer(bufs[2], dtype=np.uint8)[base:end] if bufs[2] is not None and end > base else np.zeros(0, np.uint8)
    return off, data


def from_np(off: np.ndarray, data: np.ndarray, like: pa.Array) -> pa.Array:
    """Build a string array from offsets/data, with the validity of ``like``."""
    n = len(like)
    validity = None
    null_count = like.null_count
    if null_count:
        validity = pc.is_valid(like).buffers()[1]
    if len(data) > _INT32_MAX:
        typ, offs = pa.large_string(), off.astype(np.int64)
    else:
        typ, offs = pa.string(), off.astype(np.int32)
    return pa.Array.from_buffers(typ, n, [validity, pa.py_buffer(offs), pa.py_buffer(np.ascontiguousarray(data))], null_count)


def rows_of(positions: np.ndarray, off: np.ndarray) -> np.ndarray:
    """Row index of each byte position."""
    return np.searchsorted(off, positions, side="right") - 1


def row_any(byte_mask: np.ndarray, off: np.ndarray) -> np.ndarray:
    """Per row: does any byte of the row satisfy ``byte_mask``."""
    n = len(off) - 1
    if n == 0 or byte_mask.size == 0:
        return np.zeros(n, bool)
    padded = np.empty(byte_mask.size + 1, bool)
    padded[:-1] = byte_mask
    padded[-1] = False
    out = np.logical_or.reduceat(padded, off[:-1])
    out[off[1:] == off[:-1]] = False
    return out


def row_count_sparse(byte_mask: np.ndarray, off: np.ndarray) -> np.ndarray:
    """Per-row count of a rare byte class (cheaper than a full reduction)."""
    n = len(off) - 1
    pos = np.flatnonzero(byte_mask)
    if not pos.size:
        return np.zeros(n, np.int32)
    return np.bincount(rows_of(pos, off), minlength=n).astype(np.int32)


def row_sum(byte_mask: np.ndarray, off: np.ndarray) -> np.ndarray:
    """Per row: number of bytes satisfying ``byte_mask`` (int32)."""
    n = len(off) - 1
    if n == 0 or byte_mask.size == 0:
        return np.zeros(n, np.int32)
    padded = np.empty(byte_mask.size + 1, np.uint8)
    padded[:-1] = byte_mask
    padded[-1] = 0
    lengths = off[1:] - off[:-1]
    # uint16 accumulation is ~2x faster than int32 and exact while no row reaches 64 KiB
    acc = np.uint16 if int(lengths.max()) < 65536 else np.int32
    sums = np.add.reduceat(padded, off[:-1], dtype=acc).astype(np.int32)
    sums[lengths == 0] = 0
    return sums


def seq_rows(data: np.ndarray, off: np.ndarray, seq: bytes) -> np.ndarray:
    """Per row: does the row contain the byte sequence ``seq`` (rare first byte is fastest)."""
    n = len(off) - 1
    out = np.zeros(n, bool)
    if data.size < len(seq):
        return out
    pos = np.flatnonzero(data[: data.size - len(seq) + 1] == seq[0])
    for k in range(1, len(seq)):
        if not pos.size:
            break
        pos = pos[data[pos + k] == seq[k]]
    if pos.size:
        out[rows_of(pos, off)] = True
    return out


def apply_masked(
    arr: pa.Array, mask: np.ndarray, fn: Callable[[pa.Array], pa.Array], exact: bool = False
) -> tuple[pa.Array, np.ndarray]:
    """Run ``fn`` on the rows where ``mask``; return the merged array and per-row 'changed'.

    ``mask`` is a pre-filter: unless ``exact``, ``fn`` must leave rows outside it unchanged,
    and when most rows are selected it is run on the whole array (cheaper than take+scatter).
    """
    n = len(arr)
    count = int(mask.sum())
    if count == 0:
        return arr, np.zeros(n, bool)
    if count == n or (not exact and count > 0.6 * n):
        out = fn(arr)
        if out.type != arr.type:
            out = out.cast(arr.type)
        return out, _np_bool(pc.not_equal(arr, out))
    changed = np.zeros(n, bool)
    idx = np.flatnonzero(mask)
    sub = arr.take(pa.array(idx))
    new = fn(sub)
    diff = _np_bool(pc.not_equal(sub, new))
    if not diff.any():
        return arr, changed
    changed[idx[diff]] = True
    if new.type != arr.type:
        new = new.cast(arr.type)
    out = pc.replace_with_mask(arr, pa.array(mask), new)
    return out, changed


def _np_bool(arr) -> np.ndarray:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        arr = pc.fill_null(arr, False)
    return np.asarray(arr.to_numpy(zero_copy_only=False), bool)


def _np_int(arr) -> np.ndarray:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        arr = pc.fill_null(arr, 0)
    return np.asarray(arr.to_numpy(zero_copy_only=False), np.int32)


def valid_mask(arr: pa.Array) -> np.ndarray:
    if arr.null_count == 0:
        return np.ones(len(arr), bool)
    return _np_bool(pc.is_valid(arr))


# --------------------------------------------------------------------------------------
# Candidate scans
# --------------------------------------------------------------------------------------


def _next_bytes_rows(data: np.ndarray, off: np.ndarray, first: np.ndarray, tails: list[bytes]) -> np.ndarray:
    """Rows with a byte in ``first`` (a bool byte mask) followed by bytes from ``tails``."""
    n = len(off) - 1
    out = np.zeros(n, bool)
    k = len(tails)
    pos = np.flatnonzero(first[: max(data.size - k, 0)])
    for i, allowed in enumerate(tails, start=1):
        if not pos.size:
            return out
        pos = pos[np.isin(data[pos + i], np.frombuffer(allowed, np.uint8))]
    if pos.size:
        out[rows_of(pos, off)] = True
    return out


def pii_candidates(arr: pa.Array) -> dict[str, np.ndarray]:
    """Per-row candidate masks.

    ``digit`` any digit, ``phone`` >= 7 digits, ``long`` >= 13 digits (checksum types),
    ``ip`` a digit followed by '.' and >= 4 digits, or >= 2 colons, ``at`` '@' or
    '(at)'/'[at]', ``url`` '/' or 'www.', ``qq`` >= 5 digits and 'qq' (any case), '扣扣' or
    '加群', ``booking`` the start of a booking keyword (any case: 'conf', 'pnr', 'loc', 'res',
    'rec', 'tick', 'tkt') or '[BOOKING]'.
    """
    off, data = np_views(arr)
    return _pii_candidates(arr, off, data, extra=[])[0]


def _pii_candidates(
    arr: pa.Array, off: np.ndarray, data: np.ndarray, extra: list[np.ndarray], keywords: bool = True
) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """pii_candidates on precomputed views, plus ``row_any`` of the ``extra`` byte masks;
    without ``qq`` and ``booking`` (the keyword scans) unless ``keywords``."""
    is_digit = (data - np.uint8(0x30)) < 10
    ndigits = row_sum(is_digit, off)
    digit = ndigits > 0
    dot_after_digit = np.zeros(data.size, bool)
    if data.size:
        np.logical_and(is_digit[:-1], data[1:] == 0x2E, out=dot_after_digit[:-1])
    dad, at, url, *extra_rows = (row_any(m, off) for m in [dot_after_digit, data == 0x40, data == 0x2F, *extra])
    ipish = (dad & (ndigits >= 4)) | (row_count_sparse(data == 0x3A, off) >= 2)
    at |= _next_bytes_rows(data, off, (data == 0x28) | (data == 0x5B), [b"aA", b"tT", b")]"])
    url |= _next_bytes_rows(data, off, (data | np.uint8(0x20)) == 0x77, [b"wW", b"wW", b"."])
    valid = valid_mask(arr)
    cand = {
        "digit": digit & valid,
        "phone": (ndigits >= 7) & valid,
        "long": (ndigits >= 13) & valid,
        "ip": ipish & valid,
        "at": at & valid,
        "url": url & valid,
    }
    if keywords:  # one RE2 pass (a DFA over the buffer) costs less than a numpy scan per word
        cand["qq"] = _match_rows(arr, (ndigits >= 5) & valid, QQ_CANDIDATE_RE)
        cand["booking"] = _match_rows(arr, valid, BOOKING_CANDIDATE_RE)
    return cand, extra_rows


# Rows QQ_RE / BOOKING_RE may match hold one of these (every alternative starts with one).
QQ_CANDIDATE_RE = r"(?i:qq)|扣扣|加群"
BOOKING_CANDIDATE_RE = r"(?i:conf|pnr|loc|res|rec|tick|tkt)|\[BOOKING\]"


def _match_rows(arr: pa.Array, mask: np.ndarray, pattern: str) -> np.ndarray:
    """``mask`` narrowed to the rows that match ``pattern`` (run on those rows only)."""
    count = int(mask.sum())
    if count == 0:
        return mask
    if count > 0.6 * len(arr):
        return mask & _np_bool(pc.match_substring_regex(arr, pattern))
    idx = np.flatnonzero(mask)
    out = np.zeros(len(arr), bool)
    out[idx] = _np_bool(pc.match_substring_regex(arr.take(pa.array(idx)), pattern))
    return out


# --------------------------------------------------------------------------------------
# Patterns (RE2 syntax)
# --------------------------------------------------------------------------------------

# URL characters (RFC 3986 unreserved + sub-delims, minus quotes, brackets and parentheses so
# that a surrounding "(...)" and our own "[PLACEHOLDER]"s are never swallowed).
URL_CHARS = r"[a-z0-9\-._~%!$&*+,;=:@/?#]"
URL_END = r"[a-z0-9\-_~%$&*+=@/#]"  # a URL does not end with . , ; : ! ?
_URL_REST = rf"(?:{URL_CHARS}*{URL_END})?"
_HOST = r"(?:[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?\.)+[a-z][a-z]+(?::[0-9]+)?"
_SEG = r"[a-z0-9\-._~%!$&*+,;=:@]"
_QSEG = r"[a-z0-9\-._~%!$*+,;=:@]"
# Path keywords that introduce a person: /user/bob, /u/123, /in/jane (LinkedIn), /id/x (Steam)
PERSON_PATH_KEYS: tuple[str, ...] = (
    "user", "users", "u", "usr", "profile", "profiles", "people", "person", "member", "members",
    "in", "id", "author", "authors", "account", "accounts", "channel", "homepage",
)  # fmt: skip
# Query parameters that identify a person: ?uid=123, &user=bob
PERSON_QUERY_KEYS: tuple[str, ...] = (
    "uid", "user", "userid", "user_id", "username", "user_name", "uname", "profile",
    "profile_id", "profileid", "memberid", "member_id", "author", "author_id", "authorid",
)  # fmt: skip
# Hosts where any first path segment is a person (or a person's page).
PERSON_HOSTS: tuple[str, ...] = (
    r"facebook\.com", r"fb\.com", r"fb\.me", r"instagram\.com", r"instagr\.am", r"twitter\.com",
    r"x\.com", r"t\.me", r"telegram\.me", r"vk\.com", r"weibo\.com", r"weibo\.cn",
    r"tiktok\.com", r"threads\.net", r"space\.bilibili\.com", r"douyin\.com/user",
    r"xiaohongshu\.com/user/profile", r"zhihu\.com/people", r"linkedin\.com/in",
)  # fmt: skip

_SEG_END = r"[a-z0-9\-_~%$&*+=@]"  # the identifying segment does not end with . , ; : !
# Every person URL contains a '/', which the candidate scan relies on.
_PERSON_PART = (
    rf"(?:(?:/{_SEG}*)*?(?:/(?:{'|'.join(PERSON_PATH_KEYS)})/{_SEG}*{_SEG_END}|/[@~]{_SEG}*{_SEG_END})"
    rf"|(?:/{_SEG}*)+\?(?:[a-z0-9_.%\-]+(?:={_QSEG}*)?&)*(?:{'|'.join(PERSON_QUERY_KEYS)})={_QSEG}*{_SEG_END})"
)
_GENERIC_PERSON_URL = rf"(?:https?://)?{_HOST}{_PERSON_PART}{_URL_REST}"
_HOST_PERSON_URL = (
    rf"(?:https?://)?(?:(?:www|m|mobile|mbasic|web|touch)\.)?(?:{'|'.join(PERSON_HOSTS)})"
    rf"/[a-z0-9_.\-%@~]*[a-z0-9_\-%@~]{_URL_REST}"
)
PERSON_URL_RE = rf"(?i)(^|[^a-z0-9.\-_@/])(?:{_HOST_PERSON_URL}|{_GENERIC_PERSON_URL})"

_DOMAIN_LABEL = r"[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?"
EMAIL_RE = (
    r"(?i)[a-z0-9][a-z0-9._%+\-]*"
    r"(?:@|\s?[(\[]at[)\]]\s?)"
    rf"(?:{_DOMAIN_LABEL}(?:\.|\s?[(\[]dot[)\]]\s?))+[a-z][a-z]+"
)

# Phones. Left/right context is captured and written back, because RE2 has no look-around:
# a phone must not continue a longer digit run ("1234-5678" groupings are joined by - and .).
_PL = r"(^|[^0-9+\-.]|[^0-9+][\-.])"
_PR = r"($|[^0-9\-.]|[\-.]$|[\-.][^0-9])"
_S = r"[ .\-]?"
# National part of a +CC number: a group of 1-5 digits, then 1-5 groups of 2-5 (separators
# optional), holding 6+ digits, so that the number has 7+ ('+4000元' is a price, not a phone).
# The cases of 1-2 groups after the first are spelled out (RE2 cannot count digits).
_NATIONAL = (
    rf"(?:[0-9]{{1,5}}(?:{_S}[0-9]{{2,5}}){{3,5}}"
    rf"|[0-9]{{2,5}}{_S}[0-9]{{2,5}}{_S}[0-9]{{2,5}}|[0-9]{_S}[0-9]{{3,5}}{_S}[0-9]{{2,5}}|[0-9]{_S}[0-9]{{2}}{_S}[0-9]{{3,5}}"
    rf"|[0-9]{_S}[0-9]{{5}}|[0-9]{{2}}{_S}[0-9]{{4,5}}|[0-9]{{3}}{_S}[0-9]{{3,5}}|[0-9]{{4,5}}{_S}[0-9]{{2,5}})"
)
_P_INTL = rf"\+[1-9][0-9]{{0,2}}(?:{_S}\([0-9]{{1,4}}\))?{_S}{_NATIONAL}"
_P_NANP = r"(?:1[ .\-]?)?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .\-])[2-9][0-9]{2}[ .\-][0-9]{4}"
_P_CN_MOBILE = r"(?:\(?(?:\+|00)?86\)?[ \-]?)?1[3-9][0-9](?:[ \-]?[0-9]{4}){2}"
_P_CN_LANDLINE = r"\(?0[0-9]{2,3}\)?-[0-9]{7,8}"
PHONE_RE = rf"{_PL}(?:{_P_INTL}|{_P_NANP}|{_P_CN_MOBILE}|{_P_CN_LANDLINE}){_PR}"

_OCT = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"{_OCT}(?:\.{_OCT}){{3}}"
_H = r"[0-9a-fA-F]{1,4}"
# a group of 1-4 hex digits with at least one letter
_HL = r"(?:[a-fA-F][0-9a-fA-F]{0,3}|[0-9][a-fA-F][0-9a-fA-F]{0,2}|[0-9]{2}[a-fA-F][0-9a-fA-F]?|[0-9]{3}[a-fA-F])"
# full, or '::'-compressed with 3+ groups, or with 2 groups one of which has a hex letter
# ('fe80::1'): '12::30' and '00::35' are times typed with a doubled colon
_IPV6 = (
    rf"(?:(?:{_H}:){{7}}{_H}|(?:{_H}:){{2,6}}(?::{_H}){{1,6}}|{_H}:(?::{_H}){{2,6}}"
    rf"|{_HL}::{_H}|{_H}::{_HL})"
)
IP_RE = (
    rf"(^|[^0-9A-Za-z.]){_IPV4}($|[^0-9A-Za-z.]|\.$|\.[^0-9A-Za-z])"
    rf"|(^|[^0-9A-Za-z:]){_IPV6}($|[^0-9A-Za-z:])"
)

# QQ numbers (5-11 digits, no leading 0) and QQ group numbers, with their keyword: 'qq42950063',
# '我的QQ是284210953', 'QQ群：123456', '加群8757013'. A leading 加/添加 goes with them (as the
# ad-boilerplate pattern of clean.py would have removed it with the number).
QQ_RE = (
    r"(^|[^A-Za-z0-9])(?:"
    r"(?:加我?|添加)?(?i:qq|扣扣)(?:群号?|号码?)?\s*(?:是|为|:|：)?\s*[1-9][0-9]{4,10}"
    r"|加群号?\s*(?:是|为|:|：)?\s*[0-9]{5,12}"
    r")($|[^0-9])"
)


def _shapes_re(shapes: set[str]) -> str:
    """RE2 for the 'L' (letter) / 'D' (digit) shapes of a fixed length, as a prefix tree."""
    width = len(next(iter(shapes)))
    if width == 0:
        return ""
    if len(shapes) == 2**width:
        return f"[A-Za-z0-9]{{{width}}}" if width > 1 else "[A-Za-z0-9]"
    parts = []
    for c, cls in (("L", "[A-Za-z]"), ("D", "[0-9]")):
        rest = {x[1:] for x in shapes if x[0] == c}
        if rest:
            parts.append(cls + _shapes_re(rest))
    return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"


def _shapes(width: int) -> list[str]:
    out = [""]
    for _ in range(width):
        out = [x + c for x in out for c in "LD"]
    return out


# Booking references. A 6-character record locator of letters and digits, but not a flight
# number: an airline designator (2 characters, 1+ letter) and 4 digits ('UA1429', 'B61234').
_LOCATOR_MIXED = _shapes_re({x for x in _shapes(6) if "L" in x[2:] and "D" in x})
_LOCATOR_ALPHA = r"[A-Z]{6}"  # six capitals ('MKWLKR'); never lower-case words ('please')
_TICKET_NO = r"[0-9]{3}[ \-]?[0-9]{10}"  # 13-digit e-ticket number ('016-2424965446')
_BK_WS = r"[\s\x{A0}]"
_BK_MARK = r"(?:#|:|\(|(?i:number|num|nbr|no\.?|code)(?:[\s\x{A0}#:.]))"
# what may stand between a keyword and its code: spaces, '#', ':', '-', '(', "'s", 'number', 'is'
_BK_SEP = rf"(?:{_BK_WS}|[#:\-(]|'s|(?i:number|num|nbr|no\.?|code|is|was)(?:{_BK_WS}|[#:.(]))*"
_BK_SEP1 = rf"(?:{_BK_WS}|[#:\-(]){_BK_SEP}"  # at least one: the keyword ends there
_BK_SEP_MARK = rf"{_BK_WS}*{_BK_MARK}{_BK_SEP}"  # with '#', ':', '(' or 'number'/'code'
_KW_STRONG = r"(?i:confirmation|conf|pnr|record[\s\x{A0}]+locator|record[\s\x{A0}]+loc\.?|locator|reservation)"
# the same written in lower or title case (PNR in any case): six capitals after an all-capitals
# 'RESERVATION' are a shouted word ('RESERVATION STATUS'), unless a '#'/':'/'number' says otherwise
_KW_STRONG_LOWER = r"(?:[Cc]onf(?:irmation)?|(?i:pnr)|[Rr]ecord[\s\x{A0}]+(?:[Ll]ocator|[Ll]oc\.?)|[Ll]ocator|[Rr]eservation)"
_KW_WEAK = r"(?i:res|record)"  # only with a '#', ':' or 'number' ('res# ILC0HP', 'record number is ...')
_KW_TICKET = r"(?i:e-?ticket|ticket|tkt)"
# the next code of a list, after the previous one was replaced ('MQXC64 & MPWNC2'); six capitals
# only after '&' or '/' ('G8CVWJ, PLEASE help' is not a list)
_BK_CHAIN = rf"\[BOOKING\]{_BK_WS}*(?:&|/|,|\+|&amp;|(?i:and|or)){_BK_WS}*"
_BK_CHAIN_ALPHA = rf"\[BOOKING\]{_BK_WS}*(?:&|/|&amp;){_BK_WS}*"
# groups: 1 left context, 2/3 the keyword part (kept), 4 right context
BOOKING_RE = (
    r"(^|[^A-Za-z0-9_])(?:"
    rf"({_KW_STRONG}{_BK_SEP1}|{_KW_WEAK}{_BK_SEP_MARK}|{_KW_TICKET}{_BK_SEP1}|{_BK_CHAIN})(?:{_LOCATOR_MIXED}|{_TICKET_NO})"
    rf"|({_KW_STRONG_LOWER}{_BK_SEP1}|{_KW_STRONG}{_BK_SEP_MARK}|{_KW_WEAK}{_BK_SEP_MARK}|{_BK_CHAIN_ALPHA}){_LOCATOR_ALPHA}"
    r")($|[^A-Za-z0-9])"
)

# Rows holding a run of 13+ digits (optionally grouped by single spaces/dashes): the only rows
# that go to Python for the checksum types.
CHECKSUM_CANDIDATE_RE = r"[0-9](?:[ \-]?[0-9]){12}"


# --------------------------------------------------------------------------------------
# Checksums (Python, candidate rows only)
# --------------------------------------------------------------------------------------

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_CN_PROVINCES = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 "
    "61 62 63 64 65 71 81 82 83 91".split()
)


def cn_id_check_char(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character for the first 17 digits of a resident ID."""
    return _ID_CHECK[sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS, strict=True)) % 11]


def is_valid_cn_id(s: str, today: _dt.date | None = None) -> bool:
    """18-char mainland resident ID: province code, real birth date (1900..today), check char."""
    if len(s) != 18 or not s.isascii() or not s[:17].isdigit() or not (s[17].isdigit() or s[17] in "Xx"):
        return False
    if s[:2] not in _CN_PROVINCES:
        return False
    try:
        born = _dt.date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
    except ValueError:
        return False
    if born.year < 1900 or born > (today or _dt.date.today()):
        return False
    return cn_id_check_char(s[:17]) == s[17].upper()


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = ord(c) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_brand(d: str) -> str | None:
    """Issuer by prefix and length (common brands only); None when no brand fits."""
    n = len(d)
    p2, p3, p4, p6 = int(d[:2]), int(d[:3]), int(d[:4]), int(d[:6])
    if d[0] == "4" and n in (13, 16, 19):
        return "visa"
    if (51 <= p2 <= 55 or 2221 <= p4 <= 2720) and n == 16:
        return "mastercard"
    if p2 in (34, 37) and n == 15:
        return "amex"
    if (p4 == 6011 or 644 <= p3 <= 649 or p2 == 65 or 622126 <= p6 <= 622925) and 16 <= n <= 19:
        return "discover"
    if p2 == 62 and 16 <= n <= 19:
        return "unionpay"
    if 3528 <= p4 <= 3589 and 16 <= n <= 19:
        return "jcb"
    if (300 <= p3 <= 305 or p2 in (36, 38, 39)) and 14 <= n <= 19:
        return "diners"
    if p4 in (5018, 5020, 5038, 5893, 6304, 6759, 6761, 6762, 6763) and 13 <= n <= 19:
        return "maestro"
    if 2200 <= p4 <= 2204 and 16 <= n <= 19:
        return "mir"
    return None


def is_valid_card(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and digits.isdigit() and _card_brand(digits) is not None and luhn_ok(digits)


# a run may follow letters ('Visa4111...', 'ID1101...'), never a digit or '+' (mid-number, or a phone)
_RUN = re.compile(r"(?<![0-9+])[0-9]+(?:[ \-][0-9]+)*[Xx]?(?![0-9A-Za-z])")
_SPLIT = re.compile(r"([ \-])")


def _card_grouping_ok(groups: list[str], seps: list[str]) -> bool:
    if len(groups) == 1:
        return True
    if len(set(seps)) != 1 or len(groups[0]) != 4 or not 3 <= len(groups[-1]) <= 6:
        return False
    return all(4 <= len(g) <= 6 for g in groups[1:-1])


def _id_grouping_ok(groups: list[str], seps: list[str]) -> bool:
    return len(groups) == 1 or ([len(g) for g in groups] == [6, 8, 4] and len(set(seps)) == 1)


def _window_isolated(groups: list[str], i: int, j: int) -> bool:
    """A sub-window of a digit run counts only if the groups just outside it are short
    (< 4 digits: '2 4111 1111 1111 1111' is 'qty 2' + a card), never when it would cut a
    longer grouped number ('5123 4567 8901 2346 2023' is one number, not a Visa card)."""
    return (i == 0 or len(groups[i - 1]) < 4) and (j == len(groups) - 1 or len(groups[j + 1]) < 4)


def _checksum_windows(cum: list[int], i: int) -> range:
    """The ``j`` of the windows ``groups[i..j]`` of 13-19 characters, longest first (``cum[k]``:
    characters in ``groups[:k]``). Group lengths are positive, so they form one range: at most
    19 windows per ``i``, and a run of G groups costs O(G), not O(G^3) as trying every window did."""
    j_max = bisect.bisect_right(cum, cum[i] + 19) - 2  # last j with cum[j+1] - cum[i] <= 19
    j_min = bisect.bisect_left(cum, cum[i] + 13) - 1  # first j with cum[j+1] - cum[i] >= 13
    return range(min(j_max, len(cum) - 2), max(j_min, i) - 1, -1)


def _redact_checksums(text: str, today: _dt.date,
                      windows: Callable[[list[int], int], Iterable[int]] = _checksum_windows) -> str:
    out: list[str] = []
    last = 0
    for m in _RUN.finditer(text):
        parts = _SPLIT.split(m.group())
        groups, seps = parts[0::2], parts[1::2]
        # char offset of each group inside the run
        starts, pos = [], m.start()
        for k, g in enumerate(groups):
            starts.append(pos)
            pos += len(g) + (1 if k < len(seps) else 0)
        cum = [0]
        for g in groups:
            cum.append(cum[-1] + len(g))
        i = 0
        while i < len(groups):
            hit = None
            for j in windows(cum, i):
                win, wseps = groups[i : j + 1], seps[i:j]
                joined = "".join(win)
                if not 13 <= len(joined) <= 19 or not _window_isolated(groups, i, j):
                    continue
                if len(joined) == 18 and _id_grouping_ok(win, wseps) and is_valid_cn_id(joined, today):
                    hit = (j, "[CN_ID]")
                    break
                if joined.isdigit() and _card_grouping_ok(win, wseps) and is_valid_card(joined):
                    hit = (j, "[CARD]")
                    break
            if hit is None:
                i += 1
                continue
            j, ph = hit
            s, e = starts[i], starts[j] + len(groups[j])
            out.append(text[last:s])
            out.append(ph)
            last = e
            i = j + 1
    if last == 0:
        return text
    out.append(text[last:])
    return "".join(out)


def _checksum_fn(sub: pa.Array) -> pa.Array:
    today = _dt.date.today()
    values = [None if t is None else _redact_checksums(t, today) for t in sub.to_pylist()]
    return pa.array(values, type=pa.string())


# --------------------------------------------------------------------------------------
# Redaction driver
# --------------------------------------------------------------------------------------


def _regex_fn(
    pattern: str, replacement: str, repeat: int = 1, still: Callable[[pa.Array], np.ndarray] | None = None
) -> Callable[[pa.Array], pa.Array]:
    """Replacement that is re-run on the changed rows (those that ``still`` may match) when
    two matches can share one context character ('13800138000,13900139000')."""

    def fn(sub: pa.Array) -> pa.Array:
        out = pc.replace_substring_regex(sub, pattern, replacement)
        prev = sub
        for _ in range(repeat - 1):
            again = _np_bool(pc.not_equal(prev, out))
            if still is not None and again.any():
                again &= still(out)
            if not again.any():
                break
            prev = out
            out, _ = apply_masked(out, again, lambda a: pc.replace_substring_regex(a, pattern, replacement))
        return out

    return fn


def _phone_left(arr: pa.Array) -> np.ndarray:
    off, data = np_views(arr)
    return _pii_candidates(arr, off, data, [], keywords=False)[0]["phone"]


def _ip_left(arr: pa.Array) -> np.ndarray:
    off, data = np_views(arr)
    return _pii_candidates(arr, off, data, [], keywords=False)[0]["ip"]


def _qq_left(arr: pa.Array) -> np.ndarray:
    return _np_bool(pc.match_substring_regex(arr, QQ_CANDIDATE_RE))


def _booking_left(arr: pa.Array) -> np.ndarray:
    return _np_bool(pc.match_substring_regex(arr, BOOKING_CANDIDATE_RE))


def _counting_step(
    arr: pa.Array,
    mask: np.ndarray,
    fn: Callable[[pa.Array], pa.Array],
    placeholders: tuple[str, ...],
    counts: dict[str, int],
    row_counts: np.ndarray,
    exact: bool = False,
) -> tuple[pa.Array, np.ndarray]:
    """apply_masked + count new placeholders in the changed rows; returns (array, changed)."""
    before = arr
    out, changed = apply_masked(arr, mask, fn, exact=exact)
    if not changed.any():
        return out, changed
    idx = np.flatnonzero(changed)
    ids = pa.array(idx)
    b, a = before.take(ids), out.take(ids)
    for ph in placeholders:
        delta = _np_int(pc.count_substring(a, ph)) - _np_int(pc.count_substring(b, ph))
        counts[ph[1:-1]] += int(delta.sum())
        row_counts[idx] += delta.astype(np.int32)
    return out, changed


def redact_core(
    arr: pa.Array, cand: dict[str, np.ndarray] | None = None
) -> tuple[pa.Array, dict[str, int], np.ndarray, np.ndarray]:
    """Redact a string array; returns (text, counts, row_counts, changed-rows)."""
    if cand is None:
        cand = pii_candidates(arr)
    counts = {t: 0 for t in PII_TYPES}
    row_counts = np.zeros(len(arr), np.int32)
    touched = np.zeros(len(arr), bool)

    def step(mask, fn, phs, exact=False):
        nonlocal arr, touched
        arr, ch = _counting_step(arr, mask, fn, phs, counts, row_counts, exact=exact)
        touched |= ch
        return ch

    step(cand["url"], _regex_fn(PERSON_URL_RE, r"\1[URL]"), ("[URL]",))
    step(cand["at"], _regex_fn(EMAIL_RE, "[EMAIL]"), ("[EMAIL]",))
    # before the checksums: a 13-digit e-ticket number is a booking (whatever its Luhn digit);
    # repeated for a list of codes, each after the previous one's placeholder
    step(cand["booking"], _regex_fn(BOOKING_RE, r"\1\2\3[BOOKING]\4", repeat=3, still=_booking_left), ("[BOOKING]",))
    # rows changed so far may have lost digits: candidates stay a superset, which is fine
    long_ = cand["long"]
    if long_.any():
        idx = np.flatnonzero(long_)
        sub = arr.take(pa.array(idx)) if idx.size != len(arr) else arr
        long_run = np.zeros(len(arr), bool)
        long_run[idx] = _np_bool(pc.match_substring_regex(sub, CHECKSUM_CANDIDATE_RE))
        step(long_run, _checksum_fn, ("[CN_ID]", "[CARD]"), exact=True)
    step(cand["ip"], _regex_fn(IP_RE, r"\1\3[IP]\2\4", repeat=3, still=_ip_left), ("[IP]",))
    # before phones: 'QQ 13800138000' is a QQ number (the keyword says so)
    step(cand["qq"], _regex_fn(QQ_RE, r"\1[QQ]\2", repeat=2, still=_qq_left), ("[QQ]",))
    # exact: the phone pattern could match a short '+1 23 45' outside the >= 7 digit rows
    step(cand["phone"], _regex_fn(PHONE_RE, r"\1[PHONE]\2", repeat=3, still=_phone_left), ("[PHONE]",), exact=True)
    return arr, counts, row_counts, touched


def redact_pii(texts) -> RedactionResult:
    """Replace PII with ``[EMAIL]``, ``[PHONE]``, ``[CN_ID]``, ``[CARD]``, ``[IP]``, ``[URL]``,
    ``[QQ]``, ``[BOOKING]``.

    Input: pyarrow string Array/ChunkedArray or pandas Series (nulls allowed). The text is
    redacted as given; use ``clean.clean_and_redact`` to decode HTML entities and fold
    full-width characters first.
    """
    arr = as_string_array(texts)
    counts = {t: 0 for t in PII_TYPES}
    texts_out, rows_out = [], []
    for out, c, rc, _ in run_parallel(lambda ab: redact_core(arr.slice(ab[0], ab[1] - ab[0])), chunk_slices(arr) or [(0, 0)]):
        texts_out.append(out)
        rows_out.append(rc)
        for k, v in c.items():
            counts[k] += v
    return RedactionResult(
        text=concat_strings(texts_out),
        counts=counts,
        row_counts=pa.array(np.concatenate(rows_out), type=pa.int32()),
    )


def concat_strings(parts: list[pa.Array]) -> pa.Array:
    if len(parts) == 1:
        return parts[0]
    typ = pa.large_string() if any(pa.types.is_large_string(p.type) for p in parts) else pa.string()
    return pa.concat_arrays([p.cast(typ) if p.type != typ else p for p in parts])
