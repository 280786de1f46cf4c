"""The DuckDB query (benchmarks/duckdb_pipeline.py) and the pandas pipeline agree.

Two independent implementations of the same rules: when they agree on messy inputs, the
benchmark compares like with like, and a rule that drifts in one engine shows up here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import assert_same_run
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from benchmarks.duckdb_pipeline import run_counts, run_duckdb, run_features
from features.pipeline import run_pipeline
from features.rules import RuleCode
from features.synthetic import generate
from tests.test_hostile_files import CORPUS, PROCESSED
from tests.test_pipeline import MESSY, NOW

pytestmark = pytest.mark.timeout(60)


def assert_same(path: Path, now: datetime) -> None:
    """Both engines fill the same contract and agree on all of it: features (exactly),
    every count of the report, outliers, withheld customers (DuckDB keeps no examples)."""
    assert_same_run(run_duckdb(path, now=now), run_pipeline(path, now=now), examples=False)


def test_messy_fixture(tmp_path: Path) -> None:
    path = tmp_path / "messy.csv"
    path.write_text(MESSY, encoding="utf-8")
    assert_same(path, NOW)
    # The fixture really exercises the rules: most rows are rejected or repaired.
    counts = run_counts(path, NOW)
    assert counts["rows_used"] == 9 and counts["rows_duplicate"] == 1
    assert sum(1 for n in counts["reasons"].values() if n) >= 10


def test_small_messy_synthetic_batch(tmp_path: Path) -> None:
    generate(tmp_path, rows=4_000, customers=80, seed=3, messy=True)
    path = tmp_path / "transactions.csv"
    run_date = datetime(2025, 7, 1, tzinfo=UTC)
    assert_same(path, run_date)
    counts = run_counts(path, run_date)
    assert counts["rows_duplicate"] > 0 and counts["reasons"]["malformed_row"] > 0
    assert counts["reasons"]["conflicting_transaction_id"] > 0


@pytest.mark.parametrize("lookback", [45, 180])
def test_decision_dates_on_a_messy_synthetic_batch(tmp_path: Path, lookback: int) -> None:
    """Decision-date mode (labels with dates, some missing, invalid or conflicting): the
    windows, the rows outside them and every feature agree exactly."""
    generate(tmp_path, rows=6_000, customers=150, seed=13, messy=True)
    run_date = datetime(2025, 7, 1, tzinfo=UTC)
    paths = (tmp_path / "transactions.csv", tmp_path / "labels.csv")
    expected = run_pipeline(*paths, now=run_date, lookback_days=lookback)
    assert_same_run(run_duckdb(*paths, now=run_date, lookback_days=lookback), expected,
                    examples=False)  # fmt: skip
    report = expected.report.to_dict()
    assert report["decisions"]["mode"] == "decision_dates"
    assert report["decisions"]["lookback_days"] == lookback
    assert expected.report.count(RuleCode.OUTSIDE_DECISION_WINDOW) > 0
    assert expected.report.count(RuleCode.NO_DECISION_DATE) > 0


@pytest.mark.parametrize("name", sorted(PROCESSED))
def test_hostile_corpus(name: str) -> None:
    assert_same(CORPUS / name, NOW)


TIMESTAMPS = (
    "transaction_id,customer_id,timestamp,amount,type,description\n"
    "T01,C1,2025-02-01T10:00:00,-5.00,debit,OK\n"
    "T02,C1,2025-02-30T10:00:00,-7.00,debit,NO SUCH DAY\n"
    "T03,C1,31/04/2025,-9.00,debit,NO SUCH DAY EITHER\n"
    "T04,C1,2025-02-03T10:00:60,-1.00,debit,SECOND 60\n"
    "T05,C1,2025-2-3,-2.00,debit,NOT ZERO PADDED\n"
    "T06,C1,3/2/2025,-3.00,debit,NOT ZERO PADDED UK\n"
    "T07,C1,2025-02-03  10:00:00,-4.00,debit,TWO SPACES\n"
    "T08,C2,2024-02-29,-6.00,debit,LEAP DAY\n"
    "T09,C2, 2025-02-04T09:30Z ,-8.00,debit,PADDED ZULU\n"
    "T10,C2,28/02/2025 23:59:59,10.00,credit,UK WITH SECONDS\n"
    "T11,C2,03/02/25,-1.50,debit,TWO DIGIT YEAR\n"
    "T12,C2,1989-12-31T23:59:59,-2.50,debit,BEFORE 1990\n"
    # ISO 8601 with zones and fractions, read on the UK wall clock (issue 16).
    "T13,C3,2024-06-01T10:00:00+01:00,-1.00,debit,OFFSET COLON\n"
    "T14,C3,2024-06-01T10:00:00+0100,-1.00,debit,OFFSET COMPACT\n"
    "T15,C3,2024-06-01T09:00:00.000Z,-1.00,debit,JAVASCRIPT\n"
    "T16,C3,2024-06-01T10:00:00.123,-1.00,debit,FRACTION\n"
    "T17,C3,2024-03-31T00:59:59Z,-1.00,debit,LAST GMT SECOND\n"
    "T18,C3,2024-03-31T01:00:00Z,-1.00,debit,FIRST BST SECOND\n"
    "T19,C4,2024-10-27T00:59:59Z,-1.00,debit,LAST BST SECOND\n"
    "T20,C4,2024-10-27T01:00:00Z,-1.00,debit,FIRST GMT SECOND\n"
    "T21,C4,2024-04-30T23:30:00Z,2500.00,credit,ACME PAYROLL MAY\n"
    "T22,C4,Z,-1.00,debit,ONLY Z\n"
    "T23,C4,2024-06-01T10:00:00+24:00,-1.00,debit,OFFSET 24\n"
    "T24,C4,2024-06-01T10:00:00-05:30,-1.00,debit,WEST\n"
    "T25,C4,2024-02-01Z,-1.00,debit,ZONE ON A DATE\n"
)


def test_timestamp_edge_cases(tmp_path: Path) -> None:
    path = tmp_path / "timestamps.csv"
    path.write_text(TIMESTAMPS, encoding="utf-8")
    assert_same(path, NOW)
    # The contract, not just agreement: dates that do not exist are invalid.
    assert run_counts(path, NOW)["reasons"]["invalid_timestamp"] >= 3
    assert run_counts(path, NOW)["reasons"]["missing_timestamp"] == 0  # a lone Z is invalid


def test_customers_outside_the_api_bounds_are_withheld_alike(tmp_path: Path) -> None:
    lines = ["transaction_id,customer_id,timestamp,amount,type"]
    lines += [f"B{i},RICH,2025-02-01,999999.99,credit" for i in range(10_100)]
    lines += [f"S{i},C{i % 3},2025-02-01,-5.00,debit" for i in range(9)]
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n")
    assert_same(path, NOW)
    assert run_features(path, NOW)["customer_id"].tolist() == ["C0", "C1", "C2"]


cell = st.text(alphabet='ab ,"\n\r\x00', max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cells=st.lists(st.tuples(cell, cell), min_size=1, max_size=25),
    ending=st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_generated_files_with_stray_quotes_and_odd_line_ends(
    tmp_path_factory, cells: list[tuple[str, str]], ending: str
) -> None:
    """Raw cells (unquoted, so quotes and line breaks land anywhere): both engines count and
    use exactly the same rows."""
    lines = ["transaction_id,customer_id,timestamp,amount,type,description"]
    for i, (a, b) in enumerate(cells):
        lines.append(f"T{i}{a},C{i % 4},2025-02-0{1 + i % 9},-{i}.50,debit,{b}")
    path = tmp_path_factory.mktemp("g") / "t.csv"
    data = (ending.join(lines) + ending).encode()
    note(repr(data))
    path.write_bytes(data)
    assert_same(path, NOW)
