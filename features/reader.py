"""Streaming CSV reading: every field as text, in bounded blocks, every row accounted for.

The header is read by us (to find the delimiter, drop a UTF-8 byte-order mark and map
aliases). The body is cut into rows by ``features.records`` (the quoting rule, on raw bytes)
and only then handed to Arrow's CSV parser to split the fields, so Arrow sees exactly the
rows we counted. Rows that cannot be used as rows are not lost: each comes out as a row of
its own with a reader reason (``unterminated_quote``, ``malformed_row``, ``nul_byte``), its
line number and its exact bytes.

Every batch has the header's columns as binary ``c0..cN-1`` followed by ``LINE`` (line of
the file where the row starts; the header is line 1), ``REJECT`` (0, or 1 + the position of
the reader reason in ``READER_REASONS``), ``SPANS`` (the row spans several lines: a quoted
field holds a line break) and ``RAW`` (the row's bytes, its final line break excluded).
"""

from __future__ import annotations

import csv
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from features.records import Lines, Segments, quote_stats, segment, split_lines
from features.rules import MAX_COLUMNS, MAX_RECORD_BYTES, READER_RULES, RuleCode
from features.schema import InputError

DELIMITERS = (",", ";", "\t", "|")
# Bytes read per block; a block is cut at the last complete row.
BLOCK_BYTES = 4 << 20
BOM = b"\xef\xbb\xbf"
LINE, REJECT, SPANS, RAW = "_line", "_reject", "_spans", "_raw"
# REJECT values: 0, or 1 + the reason's position in READER_REASONS.
READER_REASONS = READER_RULES
_UNTERMINATED, _MALFORMED, _NUL = (
    1 + READER_REASONS.index(code)
    for code in (RuleCode.UNTERMINATED_QUOTE, RuleCode.MALFORMED_ROW, RuleCode.NUL_BYTE)
)

Source = str | Path | BinaryIO


def decode_utf8(columns: list[pa.Array]) -> tuple[list[pa.Array], np.ndarray]:
    """Binary columns as text, and a mask of rows holding bytes that are not UTF-8.

    The fast path validates whole columns at once; only a chunk that fails is walked row
    by row, and its bad values become text with U+FFFD replacement characters.
    """
    n = len(columns[0]) if columns else 0
    bad = np.zeros(n, dtype=bool)
    try:
        return [pc.cast(column, pa.string()) for column in columns], bad
    except pa.ArrowInvalid:
        pass
    decoded_columns = []
    for column in columns:
        decoded = []
        for i, value in enumerate(column.to_pylist()):
            try:
                decoded.append(value.decode("utf-8"))
            except UnicodeDecodeError:
                bad[i] = True
                decoded.append(value.decode("utf-8", "replace"))
        decoded_columns.append(pa.array(decoded, pa.string()))
    return decoded_columns, bad


@dataclass
class RowScan:
    """What ``RowBlocks.scan`` finds: rows, stray quotes, multi-line rows, lone CRs, NULs."""

    rows: int = 0
    unterminated: int = 0
    spanning: int = 0
    lone_cr: int = 0
    nul: bool = False
    endings: set[str] = field(default_factory=set)  # "lf", "crlf", "cr" (header included)
    extra_empty_fields: int = 0  # rows ending in delimiters beyond the header's width
    spaced_quotes: int = 0  # quotes next to a space or tab (some readers trim around them)


@dataclass
class CsvStream:
    """An opened CSV: its header, its delimiter, and its rows as Arrow record batches."""

    header: list[str]
    delimiter: str
    batches: Iterator[pa.RecordBatch]
    blocks: RowBlocks | None = None  # for ``scan`` instead of ``batches`` (not both)


def sniff_delimiter(header_line: str) -> str:
    """The candidate delimiter that splits the header into the most fields."""
    return max(DELIMITERS, key=lambda d: (header_line.count(d), d == ","))


def read_header_line(stream: BinaryIO, label: str) -> tuple[bytes, bytes]:
    """(header line with its line break, the bytes after it), reading no more than needed.

    Use ``header_text`` for the line without its break."""
    data = stream.read(1 << 16)
    eof = not data
    while True:
        if data.startswith(BOM):
            data = data[len(BOM) :]
        ends = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
        end = min(ends) if ends else -1
        # A CR as the last byte read may be the first half of a CRLF: read on.
        if end >= 0 and not (end == len(data) - 1 and data[end] == 13 and not eof):
            break
        if eof:
            break
        if len(data) > MAX_RECORD_BYTES:
            raise InputError(f"{label}: the first line is longer than 4 MiB; is this a CSV file?")
        more = stream.read(1 << 20)
        eof = not more
        data += more
    if not data.strip():
        raise InputError(f"{label}: the file is empty")
    if end < 0:
        raise InputError(f"{label}: has a header but no data rows")
    if end > MAX_RECORD_BYTES:
        raise InputError(f"{label}: the first line is longer than 4 MiB; is this a CSV file?")
    after = end + 2 if data[end : end + 2] == b"\r\n" else end + 1
    return data[:after], data[after:]


