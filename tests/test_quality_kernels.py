"""The byte-wise fast paths of ``features.quality`` decide exactly what the patterns decide.

Amounts of the common shape and timestamps of the plain ISO layouts are read with numpy
instead of regular expressions; the calendar comes from a table instead of arithmetic.
Each is checked against the general path (``AMOUNT_PATTERN`` and ``ISO_TIMESTAMP``, the
rules the other engines translate) and against Python's own calendar, on generated text
that is mostly almost-valid.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from features import quality
from features.quality import _amounts_by_pattern, days_from_civil, parse_amount_pence

amount_text = st.one_of(
    st.text("0123456789.-+£, ", max_size=18),
    st.builds(
        lambda sign, units, point, cents, pad: f"{pad}{sign}{units}{point}{cents}{pad}",
        st.sampled_from(["", "-", "+", "--", "£", "-£"]),
        st.integers(0, 10**15).map(str),
        st.sampled_from([".", "", ",", ".."]),
        st.sampled_from(["00", "5", "99", "", "123", "1a"]),
        st.sampled_from(["", " ", "\t"]),
    ),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(amount_text, min_size=1, max_size=20))
@example(["-85.00", "0.00", "-0.00", "+1.50", "1.5", ".50", "-.50", "1,234.56", "£45.50", "-"])
@example(["9999999999999.99", "-999999999999.99", "0000000000012.50", "+000000000001.00"])
def test_fast_amounts_are_the_patterns_amounts(values: list[str]) -> None:
    column = pa.array(values, pa.string())
    fast = parse_amount_pence(column)
    reference = _amounts_by_pattern(pc.utf8_trim_whitespace(column))
    for got, expected in zip(fast, reference, strict=True):
        assert got.tolist() == expected.tolist(), values


def _digits(size: int) -> st.SearchStrategy[str]:
    return st.text("0123456789", min_size=size, max_size=size)


plain_iso = st.builds(
    lambda y, m, d, sep, h, mi, s, shape: (
        f"{y}-{m}-{d}" + ("" if shape == 0 else f"{sep}{h}:{mi}" + ("" if shape == 1 else f":{s}"))
    ),
    _digits(4),
    st.one_of(_digits(2), st.sampled_from(["01", "02", "12", "13", "00"])),
    st.one_of(_digits(2), st.sampled_from(["28", "29", "30", "31", "00"])),
    st.sampled_from(["T", " ", "t", "_"]),
    _digits(2),
    _digits(2),
    _digits(2),
    st.integers(0, 2),
)
mutated = st.builds(
    lambda text, at, char: text[:at] + char + text[at + 1 :],
    plain_iso,
    st.integers(0, 18),
    st.sampled_from(["/", "x", " ", "-", ":", "9", "\u0661"]),
)


def python_reading(text: str) -> int | None:
    """Wall-clock seconds of a plain ISO timestamp by Python's calendar, None if invalid."""
    found = re.fullmatch(
        r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?)?",
        text.strip(),
    )
    if not found:
        return None
    year, month, day, hour, minute, second = (int(g or 0) for g in found.groups())
    # Python has no year 0; it is 2000 years (5 cycles of 146,097 days) before 2000.
    shift = 5 * 146_097 if year == 0 else 0
    year = year or 2000
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
        return None
    days = (datetime(year, month, day) - datetime(1970, 1, 1)).days - shift
    if hour > 23 or minute > 59 or second > 59:
        return None
    return days * 86_400 + hour * 3600 + minute * 60 + second


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(plain_iso, mutated), min_size=1, max_size=20))
@example(["2024-02-29T10:00:00", "2025-02-29", "2100-02-29", "2000-02-29 23:59", "0000-02-29"])
def test_plain_iso_layouts_read_as_the_calendar_says(values: list[str]) -> None:
    seconds, missing, invalid, _ = quality.parse_timestamp(pa.array(values, pa.string()))
    for i, text in enumerate(values):
        expected = python_reading(text)
        if expected is not None:
            assert not invalid[i] and int(seconds[i]) == expected, text
        elif not re.fullmatch(quality.UK_TIMESTAMP, text.strip()):
            assert invalid[i] or missing[i], text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(plain_iso, mutated), min_size=1, max_size=20))
def test_fast_layouts_agree_with_the_iso_pattern(values: list[str]) -> None:
    column = pa.array(values, pa.string())
    fast = quality.parse_timestamp(column)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(quality, "PLAIN_ISO_LAYOUTS", ())
        general = quality.parse_timestamp(column)
    for got, expected in zip(fast, general, strict=True):
        assert got.tolist() == expected.tolist(), values


def test_calendar_table_is_the_arithmetic() -> None:
    rng = np.random.default_rng(5)
    year = rng.integers(0, 10_000, 200_000)
    month = rng.integers(1, 14, 200_000)
    assert np.array_equal(
        quality.month_starts()[year, month], days_from_civil(year, month, np.ones_like(year))
    )
