"""Streaming CSV reading: every field as text, in bounded chunks, nothing lost.

The header is read by us (to find the delimiter, drop a UTF-8 byte-order mark and map
aliases); the body is parsed by Arrow's multi-threaded CSV reader. Rows with the wrong
number of fields are not skipped silently: they are returned as malformed rows.
"""

from __future__ import annotations

import csv
import io
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

from features.schema import InputError

DELIMITERS = (",", ";", "\t", "|")
HEADER_PEEK_BYTES = 1 << 16
# Arrow needs a whole row inside one block: 4 MiB allows multi-megabyte descriptions while
# keeping the reader's read-ahead (several blocks in flight) small.
BLOCK_BYTES = 4 << 20
BOM = b"\xef\xbb\xbf"

Source = str | Path | BinaryIO


def decode_utf8(batch: pa.RecordBatch) -> tuple[list[pa.Array], np.ndarray]:
    """Columns as text, and a mask of rows holding bytes that are not UTF-8.

    The fast path validates whole columns at once; only a chunk that fails is walked row
    by row, and its bad values become text with U+FFFD replacement characters.
    """
    bad = np.zeros(batch.num_rows, dtype=bool)
    try:
        return [pc.cast(column, pa.string()) for column in batch.columns], bad
    except pa.ArrowInvalid:
        pass
    columns = []
    for column in batch.columns:
        values = column.to_pylist()
        decoded = []
        for i, value in enumerate(values):
            try:
                decoded.append(value.decode("utf-8"))
            except UnicodeDecodeError:
                bad[i] = True
                decoded.append(value.decode("utf-8", "replace"))
        columns.append(pa.array(decoded, pa.string()))
    return columns, bad


def escaped_line(batch: pa.RecordBatch, row: int, delimiter: str) -> str:
    """A raw row rebuilt from its exact bytes, with non-UTF-8 bytes backslash-escaped."""
    fields = [column[row].as_py() or b"" for column in batch.columns]
    return delimiter.encode().join(fields).decode("utf-8", "backslashreplace")


class _Prefixed(io.RawIOBase):
    """A binary stream that replays bytes already read before the rest of ``stream``."""

    def __init__(self, prefix: bytes, stream: BinaryIO) -> None:
        self._prefix = prefix
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@dataclass
class CsvStream:
    """An opened CSV: its header, its delimiter, and its body as Arrow record batches."""

    header: list[str]
    delimiter: str
    batches: Iterator[pa.RecordBatch]
    malformed: list[str] = field(default_factory=list)  # raw text of rejected rows


def _split_header(first_bytes: bytes, label: str) -> tuple[str, bytes]:
    if not first_bytes.strip():
        raise InputError(f"{label}: the file is empty")
    if first_bytes.startswith(BOM):
        first_bytes = first_bytes[len(BOM) :]
    end = first_bytes.find(b"\n")
    if end < 0:
        raise InputError(f"{label}: has a header but no data rows")
    try:
        header_line = first_bytes[:end].decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        raise InputError(
            f"{label}: the header is not valid UTF-8 text; is this a CSV file?"
        ) from None
    return header_line, first_bytes[end + 1 :]


def sniff_delimiter(header_line: str) -> str:
    """The candidate delimiter that splits the header into the most fields."""
    return max(DELIMITERS, key=lambda d: (header_line.count(d), d == ","))


def open_csv(source: Source, label: str) -> CsvStream:
    """Open a CSV file or binary stream for chunked reading, or raise ``InputError``."""
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{label}: file not found")
        stream: BinaryIO = path.open("rb")
    else:
        stream = source
    first = stream.read(HEADER_PEEK_BYTES)
    header_line, rest = _split_header(first, label)
    if b"\x00" in first:
        raise InputError(f"{label}: contains NUL bytes; this is not a text CSV file")
    delimiter = sniff_delimiter(header_line)
    header = next(csv.reader([header_line], delimiter=delimiter))
    if not rest.strip():
        rest += stream.read(HEADER_PEEK_BYTES)
        if not rest.strip():
            raise InputError(f"{label}: has a header but no data rows")
    malformed: list[str] = []

    def keep_malformed(row: pacsv.InvalidRow) -> str:
        malformed.append(row.text or "")
        return "skip"

    names = [f"c{i}" for i in range(len(header))]

    def refuse(error: pa.ArrowInvalid) -> InputError:
        message = str(error).splitlines()[0]
        if "utf8" in message.lower():
            return InputError(f"{label}: not valid UTF-8 text ({message})")
        return InputError(f"{label}: cannot be parsed as CSV ({message})")

    try:
        reader = pacsv.open_csv(
            _Prefixed(rest, stream),
            read_options=pacsv.ReadOptions(column_names=names, block_size=BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, newlines_in_values=True, invalid_row_handler=keep_malformed
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.binary() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as error:
        stream.close()
        raise refuse(error) from None

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        except pa.ArrowInvalid as error:
            raise refuse(error) from None
        finally:
            stream.close()

    return CsvStream(header=header, delimiter=delimiter, batches=batches(), malformed=malformed)


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
    """Produce items on a background thread so parsing overlaps with processing.

    Arrow parses without holding the GIL, so on two cores this hides most read time.
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