def header_text(line: bytes) -> bytes:
    """A header line from ``read_header_line`` without its line break."""
    return line.rstrip(b"\r\n")


def _ending(line: bytes) -> str:
    return "crlf" if line.endswith(b"\r\n") else "lf" if line.endswith(b"\n") else "cr"


def parse_header(line: bytes, label: str) -> tuple[list[str], str]:
    if b"\x00" in line:
        raise InputError(
            f"{label}: the header contains NUL bytes; is this UTF-16 or a binary file? "
            "Save it as UTF-8 CSV"
        )
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(
            f"{label}: the header is not valid UTF-8 text; is this a CSV file?"
        ) from None
    delimiter = sniff_delimiter(text)
    buf = np.frombuffer(line, dtype=np.uint8)
    lines = Lines(np.array([0]), np.array([len(line)]), np.array([len(line)]))
    stats = quote_stats(buf, lines, ord(delimiter))
    if stats.opens[0]:
        raise InputError(f"{label}: the header row has an unterminated quote")
    if stats.messy_out[0]:
        raise InputError(f"{label}: the header row has text after a closing quote")
    try:
        header = next(csv.reader([text], delimiter=delimiter, strict=False))
    except csv.Error:
        raise InputError(f"{label}: the header row cannot be read as CSV") from None
    if len(header) > MAX_COLUMNS:
        raise InputError(
            f"{label}: the header has {len(header)} columns (at most {MAX_COLUMNS}); "
            "is this a CSV file?"
        )
    return header, delimiter


def read_header(path: str | Path, label: str) -> tuple[list[str], str]:
    """(header names, delimiter) of a CSV file, found as ``open_csv`` finds them."""
    with Path(path).open("rb") as stream:
        line, _ = read_header_line(stream, label)
        return parse_header(header_text(line), label)


def open_csv(source: Source, label: str) -> CsvStream:
    """Open a CSV file or binary stream for block-wise reading, or raise ``InputError``."""
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{label}: file not found")
        stream: BinaryIO = path.open("rb")
    else:
        stream = source
    try:
        header_line, rest = read_header_line(stream, label)
        header, delimiter = parse_header(header_text(header_line), label)
        while not rest.strip():
            more = stream.read(1 << 16)
            if not more:
                raise InputError(f"{label}: has a header but no data rows")
            rest += more
    except BaseException:
        stream.close()
        raise
    blocks = RowBlocks(stream, rest, header, delimiter, label, ending=_ending(header_line))
    return CsvStream(header=header, delimiter=delimiter, batches=blocks.batches(), blocks=blocks)


