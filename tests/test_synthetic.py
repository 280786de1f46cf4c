"""The synthetic data generator: deterministic, realistic, and an exact answer key.

The messy-data counts are checked against an independent, row-by-row reading of the
contract's rules written here with the csv module (not the pipeline's code), and then
against the real pipeline's report.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from features import synthetic
from features.synthetic import LAYOUTS, generate, main

AMOUNT = re.compile(r"^[+-]?£?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d{1,2})?$")
ISO = "%Y-%m-%dT%H:%M:%S"
UK = ("%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y")
TYPES = {"debit": -1, "dr": -1, "d": -1, "credit": 1, "cr": 1, "c": 1}
FILES = ("transactions.csv", "labels.csv", "truth.csv", "generation.json")


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("messy")
    generate(out, rows=40_000, customers=800, seed=3, layout="brief", messy=True)
    return out


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clean")
    generate(out, rows=30_000, customers=600, seed=5, layout="handover")
    return out


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        generate(tmp_path / name, rows=8_000, customers=200, seed=seed, messy=True)
    for file in (*FILES, "injected.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    assert (tmp_path / "a" / "transactions.csv").read_bytes() != (
        tmp_path / "c" / "transactions.csv"
    ).read_bytes()
    truth_a, truth_c = ((tmp_path / d / "truth.csv").read_bytes() for d in "ac")
    assert truth_a != truth_c


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layout_headers(tmp_path: Path, layout: str) -> None:
    generate(tmp_path, rows=500, customers=20, seed=1, layout=layout)
    txn_header, label_header = LAYOUTS[layout]
    first = (tmp_path / "transactions.csv").read_text().splitlines()[0]
    assert first.split(",") == list(txn_header)
    assert (tmp_path / "labels.csv").read_text().splitlines()[0].split(",") == list(label_header)
    expected = {
        "brief": "customer_id,transaction_id,amount,type,description,timestamp",
        "handover": "transaction_id,customer_id,txn_timestamp,amount,txn_type,description",
    }
    assert first == expected[layout]
    labels = {"brief": "customer_id,defaulted,decision_date",
              "handover": "customer_id,defaulted_within_90d,application_date"}  # fmt: skip
    assert (tmp_path / "labels.csv").read_text().splitlines()[0] == labels[layout]


def test_clean_rows_are_well_formed_and_realistic(clean: Path) -> None:
    frame = pd.read_csv(clean / "transactions.csv", dtype=str, keep_default_na=False)
    assert len(frame) == 30_000
    assert frame["transaction_id"].is_unique
    assert frame["amount"].str.fullmatch(r"-?\d+\.\d{2}").all()
    amount = frame["amount"].astype(float)
    assert (amount != 0).all()
    assert ((amount < 0) == (frame["txn_type"] == "debit")).all()
    assert set(frame["txn_type"]) == {"debit", "credit"}
    assert amount.abs().max() < 10_000  # large amounts only where injected
    stamps = pd.to_datetime(frame["txn_timestamp"], format=ISO)
    assert stamps.min() >= pd.Timestamp("2023-07-01")
    assert stamps.max() <= pd.Timestamp("2025-06-30 23:59:59")
    assert (stamps.max() - stamps.min()).days >= 365
    descriptions = frame["description"]
    for needle in (
        "TESCO STORES",
        "NETFLIX.COM",
        "SAINSBURYS S/MKT",
        "RENT ",
        "PAYROLL",
        "TFL TRAVEL CH",
        "PADDY POWER",
        "OVERDRAFT",
        "FASTER PAYMENT TO",
        "PARENTPAY",
        "CURRENT ACCOUNT",
    ):
        assert descriptions.str.contains(needle, regex=False).any(), needle
    # Salaries arrive monthly: about one per month of each salaried customer's extract.
    salary = frame[descriptions.str.contains("PAYROLL|SALARY|WAGES") & (amount > 0)]
    truth = pd.read_csv(clean / "truth.csv", dtype={"customer_id": str}).set_index("customer_id")
    per_customer = salary.groupby("customer_id").size()
    months = (truth["history_days"] + synthetic.OUTCOME_DAYS) / 30.4375
    monthly = (per_customer / months.reindex(per_customer.index))[per_customer >= 3]
    assert 0.8 <= monthly.median() <= 1.1
    assert frame["customer_id"].nunique() == 600


def test_default_rate_near_twelve_percent(tmp_path: Path) -> None:
    summary = generate(tmp_path, rows=20_000, customers=20_000, seed=8)
    truth = pd.read_csv(tmp_path / "truth.csv")
    assert len(truth) == 20_000
    assert 0.11 <= truth["defaulted"].mean() <= 0.13
    assert truth["true_probability"].mean() == pytest.approx(0.12, abs=0.002)
    assert summary["default_rate"] == pytest.approx(truth["defaulted"].mean(), abs=1e-6)
    # Thin histories: rows == customers means exactly one row each.
    txns = pd.read_csv(tmp_path / "transactions.csv", dtype=str)
    assert txns["customer_id"].value_counts().eq(1).all()


def test_truth_agrees_with_labels_and_oracle_auc(clean: Path) -> None:
    truth = pd.read_csv(clean / "truth.csv", dtype={"customer_id": str})
    labels = pd.read_csv(clean / "labels.csv", dtype={"customer_id": str})
    txns = pd.read_csv(clean / "transactions.csv", dtype=str)
    assert set(truth["customer_id"]) == set(txns["customer_id"]) == set(labels["customer_id"])
    merged = truth.merge(labels, on="customer_id")
    assert (merged["defaulted"] == merged["defaulted_within_90d"]).all()
    assert truth["true_probability"].between(0, 1, inclusive="neither").all()
    summary = json.loads((clean / "generation.json").read_text())
    oracle = roc_auc_score(truth["defaulted"], truth["true_probability"])
    assert summary["oracle_auc"] == pytest.approx(oracle, abs=1e-4)
    assert oracle > 0.75
    # Riskier customers (by truth) show the behaviours the features measure.
    risky = truth.nlargest(60, "true_probability")["customer_id"]
    safe = truth.nsmallest(60, "true_probability")["customer_id"]
    fees = txns["description"].str.contains("OVERDRAFT|UNPAID|RETURNED DD|LATE PAYMENT")
    fee_customers = set(txns.loc[fees, "customer_id"])
    assert risky.isin(fee_customers).mean() > safe.isin(fee_customers).mean() + 0.2


def _count_transactions(path: Path, now: datetime) -> Counter:
    """An independent reading of the contract's transaction rules, one row at a time."""
    counts: Counter = Counter()
    seen_rows: set[tuple[str, ...]] = set()
    valid_ids: dict[str, tuple[str, ...]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        col = {name: i for i, name in enumerate(header)}
        for row in reader:
            key = tuple(row)
            if key in seen_rows:
                counts["duplicate"] += 1
                continue
            seen_rows.add(key)
            if len(row) != len(header):
                counts["malformed_row"] += 1
                continue
            cust, tid = row[col["customer_id"]].strip(), row[col["transaction_id"]].strip()
            amount, kind = row[col["amount"]].strip(), row[col["type"]]
            stamp, desc = row[col["timestamp"]].strip(), row[col["description"]]
            value = float(amount.replace("£", "").replace(",", "")) if AMOUNT.match(amount) else 0
            parsed, non_iso = None, False
            for fmt in (ISO, *UK):
                try:
                    parsed = datetime.strptime(stamp, fmt).replace(tzinfo=UTC)
                    non_iso = fmt != ISO
                    break
                except ValueError:
                    continue
            in_range = parsed is not None and (
                datetime(1990, 1, 1, tzinfo=UTC) <= parsed <= now + timedelta(days=1)
            )
            rules = (  # the contract's first-match order
                ("missing_customer_id", not cust),
                ("missing_transaction_id", not tid),
                ("missing_amount", not amount),
                ("invalid_amount", bool(amount) and not AMOUNT.match(amount)),
                ("amount_out_of_range", abs(value) > 1_000_000),
                ("missing_timestamp", not stamp),
                ("invalid_timestamp", bool(stamp) and parsed is None),
                ("timestamp_out_of_range", parsed is not None and not in_range),
                ("invalid_type", bool(kind.strip()) and kind.strip().lower() not in TYPES),
            )
            reason = next((code for code, broken in rules if broken), None)
            if reason is None and tid in valid_ids:
                reason = "conflicting_transaction_id"
            if reason:
                counts[reason] += 1
                continue
            valid_ids[tid] = key
            word = kind.strip().lower()
            counts["type_padded_or_mixed_case"] += bool(word) and kind != word
            counts["missing_type"] += not word
            counts["sign_disagrees_with_type"] += bool(word) and TYPES[word] * value < 0
            counts["missing_description"] += not desc.strip()
            counts["non_iso_timestamp"] += non_iso
            counts["large_amount"] += abs(value) >= 10_000
    return counts


def test_injected_counts_match_the_file(messy: Path) -> None:
    injected = json.loads((messy / "injected.json").read_text())
    found = _count_transactions(messy / "transactions.csv", datetime.now(UTC))
    for code in synthetic.TRANSACTION_RATES:
        assert injected[code] > 0, code
        assert found[code] == injected[code], code
    # Exact duplicates, counted a second way.
    frame = pd.read_csv(
        messy / "transactions.csv", dtype=str, keep_default_na=False, on_bad_lines="skip"
    )
    assert frame.duplicated().sum() == injected["duplicate"]

    labels = pd.read_csv(messy / "labels.csv", dtype=str, keep_default_na=False)
    truth = pd.read_csv(messy / "truth.csv", dtype=str)
    found_labels = _count_labels(labels, datetime.now(UTC))
    for key in _LABEL_KEYS:
        assert found_labels[key] == injected[key], key
    assert injected["missing_decision_date"] + injected["invalid_decision_date"] > 0
    customers = set(truth["customer_id"])
    usable = found_labels["usable"]
    assert len(usable - customers) == injected["labels_without_transactions"]
    assert len(customers - usable) == injected["customers_without_label"]


def _decision_day(text: str, now: datetime) -> datetime | None:
    """An independent reading of the decision-date rule: ISO or UK day-first date, real,
    from 1990-01-01 to the run's date."""
    for fmt in ("%Y-%m-%d", "%d/%m/%Y"):
        if len(text) != 10:
            break
        try:
            day = datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
        return day if datetime(1990, 1, 1, tzinfo=UTC) <= day <= now else None
    return None


_LABEL_KEYS = (
    "invalid_label",
    "missing_decision_date",
    "invalid_decision_date",
    "conflicting_label",
    "conflicting_decision_date",
    "duplicate_label",
)


def _count_labels(labels: pd.DataFrame, now: datetime) -> dict:
    """The label rules, row by row: counts per rule, and the customers left with a label."""
    out: Counter = Counter()
    good = []
    for row in labels.itertuples(index=False):
        customer, value, text = row.customer_id.strip(), row.defaulted.strip(), row.decision_date
        if value not in ("0", "1"):
            out["invalid_label"] += 1
        elif not text.strip():
            out["missing_decision_date"] += 1
        elif (day := _decision_day(text.strip(), now)) is None:
            out["invalid_decision_date"] += 1
        else:
            good.append((customer, value, day))
    distinct = sorted(set(good))
    out["duplicate_label"] = len(good) - len(distinct)
    values: dict[str, set] = {}
    days: dict[str, set] = {}
    for customer, value, day in distinct:
        values.setdefault(customer, set()).add(value)
        days.setdefault(customer, set()).add(day)
    rows = Counter(customer for customer, _, _ in good)
    for customer in values:
        if len(values[customer]) > 1:
            out["conflicting_label"] += rows[customer]
        elif len(days[customer]) > 1:
            out["conflicting_decision_date"] += rows[customer]
    usable = {c for c in values if len(values[c]) == 1 and len(days[c]) == 1}
    return {"usable": usable, **{k: out[k] for k in _LABEL_KEYS}}


def test_pipeline_report_matches_injected(messy: Path) -> None:
    pipeline = pytest.importorskip("features.pipeline")
    result = pipeline.run_pipeline(messy / "transactions.csv", messy / "labels.csv")
    report = result.report.to_dict()
    injected = json.loads((messy / "injected.json").read_text())
    checks = {c["check"]: c["count"] for c in report["checks"]}
    label_checks = {c["check"]: c["count"] for c in report["labels"]["checks"]}
    got = {code: checks[code] for code in synthetic.TRANSACTION_RATES}
    for code in ("invalid_label", "conflicting_label", "missing_decision_date",
                 "invalid_decision_date", "conflicting_decision_date"):  # fmt: skip
        got[code] = label_checks[code]
    got["duplicate_label"] = label_checks["duplicate"]
    got["labels_without_transactions"] = report["labels_without_transactions"]
    got["customers_without_label"] = report["customers_without_label"]
    assert got == injected
    assert report["rows_in"] == 40_000
    decisions = report["decisions"]
    assert decisions["mode"] == "decision_dates"
    assert decisions["customers_without_decision_date"] == injected["customers_without_label"]
    # Every customer has valid rows; those without a usable label, or without a row in
    # their window, get no features.
    without = (
        injected["customers_without_label"] + decisions["customers_without_window_transactions"]
    )
    assert report["customers"] == 800 - without
    # Rows after the decision (and older than the lookback) are used but kept out.
    assert checks["outside_decision_window"] > 0.2 * report["rows_used"]
    assert checks["no_decision_date"] > 0


def test_applicants_have_decision_dates_histories_and_outcome_windows(clean: Path) -> None:
    truth = pd.read_csv(clean / "truth.csv", dtype={"customer_id": str})
    labels = pd.read_csv(clean / "labels.csv", dtype={"customer_id": str})
    assert (labels["application_date"] == truth["decision_date"]).all()
    dates = pd.to_datetime(truth["decision_date"])
    assert dates.min() >= pd.Timestamp("2024-10-01") and dates.max() <= pd.Timestamp("2025-03-31")
    assert dates.dt.to_period("M").nunique() == 6  # six monthly cohorts
    history = truth["history_days"]
    assert history.min() >= 14 and history.max() <= 400
    assert (history < 61).any() and (history > 182).any()  # thin files and long ones
    frame = pd.read_csv(clean / "transactions.csv", dtype=str, keep_default_na=False)
    stamps = pd.to_datetime(frame["txn_timestamp"], format=ISO)
    decided = frame["customer_id"].map(dates.set_axis(truth["customer_id"]))
    before = stamps < decided
    # Everyone has history before the decision, and the extract runs on past it.
    assert before.groupby(frame["customer_id"]).any().all()
    assert (~before).groupby(frame["customer_id"]).any().mean() > 0.95
    opened = decided - pd.to_timedelta(
        frame["customer_id"].map(history.set_axis(truth["customer_id"])), unit="D"
    )
    assert (stamps >= opened).all()
    assert (stamps < decided + pd.Timedelta(days=synthetic.OUTCOME_DAYS)).all()


def test_default_rate_and_history_mix_are_parameters(tmp_path: Path) -> None:
    generate(tmp_path / "a", rows=40_000, customers=4_000, seed=9, default_rate=0.05,
             history_mix=(1.0, 0.0, 0.0))  # fmt: skip
    truth = pd.read_csv(tmp_path / "a" / "truth.csv")
    assert truth["true_probability"].mean() == pytest.approx(0.05, abs=0.002)
    assert truth["history_days"].max() < 61
    summary = json.loads((tmp_path / "a" / "generation.json").read_text())
    assert summary["parameters"]["history_mix"] == {"thin": 1.0, "medium": 0.0, "long": 0.0}
    assert summary["parameters"]["target_default_rate"] == 0.05
    assert main(["--rows", "500", "--customers", "20", "--out", str(tmp_path / "b"),
                 "--history-mix", "0,0,1", "--default-rate", "0.3"]) == 0  # fmt: skip
    assert pd.read_csv(tmp_path / "b" / "truth.csv")["history_days"].min() > 182
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "c"), "--history-mix", "1,2"])
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "c"), "--default-rate", "1.5"])


