"""PII redaction: property tests (hypothesis) and table cases."""

from __future__ import annotations

import datetime as dt
import itertools

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fbk_tasks.text.pii import (
    PII_TYPES,
    RedactionResult,
    cn_id_check_char,
    is_valid_card,
    is_valid_cn_id,
    luhn_ok,
    redact_pii,
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------------------
# strategies
# ------------------------------------------------------------------------------------------

EN_WORDS = [
    "great", "product", "the", "battery", "lasts", "long", "contact", "me", "at", "call", "seller",
    "said", "refund", "please", "my", "card", "is", "ok", "thanks", "IP", "phone", "email", "was",
    "shipped", "fast", "Good", "quality!", "really,", "(see", "below)", "id:", "tel:",
]  # fmt: skip
ZH_PHRASES = [
    "很好", "质量不错", "联系", "电话", "邮箱", "卡号", "身份证", "地址", "谢谢", "客服说", "退款", "我的",
    "主页", "号码是", "，", "。", "！", "：",
]  # fmt: skip

def digits(n: int) -> st.SearchStrategy[str]:
    return st.integers(0, 10**n - 1).map(lambda v: f"{v:0{n}d}")


def _filler(words: list[str], sep: str) -> st.SearchStrategy[str]:
    """A run of 0-6 consecutive words from the list (cheap to draw, varied enough)."""
    return st.tuples(st.integers(0, len(words) - 1), st.integers(0, 6)).map(lambda t: sep.join(words[t[0] : t[0] + t[1]]))


_en_filler = _filler(EN_WORDS, " ")
_zh_filler = _filler(ZH_PHRASES, "")


@st.composite
def embedded(draw, token_strategy):
    """(text, prefix, token, suffix) with English (spaced) or Chinese (adjacent) filler."""
    token = draw(token_strategy)
    if draw(st.booleans()):
        pre, suf = draw(_en_filler), draw(_en_filler)
        prefix = pre + " " if pre else ""
        suffix = " " + suf if suf else ""
    else:
        prefix, suffix = draw(_zh_filler), draw(_zh_filler)
    return prefix + token + suffix, prefix, token, suffix


def _check_redacted(samples, placeholder: str) -> RedactionResult:
    texts = [s[0] for s in samples]
    res = redact_pii(pa.array(texts))
    expected = [pre + placeholder + suf for _, pre, _, suf in samples]
    assert res.text.to_pylist() == expected
    kind = placeholder[1:-1]
    assert res.counts[kind] == len(samples)
    assert sum(res.counts.values()) == len(samples)
    assert res.row_counts.to_pylist() == [1] * len(samples)
    return res


# e-mails ----------------------------------------------------------------------------------
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def _word(alphabet: str, max_len: int, min_len: int = 1) -> st.SearchStrategy[str]:
    """Strings over ``alphabet`` drawn as one integer (much cheaper than st.text)."""
    base = len(alphabet)

    def encode(v: int) -> str:
        out = []
        while v or len(out) < min_len:
            v, r = divmod(v, base)
            out.append(alphabet[r])
        return "".join(reversed(out))

    return st.integers(0, base**max_len - 1).map(encode)


_lower_alnum = st.sampled_from(_ALNUM)


@st.composite
def emails(draw):
    local = draw(_lower_alnum) + draw(_word(_ALNUM + "ABCXYZ._+-", 15, 0))
    labels = [draw(_word(_ALNUM, 10)) for _ in range(draw(st.integers(1, 3)))]
    tld = draw(st.sampled_from(["com", "cn", "org", "net", "io", "co.uk", "com.cn", "de"]))
    at = draw(st.sampled_from(["@", "@", "@", " [at] ", "(at)"]))
    return f"{local}{at}{'.'.join(labels)}.{tld}"


# phones -----------------------------------------------------------------------------------
@st.composite
def nanp_phones(draw):
    area = draw(st.sampled_from("23456789")) + draw(digits(2))
    exch = draw(st.sampled_from("23456789")) + draw(digits(2))
    line = draw(digits(4))
    fmt = draw(
        st.sampled_from(
            ["({a}) {e}-{l}", "{a}-{e}-{l}", "{a}.{e}.{l}", "{a} {e} {l}", "+1 {a} {e} {l}", "+1-{a}-{e}-{l}",
             "+1 ({a}) {e}-{l}", "1-{a}-{e}-{l}", "({a}){e}-{l}"]
        )
    )  # fmt: skip
    return fmt.format(a=area, e=exch, l=line)


@st.composite
def intl_phones(draw):
    fmt = draw(st.sampled_from(["+44 20 {d4} {d4b}", "+44 7{d3} {d6}", "+49 30 {d6}", "+33 1 {d2} {d2} {d2} {d2}", "+81 3-{d4}-{d4b}"]))
    return fmt.format(d2=draw(digits(2)), d3=draw(digits(3)), d4=draw(digits(4)), d4b=draw(digits(4)), d6=draw(digits(6)))


@st.composite
def cn_mobiles(draw):
    number = "1" + draw(st.sampled_from("3456789")) + draw(digits(9))
    a, b, c = number[:3], number[3:7], number[7:]
    fmt = draw(
        st.sampled_from(
            ["{n}", "{a} {b} {c}", "{a}-{b}-{c}", "+86 {a} {b} {c}", "+86{n}", "+86-{a}-{b}-{c}", "+86 {n}",
             "(+86) {n}", "0086 {n}", "86-{a}-{b}-{c}"]
        )
    )  # fmt: skip
    return fmt.format(n=number, a=a, b=b, c=c)


@st.composite
def cn_landlines(draw):
    area = draw(st.sampled_from(["010", "021", "020", "0755", "0571"]))
    return f"{area}-{draw(digits(8 if len(area) == 3 else 7))}"


phones = st.one_of(nanp_phones(), intl_phones(), cn_mobiles(), cn_landlines())


# cards ------------------------------------------------------------------------------------
def luhn_check_digit(payload: str) -> str:
    for d in "0123456789":
        if luhn_ok(payload + d):
            return d
    raise AssertionError("unreachable")


BRANDS = [  # (prefix, length, grouping)
    ("4", 16, (4, 4, 4, 4)), ("4", 13, (4, 4, 5)), ("4", 19, (4, 4, 4, 4, 3)), ("51", 16, (4, 4, 4, 4)),
    ("55", 16, (4, 4, 4, 4)), ("2221", 16, (4, 4, 4, 4)), ("2720", 16, (4, 4, 4, 4)), ("34", 15, (4, 6, 5)),
    ("37", 15, (4, 6, 5)), ("6011", 16, (4, 4, 4, 4)), ("65", 16, (4, 4, 4, 4)), ("62", 16, (4, 4, 4, 4)),
    ("62", 19, (4, 4, 4, 4, 3)), ("3530", 16, (4, 4, 4, 4)), ("36", 14, (4, 6, 4)),
]  # fmt: skip


def _group(number: str, grouping: tuple[int, ...], sep: str) -> str:
    parts, i = [], 0
    for g in grouping:
        parts.append(number[i : i + g])
        i += g
    return sep.join(parts)


@st.composite
def card_numbers(draw, valid: bool = True):
    # A Luhn-invalid 19-digit number may hold a Luhn-valid 16-digit card plus a 3-digit group
    # (card + CVV) and is then rightly redacted: invalid numbers are drawn from <= 16 digits.
    brands = BRANDS if valid else [b for b in BRANDS if b[1] <= 16]
    prefix, length, grouping = draw(st.sampled_from(brands))
    payload = prefix + draw(digits(length - len(prefix) - 1))
    check = luhn_check_digit(payload)
    if not valid:
        check = draw(st.sampled_from([d for d in "0123456789" if d != check]))
    number = payload + check
    sep = draw(st.sampled_from(["", " ", "-"]))
    return number if sep == "" else _group(number, grouping, sep)


# CN resident IDs --------------------------------------------------------------------------
PROVINCES = ["11", "12", "13", "31", "32", "33", "44", "51", "61", "65", "81"]


# 65 (Xinjiang) is left out of the invalid IDs: an 18-digit '65...' number with a wrong ID
# check digit may be a Luhn-valid Discover card, and is then rightly a [CARD]
_INVALID_ID_PROVINCES = [p for p in PROVINCES if p != "65"]


@st.composite
def cn_ids(draw, valid: bool = True):
    born = dt.date(1930, 1, 1) + dt.timedelta(days=draw(st.integers(0, 31_000)))
    province = draw(st.sampled_from(PROVINCES if valid else _INVALID_ID_PROVINCES))
    first17 = province + draw(digits(4)) + born.strftime("%Y%m%d") + draw(digits(3))
    check = cn_id_check_char(first17)
    if not valid:
        check = draw(st.sampled_from([c for c in "0123456789X" if c != check]))
    elif check == "X" and draw(st.booleans()):
        check = "x"
    number = first17 + check
    if draw(st.integers(0, 4)) == 0:
        return f"{number[:6]} {number[6:14]} {number[14:]}"
    return number


# IPs --------------------------------------------------------------------------------------
octet = st.integers(0, 255).map(str)
ipv4 = st.tuples(octet, octet, octet, octet).map(".".join)
hex_group = st.integers(0, 0xFFFF).map(lambda v: f"{v:x}")
ipv6_full = st.lists(hex_group, min_size=8, max_size=8).map(":".join)
ipv6_short = st.tuples(st.lists(hex_group, min_size=2, max_size=3), st.lists(hex_group, min_size=1, max_size=3)).map(
    lambda t: ":".join(t[0]) + "::" + ":".join(t[1])
)
ips = st.one_of(ipv4, ipv4, ipv6_full, ipv6_short)

# QQ numbers -------------------------------------------------------------------------------
@st.composite
def qq_numbers(draw):
    number = draw(st.sampled_from("123456789")) + draw(digits(draw(st.integers(4, 10))))
    fmt = draw(
        st.sampled_from(
            ["qq{n}", "QQ{n}", "QQ {n}", "Qq:{n}", "QQ号{n}", "QQ号：{n}", "QQ号码 {n}", "QQ是{n}", "QQ为 {n}",
             "扣扣{n}", "扣扣号:{n}", "QQ群{n}", "QQ群号 {n}", "加QQ {n}", "加我qq{n}", "添加QQ群：{n}", "加群{n}", "加群号:{n}"]
        )
    )  # fmt: skip
    return fmt.format(n=number)


# airline booking references ------------------------------------------------------------------
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# record locators of letters and digits: a letter after the first two characters (else it
# could be a flight number, 'UA1429') and a digit somewhere
_LOCATOR_SHAPES = [s for s in ("".join(t) for t in itertools.product("LD", repeat=6)) if "L" in s[2:] and "D" in s]


@st.composite
def locator_codes(draw):
    shape = draw(st.sampled_from(_LOCATOR_SHAPES))
    code = "".join(draw(st.sampled_from(_UPPER if c == "L" else "0123456789")) for c in shape)
    return code.lower() if draw(st.integers(0, 4)) == 0 else code


@st.composite
def booking_references(draw):
    """(keyword part that stays, code that becomes [BOOKING])."""
    kind = draw(st.sampled_from(["mixed", "alpha", "ticket"]))
    if kind == "mixed":
        kept = draw(st.sampled_from(
            ["confirmation # ", "Confirmation number: ", "conf#", "Conf # ", "ConF# ", "PNR ", "pnr: ", "record locator ",
             "Record Locator: ", "locator ", "reservation ", "reservation is ", "Reservation # ", "res# ", "RES # ",
             "record number is ", "conf code: ", "CONFIRMATION ", "Conf #'s ", "reservation (", "confirmation no. "]
        ))  # fmt: skip
        return kept, draw(locator_codes())
    if kind == "alpha":
        kept = draw(st.sampled_from(
            ["confirmation # ", "Conf ", "PNR ", "record locator ", "reservation is ", "RESERVATION # ", "res# ",
             "record number ", "locator: ", "Record loc. is ", "CONF: ", "confirmation code "]
        ))  # fmt: skip
        return kept, "".join(draw(st.lists(st.sampled_from(_UPPER), min_size=6, max_size=6)))
    kept = draw(st.sampled_from(["ticket # ", "Ticket ", "e-ticket # ", "eticket: ", "ticket number ", "ticket - ", "RES # ", "TKT "]))
    number = draw(st.sampled_from(["0", "1", "2", "6", "7"])) + draw(digits(12))
    return kept, (number if draw(st.booleans()) else f"{number[:3]}-{number[3:]}")


@st.composite
def embedded_bookings(draw):
    """(text, expected): a booking reference in filler, and the same with its code replaced."""
    kept, code = draw(booking_references())
    text, pre, _, suf = draw(embedded(st.just(kept + code)))
    return text, pre + kept + "[BOOKING]" + suf


# person URLs ------------------------------------------------------------------------------
_name = st.builds(
    lambda a, b, c: a + b + c,
    st.sampled_from("abcdefghijklmnopqrstuvwxyz"),
    _word(_ALNUM + "_.", 12, 0),
    _lower_alnum,
)
URL_TEMPLATES = [
    "https://weibo.com/u/{id}", "https://www.weibo.com/{name}", "http://m.weibo.cn/u/{id}",
    "https://www.facebook.com/{name}", "facebook.com/{name}", "https://t.me/{name}", "t.me/{name}",
    "https://twitter.com/{name}", "https://x.com/{name}", "instagram.com/{name}/",
    "https://www.linkedin.com/in/{name}", "https://example.com/user/{name}", "https://shop.example.org/profile/{name}?tab=1",
    "https://medium.com/@{name}", "https://www.tiktok.com/@{name}", "https://example.com/page?uid={id}",
    "https://forum.example.net/index.php?action=view&user={name}", "www.reddit.com/u/{name}",
    "https://space.bilibili.com/{id}", "https://www.zhihu.com/people/{name}", "https://example.com/en/members/{id}/posts",
]  # fmt: skip
person_urls = st.builds(lambda t, n, i: t.format(name=n, id=i), st.sampled_from(URL_TEMPLATES), _name, st.integers(1, 10**10).map(str))


# ------------------------------------------------------------------------------------------
# property tests: PII is redacted and counted
# ------------------------------------------------------------------------------------------


@SETTINGS
@given(st.lists(embedded(emails()), min_size=1, max_size=3))
def test_emails_are_redacted(samples):
    _check_redacted(samples, "[EMAIL]")


@SETTINGS
@given(st.lists(embedded(phones), min_size=1, max_size=3))
def test_phones_are_redacted(samples):
    _check_redacted(samples, "[PHONE]")


@SETTINGS
@given(st.lists(embedded(card_numbers()), min_size=1, max_size=3))
def test_luhn_valid_cards_are_redacted(samples):
    _check_redacted(samples, "[CARD]")


@SETTINGS
@given(st.lists(embedded(cn_ids()), min_size=1, max_size=3))
def test_valid_cn_ids_are_redacted(samples):
    _check_redacted(samples, "[CN_ID]")


@SETTINGS
@given(st.lists(embedded(ips), min_size=1, max_size=3))
def test_ips_are_redacted(samples):
    _check_redacted(samples, "[IP]")


@SETTINGS
@given(st.lists(embedded(person_urls), min_size=1, max_size=3))
def test_person_urls_are_redacted(samples):
    _check_redacted(samples, "[URL]")


@SETTINGS
@given(st.lists(embedded(qq_numbers()), min_size=1, max_size=3))
def test_qq_numbers_are_redacted(samples):
    _check_redacted(samples, "[QQ]")


@SETTINGS
@given(st.lists(embedded_bookings(), min_size=1, max_size=3))
def test_booking_references_are_redacted(samples):
    """The code (record locator or e-ticket number) becomes [BOOKING]; the keyword stays."""
    res = redact_pii(pa.array([text for text, _ in samples]))
    assert res.text.to_pylist() == [expected for _, expected in samples]
    assert res.counts["BOOKING"] == sum(res.counts.values()) == len(samples)
    assert res.row_counts.to_pylist() == [1] * len(samples)


_TAGGED_PII = st.one_of(
    qq_numbers().map(lambda t: ("QQ", t)),
    emails().map(lambda t: ("EMAIL", t)),
    phones.map(lambda t: ("PHONE", t)),
    card_numbers().map(lambda t: ("CARD", t)),
    cn_ids().map(lambda t: ("CN_ID", t)),
    ips.map(lambda t: ("IP", t)),
    person_urls.map(lambda t: ("URL", t)),
)


@SETTINGS
@given(st.lists(_TAGGED_PII, min_size=1, max_size=6))
def test_mixed_pii_in_one_row_is_counted_per_type(tokens):
    text = " and ".join(tok for _, tok in tokens)
    res = redact_pii(pa.array([text, None, "nothing here"]))
    assert res.text.to_pylist() == [" and ".join(f"[{k}]" for k, _ in tokens), None, "nothing here"]
    for kind in PII_TYPES:
        assert res.counts[kind] == sum(1 for k, _ in tokens if k == kind)
    assert res.row_counts.to_pylist() == [len(tokens), 0, 0]


# ------------------------------------------------------------------------------------------
# property tests: non-PII numbers survive byte for byte
# ------------------------------------------------------------------------------------------


@st.composite
def prices(draw):
    n = draw(st.integers(1, 99999))
    return draw(
        st.sampled_from(
            [f"¥{n}", f"${n:,}.{n % 100:02d}", f"{n % 1000}.{n % 10}元", f"€{n}", f"USD {n}", f"{n}元", f"￥{n}", f"£{n % 500}.99"]
        )
    )


@st.composite
def dates_and_times(draw):
    d = draw(st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2030, 12, 31)))
    h, m, s = draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59))
    return draw(
        st.sampled_from(
            [d.isoformat(), f"{d.year}年{d.month}月{d.day}日", d.strftime("%d/%m/%Y"), d.strftime("%m/%d/%Y"), d.strftime("%Y.%m.%d"),
             f"{h:02d}:{m:02d}", f"{h:02d}:{m:02d}:{s:02d}", f"{d.isoformat()} {h:02d}:{m:02d}", f"{h}点{m}分", str(d.year)]
        )
    )  # fmt: skip


