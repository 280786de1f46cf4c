"""Description normalisation and whole-word merchant categories."""

from __future__ import annotations

import pandas as pd
import pytest

from features.text import CATEGORIES, describe, load_lexicon, normalise


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
