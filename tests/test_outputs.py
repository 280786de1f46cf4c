"""The vectorised CSV writer writes exactly the bytes of the plain one it replaced.

``plain_csv`` is the writer as it was (every number through Python's ``str`` or
``"{:.2f}".format``, every line joined in Python); ``features.outputs.csv_bytes`` must give
byte-identical files for every kind of column our tables hold, including the floats where
Arrow and Python disagree on the notation and the money values a half penny from rounding
the other way. What makes a cell safe (quoting, formula marks) is tested in
``test_hostile_round2.py``; this file only pins the bytes.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from features.outputs import (
    MONEY_COLUMNS,
    CsvTableWriter,
    csv_bytes,
    csv_rows,
    neutralise,
    quote,
    read_back,
)

MONEY = MONEY_COLUMNS[0]


def plain_cells(values: pd.Series, name: str) -> list[str]:
    if name in MONEY_COLUMNS and pd.api.types.is_numeric_dtype(values):
        return list(values.map("{:.2f}".format))
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return list(values.astype(object).where(values.notna(), "").astype(str))
    text = pa.array(values.astype(object).where(values.notna(), "").astype(str), pa.string())
    return quote(neutralise(text)).to_pylist()


def plain_csv(frame: pd.DataFrame, header: bool = True) -> bytes:
    lines = []
    if header:
        names = quote(neutralise(pa.array([str(c) for c in frame.columns], pa.string())))
        lines.append(",".join(names.to_pylist()))
    columns = [plain_cells(frame.iloc[:, i], str(c)) for i, c in enumerate(frame.columns)]
    lines.extend(",".join(row) for row in zip(*columns, strict=True))
    return "".join(f"{line}\n" for line in lines).encode("utf-8")


floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1e7, 1e7),
    st.integers(-(10**9), 10**9).map(lambda p: p / 100),  # pence as pounds
    st.integers(-(10**9), 10**9).map(lambda p: (p + 0.5) / 100),  # half pennies
    st.sampled_from([0.0, -0.0, 1e-4, 9.99e-5, 1e15, 1e16, 9999999999999998.0, 0.3275]),
)
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=10)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(floats, floats, st.integers(-(2**63), 2**63 - 1), st.booleans(), text),
        min_size=1,
        max_size=30,
    ),
    header=st.booleans(),
)
@example(rows=[(1.115, 0.125, 0, True, "=1")], header=True)
@example(rows=[(-0.001, 2.675, -5, False, "a,b")], header=False)
def test_fast_writer_gives_the_plain_writers_bytes(rows, header):
    money, ratio, count, flag, name = zip(*rows, strict=True)
    with np.errstate(over="ignore"):
        ratio32 = np.array(ratio, dtype=np.float32)
    frame = pd.DataFrame(
        {
            "customer_id": list(name),
            MONEY: list(money),
            "rent_to_income": list(ratio),
            "fee_count": np.array(count, dtype=np.int64),
            "has_rent": list(flag),
            "ratio32": ratio32,
            "money_int": np.array([c % 10**6 for c in count], dtype=np.int64),
        }
    ).rename(columns={"money_int": MONEY_COLUMNS[1]})
    assert csv_bytes(frame, header) == plain_csv(frame, header)
    assert csv_rows(frame, header) == plain_csv(frame, header).decode("utf-8")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(text, st.none(), st.just(math.nan), st.integers()), min_size=1))
def test_text_columns_of_any_objects_match(values):
    frame = pd.DataFrame({"description": pd.Series(values, dtype=object)})
    assert csv_bytes(frame) == plain_csv(frame)


def test_streamed_quarantine_matches_and_reads_back():
    frame = pd.DataFrame(
        {"transaction_id": ["T1", None, "=cmd"], "raw_line": ['a,"b"', "\r", "-12.50"]}
    )
    out = io.BytesIO()
    writer = CsvTableWriter(out, tuple(frame.columns))
    writer(frame)
    writer(frame.iloc[:1])
    writer.close()
    assert out.getvalue() == plain_csv(frame) + plain_csv(frame.iloc[:1], header=False)
    back = read_back(io.BytesIO(out.getvalue()))
    assert back["transaction_id"].tolist() == ["T1", "", "=cmd", "T1"]
    assert back["raw_line"].tolist() == ['a,"b"', "\r", "-12.50", 'a,"b"']


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.tuples(st.one_of(text, st.none()), st.one_of(text, st.none())), max_size=20)
)
def test_rows_given_as_arrow_text_write_the_bytes_of_the_same_frame(rows):
    """``append_table`` (the incremental build publishes stored quarantines with it) writes
    exactly what the frame path writes: quoting, formula marks, missing cells."""
    from features.publish import ParquetTableWriter

    columns = ("transaction_id", "raw_line")
    table = pa.table(
        {c: pa.array([r[i] for r in rows], pa.string()) for i, c in enumerate(columns)}
    )
    by_frame, by_table = io.BytesIO(), io.BytesIO()
    CsvTableWriter(by_frame, columns)(table.to_pandas())
    CsvTableWriter(by_table, columns).append_table(table)
    assert by_table.getvalue() == by_frame.getvalue() == plain_csv(table.to_pandas())

    parquet_frame, parquet_table = io.BytesIO(), io.BytesIO()
    frame_writer = ParquetTableWriter(parquet_frame, columns)
    frame_writer(table.to_pandas())
    frame_writer.close()
    table_writer = ParquetTableWriter(parquet_table, columns)
    table_writer.append_table(table)
    table_writer.close()
    assert pq.read_table(parquet_table).equals(pq.read_table(parquet_frame))


def test_rows_given_as_arrow_must_be_the_files_text_columns():
    out = io.BytesIO()
    writer = CsvTableWriter(out, ("a", "b"))
    with pytest.raises(ValueError, match="the file's columns"):
        writer.append_table(pa.table({"b": ["x"], "a": ["y"]}))
    with pytest.raises(TypeError, match="text columns only"):
        writer.append_table(pa.table({"a": ["x"], "b": [1]}))
