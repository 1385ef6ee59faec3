"""Read one landed file (CSV, TSV, JSON Lines, Parquet; UTF-8, UTF-8 with BOM, GB18030) into
a table of strings, one row per source record, losing nothing.

Records the parser cannot split into fields (a CSV line with the wrong number of fields, a
JSON line that does not parse) come back as ``malformed`` rows with their raw text, so the
caller can quarantine them. A file that cannot be read at all raises :class:`FileRejected`
with a message that says why.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROW_NUMBER = "__row_number"
FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_DELIMITERS = [",", "\t", ";", "|"]
# A UTF-8 file with a few bad bytes is read with U+FFFD in their place (those rows are then
# quarantined as invalid_encoding); beyond this share the file is not UTF-8 at all.
_MAX_BAD_UTF8_SHARE = 0.001


class FileRejected(ValueError):
    """The file cannot be ingested at all; the message says why."""


@dataclass
class ReadResult:
    table: pa.Table  # all columns string, plus ROW_NUMBER (int64, 1-based data row number)
    malformed: list[tuple[int, str, str]] = field(default_factory=list)  # (row number, raw text, reason)
    encoding: str = "utf-8"
    format: str = "csv"
    invalid_utf8_rows: int = 0

    @property
    def rows_read(self) -> int:
        return self.table.num_rows + len(self.malformed)


def detect_format(path: Path, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    suffixes = [s.lower() for s in path.suffixes]
    for suffix in reversed(suffixes):
        if suffix in FORMATS:
            return FORMATS[suffix]
    raise FileRejected(f"{path.name}: unknown file type {''.join(suffixes) or '(none)'}; expected .csv, .tsv, .jsonl or .parquet")


def _decompress(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix.lower() == ".gz":
        import gzip

        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise FileRejected(f"{path.name}: corrupt gzip stream ({exc})") from None
    return data


def decode(data: bytes, name: str, declared: str = "auto") -> tuple[str, str]:
    """Bytes to text: (text, encoding used). UTF-8 (with or without BOM) first, then GB18030."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
        if declared == "auto":
            declared = "utf-8"
    if declared == "gb18030":
        try:
            return data.decode("gb18030"), "gb18030"
        except UnicodeDecodeError as exc:
            raise FileRejected(f"{name}: not valid GB18030 (first bad byte at offset {exc.start}); re-export the file as UTF-8") from None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        first_bad = exc.start
    replaced = data.decode("utf-8", errors="replace")
    if declared == "utf-8":
        return replaced, "utf-8 (invalid bytes replaced)"
    # Not clean UTF-8: a GBK/GB18030 export, or a UTF-8 file with corrupt bytes (those rows are
    # quarantined as invalid_encoding). GB18030 read as UTF-8 yields about 3 U+FFFD per valid
    # non-ASCII character; a UTF-8 file with a few bad bytes yields more valid ones than bad
    # ones, whatever its share of non-ASCII text (a mostly-ASCII file with one corrupt byte
    # and one 'café' must not become 'caf茅').
    bad = replaced.count("\ufffd")
    ascii_bytes = len(data) - int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) > 0x7F))
    valid = len(replaced) - ascii_bytes - bad  # ASCII bytes decode to themselves, never to U+FFFD
    if valid >= bad:
        return replaced, "utf-8 (invalid bytes replaced)"
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError:
        text = None
    if text is not None and _gb18030_plausible(text):
        return text, "gb18030"
    if bad <= max(8, len(data) // 1000):
        return replaced, "utf-8 (invalid bytes replaced)"
    raise FileRejected(
        f"{name}: not valid UTF-8 ({bad} invalid bytes, the first at offset {first_bad}) and not GB18030; "
        "a Latin-1/cp1252 (Excel 'CSV') export is the likely cause; re-export the file as UTF-8"
    )


def _gb18030_plausible(text: str) -> bool:
    """Whether text decoded as GB18030 looks like real GB18030. Chinese text almost never has
    a double-byte character whose trail byte is ASCII (0x40-0x7E; measured: under 0.1% of
    them), while Latin-1/cp1252 decoded as GB18030 has one for every accent followed by a
    letter ('cafés' -> 'caf閟'). Counted per distinct character, so the cost follows the
    decode, not a Python loop over the file."""
    cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    counts = np.bincount(cps[cps > 0x7F])
    multi = ascii_trail = 0
    for cp in np.flatnonzero(counts):
        n = int(counts[cp])
        multi += n
        b = chr(cp).encode("gb18030")
        if len(b) == 2 and b[1] < 0x80:
            ascii_trail += n
    return ascii_trail < 0.05 * multi


def _sniff_delimiter(header: str, fmt: str) -> str:
    if fmt == "tsv":
        return "\t"
    counts = {d: header.count(d) for d in _DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _read_delimited(text: str, name: str, fmt: str) -> ReadResult:
    return _read_delimited_bytes(text.encode("utf-8"), name, fmt)


# ASCII characters str.isspace() counts as whitespace (what str.strip() removes)
_ASCII_SPACE = re.compile(rb"[^ \t\n\r\x0b\x0c\x1c-\x1f]")


def _blank(data: bytes) -> bool:
    """``not data.decode('utf-8').strip()`` without decoding the whole file."""
    m = _ASCII_SPACE.search(data)
    if m is None:
        return True
    if data[m.start()] < 0x80:
        return False
    window = data[m.start() : m.start() + 4096].decode("utf-8", errors="ignore")
    if window.strip():
        return False
    return not data.decode("utf-8", errors="replace").strip()


def _utf8_fast(data: bytes, declared: str) -> bytes | None:
    """The file's bytes when :func:`decode` would return them as clean UTF-8 (BOM removed),
    checked with Arrow's UTF-8 validator instead of building a Python str; else None."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
        if declared == "auto":
            declared = "utf-8"
    if declared not in ("auto", "utf-8"):
        return None
    arr = pa.Array.from_buffers(pa.large_binary(), 1, [None, pa.py_buffer(np.array([0, len(data)], np.int64)), pa.py_buffer(data)])
    try:
        arr.cast(pa.large_string())
    except pa.ArrowInvalid:
        return None
    return data


def _read_delimited_bytes(data: bytes, name: str, fmt: str) -> ReadResult:
    """Delimited text from UTF-8 bytes (known to be valid)."""
    if _blank(data):
        raise FileRejected(f"{name}: the file has no header row (it is empty or whitespace only)")
    eol = data.find(b"\n")
    if eol < 0:  # no \n at all: CR-only line endings (old Excel for Mac), which Arrow reads too
        eol = data.find(b"\r")
    first_line = (data if eol < 0 else data[:eol]).decode("utf-8")
    delimiter = _sniff_delimiter(first_line, fmt)
    try:
        header = next(csv.reader([first_line], delimiter=delimiter))
    except csv.Error as exc:  # e.g. a lone \r inside the header line, a 128 KiB field
        raise FileRejected(f"{name}: cannot parse as {fmt} ({exc})") from None
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise FileRejected(f"{name}: duplicate column names in the header: {dupes}")
    malformed: list[tuple[int, str, str]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        # row.number is the 1-based line number in the file (header is line 1)
        malformed.append((int(row.number or 0), row.text, f"malformed_row (expected {row.expected_columns} fields, got {row.actual_columns})"))
        return "skip"

    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=1, block_size=16 << 20),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={h: pa.string() for h in header}, strings_can_be_null=False, quoted_strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid as exc:
        raise FileRejected(f"{name}: cannot parse as {fmt} ({exc})") from None
    # row_number is the 1-based position among parsed records (line numbers differ when quoted
    # fields span lines); malformed rows carry the parser's row number instead.
    table = table.append_column(ROW_NUMBER, pa.array(range(1, table.num_rows + 1), pa.int64()))
    return ReadResult(table=table, malformed=malformed, format=fmt)


def _read_jsonl(text: str, name: str) -> ReadResult:
    records: list[dict[str, str | None]] = []
    numbers: list[int] = []
    malformed: list[tuple[int, str, str]] = []
    columns: dict[str, None] = {}
    # records end at "\n" only: str.splitlines() also splits on U+2028, U+2029, U+0085 (which
    # JSON allows unescaped inside strings) and \x0b-\x0c, \x1c-\x1e
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip(" \t\r"):  # JSON whitespace only; other characters are a malformed record
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            malformed.append((lineno, line, f"malformed_json ({exc.msg})"))
            continue
        if not isinstance(obj, dict):
            malformed.append((lineno, line, "malformed_json (not an object)"))
            continue
        rec = {str(k): (None if v is None else v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)) for k, v in obj.items()}
        columns.update(dict.fromkeys(rec))
        records.append(rec)
        numbers.append(lineno)
    if not records and not malformed:
        raise FileRejected(f"{name}: the file holds no JSON records")
    table = pa.table({c: pa.array([r.get(c) for r in records], pa.string()) for c in columns})
    table = table.append_column(ROW_NUMBER, pa.array(numbers, pa.int64()))
    return ReadResult(table=table, malformed=malformed, format="jsonl")


def _read_parquet(path: Path) -> ReadResult:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise FileRejected(f"{path.name}: not a readable Parquet file ({exc}); it may be truncated") from None
    cols = {}
    replaced = False
    for name in table.column_names:
        col = table[name]
        try:
            cols[name] = _parquet_text(col)
        except pa.ArrowInvalid:
            if not _is_binary(col.type):
                raise FileRejected(f"{path.name}: column '{name}' ({col.type}) cannot be read as text") from None
            # bytes that are not UTF-8: as in a CSV, U+FFFD in their place, and the rows are
            # quarantined as invalid_encoding
            cols[name] = pa.array([None if v is None else v.decode("utf-8", errors="replace") for v in col.to_pylist()], pa.string())
            replaced = True
        except pa.ArrowException as exc:
            raise FileRejected(f"{path.name}: column '{name}' ({col.type}) cannot be read as text ({exc})") from None
    out = pa.table(cols) if cols else pa.table({})
    out = out.append_column(ROW_NUMBER, pa.array(range(1, table.num_rows + 1), pa.int64()))
    result = ReadResult(table=out, format="parquet", encoding="binary (invalid UTF-8 replaced)" if replaced else "binary")
    if replaced:
        result.invalid_utf8_rows = -1  # the caller marks rows containing U+FFFD
    return result


def _parquet_text(col: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    """One Parquet column as strings (raises what Arrow raises: a binary column that is not
    UTF-8, a time zone the tz database lacks)."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col.cast(pa.string())
    if pa.types.is_timestamp(col.type):
        return pc.strftime(col, format="%Y-%m-%dT%H:%M:%S%z" if col.type.tz else "%Y-%m-%dT%H:%M:%S")
    if pa.types.is_nested(col.type):
        return pa.array([None if v is None else json.dumps(v, ensure_ascii=False, default=str) for v in col.to_pylist()], pa.string())
    return col.cast(pa.string())


def _is_binary(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) or pa.types.is_binary_view(t)


def read_file(path: Path, fmt: str = "auto", encoding: str = "auto") -> ReadResult:
    """Read ``path`` into strings; raise FileRejected with a reason when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise FileRejected(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise FileRejected(f"{path.name}: zero-byte file")
    fmt = detect_format(path if path.suffix.lower() != ".gz" else path.with_suffix(""), fmt)
    if fmt == "parquet":
        return _read_parquet(path)
    data = _decompress(path)
    if fmt != "jsonl":
        clean = _utf8_fast(data, encoding)
        if clean is not None:  # the common case: no str round trip for a large CSV
            del data
            if b"\x00" in clean:  # see below
                clean = clean.replace(b"\x00", b"")
            result = _read_delimited_bytes(clean, path.name, fmt)
            result.encoding = "utf-8"
            return result
    text, used = decode(data, path.name, encoding)
    del data
    if "\x00" in text:
        # NUL bytes break C parsers; they are never part of a review. Counted by the caller
        # through the cleaning step (control characters are stripped there).
        text = text.replace("\x00", "")
    result = _read_jsonl(text, path.name) if fmt == "jsonl" else _read_delimited(text, path.name, fmt)
    result.encoding = used
    if used.startswith("utf-8 (invalid"):
        result.invalid_utf8_rows = -1  # the caller marks rows containing U+FFFD
    return result
