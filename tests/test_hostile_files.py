"""Hostile input files: each is processed with every row accounted for, or refused in one line.

The small corpus lives in tests/hostile/; large cases are generated here. Property-based
tests (hypothesis) throw random messy CSVs at the pipeline and check the invariants.
"""

from __future__ import annotations

import io
import string
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from conftest import accounted, check_count
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.cli import main
from features.pipeline import run_pipeline
from features.schema import InputError

CORPUS = Path(__file__).parent / "hostile"
NOW = datetime(2025, 3, 1, tzinfo=UTC)
HEADER = "transaction_id,customer_id,txn_timestamp,amount,txn_type,description\n"

pytestmark = pytest.mark.timeout(120)


def reasons(result) -> dict[str, str]:
    q = result.quarantine
    return dict(zip(q["transaction_id"], q["reason"], strict=True))


REFUSED = {
    "empty.csv": "transactions: the file is empty",
    "header_only.csv": "transactions: has a header but no data rows",
    "duplicate_header.csv": "columns 4 ('amount') and 5 ('amount') both mean 'amount'",
    "missing_columns.csv": "missing required column(s): timestamp",
    "headerless.csv": "missing required column(s): transaction_id, customer_id",
}

# file -> (rows_in, rows_used, rows_quarantined)
PROCESSED = {
    "semicolon.csv": (2, 2, 0),
    "tab.csv": (1, 1, 0),
    "bom_crlf.csv": (2, 2, 0),
    "quoted.csv": (4, 3, 1),  # the last line's quote never closes: that line is quarantined
    "latin1_bytes.csv": (2, 1, 1),
    "extra_columns.csv": (2, 1, 1),
    "odd_amounts.csv": (10, 3, 7),
    "odd_timestamps.csv": (11, 3, 8),
    # Issue 16 (round 2); tests/test_hostile_round2.py checks each in detail.
    "stray_quote.csv": (8, 7, 1),
    "text_after_quote.csv": (3, 2, 1),
    "bare_cr.csv": (3, 2, 1),
    "input_named_reason.csv": (3, 1, 2),
    "formula.csv": (5, 3, 2),
    "markdown.csv": (3, 1, 2),
    "iso_offsets.csv": (13, 10, 3),
    "cr_only.csv": (2, 2, 0),
    "cr_only_plain.csv": (2, 2, 0),
    "nul_row.csv": (2, 1, 1),
    "padded_amounts.csv": (4, 3, 1),
    "zulu_only.csv": (3, 1, 2),
    "key_collision.csv": (2, 1, 1),
}


