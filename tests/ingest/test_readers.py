"""The reader's fast path (UTF-8 checked by Arrow, no Python str for the whole file) decides
exactly as the Python decoder would."""

from __future__ import annotations

import pytest

from fbk_tasks.ingest.readers import FileRejected, _blank, _utf8_fast, decode, read_file

SAMPLES = [
    b"review_id,text\n1,ok\n",
    b"\xef\xbb\xbfreview_id,text\n1,ok\n",
    "review_id,text\n1,很好 😀\n".encode(),
    b"review_id,text\n1,bad \xff byte\n",
    b"review_id,text\n1,surrogate \xed\xa0\x80\n",
    b"review_id,text\n1,overlong \xc0\x80\n",
    b"review_id,text\n1,truncated \xe4\xb8",
    "review_id,text\n1,很好\n".encode("gb18030"),
    b"",
]


@pytest.mark.parametrize("data", SAMPLES)
@pytest.mark.parametrize("declared", ["auto", "utf-8"])
def test_fast_utf8_agrees_with_the_decoder(data, declared):
    fast = _utf8_fast(data, declared)
    try:
        text, used = decode(data, "x.csv", declared)
    except Exception:  # noqa: BLE001 - a rejected file is never clean UTF-8
        text, used = None, None
    if used == "utf-8":
        assert fast is not None and fast.decode("utf-8") == text
    else:
        assert fast is None


@pytest.mark.parametrize(
    "data",
    [b"", b"   \n\t ", b"\x1c\x1d\x1e\x1f \x0b\x0c\r\n", "\u3000\u00a0\x85 ".encode(), " \u3000x".encode(), b"  a", "\u3000".encode() * 3000 + b"a", "很".encode()],
)
def test_blank_matches_str_strip(data):
    assert _blank(data) == (not data.decode("utf-8").strip())


def test_nul_bytes_are_dropped_on_the_fast_path(tmp_path):
    f = tmp_path / "nul.csv"
    f.write_bytes(b"review_id,text\n1,he\x00llo\n")
    r = read_file(f)
    assert r.encoding == "utf-8" and r.table["text"].to_pylist() == ["hello"]


# -- UTF-8 with a corrupt byte vs GB18030 vs Latin-1 -----------------------------------------------
def test_mostly_ascii_utf8_with_one_corrupt_byte_is_not_read_as_gb18030():
    """One corrupt byte beside a few accents must not turn 'café' into 'caf茅': the valid UTF-8
    characters outnumber the invalid bytes, so the file is UTF-8 (the bad row is quarantined)."""
    text, used = decode(b"id,text\n1,great caf\xc3\xa9\n4,na\xefve product\n", "x.csv")
    assert used == "utf-8 (invalid bytes replaced)"
    assert text == "id,text\n1,great caf\u00e9\n4,na\ufffdve product\n"


def test_real_gb18030_text_is_still_gb18030():
    zh = "物流很快，质量不错，就是价格有点贵。包装破损，客服态度很差！外卖送得很慢，菜都凉了"
    data = ("id,text\n" + "".join(f"{i},{zh[i % 7:]}\n" for i in range(50))).encode("gb18030")
    text, used = decode(data, "x.csv")
    assert used == "gb18030" and zh in text


def test_latin1_file_is_rejected_with_the_likely_cause():
    """'cafés' in Latin-1 decodes as GB18030 ('caf閟'), but a GB18030 file almost never has a
    double-byte character with an ASCII trail byte: many is Latin-1/cp1252, not Chinese."""
    data = "id,text\n".encode() + "".join(f"{i},les cafés étaient trés bons, déçus\n" for i in range(200)).encode("latin-1")
    assert "caf閟" in data.decode("gb18030")  # what the old rule published
    with pytest.raises(FileRejected, match="Latin-1/cp1252"):
        decode(data, "x.csv")
    with pytest.raises(FileRejected, match="Latin-1/cp1252"):  # not GB18030 at all ('à ')
        decode(data + "200,à Noël\n".encode("latin-1"), "x.csv")


def test_a_few_latin1_bytes_in_a_big_ascii_file_are_replaced_not_gb18030():
    data = b"id,text\n" + b"".join(b"%d,plain ascii review number %d\n" % (i, i) for i in range(5000)) + b"5000,caf\xe9s\n"
    text, used = decode(data, "x.csv")
    assert used == "utf-8 (invalid bytes replaced)" and text.endswith("5000,caf\ufffds\n")


# -- JSON Lines ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85"])
def test_jsonl_splits_records_on_newline_only(tmp_path, sep):
    """JSON allows these unescaped inside strings; str.splitlines() cut the record in two
    malformed halves."""
    f = tmp_path / "x.jsonl"
    f.write_bytes(('{"id": "1", "text": "first' + sep + 'second"}\r\n{"id": "2", "text": "ok"}\n').encode("utf-8"))
    r = read_file(f)
    assert r.malformed == []
    assert r.table["text"].to_pylist() == ["first" + sep + "second", "ok"]
    assert r.table["__row_number"].to_pylist() == [1, 2]


@pytest.mark.parametrize("sep", ["\x1c", "\x1d", "\x1e", "\x0b", "\x0c"])
def test_jsonl_control_character_inside_a_line_is_one_malformed_record(tmp_path, sep):
    """JSON forbids raw control characters, so the line is malformed, but it is one record
    (with its whole text), not two, and a line of nothing else is not dropped as blank."""
    f = tmp_path / "x.jsonl"
    f.write_bytes(('{"id": "1", "text": "first' + sep + 'second"}\n' + sep + '\n{"id": "2", "text": "ok"}\n').encode("utf-8"))
    r = read_file(f)
    assert [(n, raw) for n, raw, _ in r.malformed] == [(1, '{"id": "1", "text": "first' + sep + 'second"}'), (2, sep)]
    assert r.table["text"].to_pylist() == ["ok"] and r.table["__row_number"].to_pylist() == [3]
    assert r.rows_read == 3