@st.composite
def product_codes(draw):
    letters = st.lists(st.sampled_from("ABCDEFGHJKLMNPQRSTUVWXYZ"), min_size=1, max_size=3).map("".join)
    return draw(
        st.sampled_from(
            ["SKU-88213", "B00QJDU3KY", "iPhone 15 Pro", "XL-2000", "Galaxy S24 Ultra", "RTX 4090", "Model 3",
             f"{draw(letters)}-{draw(st.integers(10, 999999))}", f"B0{draw(digits(8))}", f"SKU{draw(digits(6))}"]
        )
    )  # fmt: skip


@st.composite
def quantities(draw):
    n = draw(st.integers(1, 500))
    return draw(st.sampled_from([f"x{n}", f"{n} 件", f"qty {n}", f"×{n}", f"{n}个", f"{n} pcs", f"{n}%", f"{n}.5%", f"{n} stars"]))


@st.composite
def order_numbers(draw):
    length = draw(st.sampled_from([6, 7, 8, 9, 10, 12]))
    return draw(st.sampled_from(["订单号{}", "order #{}", "Order No. {}", "{}"])).format(draw(digits(length)))


@st.composite
def travel_and_lookalikes(draw):
    """Flight numbers, booking words without a code, times typed with a doubled colon, '+'
    before a short number (a price or a difference)."""
    n4, n3 = draw(digits(4)), draw(st.integers(1, 999))
    h, m = draw(st.integers(0, 23)), draw(st.integers(0, 59))
    return draw(
        st.sampled_from(
            [f"UA{n4}", f"flight {n4}", f"flight UA{n4}", f"AA {n3}", f"B6{n4}", f"DL{n3}", f"my reservation UA{n4}",
             f"conf for flight UA{n4}", "confirmation email", "RESERVATION STATUS", "the record is the WORST",
             f"ticket price ${n3}.99", f"reservation for {n3 % 9 + 1}", f"{h:02d}::{m:02d}", f"凌晨{h:02d}::{m:02d}的航班",
             f"+{n3}元", f"+{draw(st.integers(1000, 99999))}元", f"QQ{2000 + n3 % 30}", f"qq {n3}", f"加群 {n3}"]
        )
    )  # fmt: skip


