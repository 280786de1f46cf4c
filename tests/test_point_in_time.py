"""Issue 19, the features side: decision dates, a lookback, and scores that do not depend on
how long the history is.

* Nothing on or after a customer's decision date (or older than the lookback) reaches its
  features (a property over generated rows, in every time-zone spelling).
* The window's edges, the month count and time features counted from the decision, in
  every engine (pandas and DuckDB here; Spark in ``test_spark_parity``).
* Label rules for decision dates; the report's mode; the training set's ``decision_date``.
* The shipped bundle scores the same customers alike on 2 and on 6 months of history.
* Without decision dates, the outputs are what they were before (golden files from main).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_same_run, check_count
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.duckdb_pipeline import run_duckdb
from features.definitions import DAYS_PER_MONTH, FEATURE_NAMES, ID, TARGET
from features.labels import read_labels
from features.outputs import read_back
from features.pipeline import run_pipeline
from features.rules import RULES_BY_CODE, RuleCode, RuleKind
from features.synthetic import generate
from scoring.bundle import LocalDirSource, load_bundle
from scoring.drift import psi
from scoring.predict import score_table
from scoring.reference import numeric_profile
from scoring.settings import PROJECT_ROOT

pytestmark = pytest.mark.timeout(300)

NOW = datetime(2025, 7, 1, tzinfo=UTC)
GOLDEN = Path(__file__).parent / "golden" / "batch_mode"
TRAINED = PROJECT_ROOT / "artifacts" / "trained"
C = RuleCode
HEADER = "transaction_id,customer_id,timestamp,amount,type,description"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def features_of(result) -> pd.DataFrame:
    return result.features.set_index(ID)


# ---------------------------------------------------------------- the window, by hand

# Lookback 30 days. A: decided 2025-03-01, so its window is [2025-01-30, 2025-03-01).
EDGES = "\n".join(
    [
        HEADER,
        "A1,A,2025-01-29T23:59:59,-1.00,debit,ONE SECOND TOO OLD",
        "A2,A,2025-01-30T00:00:00,-2.00,debit,FIRST SECOND OF THE WINDOW",
        "A3,A,2025-02-01T09:00:00,2000.00,credit,ACME LTD PAYROLL",
        "A4,A,2025-02-28T23:59:59,-3.00,debit,OVERDRAFT FEE",
        "A5,A,2025-03-01T00:00:00,-4.00,debit,ON THE DECISION DATE",
        "A6,A,2025-03-01T10:00:00,-500.00,debit,BET365",
        "A7,A,2025-02-28T23:30:00Z,-5.00,debit,AN INSTANT BEFORE MIDNIGHT GMT",
        # B: no label at all.
        "B1,B,2025-02-01T10:00:00,-5.00,debit,TESCO",
        # C: labelled, but every row is after its decision.
        "C1,C,2025-04-02T10:00:00,-5.00,debit,TESCO",
        # D: decided 2025-04-01 (BST from 30 March): a UTC instant at 23:30 on 31 March is
        # 00:30 on 1 April in the UK, so on the decision date: out.
        "D1,D,2025-03-31T23:30:00Z,-6.00,debit,LATE NIGHT IN UTC",
        "D2,D,2025-03-31T22:30:00Z,-7.00,debit,23:30 UK TIME",
        "D3,D,2025-03-03T10:00:00,1500.00,credit,NHS PAYROLL",
        "D4,D,2025-03-25T10:00:00,-650.00,debit,RENT APRIL",
        # E: its label has an impossible date: quarantined, so E has no decision date.
        "E1,E,2025-02-01T10:00:00,-5.00,debit,TESCO",
        # G: its only row, a salary 45 days before its decision, is older than 30 days.
        "G1,G,2025-01-15T10:00:00,1800.00,credit,GLOBEX PLC SALARY",
    ]
)
EDGE_LABELS = "\n".join(
    [
        "customer_id,defaulted,application_date",
        "A,0,2025-03-01",
        "C,1,01/04/2025",
        "D,1,2025-04-01",
        "E,0,2025-02-30",
        "F,0,2025-03-01",
        "G,1,2025-03-01",
    ]
)


@pytest.fixture(scope="module")
def edges(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("edges")
    return write(base / "t.csv", EDGES + "\n"), write(base / "l.csv", EDGE_LABELS + "\n")


def test_the_window_is_decision_minus_lookback_up_to_but_not_including_the_decision(
    edges: tuple[Path, Path],
) -> None:
    result = run_pipeline(*edges, now=NOW, lookback_days=30)
    got = features_of(result)
    assert list(got.index) == ["A", "D"]  # B: no date; C: nothing in its window; E: bad date
    a = got.loc["A"]
    assert a["num_transactions"] == 4  # A2, A3, A4, A7
    assert a["total_debit"] == -10.0 and a["total_credit"] == 2000.0
    # From the salary (1 Feb 09:00) to the start of 1 March: 27 whole days, not stopped.
    assert a["days_since_last_salary"] == 27 and a["salary_stopped"] == 0
    assert a["has_gambling"] == 0 and a["has_fee"] == 1  # BET365 was on the decision date
    # Observed span: first row (30 Jan) to the decision: 30 days, so the one-month floor.
    assert a["transactions_per_month"] == 4.0
    assert a["credit_per_month"] == 2000.0 and a["fees_per_month"] == 1.0
    d = got.loc["D"]
    assert d["num_transactions"] == 3  # D2 (23:30 UK time on 31 March), D3, D4
    assert d["days_since_last_salary"] == 28 and d["salary_stopped"] == 0
    assert d["rent_burden"] == round(650 / 1500, 4) and d["spend_to_income"] == round(657 / 1500, 4)
    report = result.report
    assert report.count(C.OUTSIDE_DECISION_WINDOW) == 6  # A1, A5, A6, C1, D1, G1
    assert report.count(C.NO_DECISION_DATE) == 2  # B1, E1
    assert report.rows_used == 15 and report.rows_in == 15
    decisions = report.to_dict()["decisions"]
    assert decisions == {
        "mode": "decision_dates",
        "rule": decisions["rule"],
        "lookback_days": 30,
        "customers_with_decision_date": 5,  # A, C, D, F, G
        "decision_dates": {"first": "2025-03-01", "last": "2025-04-01"},
        "customers_without_decision_date": 2,  # B, E
        "customers_without_window_transactions": 2,  # C, G
    }
    out = report.to_dict()
    assert out["customers_without_label"] == 2 and out["labels_without_transactions"] == 1
    assert out["labels"]["checks"][4]["check"] == "invalid_decision_date"
    assert out["labels"]["checks"][4]["count"] == 1
    training = result.training_set
    assert list(training.columns) == [ID, "decision_date", *FEATURE_NAMES, TARGET]
    assert training["decision_date"].tolist() == ["2025-03-01", "2025-04-01"]
    assert training[TARGET].tolist() == [0, 1]
    assert out["training_rows"] == 2


def test_every_engine_places_the_window_alike(edges: tuple[Path, Path]) -> None:
    expected = run_pipeline(*edges, now=NOW, lookback_days=30)
    assert_same_run(run_duckdb(*edges, now=NOW, lookback_days=30), expected, examples=False)


def test_the_lookback_moves_the_window(edges: tuple[Path, Path]) -> None:
    assert (
        features_of(run_pipeline(*edges, now=NOW, lookback_days=31)).loc["A", "num_transactions"]
        == 5
    )  # A1 joins
    g = features_of(run_pipeline(*edges, now=NOW, lookback_days=60)).loc["G"]
    # The salary came 44 whole days before the decision: a month's pay was missed.
    assert g["days_since_last_salary"] == 44 and g["salary_stopped"] == 1
    # 44 days observed, more than a month: rates are per 44 / 30.4375 months.
    assert g["transactions_per_month"] == round(DAYS_PER_MONTH / 44, 4)
    assert g["credit_per_month"] == round(1800 * DAYS_PER_MONTH / 44, 2)


def test_outside_window_rows_are_used_rows_with_a_kind_of_their_own() -> None:
    for code in (C.NO_DECISION_DATE, C.OUTSIDE_DECISION_WINDOW):
        assert RULES_BY_CODE[code].kind is RuleKind.OUTSIDE_WINDOW


# ---------------------------------------------------------------- label rules


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "missing_decision_date"),
        ("2025-02-30", "invalid_decision_date"),
        ("31/04/2025", "invalid_decision_date"),
        ("2025/03/01", "invalid_decision_date"),
        ("2025-3-1", "invalid_decision_date"),
        ("2025-03-01T10:00:00", "invalid_decision_date"),
        ("1989-12-31", "invalid_decision_date"),
        ("2025-07-02", "invalid_decision_date"),  # after the run's date
        ("٢٠٢٥-٠٣-٠١", "invalid_decision_date"),  # digits, but not ASCII ones
    ],
)
def test_a_label_without_a_usable_decision_date_is_quarantined(text: str, reason: str) -> None:
    labels = read_labels(
        io.BytesIO(f"customer_id,defaulted,decision_date\nA,0,2025-03-01\nB,1,{text}\n".encode()),
        NOW,
    )
    assert labels.labels.index.tolist() == ["A"]
    assert labels.quarantine["reason"].tolist() == [reason]
    assert labels.quarantine["raw_line"].tolist() == [f"B,1,{text}"]


def test_decision_dates_in_both_forms_agree_and_contradictions_are_quarantined() -> None:
    text = (
        "Customer,Default,Decision Date\n"
        "A,0,2025-03-01\nA,0,01/03/2025\n"  # the same date twice: a duplicate
        "B,1,2025-03-01\nB,1,2025-03-02\n"  # two dates: conflicting_decision_date
        "C,1,2025-07-01\n"  # the run's date is fine
    )
    labels = read_labels(io.BytesIO(text.encode()), NOW)
    assert labels.labels.to_dict() == {"A": 0, "C": 1}
    assert labels.rows_duplicate == 1
    assert labels.quarantine["reason"].tolist() == ["conflicting_decision_date"] * 2
    assert labels.decision_dates is not None
    days = (labels.decision_dates // 86_400).to_numpy().astype("datetime64[D]")
    assert [str(d) for d in days] == ["2025-03-01", "2025-07-01"]


def test_an_empty_decision_date_column_means_batch_mode(tmp_path: Path) -> None:
    labels = write(tmp_path / "l.csv", "customer_id,defaulted,decision_date\nA,0,\nB,1,\n")
    transactions = write(tmp_path / "t.csv", f"{HEADER}\nT1,A,2025-01-01,-1.00,debit,X\n")
    result = run_pipeline(transactions, labels, now=NOW)
    assert result.report.to_dict()["decisions"]["mode"] == "batch_as_of"
    assert list(result.training_set.columns) == [ID, *FEATURE_NAMES, TARGET]
    assert result.label_quarantine.empty


# ---------------------------------------------------------------- nothing after the decision


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """A small clean synthetic population with decision dates, and its training set."""
    out = tmp_path_factory.mktemp("pit")
    generate(out, rows=2_500, customers=40, seed=5)
    result = run_pipeline(out / "transactions.csv", out / "labels.csv", now=NOW)
    return out, result.training_set.set_index(ID)


later_rows = st.lists(
    st.tuples(
        st.integers(0, 39),  # customer
        st.sampled_from(["after", "before"]),  # after the decision, or before the lookback
        # Seconds after the decision (at most 90 days: later would be in the future and
        # quarantined) or before the window.
        st.integers(0, 90 * 86_400),
        st.integers(-300_000, 300_000).filter(bool),  # pence
        st.sampled_from(["ACME LTD PAYROLL", "OVERDRAFT FEE", "BET365", "RENT", "TESCO"]),
        st.sampled_from(["naive", "zulu", "uk"]),  # how the timestamp is written
    ),
    min_size=1,
    max_size=30,
)


def _stamp(wall: int, form: str) -> str:
    moment = datetime.fromtimestamp(wall, UTC)
    if form == "uk":
        return moment.strftime("%d/%m/%Y %H:%M:%S")
    if form == "zulu":  # as a UTC instant: on the UK wall clock it is the same or later
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=later_rows, lookback=st.sampled_from([60, 180]))
def test_rows_outside_a_customers_window_change_none_of_its_features(
    tmp_path_factory: pytest.TempPathFactory,
    population: tuple[Path, pd.DataFrame],
    rows: list[tuple[int, str, int, int, str, str]],
    lookback: int,
) -> None:
    source, _ = population
    labels = pd.read_csv(source / "labels.csv", dtype=str)
    decision = {
        c: int(datetime.fromisoformat(d).replace(tzinfo=UTC).timestamp())
        for c, d in zip(labels["customer_id"], labels["decision_date"], strict=True)
    }
    customers = sorted(decision)
    lines = []
    for i, (who, where, offset, pence, description, form) in enumerate(rows):
        customer = customers[who]
        start = decision[customer] - lookback * 86_400
        wall = decision[customer] + offset if where == "after" else start - 1 - offset
        form = "naive" if where == "before" and form == "zulu" else form  # zulu only moves later
        kind = "credit" if pence > 0 else "debit"
        stamp = _stamp(wall, form)  # the synthetic file's (brief) column order:
        lines.append(f"{customer},X{i:05d},{pence / 100:.2f},{kind},{description},{stamp}")
    base = (source / "transactions.csv").read_text(encoding="utf-8")
    path = tmp_path_factory.mktemp("later") / "transactions.csv"
    path.write_text(base + "\n".join(lines) + "\n", encoding="utf-8")
    before = run_pipeline(source / "transactions.csv", source / "labels.csv", now=NOW,
                          lookback_days=lookback)  # fmt: skip
    after = run_pipeline(path, source / "labels.csv", now=NOW, lookback_days=lookback)
    pd.testing.assert_frame_equal(after.training_set, before.training_set)
    pd.testing.assert_frame_equal(after.features, before.features)
    added = after.report.count(C.OUTSIDE_DECISION_WINDOW) - before.report.count(
        C.OUTSIDE_DECISION_WINDOW
    )
    assert added == len(rows)
    assert after.report.rows_used == before.report.rows_used + len(rows)


def test_a_pipeline_that_reads_past_the_decision_learns_the_outcome(tmp_path: Path) -> None:
    """Why it matters: the synthetic extract runs into each outcome window, where defaulters
    pick up arrears fees. Batch mode (labels without dates) sees them; decision dates do not."""
    generate(tmp_path / "dated", rows=60_000, customers=1_200, seed=11)
    generate(tmp_path / "undated", rows=60_000, customers=1_200, seed=11, decision_dates=False)
    transactions = tmp_path / "dated" / "transactions.csv"
    assert transactions.read_bytes() == (tmp_path / "undated" / "transactions.csv").read_bytes()
    dated = run_pipeline(transactions, tmp_path / "dated" / "labels.csv", now=NOW)
    batch = run_pipeline(transactions, tmp_path / "undated" / "labels.csv", now=NOW)
    assert batch.report.to_dict()["decisions"]["mode"] == "batch_as_of"

    def fee_gap(training: pd.DataFrame) -> float:
        fees = training.groupby(TARGET)["fees_per_month"].mean()
        return float(fees[1] - fees[0])

    assert fee_gap(batch.training_set) > 2 * fee_gap(dated.training_set) > 0


# ---------------------------------------------------------------- scores and history length


@pytest.fixture(scope="module")
def two_and_six_months(tmp_path_factory: pytest.TempPathFactory) -> dict[int, pd.DataFrame]:
    """The same 3,000 customers (seed 7, every history longer than six months) with
    features over 61 and 182 days before their decision dates, via the command line."""
    out = tmp_path_factory.mktemp("lengths")
    generate(out, rows=450_000, customers=3_000, seed=7, history_mix=(0.0, 0.0, 1.0))
    sets = {}
    for days in (61, 182):
        done = subprocess.run(
            [sys.executable, "-m", "features", "--transactions", str(out / "transactions.csv"),
             "--labels", str(out / "labels.csv"), "--out", str(out / str(days)),
             "--lookback-days", str(days), "--now", "2025-07-01T00:00:00"],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        report = json.loads((out / str(days) / "dq_report.json").read_text())
        assert report["decisions"]["lookback_days"] == days
        sets[days] = read_back(out / str(days) / "training_set.csv").set_index(ID)
    assert set(sets[61].index) == set(sets[182].index)
    return sets


def test_the_shipped_bundle_scores_two_and_six_months_of_history_alike(
    two_and_six_months: dict[int, pd.DataFrame],
) -> None:
    model = load_bundle(LocalDirSource(TRAINED))
    short, long = (two_and_six_months[d].sort_index() for d in (61, 182))
    assert not short[["num_transactions", "total_credit"]].equals(
        long[["num_transactions", "total_credit"]]
    )  # the histories really differ in length
    scores = {}
    for name, frame in (("short", short), ("long", long)):
        table = {ID: frame.index.to_numpy(), **{c: frame[c].to_numpy() for c in frame.columns}}
        scores[name] = np.asarray(score_table(model, table)["probability"], dtype=float)
    reference = numeric_profile(scores["long"])
    shift = psi(np.asarray(reference.shares), reference.shares_of(scores["short"]))
    assert shift < 0.1, shift
    declined = {k: float((v >= model.manifest.threshold).mean()) for k, v in scores.items()}
    assert abs(declined["short"] - declined["long"]) < 0.05, declined


# ---------------------------------------------------------------- batch mode as before


def test_without_decision_dates_the_outputs_are_what_they_were(tmp_path: Path) -> None:
    """Golden files written by main before decision dates existed (``tests/golden``; made
    with ``python -m features.synthetic --rows 2000 --customers 100 --seed 3 --messy`` and
    ``python -m features ... --now 2025-07-01T00:00:00``): the same input gives the same
    features (new columns aside), training set, quarantine files and report."""
    done = subprocess.run(
        [sys.executable, "-m", "features", "--transactions", str(GOLDEN / "transactions.csv"),
         "--labels", str(GOLDEN / "labels.csv"), "--out", str(tmp_path),
         "--now", "2025-07-01T00:00:00", "--lookback-days", "30"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    expected = GOLDEN / "expected"
    for name in ("quarantine.csv", "labels_quarantine.csv"):
        assert (tmp_path / name).read_bytes() == (expected / name).read_bytes(), name
    for name in ("features.csv", "training_set.csv"):
        old = pd.read_csv(expected / name, dtype=str, keep_default_na=False)
        new = pd.read_csv(tmp_path / name, dtype=str, keep_default_na=False)
        assert [c for c in new.columns if c in old.columns] == list(old.columns), name
        pd.testing.assert_frame_equal(new[list(old.columns)], old, check_exact=True)
    old = json.loads((expected / "dq_report.json").read_text())
    new = json.loads((tmp_path / "dq_report.json").read_text())
    assert new["decisions"]["mode"] == "batch_as_of" and new["decisions"]["lookback_days"] is None
    for key in ("generated_at", "elapsed_seconds"):
        old.pop(key), new.pop(key)
    old_checks, new_checks = old.pop("checks"), new.pop("checks")
    assert new_checks[: len(old_checks)] == old_checks
    assert all(c["count"] == 0 for c in new_checks[len(old_checks) :])
    old_labels, new_labels = old.pop("labels"), new.pop("labels")
    old_label_checks = {c["check"]: c for c in old_labels.pop("checks")}
    new_label_checks = {c["check"]: c for c in new_labels.pop("checks")}
    assert {k: new_label_checks[k] for k in old_label_checks} == old_label_checks
    assert all(c["count"] == 0 for k, c in new_label_checks.items() if k not in old_label_checks)
    assert new_labels == old_labels
    new.pop("decisions")
    assert new == old
    assert check_count(json.loads((tmp_path / "dq_report.json").read_text()), "duplicate") > 0


def _decision_day_literally(text: str, today: int) -> float:
    """The accepted forms read with Python's ``re`` and ``datetime``, one string at a time:
    what ``features.labels.decision_days`` does with Arrow's RE2 over a whole column."""
    import re
    from datetime import date

    iso = re.fullmatch(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", text)
    uk = re.fullmatch(r"([0-9]{2})/([0-9]{2})/([0-9]{4})", text)
    if iso:
        y, m, d = (int(g) for g in iso.groups())
    elif uk:
        d, m, y = (int(g) for g in uk.groups())
    else:
        return float("nan")
    try:
        day = (date(y, m, d) - date(1970, 1, 1)).days
    except ValueError:
        return float("nan")
    return float(day) if date(1990, 1, 1).toordinal() - 719163 <= day <= today else float("nan")


_around_now = st.dates(datetime(1985, 1, 1).date(), datetime(2030, 12, 31).date())
date_text = st.one_of(
    st.text(st.sampled_from("0123456789-/ ٢T:\n"), max_size=12),
    _around_now.map(lambda d: d.isoformat()),
    _around_now.map(lambda d: d.strftime("%d/%m/%Y")),
    # Years near the run's, any month and day number: impossible dates such as 2025-02-30.
    st.tuples(st.integers(1985, 2030), st.integers(0, 13), st.integers(0, 32)).map(
        lambda t: f"{t[0]:04d}-{t[1]:02d}-{t[2]:02d}"
    ),
    st.tuples(st.integers(1985, 2030), st.integers(0, 13), st.integers(0, 32)).map(
        lambda t: f"{t[2]:02d}/{t[1]:02d}/{t[0]:04d}"
    ),
)


@settings(max_examples=400, deadline=None)
@given(texts=st.lists(date_text, min_size=1, max_size=20))
def test_decision_dates_are_read_as_the_literal_rule_reads_them(texts: list[str]) -> None:
    from features.labels import decision_days

    today = (NOW.date() - datetime(1970, 1, 1).date()).days
    got = decision_days(pd.Series(texts, index=range(10, 10 + len(texts))), NOW)
    assert got.index.tolist() == list(range(10, 10 + len(texts)))
    expected = [_decision_day_literally(t, today) for t in texts]
    assert np.array_equal(got.to_numpy(), np.array(expected), equal_nan=True)