def test_corpus_is_fully_covered() -> None:
    assert {p.name for p in CORPUS.glob("*.csv")} == set(REFUSED) | set(PROCESSED)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unusable_files_are_refused_in_one_line(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--transactions", str(CORPUS / name), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and REFUSED[name] in err
    assert "Traceback" not in err


@pytest.mark.parametrize("name", sorted(PROCESSED))
def test_usable_files_account_for_every_row(name: str) -> None:
    result = run_pipeline(CORPUS / name, now=NOW)
    report = result.report.to_dict()
    assert (report["rows_in"], report["rows_used"], report["rows_quarantined"]) == PROCESSED[name]
    assert accounted(report)
    assert len(result.quarantine) == report["rows_quarantined"]


def test_quoted_fields_keep_commas_quotes_and_newlines() -> None:
    result = run_pipeline(CORPUS / "quoted.csv", now=NOW)
    features = result.features.iloc[0]
    # "RENT\nFEB" normalises to "rent feb"; 'THE "RENT" SHOP' is rent by whole word too.
    assert features["has_rent"] == 1 and features["has_tesco"] == 1
    assert features["num_transactions"] == 3
    quarantined = result.quarantine.iloc[0]
    assert quarantined["reason"] == "unterminated_quote"
    assert (
        quarantined["raw_line"] == 'T4,C1,2025-02-01T13:00:00,-8.00,debit,"unterminated, but then'
    )
    assert check_count(result.report.to_dict(), "quoted_line_break") == 1  # T3's "RENT\nFEB"


def test_non_utf8_row_is_quarantined_with_its_bytes_escaped() -> None:
    result = run_pipeline(CORPUS / "latin1_bytes.csv", now=NOW)
    row = result.quarantine.iloc[0]
    assert row["reason"] == "invalid_utf8"
    assert "CAF\\xe9 LATIN1" in row["raw_line"]


def test_extra_and_duplicated_extra_columns_survive_in_quarantine() -> None:
    from features.pipeline import QUARANTINE_COLUMNS

    result = run_pipeline(CORPUS / "extra_columns.csv", now=NOW)
    assert result.report.to_dict()["transactions_file"]["extra_columns"] == ["notes", "notes"]
    q = result.quarantine
    assert list(q.columns) == list(QUARANTINE_COLUMNS)  # fixed, whatever the input
    assert q.iloc[0]["raw_line"] == "T2,,2025-02-01T10:00:00,-5.00,debit,X,c,d"


def test_odd_amounts() -> None:
    result = run_pipeline(CORPUS / "odd_amounts.csv", now=NOW)
    assert reasons(result) == {
        "T1": "invalid_amount",
        "T2": "invalid_amount",
        "T3": "invalid_amount",
        "": "malformed_row",  # 1,234.56 unquoted splits into two fields
        "T8": "invalid_amount",
        "T9": "amount_out_of_range",
        "T10": "amount_out_of_range",
    }
    features = result.features.iloc[0]
    assert features["total_credit"] == 45.50 + 1234.56
    assert features["total_debit"] == 0.0  # "-0" is a zero debit


def test_odd_timestamps() -> None:
    result = run_pipeline(CORPUS / "odd_timestamps.csv", now=NOW)
    assert reasons(result) == {
        "T1": "timestamp_out_of_range",
        "T2": "timestamp_out_of_range",
        "T3": "timestamp_out_of_range",
        "T6": "invalid_timestamp",
        "T7": "invalid_timestamp",
        "T8": "invalid_timestamp",
        "T10": "invalid_timestamp",
        "T11": "invalid_timestamp",
    }
    assert result.report.to_dict()["as_of"].startswith("2025-02-01T10:00:00")


def test_one_megabyte_description_is_processed() -> None:
    description = "RENT " + "x" * 1_000_000
    text = HEADER + f"T1,C1,2025-02-01T10:00:00,-500.00,debit,{description}\n"
    result = run_pipeline(io.BytesIO(text.encode()), now=NOW)
    assert result.report.to_dict()["rows_used"] == 1
    assert result.features.iloc[0]["has_rent"] == 1


def test_hundred_thousand_rows_for_one_customer() -> None:
    rows = 100_000
    lines = [
        f"T{i},C1,2025-01-{1 + i % 28:02d}T10:00:00,-{1 + i % 100}.{i % 100:02d},debit,SHOP"
        for i in range(rows)
    ]
    result = run_pipeline(io.BytesIO((HEADER + "\n".join(lines) + "\n").encode()), now=NOW)
    expected_pence = sum((1 + i % 100) * 100 + i % 100 for i in range(rows))
    features = result.features.iloc[0]
    assert features["num_transactions"] == rows
    assert round(-features["total_debit"] * 100) == expected_pence


# --- property-based -------------------------------------------------------------------

messy_text = st.text(alphabet=string.ascii_letters + string.digits + " .,-£\"'/:", max_size=12)
field_values = {
    "transaction_id": st.one_of(st.sampled_from(["T1", "T2", "T3", "", " T1 "]), messy_text),
    "customer_id": st.sampled_from(["C1", "C2", "C3", "", " C1"]),
    "txn_timestamp": st.one_of(
        st.sampled_from(
            ["2025-02-01T10:00:00", "2025-02-02 11:00", "03/02/2025", "2099-01-01", "", "x"]
        ),
        messy_text,
    ),
    "amount": st.one_of(
        st.decimals(min_value=-(10**7), max_value=10**7, places=2, allow_nan=False).map(str),
        st.sampled_from(["", "NaN", "inf", "1e5", "£5.00", "1,000.00", "-0", "12.345"]),
        messy_text,
    ),
    "txn_type": st.sampled_from(["debit", "credit", " Debit ", "CR", "", "refund"]),
    "description": st.one_of(
        st.sampled_from(["RENT FEB", "TESCO 12", "", "ACME PAYROLL"]), messy_text
    ),
}
rows_strategy = st.lists(st.fixed_dictionaries(field_values), min_size=1, max_size=40)


def to_csv(rows: list[dict[str, str]]) -> bytes:
    return pd.DataFrame(rows, columns=list(field_values)).to_csv(index=False).encode()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows_strategy, chunk_rows=st.integers(min_value=1, max_value=50))
def test_random_files_keep_the_accounting_identity(rows: list[dict], chunk_rows: int) -> None:
    data = to_csv(rows)
    try:
        result = run_pipeline(io.BytesIO(data), now=NOW, chunk_rows=chunk_rows)
    except InputError:
        return  # refused whole, with a reason: allowed
    report = result.report.to_dict()
    assert report["rows_in"] == len(rows)
    assert accounted(report)
    assert len(result.quarantine) == report["rows_quarantined"]
    assert not result.features.isna().any().any()
    assert result.features["num_transactions"].sum() == report["rows_used"]


@settings(max_examples=40, deadline=None)
@given(
    rows=rows_strategy,
    labels=st.lists(
        st.tuples(st.sampled_from(["C1", "C2", "C3", "C4"]), st.sampled_from(["0", "1", "x"])),
        min_size=1,
        max_size=8,
    ),
)
def test_training_set_has_one_row_per_labelled_customer(
    rows: list[dict], labels: list[tuple[str, str]]
) -> None:
    label_csv = ("customer_id,defaulted\n" + "".join(f"{c},{v}\n" for c, v in labels)).encode()
    try:
        result = run_pipeline(io.BytesIO(to_csv(rows)), io.BytesIO(label_csv), now=NOW)
    except InputError:
        return
    training = result.training_set
    assert training["customer_id"].is_unique
    values: dict[str, set[str]] = {}
    for customer, value in labels:
        values.setdefault(customer, set()).add(value)
    usable = {c for c, v in values.items() if len(v & {"0", "1"}) == 1}  # invalid ones dropped
    assert set(training["customer_id"]) == usable & set(result.features["customer_id"])
    assert set(training["defaulted"]) <= {0, 1}