class RowBlocks:
    """Cuts the body into rows block by block and parses each block with Arrow."""

    def __init__(
        self,
        stream: BinaryIO,
        rest: bytes,
        header: list[str],
        delimiter: str,
        label: str,
        block_bytes: int = BLOCK_BYTES,
        ending: str = "lf",
    ) -> None:
        self.ending = ending
        self.stream = stream
        self.rest = rest
        self.width = len(header)
        self.delimiter = delimiter
        self.label = label
        self.block_bytes = block_bytes
        self.names = [f"c{i}" for i in range(self.width)]
        # Physical lines of the whole file, header included, once read to its end.
        self.lines_read: int | None = None
        meta = [(LINE, pa.int64()), (REJECT, pa.int8()), (SPANS, pa.bool_()), (RAW, pa.binary())]
        self.schema = pa.schema([*((n, pa.binary()) for n in self.names), *meta])

    def _cut(self) -> Iterator[tuple[bytes, np.ndarray, Lines, Segments, int]]:
        """(block bytes, as uint8, its lines, the rows found, line number of its first line)
        for each block; bytes of an unfinished row are carried into the next block."""
        try:
            carry, line_number, eof = self.rest, 2, False
            while True:
                chunk = b"" if eof else self.stream.read(self.block_bytes)
                eof = eof or not chunk
                data = carry + chunk if carry else chunk
                if not data:
                    self.lines_read = line_number - 1
                    return
                buf = np.frombuffer(data, dtype=np.uint8)
                lines = split_lines(buf, final=eof)
                self._check_lengths(lines, len(data), line_number, eof)
                if not len(lines):
                    carry = data
                    continue
                found = segment(buf, lines, ord(self.delimiter), self.width, eof)
                yield data, buf, lines, found, line_number
                line_number += found.consumed
                rest = (
                    lines.start[found.consumed] if found.consumed < len(lines) else lines.after[-1]
                )
                carry = data[int(rest) :]
                if eof and not carry:
                    self.lines_read = line_number - 1
                    return
        finally:
            self.stream.close()

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The rows of the body, block by block (module doc for the columns)."""
        for data, buf, lines, found, line_number in self._cut():
            batch = self._block(data, buf, lines, found, line_number)
            if batch.num_rows:
                yield batch

    def scan(self) -> RowScan:
        """Count rows and what the reader would set aside, without parsing fields (cheap)."""
        seen = RowScan(endings={self.ending})
        delimiter = ord(self.delimiter)
        for data, buf, lines, found, _ in self._cut():
            seen.rows += len(found.first) + len(found.broken)
            seen.unterminated += len(found.broken)
            seen.spanning += int((found.last != found.first).sum())
            done = found.consumed
            ended = lines.after[:done] > lines.end[:done]
            ends = lines.end[:done][ended]
            size = lines.after[:done][ended] - ends
            cr = buf[ends] == 13
            lone = int((cr & (size == 1)).sum())
            seen.lone_cr += lone
            for kind, count in (("cr", lone), ("crlf", int((cr & (size == 2)).sum()))):
                if count:
                    seen.endings.add(kind)
            if (~cr).any():
                seen.endings.add("lf")
            if done and b"\x00" in data[: int(lines.after[done - 1])]:
                seen.nul = True
            seen.extra_empty_fields += self._extra_empty_fields(data, buf, lines, found, delimiter)
            if b'"' in data:
                quotes = np.flatnonzero(buf == 34)
                before = buf[np.maximum(quotes - 1, 0)]
                after = buf[np.minimum(quotes + 1, len(buf) - 1)]
                spaced = (before == 32) | (before == 9) | (after == 32) | (after == 9)
                seen.spaced_quotes += int(spaced.sum())
        return seen

    def _extra_empty_fields(
        self, data: bytes, buf: np.ndarray, lines: Lines, found: Segments, delimiter: int
    ) -> int:
        """Rows that end with the delimiter and have more fields than the header (a reader
        may take the extra empty fields as trailing delimiters). Only rows ending with the
        delimiter are looked at, one by one (few: mostly rows with an empty last field)."""
        start, end = lines.start[found.first], lines.end[found.last]
        candidates = np.flatnonzero((end > start) & (buf[np.maximum(end - 1, 0)] == delimiter))
        extra = 0
        for i in candidates.tolist():
            text = data[int(start[i]) : int(end[i])]
            if b'"' not in text:
                fields = text.count(self.delimiter.encode()) + 1
            else:
                decoded = text.decode("utf-8", "replace")
                fields = len(next(csv.reader([decoded], delimiter=self.delimiter), []))
            extra += fields > self.width
        return extra

    def _check_lengths(self, lines: Lines, size: int, first_line: int, eof: bool) -> None:
        long = np.flatnonzero(lines.end - lines.start > MAX_RECORD_BYTES)
        if len(long):
            line = first_line + int(long[0])
        elif not eof and size - (int(lines.after[-1]) if len(lines) else 0) > MAX_RECORD_BYTES:
            line = first_line + len(lines)
        else:
            return
        raise InputError(
            f"{self.label}: line {line} is longer than 4 MiB (the longest row we read); "
            "is this a CSV file?"
        )

    def _block(
        self, data: bytes, buf: np.ndarray, lines: Lines, found: Segments, first_line: int
    ) -> pa.RecordBatch:
        """One batch: the rows found in ``data``, parsed, plus the rows the reader rejects."""
        row_start = lines.start[found.first]
        row_end = lines.end[found.last]
        rejected = np.where(found.messy, _MALFORMED, 0).astype(np.int8)
        if len(row_start) and b"\x00" in data:
            nul = np.flatnonzero(buf == 0)
            row = np.searchsorted(row_start, nul, side="right") - 1
            row = row[(row >= 0) & (nul < row_end[np.maximum(row, 0)])]
            rejected[row] = _NUL
        keep = rejected == 0
        parse = np.flatnonzero(keep)
        table, accepted = self._parse(data, lines, found, parse)
        rejected[parse[~accepted]] = _MALFORMED

        # Every row found, and every broken line, in file order.
        starts = np.concatenate([row_start, lines.start[found.broken]])
        ends = np.concatenate([row_end, lines.end[found.broken]])
        line = np.concatenate([found.first, found.broken]) + first_line
        reject = np.concatenate([rejected, np.full(len(found.broken), _UNTERMINATED, np.int8)])
        spans = np.concatenate([found.last != found.first, np.zeros(len(found.broken), bool)])
        if len(found.broken):
            order = np.argsort(line, kind="stable")
            starts, ends, line, reject = starts[order], ends[order], line[order], reject[order]
            spans = spans[order]
        raw = _slices(data, starts, ends)
        parsed = reject == 0
        if parsed.all():
            fields = list(table.columns)
        else:  # rejected rows get empty fields; parsed rows keep their order
            fields = [_with_empty_rows(_array(column), parsed) for column in table.columns]
        arrays = [
            *(_array(f) for f in fields),
            pa.array(line, pa.int64()),
            pa.array(reject, pa.int8()),
            pa.array(spans, pa.bool_()),
            raw,
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _parse(
        self, data: bytes, lines: Lines, found: Segments, parse: np.ndarray
    ) -> tuple[pa.Table, np.ndarray]:
        """Arrow's parse of the rows in ``parse`` (indices into the rows found), and which of
        them have the header's number of fields."""
        accepted = np.ones(len(parse), dtype=bool)
        names = self.names
        if not len(parse):
            empty = pa.table({n: pa.array([], pa.binary()) for n in names})
            return empty, accepted
        first, last = found.first[parse], found.last[parse]
        start, after = lines.start[first], lines.after[last]
        # Contiguous stretches of rows (blank lines between rows may stay: Arrow skips them).
        gap = np.flatnonzero(start[1:] != after[:-1])
        if not len(gap):
            body: bytes | memoryview = memoryview(data)[int(start[0]) : int(after[-1])]
        else:
            cut_start = np.concatenate([[start[0]], start[gap + 1]])
            cut_end = np.concatenate([after[gap], [after[-1]]])
            view = memoryview(data)
            body = b"".join(view[int(s) : int(e)] for s, e in zip(cut_start, cut_end, strict=True))
        bad: list[int] = []

        def count_invalid(row: pacsv.InvalidRow) -> str:
            if row.number is None:  # only with threads; we never use them here
                raise RuntimeError("Arrow gave no row number for an invalid row")
            bad.append(row.number - 1)
            return "skip"

        table = pacsv.read_csv(
            pa.py_buffer(body),
            read_options=pacsv.ReadOptions(
                column_names=names, use_threads=False, block_size=max(len(body), 1 << 20) + 1
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=self.delimiter,
                newlines_in_values=True,
                invalid_row_handler=count_invalid,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.binary() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        accepted[bad] = False
        if table.num_rows != int(accepted.sum()):
            raise RuntimeError(
                f"{self.label}: rows counted ({int(accepted.sum())}) and rows parsed "
                f"({table.num_rows}) differ"
            )
        return table, accepted


def _array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    return column


def _with_empty_rows(values: pa.Array, present: np.ndarray) -> pa.Array:
    """``values`` spread over the rows where ``present`` is True, with empty values in the
    other rows. Only the offsets are rebuilt: the bytes are shared, not copied."""
    if values.null_count:  # never from the reader (fields are never null); kept exact
        return _with_empty_rows_by_take(values, present)
    buffers = values.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32, count=values.offset + len(values) + 1)
    offsets = offsets[values.offset :]
    spread = np.empty(len(present) + 1, dtype=np.int32)
    spread[0] = offsets[0]
    spread[1:] = offsets[np.cumsum(present)]  # a row ends where the last value so far ends
    shared = [None, pa.py_buffer(spread), buffers[2]]
    return pa.Array.from_buffers(values.type, len(present), shared)


def _with_empty_rows_by_take(values: pa.Array, present: np.ndarray) -> pa.Array:
    """``_with_empty_rows`` by copying (for arrays with nulls)."""
    filler = pa.concat_arrays([values, pa.array([b""], values.type)])
    position = np.full(len(present), len(values), dtype=np.int64)
    position[present] = np.arange(len(values))
    return filler.take(pa.array(position))


def _slices(data: bytes, starts: np.ndarray, ends: np.ndarray) -> pa.Array:
    """data[starts[i]:ends[i]] for each i as a binary array (one copy of the bytes)."""
    n = len(starts)
    if not n:
        return pa.array([], pa.binary())
    bounds = np.empty(2 * n, dtype=np.int64)
    bounds[0::2] = starts
    bounds[1::2] = ends
    offsets = pa.py_buffer(bounds.astype(np.int32))
    everything = pa.Array.from_buffers(pa.binary(), 2 * n - 1, [None, offsets, pa.py_buffer(data)])
    return everything.take(pa.array(np.arange(0, 2 * n - 1, 2)))


def rechunk(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Regroup record batches into batches of exactly ``rows`` rows (the last may be short)."""
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches:
        pending.append(batch)
        pending_rows += batch.num_rows
        if pending_rows < rows:
            continue
        table = pa.Table.from_batches(pending).combine_chunks()
        offset = 0
        while table.num_rows - offset >= rows:
            yield table.slice(offset, rows).to_batches()[0]
            offset += rows
        rest = table.slice(offset)
        pending = rest.to_batches() if rest.num_rows else []
        pending_rows = rest.num_rows
    if pending_rows:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


def prefetch(items: Iterator[pa.RecordBatch], depth: int = 2) -> Iterator[pa.RecordBatch]:
    """Produce items on a background thread so reading overlaps with processing.

    Arrow and most numpy work release the GIL, so on two cores this hides most read time.
    Errors raised by the producer are re-raised in the consumer.
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(done)
        except BaseException as error:  # handed to the consumer, not lost
            slots.put(error)

    worker = threading.Thread(target=produce, name="csv-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)


def read_all(source: Source, label: str) -> tuple[CsvStream, pa.Table]:
    """A small file (labels) read whole: the stream and all its rows as one table."""
    stream = open_csv(source, label)
    batches = list(stream.batches)
    if batches:
        return stream, pa.Table.from_batches(batches)
    names = [f"c{i}" for i in range(len(stream.header))]
    columns = {n: pa.array([], pa.binary()) for n in names}
    columns |= {LINE: pa.array([], pa.int64()), REJECT: pa.array([], pa.int8())}
    columns |= {SPANS: pa.array([], pa.bool_()), RAW: pa.array([], pa.binary())}
    return stream, pa.table(columns)


# Characters written as \xNN in an escaped raw row: a backslash (so the escape is
# reversible) and control characters other than tab and line breaks.
_NEEDS_ESCAPE = r"[\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"


def escape_raw(raw: pa.Array) -> pa.Array:
    """Raw row bytes as text that turns back into exactly those bytes (``unescape_raw``).

    Valid UTF-8 without control characters or backslashes is kept as it is (tabs and line
    breaks inside quoted fields included). Otherwise a backslash is written as two, and a
    control byte (other than tab, CR, LF) or a byte that is not UTF-8 as ``\\xNN``.
    """
    try:
        text = pc.cast(raw, pa.string())
        plain = ~np.asarray(pc.fill_null(pc.match_substring_regex(text, _NEEDS_ESCAPE), True))
    except pa.ArrowInvalid:  # some row is not UTF-8: its bytes are escaped
        text = pa.array([v.decode("utf-8", "replace") for v in raw.to_pylist()], pa.string())
        plain = np.zeros(len(raw), dtype=bool)
    if plain.all():
        return text
    out = text.to_pylist()
    for i in np.flatnonzero(~plain).tolist():
        out[i] = _escape_bytes(raw[i].as_py())
    return pa.array(out, pa.string())


def _escape_bytes(value: bytes) -> str:
    parts = []
    for char in value.decode("utf-8", "surrogateescape"):
        code = ord(char)
        if char == "\\":
            parts.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8
            parts.append(f"\\x{code - 0xDC00:02x}")
        elif (code < 0x20 and char not in "\t\n\r") or code == 0x7F:
            parts.append(f"\\x{code:02x}")
        else:
            parts.append(char)
    return "".join(parts)


def unescape_raw(text: str) -> bytes:
    """The exact bytes of a row from its escaped text (the inverse of ``escape_raw``)."""
    if "\\" not in text:
        return text.encode("utf-8")
    out, i = bytearray(), 0
    while i < len(text):
        if text.startswith("\\\\", i):
            out += b"\\"
            i += 2
        elif text.startswith("\\x", i):
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        else:
            out += text[i].encode("utf-8")
            i += 1
    return bytes(out)
