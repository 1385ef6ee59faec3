"""The reader's fast path (UTF-8 checked by Arrow, no Python str for the whole file) decides
exactly as the Python decoder would."""

from __future__ import annotations

import pytest

from fbk_tasks.ingest.readers import _blank, _utf8_fast, decode, read_file

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
