"""Description normalisation and whole-word merchant categories."""

from __future__ import annotations

import re

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.text import (
    CATEGORIES,
    category_pattern,
    describe,
    describe_distinct,
    load_lexicon,
    normalise,
    normalise_all,
)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("TESCO 1234 LONDON", "tesco london"),
        ("NETFLIX.COM", "netflix com"),
        ("  Rent -- FEB/2025  ", "rent feb"),
        ("O'Neill's\tBar_42", "o neill s bar"),
        ("12345", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_normalise(raw: str | None, clean: str) -> None:
    assert normalise(raw) == clean


@pytest.mark.parametrize(
    ("description", "category", "expected"),
    [
        ("RENT FEB", "rent", True),
        ("STANDING ORDER RENT", "rent", True),
        ("PARENTPAY SCHOOL MEALS", "rent", False),
        ("RENTOKIL PEST CONTROL", "rent", False),
        ("CURRENT ACCOUNT INTEREST", "rent", False),
        ("ACME LTD PAYROLL FEB", "salary", True),
        ("WAGES WEEK 12", "salary", True),
        ("SALARYFINANCE LOAN", "salary", False),
        ("NETFLIX.COM", "netflix", True),
        ("TESCO STORES 2231", "tesco", True),
        ("TESCOMOBILE", "tesco", False),
        ("FASTER PAYMENT TO J SMITH", "transfer", True),
        ("PADDY POWER", "gambling", True),
        ("BETTER BATHROOMS", "gambling", False),
        ("UNPAID ITEM FEE", "fee", True),
        ("AIRBNB HOST FEE", "fee", False),
        ("BONUS PAYMENT", "bonus", True),
    ],
)
def test_whole_word_categories(description: str, category: str, expected: bool) -> None:
    flags = describe(pd.Series([description]))
    assert bool(flags[f"is_{category}"].iloc[0]) is expected


def test_describe_keeps_row_order_and_repeats() -> None:
    raw = pd.Series(["RENT FEB", "NETFLIX.COM", "RENT FEB", None], index=[10, 11, 12, 13])
    out = describe(raw)
    assert list(out.index) == [10, 11, 12, 13]
    assert out["description_clean"].tolist() == ["rent feb", "netflix com", "rent feb", ""]
    assert out["is_rent"].tolist() == [True, False, True, False]


def test_lexicon_is_data_with_the_brief_categories() -> None:
    lexicon = load_lexicon()
    for category in ("rent", "tesco", "netflix", "salary", "transfer"):
        assert category in CATEGORIES and lexicon[category]
    assert all(phrase == normalise(phrase) for phrases in lexicon.values() for phrase in phrases)


texts = st.one_of(st.none(), st.text(max_size=30), st.text("AbZ z9_-.'£é\tİß", max_size=30))


@settings(max_examples=300, deadline=None)
@given(st.lists(texts))
def test_arrow_normalisation_is_normalise(values: list[str | None]) -> None:
    expected = [normalise(v) for v in values]
    assert normalise_all(pa.array(values, pa.string())).to_pylist() == expected


words = st.sampled_from(
    [
        *sorted({w for p in load_lexicon().values() for phrase in p for w in phrase.split()}),
        *["rentokil", "parentpay", "x", "ltd", "Café", "12", "-", "TESCO.COM", "bet365"],
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(words, max_size=6).map(" ".join), min_size=1, max_size=30))
def test_categories_are_python_re_on_every_description(descriptions: list[str]) -> None:
    """One RE2 pass per category gives what Python's ``re`` gives, description by
    description (the rule every engine shares: ``category_pattern``)."""
    codes, table = describe_distinct(pa.array(descriptions, pa.string()))
    for category, phrases in load_lexicon().items():
        pattern = re.compile(category_pattern(phrases))
        expected = [bool(pattern.search(normalise(d))) for d in descriptions]
        assert table[f"is_{category}"].to_numpy()[codes].tolist() == expected, category
    clean = table["description_clean"].to_numpy()[codes].tolist()
    assert clean == [normalise(d) for d in descriptions]