def test_without_decision_dates_the_labels_lose_their_date_column_only(tmp_path: Path) -> None:
    generate(tmp_path / "a", rows=3_000, customers=60, seed=4, messy=True)
    generate(tmp_path / "b", rows=3_000, customers=60, seed=4, messy=True, decision_dates=False)
    same = (tmp_path / "a" / "transactions.csv").read_bytes()
    assert same == (tmp_path / "b" / "transactions.csv").read_bytes()
    header = (tmp_path / "b" / "labels.csv").read_text().splitlines()[0]
    assert header == "customer_id,defaulted"
    injected = json.loads((tmp_path / "b" / "injected.json").read_text())
    assert "missing_decision_date" not in injected


def test_rejects_impossible_sizes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match="at least one row per customer"):
        generate(tmp_path, rows=5, customers=10)
    with pytest.raises(SystemExit) as stopped:
        main(["--rows", "5", "--customers", "10", "--out", str(tmp_path)])
    assert stopped.value.code == 2
    assert "--rows >= --customers" in capsys.readouterr().err


def test_cli_writes_all_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        main(
            [
                "--rows",
                "3000",
                "--customers",
                "50",
                "--seed",
                "4",
                "--out",
                str(tmp_path),
                "--layout",
                "handover",
                "--messy",
            ]
        )
        == 0
    )
    assert "oracle AUC" in capsys.readouterr().out
    for file in (*FILES, "injected.json"):
        assert (tmp_path / file).stat().st_size > 0
    summary = json.loads((tmp_path / "generation.json").read_text())
    assert summary["parameters"]["layout"] == "handover"
    assert summary["files"]["transactions.csv"]["rows"] == 3000
    lines = (tmp_path / "transactions.csv").read_bytes().count(b"\n")
    assert lines == 3001


def test_auc_helper_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, 500).astype(float)  # many ties
    outcome = rng.random(500) < 0.3
    assert synthetic.auc(scores, outcome) == pytest.approx(roc_auc_score(outcome, scores))
