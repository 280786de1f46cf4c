"""Writing the job's outputs to a directory: CSVs, the report, and the quarantine file.

Every CSV is written by ``csv_rows`` (every engine uses it), so every CSV we publish:

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

import json
import os
from pathlib import Path
from typing import BinaryIO, TextIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.definitions import FEATURES
from features.pipeline import QUARANTINE_COLUMNS, PipelineResult
from features.report import render_markdown

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


class QuarantineWriter:
    """Appends quarantined rows to a CSV as they arrive, so they never pile up in memory.

    The header is written at once and is always ``QUARANTINE_COLUMNS``.
    """

    def __init__(self, handle: TextIO, columns: tuple[str, ...] = QUARANTINE_COLUMNS) -> None:
        self._handle = handle
        self._columns = list(columns)
        handle.write(csv_rows(pd.DataFrame(columns=self._columns)))

    def __call__(self, frame: pd.DataFrame) -> None:
        if list(frame.columns) != self._columns:
            raise ValueError("quarantine rows must have the quarantine file's columns")
        self._handle.write(csv_rows(frame, header=False))

    def finish(self, columns: list[str] | None = None) -> None:
        """Kept for callers of the earlier API: the header is already written."""


def output_frames(result: PipelineResult) -> dict[str, pd.DataFrame]:
    """The tables a run publishes, by file stem (every engine writes the same set)."""
    frames = {"features": result.features}
    if result.training_set is not None:
        frames["training_set"] = result.training_set
    if result.label_quarantine is not None:
        frames["labels_quarantine"] = result.label_quarantine
    return frames


def write_outputs(result: PipelineResult, out_dir: Path) -> list[Path]:
    """Write features, training set (if labelled) and the report. Returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, frame in output_frames(result).items():
        written.append(_write_atomic(out_dir / f"{stem}.csv", to_csv_text(frame)))
    report = json.dumps(result.report, indent=2, ensure_ascii=False) + "\n"
    written.append(_write_atomic(out_dir / "dq_report.json", report))
    written.append(_write_atomic(out_dir / "dq_report.md", render_markdown(result.report)))
    return written


def _write_atomic(path: Path, text: str) -> Path:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return path