survivors = st.one_of(
    prices(), dates_and_times(), product_codes(), quantities(), order_numbers(),
    card_numbers(valid=False), cn_ids(valid=False), travel_and_lookalikes(),
)  # fmt: skip


@SETTINGS
@given(st.lists(embedded(survivors), min_size=1, max_size=3))
def test_non_pii_numbers_survive(samples):
    """Prices, dates, times, SKUs, quantities, short order numbers, Luhn-invalid cards and IDs
    with a wrong check digit, flight numbers, booking words without a code, '12::30' and
    '+4000元' come back byte for byte, alone and several in one row (where the row holds the
    7+ digits that make it a phone candidate). They are joined by ', ': joined by a space alone,
    an invalid card and a price ('4000 0265 99901' + '292.2元') are one digit run that may pass
    Luhn, rightly a [CARD]."""
    texts = [s[0] for s in samples]
    texts.append(", ".join(texts))
    res = redact_pii(pa.array(texts))
    assert res.text.to_pylist() == texts
    assert sum(res.counts.values()) == 0
    assert res.row_counts.to_pylist() == [0] * len(texts)


# ------------------------------------------------------------------------------------------
# table cases
# ------------------------------------------------------------------------------------------

CASES = [
    ("mail me john.doe+x@example.co.uk now", "mail me [EMAIL] now"),
    ("邮箱13800138000@qq.com谢谢", "邮箱[EMAIL]谢谢"),
    ("call +1 415 555 0100 or (415) 555-0100", "call [PHONE] or [PHONE]"),
    ("415-555-0100, 415.555.0100", "[PHONE], [PHONE]"),
    ("+44 20 7946 0958 is London", "[PHONE] is London"),
    ("手机+86 138 0013 8000", "手机[PHONE]"),
    ("电话13800138000，13900139000", "电话[PHONE]，[PHONE]"),
    ("card 4111 1111 1111 1111 ok", "card [CARD] ok"),
    ("qty 2 4111 1111 1111 1111", "qty 2 [CARD]"),
    ("card 4111111111111112 bad luhn", "card 4111111111111112 bad luhn"),
    ("Visa4111111111111111 and cardno4111-1111-1111-1111", "Visa[CARD] and cardno[CARD]"),
    ("ID11010519491231002X", "ID[CN_ID]"),
    ("5123 4567 8901 2346 2023", "5123 4567 8901 2346 2023"),
    ("身份证11010519491231002X", "身份证[CN_ID]"),
    ("身份证 110105 19491231 002X", "身份证 [CN_ID]"),
    ("bad check 110105194912310021", "bad check 110105194912310021"),
    ("bad date 110105194902300028", "bad date 110105194902300028"),
    ("IP 192.168.1.100, ipv6 2001:db8::1 and fe80::1ff:fe23:4567:890a", "IP [IP], ipv6 [IP] and [IP]"),
    ("ip:10.0.0.1:8080", "ip:[IP]:8080"),
    ("version 1.2.3 and 999.1.1.1", "version 1.2.3 and 999.1.1.1"),
    ("see https://weibo.com/u/1234567 ok", "see [URL] ok"),
    ("profile: example.com/user/bob.", "profile: [URL]."),
    ("x.com/elon but not box.com/bob", "[URL] but not box.com/bob"),
    ("https://shop.example.com/item/123?ref=abc", "https://shop.example.com/item/123?ref=abc"),
    ("SKU-88213 B00QJDU3KY iPhone 15 Pro XL-2000 ¥299 $1,299.99 39.9元", "SKU-88213 B00QJDU3KY iPhone 15 Pro XL-2000 ¥299 $1,299.99 39.9元"),
    ("2024-03-15 2024年3月15日 15/03/2024 12:30 x3 2 件 qty 12 85% 2023", "2024-03-15 2024年3月15日 15/03/2024 12:30 x3 2 件 qty 12 85% 2023"),
    ("order 2024031512 and 123456789012", "order 2024031512 and 123456789012"),
    ("tel:010-12345678", "tel:[PHONE]"),
    # QQ numbers and groups, with their keyword
    ("需要的联系我呗qq42950063", "需要的联系我呗[QQ]"),
    ("我的QQ是284210953 敬待回复", "我的[QQ] 敬待回复"),
    ("QQ339546 有使用的朋友一起交流", "[QQ] 有使用的朋友一起交流"),
    ("有问题的可以加群8757013咨询", "有问题的可以[QQ]咨询"),
    ("QQ 13800138000 或 qq12345,qq67890", "[QQ] 或 [QQ],[QQ]"),
    ("QQ2013版本 QQ音乐 qq 1234 加群 0571", "QQ2013版本 QQ音乐 qq 1234 加群 0571"),
    # airline booking references (the keyword stays) and what is not one
    ("confirmation # G8CVWJ - please", "confirmation # [BOOKING] - please"),
    ("PNR A3ZZ0F. Why am I", "PNR [BOOKING]. Why am I"),
    ("ConF# ILC0HP and res# ILC0HP", "ConF# [BOOKING] and res# [BOOKING]"),
    ("ticket # 0162424965446 please refund", "ticket # [BOOKING] please refund"),
    ("e-ticket # 016-2389030167, RES # 0167560070877", "e-ticket # [BOOKING], RES # [BOOKING]"),
    ("Conf #'s MQXC64 & MPWNC2. conf code: F6DK04 / XZMSCW", "Conf #'s [BOOKING] & [BOOKING]. conf code: [BOOKING] / [BOOKING]"),
    ("reservation (FEHQNE) | record loc. is KYBILC.", "reservation ([BOOKING]) | record loc. is [BOOKING]."),
    ("conf # G8CVWJ, PLEASE help", "conf # [BOOKING], PLEASE help"),
    ("flight UA1429, flight 3456, my reservation UA1429, $123.45 on 2015-02-21", "flight UA1429, flight 3456, my reservation UA1429, $123.45 on 2015-02-21"),
    ("MY RESERVATION STATUS; the record is the WORST; CONFERENCE 0162424965446", "MY RESERVATION STATUS; the record is the WORST; CONFERENCE 0162424965446"),
    # times with a doubled colon are not IPv6; a short '+number' is not a phone
    ("凌晨00::35的航班, 12::30", "凌晨00::35的航班, 12::30"),
    ("fe80::1, 2001:db8::1, ab::12", "[IP], [IP], [IP]"),
    ("手机+4000元的PDA, 2024-03-15", "手机+4000元的PDA, 2024-03-15"),
    ("already [EMAIL] here", "already [EMAIL] here"),
    ("", ""),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_table(text, expected):
    res = redact_pii(pa.array([text]))
    assert res.text.to_pylist() == [expected]
    assert res.row_counts.to_pylist()[0] == sum(expected.count(f"[{t}]") - text.count(f"[{t}]") for t in PII_TYPES)


def test_inputs_types_nulls_and_counts():
    texts = ["a@b.com", None, "13800138000 and 13900139000", "plain"]
    for given_texts in (pa.array(texts), pa.chunked_array([texts[:2], texts[2:]]), pd.Series(texts, dtype=object), pd.Series(texts)):
        res = redact_pii(given_texts)
        assert isinstance(res.text, pa.Array) and res.text.type == pa.string()
        assert res.text.to_pylist() == ["[EMAIL]", None, "[PHONE] and [PHONE]", "plain"]
        assert res.row_counts.type == pa.int32()
        assert res.row_counts.to_pylist() == [1, 0, 2, 0]
        assert res.counts == {"EMAIL": 1, "PHONE": 2, "CN_ID": 0, "CARD": 0, "IP": 0, "URL": 0, "QQ": 0, "BOOKING": 0}
    empty = redact_pii(pa.array([], type=pa.string()))
    assert len(empty.text) == 0 and len(empty.row_counts) == 0 and set(empty.counts) == set(PII_TYPES)


def test_chunked_processing_matches(monkeypatch):
    import fbk_tasks.text.pii as pii

    texts = [f"row {i} mail u{i}@x.com tel 1380013{i % 10}000 card 4111 1111 1111 1111" for i in range(300)] + [None]
    whole = redact_pii(pa.array(texts))
    monkeypatch.setattr(pii, "CHUNK_BYTES", 1000)
    small = redact_pii(pa.array(texts))
    assert small.text.equals(whole.text)
    assert small.counts == whole.counts == {"EMAIL": 300, "PHONE": 300, "CN_ID": 0, "CARD": 300, "IP": 0, "URL": 0, "QQ": 0, "BOOKING": 0}
    assert small.row_counts.equals(whole.row_counts)


def test_fullwidth_times_and_plus_prices_are_not_pii_after_folding():
    """clean_and_redact folds '：' and '＋' before redaction: a time typed '00：:35' became
    '00::35' ([IP] before), and '＋4000元' became '+4000元' ([PHONE] before, in a row with 7+
    digits elsewhere). A real full-width phone still is one."""
    from fbk_tasks.text.clean import clean_and_redact

    texts = ["凌晨00：:35的航班", "手机＋4000元的PDA，2024年03月15日买的", "电话＋86 138 0013 8000", "加ＱＱ：２８４２１０９５３"]
    res = clean_and_redact(pa.array(texts))
    assert res.text.to_pylist() == ["凌晨00::35的航班", "手机+4000元的PDA,2024年03月15日买的", "电话[PHONE]", "[QQ]"]
    assert res.row_counts.to_pylist() == [0, 0, 1, 1]
    assert res.counts["PHONE"] == res.counts["QQ"] == 1 and res.counts["IP"] == 0


def test_new_types_chunked_and_counted_per_row(monkeypatch):
    import fbk_tasks.text.pii as pii

    texts = [f"row {i} QQ号 {284210953 + i} conf # G8CV{i % 10}J ticket 016242496{i % 10}446" for i in range(300)] + [None]
    whole = redact_pii(pa.array(texts))
    monkeypatch.setattr(pii, "CHUNK_BYTES", 1000)
    small = redact_pii(pa.array(texts))
    assert small.text.equals(whole.text) and small.row_counts.equals(whole.row_counts)
    assert small.counts == whole.counts == {**dict.fromkeys(PII_TYPES, 0), "QQ": 300, "BOOKING": 600}
    assert whole.text[0].as_py() == "row 0 [QQ] conf # [BOOKING] ticket [BOOKING]"
    assert whole.row_counts.to_pylist() == [3] * 300 + [0]


def test_checksum_helpers():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert is_valid_card("378282246310005") and not is_valid_card("1234567812345670")  # no such issuer
    assert is_valid_cn_id("11010519491231002X") and is_valid_cn_id("11010519491231002x")
    assert not is_valid_cn_id("110105194912310021")
    assert not is_valid_cn_id("99010519491231002X")  # no such province
    future = "110105" + (dt.date.today() + dt.timedelta(days=400)).strftime("%Y%m%d") + "001"
    assert not is_valid_cn_id(future + cn_id_check_char(future))


_GROUPS = st.sampled_from(["4111", "1111", "5500", "0000", "0004", "12", "3", "2023", "110105", "19491231", "002X",
                           "4111111111111111", "98765", "7"])


@SETTINGS
@given(st.lists(_GROUPS, min_size=1, max_size=12), st.lists(st.sampled_from([" ", "-"]), min_size=11, max_size=11))
def test_checksum_window_search_equals_trying_every_window(groups, seps):
    from fbk_tasks.text.pii import _redact_checksums

    def every_window(cum, i):  # the earlier search: every window of the run, longest first (cubic)
        return range(len(cum) - 2, i - 1, -1)

    text = "ref " + groups[0] + "".join(sep + g for sep, g in zip(seps, groups[1:])) + " ok"
    today = dt.date(2026, 12, 1)
    assert _redact_checksums(text, today) == _redact_checksums(text, today, windows=every_window)


def test_a_long_run_of_digit_groups_is_searched_in_linear_time():
    """20,000 one-digit groups in one row (40 KB): every window was tried before (about 10^12
    joins: the night's ingestion never finished); now at most 19 per group. A card at the end of
    the run is still found."""
    res = redact_pii(pa.array(["1 " * 20000 + "x 4111 1111 1111 1111 thanks"]))
    assert res.text.to_pylist() == ["1 " * 20000 + "x [CARD] thanks"] and res.counts["CARD"] == 1
