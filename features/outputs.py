"""How every CSV we publish is written (features, training set, quarantines, predictions).

Every CSV is written by ``csv_bytes`` (every engine and the blob flow use it; rows already
in Arrow, such as a partials store's quarantine, go through ``text_rows_bytes``, which
writes the same cells), so every CSV we publish:

* reads back to exactly the cells we meant: a cell holding the delimiter, a quote, CR or
  LF is quoted (Python 3.11's csv writer leaves a bare CR unquoted, which splits the row
  for any reader);
* is safe to open in a spreadsheet (OWASP "CSV injection"): a text cell that starts with
  ``=``, ``@``, a tab, a CR, or ``+``/``-`` followed by anything but a plain number gets a
  leading ``'``, which spreadsheets take as "this is text". A cell that already starts with
  ``'`` gets one more, so the rule is reversible: ``read_back`` strips exactly one leading
  ``'`` from every cell that has one and returns the exact values.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.definitions import FEATURES

MONEY_COLUMNS = tuple(f.name for f in FEATURES if f.kind == "money")
TEXT_MARK = "'"
# First characters that make a spreadsheet evaluate a cell (and the mark itself).
FORMULA_START = ("=", "@", "\t", "\r", TEXT_MARK)
SIGNS = ("+", "-")
# A sign followed by a plain number is a number, not a formula: -12.50 stays -12.50.
PLAIN_NUMBER = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
NEEDS_QUOTES = '[,"\r\n]'


def neutralise(values: pa.Array) -> pa.Array:
    """Text cells made inert for spreadsheets (module doc); other cells unchanged."""
    first = pc.utf8_slice_codeunits(values, 0, 1)
    mark = np.asarray(pc.fill_null(pc.is_in(first, pa.array(FORMULA_START)), False))
    signed = np.asarray(pc.fill_null(pc.is_in(first, pa.array(SIGNS)), False))
    if signed.any():  # a sign is a formula unless a plain number follows
        rows = np.flatnonzero(signed)
        number = pc.match_substring_regex(values.take(pa.array(rows)), PLAIN_NUMBER)
        mark[rows[~np.asarray(pc.fill_null(number, False))]] = True
    return _changed(values, mark, lambda chosen: pc.binary_join_element_wise(TEXT_MARK, chosen, ""))


def _changed(values: pa.Array, mask: np.ndarray, change: Callable[[pa.Array], pa.Array]):
    """``values`` with ``change`` applied where ``mask`` is True (only those are touched)."""
    if not mask.any():
        return values
    chosen = pa.array(mask)
    return pc.replace_with_mask(values, chosen, change(values.filter(chosen)))


def restore(cell: str) -> str:
    """The value a neutralised cell stands for (inverse of ``neutralise``)."""
    return cell[1:] if cell.startswith(TEXT_MARK) else cell


def quote(values: pa.Array) -> pa.Array:
    """RFC 4180 quoting where needed: delimiter, quote, CR or LF inside."""
    needs = np.asarray(pc.fill_null(pc.match_substring_regex(values, NEEDS_QUOTES), False))
    return _changed(
        values,
        needs,
        lambda chosen: pc.binary_join_element_wise(
            '"', pc.replace_substring(chosen, '"', '""'), '"', ""
        ),
    )


def _text_cells(values: pd.Series) -> pa.Array:
    """Text cells; a column of ``str`` (and missing values) is read by Arrow directly, any
    other objects are written as ``str`` gives them."""
    try:
        text = pa.array(values.to_numpy(dtype=object), from_pandas=True)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        text = None
    if text is None or not (pa.types.is_string(text.type) or pa.types.is_null(text.type)):
        text = pa.array(values.astype(object).where(values.notna(), "").astype(str), pa.string())
    return _safe_text(text.cast(pa.string()))


def _safe_text(text: pa.Array) -> pa.Array:
    """Text cells as written: missing ones empty, then neutralised and quoted."""
    return quote(neutralise(pc.fill_null(text, "")))


def _python_str(values: np.ndarray) -> pa.Array:
    """``str`` of each value (the exact text pandas' CSV writer gave)."""
    return pa.array([str(v) for v in values.tolist()], pa.string())


def _int_cells(values: np.ndarray) -> pa.Array:
    """Integers as ``str`` writes them (Arrow's cast gives the same digits)."""
    return pc.cast(pa.array(values), pa.string())


# Python's repr writes floats from 1e-4 up to 1e16 without an exponent.
_PLAIN_FLOAT = (1e-4, 1e16)


def _float_cells(values: np.ndarray) -> pa.Array:
    """Floats as ``str`` writes them (``repr``: shortest round trip, ``1.0`` not ``1``).

    Arrow's cast gives the same shortest digits; it writes ``1`` where Python writes
    ``1.0`` (fixed here), and picks exponents by other rules, so any value either writes
    with an exponent goes to Python."""
    size = np.abs(values)
    text = pc.cast(pa.array(values), pa.string())
    plain = (size == 0) | ((size >= _PLAIN_FLOAT[0]) & (size < _PLAIN_FLOAT[1]))
    plain &= ~np.asarray(pc.match_substring(text, "e"))
    whole = pc.invert(pc.match_substring(text, "."))
    text = pc.if_else(whole, pc.binary_join_element_wise(text, ".0", ""), text)
    if not plain.all():
        rows = np.flatnonzero(~plain)
        text = pc.replace_with_mask(text, pa.array(~plain), _python_str(values[rows]))
    return text


def _money_cells(values: np.ndarray) -> pa.Array:
    """Floats as ``"{:.2f}".format`` writes them, exactly.

    Pence are ``rint(x * 100)``; that can differ from rounding the exact binary value only
    when ``x * 100`` lies within rounding error of a half penny, and those values (and
    non-finite ones, and any beyond 1e13, where the product loses precision) go to Python.
    The sign comes from the float itself, so ``-0.001`` is ``-0.00`` as in Python.
    """
    finite = np.isfinite(values) & (np.abs(values) < 1e13)
    scaled = np.where(finite, values, 0.0) * 100
    pence = np.rint(scaled)
    near_half = np.abs(np.abs(scaled - np.trunc(scaled)) - 0.5) < 1e-3
    exact = finite & ~near_half
    whole = np.where(exact, np.abs(pence), 0).astype(np.int64)
    units = pc.cast(pa.array(whole // 100), pa.string())
    cents = pc.utf8_lpad(pc.cast(pa.array(whole % 100), pa.string()), 2, "0")
    sign = pa.array(np.where(np.signbit(values), "-", ""), pa.string())
    text = pc.binary_join_element_wise(sign, units, ".", cents, "")
    if not exact.all():
        rows = np.flatnonzero(~exact)
        python = pa.array([f"{v:.2f}" for v in values[rows].tolist()], pa.string())
        text = pc.replace_with_mask(text, pa.array(~exact), python)
    return text


def _cells(values: pd.Series, name: str) -> pa.Array:
    """One column as CSV cells: money at exactly 2 dp, other numbers as pandas writes them,
    text made safe (module doc). Missing values are empty cells."""
    dtype = values.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "iuf":
        array = values.to_numpy()
        if dtype.kind in "iu":
            cells = _int_cells(array)
            # "{:.2f}" of an integer is its digits and ".00".
            return pc.binary_join_element_wise(cells, ".00", "") if name in MONEY_COLUMNS else cells
        array = array.astype(np.float64)  # str() of a float32 is that of the double
        if name in MONEY_COLUMNS:  # missing money is written "nan", as "{:.2f}" does
            return _money_cells(array)
        missing = np.isnan(array)
        cells = _float_cells(np.where(missing, 0.0, array))
        return pc.if_else(pa.array(missing), "", cells) if missing.any() else cells
    if isinstance(dtype, np.dtype) and dtype.kind == "b":
        return pa.array(np.where(values.to_numpy(), "True", "False"), pa.string())
    if name in MONEY_COLUMNS and pd.api.types.is_numeric_dtype(values):
        return pa.array(values.map("{:.2f}".format), pa.string())
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        text = values.astype(object).where(values.notna(), "").astype(str)
        return pa.array(text, pa.string())
    return _text_cells(values)


def csv_bytes(frame: pd.DataFrame, header: bool = True) -> bytes:
    """The frame as UTF-8 CSV, LF line ends, every line terminated (module doc)."""
    parts = []
    if header:
        names = quote(neutralise(pa.array([str(c) for c in frame.columns], pa.string())))
        parts.append((",".join(names.to_pylist()) + "\n").encode("utf-8"))
    if len(frame) and frame.shape[1]:
        cells = [_cells(frame.iloc[:, i], str(name)) for i, name in enumerate(frame.columns)]
        parts.append(_lines_bytes(cells))
    elif len(frame):
        parts.append(b"\n" * len(frame))
    return b"".join(parts)


def text_rows_bytes(table: pa.Table) -> bytes:
    """Rows of a table of text columns as CSV lines, no header: the bytes ``csv_bytes``
    writes for the same rows as a frame, without a detour through Python strings."""
    if not table.num_rows or not table.num_columns:
        return b"\n" * table.num_rows
    if not all(pa.types.is_string(f.type) for f in table.schema):
        raise TypeError("text_rows_bytes takes text columns only")
    return _lines_bytes([_safe_text(column.combine_chunks()) for column in table.columns])


def _lines_bytes(cells: list[pa.Array]) -> bytes:
    """Columns of cells as CSV lines: comma-separated, each line ended by LF."""
    lines = pc.binary_join_element_wise(*cells, ",") if len(cells) > 1 else cells[0]
    return _data_bytes(pc.binary_join_element_wise(lines, "", "\n"))


def _data_bytes(values: pa.Array) -> bytes:
    """All values of a string array back to back (a slice of its data buffer)."""
    _, offsets, data = values.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int32, count=values.offset + len(values) + 1)
    first, last = int(bounds[values.offset]), int(bounds[-1])
    return data.slice(first, last - first).to_pybytes()


def csv_rows(frame: pd.DataFrame, header: bool = True) -> str:
    """The frame as CSV text, LF line ends, every line terminated (module doc)."""
    return csv_bytes(frame, header).decode("utf-8")


def to_csv_text(frame: pd.DataFrame) -> str:
    """A whole table as safe CSV text (header included)."""
    return csv_rows(frame)


def read_back(source: str | Path | BinaryIO) -> pd.DataFrame:
    """A CSV we wrote, as the exact text values we meant (every cell a string)."""
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    frame.columns = [restore(c) for c in frame.columns]
    for i in range(frame.shape[1]):
        column = frame.iloc[:, i]
        marked = column.str.startswith(TEXT_MARK)
        if marked.any():
            frame.iloc[:, i] = np.where(marked, column.str[1:], column)
    return frame


class CsvTableWriter:
    """Appends rows to a CSV as they arrive, so they never pile up in memory (the
    quarantine, streamed while a run reads). The header is written at once."""

    def __init__(self, handle: BinaryIO, columns: tuple[str, ...]) -> None:
        self._handle = handle
        self._columns = list(columns)
        handle.write(csv_bytes(pd.DataFrame(columns=self._columns)))

    def __call__(self, frame: pd.DataFrame) -> None:
        if list(frame.columns) != self._columns:
            raise ValueError("rows must have the file's columns")
        self._handle.write(csv_bytes(frame, header=False))

    def append_table(self, table: pa.Table) -> None:
        """Rows given as an Arrow table of the file's text columns (no pandas detour)."""
        if table.column_names != self._columns:
            raise ValueError("rows must have the file's columns")
        self._handle.write(text_rows_bytes(table))

    def close(self) -> None:
        """Nothing to finish: every row is written as it arrives."""
