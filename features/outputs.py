"""How every CSV we publish is written (features, training set, quarantines, predictions).

Every CSV is written by ``csv_rows`` (every engine and the blob flow use it), so every CSV
we publish:

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
    risky = pc.is_in(first, pa.array(FORMULA_START))
    signed = pc.and_(
        pc.is_in(first, pa.array(SIGNS)),
        pc.invert(pc.match_substring_regex(values, PLAIN_NUMBER)),
    )
    mark = pc.fill_null(pc.or_(risky, signed), False)
    return pc.if_else(mark, pc.binary_join_element_wise(TEXT_MARK, values, ""), values)


def restore(cell: str) -> str:
    """The value a neutralised cell stands for (inverse of ``neutralise``)."""
    return cell[1:] if cell.startswith(TEXT_MARK) else cell


def quote(values: pa.Array) -> pa.Array:
    """RFC 4180 quoting where needed: delimiter, quote, CR or LF inside."""
    needs = pc.match_substring_regex(values, NEEDS_QUOTES)
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(values, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, values)


def _text_cells(values: pd.Series) -> pa.Array:
    text = pa.array(values.astype(object).where(values.notna(), "").astype(str), pa.string())
    return quote(neutralise(text))


def _cells(values: pd.Series, name: str) -> pa.Array:
    """One column as CSV cells: money at exactly 2 dp, other numbers as pandas writes them,
    text made safe (module doc). Missing values are empty cells."""
    if name in MONEY_COLUMNS and pd.api.types.is_numeric_dtype(values):
        return pa.array(values.map("{:.2f}".format), pa.string())
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        text = values.astype(object).where(values.notna(), "").astype(str)
        return pa.array(text, pa.string())
    return _text_cells(values)


def csv_rows(frame: pd.DataFrame, header: bool = True) -> str:
    """The frame as CSV text, LF line ends, every line terminated (module doc)."""
    lines = []
    if header:
        names = quote(neutralise(pa.array([str(c) for c in frame.columns], pa.string())))
        lines.append(",".join(names.to_pylist()))
    if len(frame):
        cells = [_cells(frame.iloc[:, i], str(name)) for i, name in enumerate(frame.columns)]
        joined = cells[0] if len(cells) == 1 else pc.binary_join_element_wise(*cells, ",")
        lines.extend(joined.to_pylist())
    return "".join(f"{line}\n" for line in lines)


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
        handle.write(csv_rows(pd.DataFrame(columns=self._columns)).encode("utf-8"))

    def __call__(self, frame: pd.DataFrame) -> None:
        if list(frame.columns) != self._columns:
            raise ValueError("rows must have the file's columns")
        self._handle.write(csv_rows(frame, header=False).encode("utf-8"))

    def close(self) -> None:
        """Nothing to finish: every row is written as it arrives."""
