"""The Part 1 pipeline on the handover files and on hand-made messy inputs."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from conftest import accounted, check_count

from features.cli import main
from features.definitions import FEATURE_NAMES
from features.pipeline import run_pipeline
from features.schema import InputError

NOW = datetime(2025, 3, 1, tzinfo=UTC)

# Written by hand from the 10 handover rows (see the closing note of issue 3).
HANDOVER_EXPECTED = pd.DataFrame(
    [
        # id, n, debit, credit, avg, rent, salary, tesco, netflix, transfer, bonus, r2i, dsls, days
        ("CUST_0001", 3, -65.98, 2500.00, 811.34, 0, 1, 1, 1, 0, 0, 0.0, 2, 3, 0),
        ("CUST_0002", 2, -650.00, 1800.00, 575.00, 1, 1, 0, 0, 0, 0, 0.3611, 2, 3, 1),
        ("CUST_0003", 2, -300.00, 1200.00, 450.00, 0, 0, 0, 0, 0, 0, 0.0, 365, 1, 0),
        ("CUST_0004", 2, -400.00, 900.00, 250.00, 1, 1, 0, 0, 0, 0, 0.4444, 2, 2, 1),
        ("CUST_0005", 1, 0.00, 6500.00, 6500.00, 0, 0, 0, 0, 0, 1, 0.0, 365, 1, 0),
    ],
    columns=[
        "customer_id", "num_transactions", "total_debit", "total_credit", "avg_amount",
        "has_rent", "has_salary", "has_tesco", "has_netflix", "has_transfer", "has_bonus",
        "rent_to_income", "days_since_last_salary", "active_days", "defaulted",
    ],
)  # fmt: skip


def csv_bytes(text: str) -> io.BytesIO:
    return io.BytesIO(text.encode("utf-8"))


def test_handover_files_give_the_hand_computed_training_set(handover_dir: Path) -> None:
    result = run_pipeline(
        handover_dir / "data" / "transactions.csv", handover_dir / "data" / "labels.csv", now=NOW
    )
    got = result.training_set
    assert list(got.columns) == ["customer_id", *FEATURE_NAMES, "defaulted"]
    pd.testing.assert_frame_equal(
        got[HANDOVER_EXPECTED.columns].reset_index(drop=True), HANDOVER_EXPECTED, check_dtype=False
    )
    assert got["net_flow"].tolist() == [2434.02, 1150.00, 900.00, 500.00, 6500.00]
    assert got["max_debit"].tolist() == [45.99, 650.00, 300.00, 400.00, 0.00]
    assert not got.isna().any().any()
    report = result.report.to_dict()
    assert (report["rows_in"], report["rows_used"], report["rows_duplicate"]) == (10, 10, 0)
    assert report["rows_quarantined"] == 0
    assert report["customers_without_label"] == 0
    assert report["labels_without_transactions"] == 0
    assert report["as_of"].startswith("2025-02-04T08:05:00")
    assert report["transactions_file"]["mapped"]["timestamp"] == "txn_timestamp"


def test_brief_layout_with_mixed_case_headers_maps_to_the_same_features() -> None:
    brief = (
        " Customer_ID ,Transaction_Id,AMOUNT,Type,Description,timestamp\n"
        "CUST001,TXN001,-45.50,debit,TESCO STORE 123,2024-01-15 10:23:00\n"
        "CUST001,TXN002,2500.00,credit,SALARY PAYMENT,2024-01-20 09:00:00\n"
    )
    labels = "customer_id,defaulted\nCUST001,0\nCUST002,1\n"
    result = run_pipeline(csv_bytes(brief), csv_bytes(labels), now=NOW)
    row = result.training_set.iloc[0]
    assert (row["num_transactions"], row["total_debit"], row["total_credit"]) == (2, -45.5, 2500.0)
    assert row["avg_amount"] == 1227.25
    assert (row["has_tesco"], row["has_salary"], row["defaulted"]) == (1, 1, 0)
    assert result.report.to_dict()["labels_without_transactions"] == 1


def test_unmappable_header_names_the_missing_columns() -> None:
    with pytest.raises(InputError, match=r"missing required column\(s\): timestamp, amount"):
        run_pipeline(csv_bytes("transaction_id,customer_id,when,value_gbp\nT1,C1,x,1\n"))


def test_two_columns_with_the_same_meaning_are_refused() -> None:
    text = "transaction_id,customer_id,timestamp,amount,value,type\nT1,C1,2025-01-01,1,1,debit\n"
    expected = r"columns 4 \('amount'\) and 5 \('value'\) both mean 'amount'"
    with pytest.raises(InputError, match=expected):
        run_pipeline(csv_bytes(text))


MESSY = """transaction_id,customer_id,txn_timestamp,amount,txn_type,description
T01,C1,2025-02-01T10:00:00,2500.00,credit,ACME PAYROLL
T02,C1,2025-02-02T10:00:00,-20.00,debit,TESCO 12
T02,C1,2025-02-02T10:00:00,-20.00,debit,TESCO 12
T03,,2025-02-02T10:00:00,-5.00,debit,NO CUSTOMER
,C1,2025-02-02T10:00:00,-5.00,debit,NO TXN ID
T04,C1,2025-02-02T10:00:00,,debit,NO AMOUNT
T05,C1,2025-02-02T10:00:00,1e308,debit,SCIENTIFIC
T06,C1,2025-02-02T10:00:00,12.345,debit,THREE DP
T07,C1,2025-02-02T10:00:00,-2000000.00,debit,HUGE
T08,C1,,-5.00,debit,NO TIME
T09,C1,yesterday,-5.00,debit,BAD TIME
T10,C1,2099-01-01T00:00:00,-5.00,debit,FUTURE
T11,C1,1969-12-31T00:00:00,-5.00,debit,PAST
T12,C1,2025-02-02T10:00:00,-5.00,refund,BAD TYPE
T02,C1,2025-02-03T10:00:00,-99.00,debit,REUSED ID
T13,C2,2025-02-03T10:00:00,-30.00, Debit ,PADDED TYPE
T14,C2,2025-02-03T10:00:00,-7.50,,NO TYPE
T15,C2,2025-02-03T10:00:00,45.50,debit,SIGN WRONG
T16,C2,2025-02-03T10:00:00,-1.00,debit,
T17,C2,03/02/2025 11:00,"£1,234.56",credit,"UK DATE, POUNDS"
T18,C2,2025-02-03T12:00:00,-15000.00,debit,BIG SPEND
T19,C2,2025-02-03T12:00:00,NaN,debit,NAN
T20,C2,2025-02-03T12:00:00,inf,debit,INF
T21,C2,2025-02-03T12:00:00,-0,debit,MINUS ZERO
"""


@pytest.fixture(scope="module")
def messy_result():
    return run_pipeline(csv_bytes(MESSY), now=NOW)


EXPECTED_REASONS = {
    "T03": "missing_customer_id",
    "": "missing_transaction_id",
    "T04": "missing_amount",
    "T05": "invalid_amount",
    "T06": "invalid_amount",
    "T07": "amount_out_of_range",
    "T08": "missing_timestamp",
    "T09": "invalid_timestamp",
    "T10": "timestamp_out_of_range",
    "T11": "timestamp_out_of_range",
    "T12": "invalid_type",
    "T02": "conflicting_transaction_id",
    "T19": "invalid_amount",
    "T20": "invalid_amount",
}


def test_each_quarantine_rule_catches_its_row(messy_result) -> None:
    quarantine = messy_result.quarantine
    got = dict(zip(quarantine["transaction_id"], quarantine["reason"], strict=True))
    assert got == EXPECTED_REASONS
    # Rows are written unchanged: the raw text of the amount survives.
    assert quarantine.loc[quarantine["transaction_id"] == "T05", "amount"].item() == "1e308"


def test_every_row_is_accounted_for_exactly_once(messy_result) -> None:
    report = messy_result.report.to_dict()
    assert report["rows_in"] == MESSY.count("\n") - 1
    assert accounted(report)
    assert report["rows_duplicate"] == 1
    assert report["rows_quarantined"] == len(EXPECTED_REASONS)
    assert report["rows_used"] == report["rows_in"] - 1 - len(EXPECTED_REASONS)
    quarantined_by_check = sum(check_count(report, code) for code in set(EXPECTED_REASONS.values()))
    assert quarantined_by_check == report["rows_quarantined"]


def test_kept_rows_are_repaired_and_counted(messy_result) -> None:
    report = messy_result.report.to_dict()
    assert check_count(report, "type_padded_or_mixed_case") == 1
    assert check_count(report, "missing_type") == 1
    assert check_count(report, "sign_disagrees_with_type") == 1
    assert check_count(report, "missing_description") == 1
    assert check_count(report, "non_iso_timestamp") == 1
    assert check_count(report, "large_amount") == 1
    assert report["outliers"]["transactions"]["count"] == 1
    c2 = messy_result.features.set_index("customer_id").loc["C2"]
    # -30 (padded debit) -7.50 (no type, sign says debit) -45.50 (debit wins over sign)
    # -1 (no description) +1234.56 (UK date, £ and thousands separator) -15000 -0
    assert c2["num_transactions"] == 7
    assert c2["total_debit"] == pytest.approx(-15084.00, abs=0)
    assert c2["total_credit"] == 1234.56
    assert c2["max_debit"] == 15000.00


def test_first_copy_of_a_reused_transaction_id_wins(messy_result) -> None:
    c1 = messy_result.features.set_index("customer_id").loc["C1"]
    assert c1["num_transactions"] == 2
    assert c1["total_debit"] == -20.00  # not -99 from the reused id, not -40 from the copy


def test_chunked_run_equals_in_memory_run() -> None:
    whole = run_pipeline(csv_bytes(MESSY), now=NOW)
    for chunk_rows in (1, 2, 3, 7):
        chunked = run_pipeline(csv_bytes(MESSY), now=NOW, chunk_rows=chunk_rows)
        pd.testing.assert_frame_equal(chunked.features, whole.features)
        pd.testing.assert_frame_equal(chunked.quarantine, whole.quarantine)
        for key in ("rows_in", "rows_used", "rows_duplicate", "rows_quarantined", "checks"):
            assert chunked.report.to_dict()[key] == whole.report.to_dict()[key], (chunk_rows, key)


def test_malformed_rows_are_quarantined_with_their_raw_text() -> None:
    text = (
        "transaction_id,customer_id,timestamp,amount,type,description\n"
        "T1,C1,2025-02-01,-5.00,debit,OK\n"
        "T2,C1,2025-02-01,-5.00,debit,TOO,MANY\n"
        "T3,C1\n"
    )
    result = run_pipeline(csv_bytes(text), now=NOW)
    assert result.report.to_dict()["rows_in"] == 3
    assert check_count(result.report.to_dict(), "malformed_row") == 2
    assert sorted(result.quarantine["raw_line"]) == [
        "T2,C1,2025-02-01,-5.00,debit,TOO,MANY",
        "T3,C1",
    ]
    assert accounted(result.report.to_dict())


def test_semicolon_delimited_file_with_bom_and_crlf_is_read() -> None:
    text = (
        "\ufefftransaction_id;customer_id;timestamp;amount;type\r\nT1;C1;2025-02-01;-5.00;debit\r\n"
    )
    result = run_pipeline(csv_bytes(text), now=NOW)
    assert result.report.to_dict()["transactions_file"]["delimiter"] == ";"
    assert result.features["total_debit"].tolist() == [-5.0]


LABELS_MESSY = """customer_id,defaulted_within_90d
C1,0
C1,0
C2,1
C2,0
C3,maybe
C4,1
,1
"""


def test_label_rules() -> None:
    transactions = (
        "transaction_id,customer_id,timestamp,amount,type\n"
        "T1,C1,2025-02-01,-5.00,debit\nT2,C2,2025-02-01,-5.00,debit\n"
        "T3,C5,2025-02-01,-5.00,debit\n"
    )
    result = run_pipeline(csv_bytes(transactions), csv_bytes(LABELS_MESSY), now=NOW)
    labels = result.report.to_dict()["labels"]
    assert (labels["rows_in"], labels["rows_used"], labels["rows_duplicate"]) == (7, 2, 1)
    assert labels["rows_quarantined"] == 4  # C2 twice (conflict), C3 invalid, empty id
    assert labels["rows_in"] == (
        labels["rows_used"] + labels["rows_duplicate"] + labels["rows_quarantined"]
    )
    counts = {c["check"]: c["count"] for c in labels["checks"]}
    assert counts["conflicting_label"] == 2
    assert counts["invalid_label"] == 1
    assert counts["missing_customer_id"] == 1
    assert result.training_set["customer_id"].tolist() == ["C1"]  # C2 ambiguous, C5 unlabelled
    assert sorted(result.label_quarantine["reason"]) == [
        "conflicting_label", "conflicting_label", "invalid_label", "missing_customer_id",
    ]  # fmt: skip
    # The labels quarantine has the same columns whatever the input calls them.
    assert list(result.label_quarantine.columns) == [
        "customer_id",
        "defaulted",
        "reason",
        "raw_line",
    ]
    assert result.report.to_dict()["customers_without_label"] == 2  # C2, C5
    assert result.report.to_dict()["labels_without_transactions"] == 1  # C4


def test_cli_writes_all_outputs(tmp_path: Path, handover_dir: Path) -> None:
    code = main([
        "--transactions", str(handover_dir / "data" / "transactions.csv"),
        "--labels", str(handover_dir / "data" / "labels.csv"),
        "--out", str(tmp_path),
    ])  # fmt: skip
    assert code == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "dq_report.json", "dq_report.md", "features.csv", "labels_quarantine.csv",
        "quarantine.csv", "training_set.csv",
    ]  # fmt: skip
    training = pd.read_csv(tmp_path / "training_set.csv")
    assert training.columns[0] == "customer_id" and training.columns[-1] == "defaulted"
    assert "1250" not in (tmp_path / "training_set.csv").read_text()
    assert "-65.98,2500.00,811.34" in (tmp_path / "training_set.csv").read_text()
    report = json.loads((tmp_path / "dq_report.json").read_text())
    assert accounted(report)
    assert (tmp_path / "quarantine.csv").read_text().startswith("transaction_id,")


def test_cli_writes_the_same_set_as_parquet(tmp_path: Path) -> None:
    """One output table for both formats: the same names, the same values."""
    source = tmp_path / "messy.csv"
    source.write_text(MESSY, encoding="utf-8")
    labels = tmp_path / "labels.csv"
    labels.write_text("customer_id,defaulted\nC1,0\nC2,1\nC3,maybe\n", encoding="utf-8")
    args = ["--transactions", str(source), "--labels", str(labels), "--now", NOW.isoformat()]
    assert main([*args, "--out", str(tmp_path / "csv")]) == 0
    assert main([*args, "--out", str(tmp_path / "pq"), "--format", "parquet"]) == 0
    tables = ("features", "training_set", "quarantine", "labels_quarantine")
    assert sorted(p.name for p in (tmp_path / "pq").iterdir()) == sorted(
        [*(f"{t}.parquet" for t in tables), "dq_report.json", "dq_report.md"]
    )
    for table in ("quarantine", "labels_quarantine"):
        as_csv = pd.read_csv(tmp_path / "csv" / f"{table}.csv", dtype=str, keep_default_na=False)
        as_parquet = pd.read_parquet(tmp_path / "pq" / f"{table}.parquet")
        assert len(as_csv) > 0 and list(as_parquet.columns) == list(as_csv.columns)
        assert as_parquet["reason"].tolist() == as_csv["reason"].tolist()
    features = pd.read_parquet(tmp_path / "pq" / "features.parquet")
    assert (
        features["customer_id"].tolist()
        == pd.read_csv(tmp_path / "csv" / "features.csv")["customer_id"].tolist()
    )


def test_cli_without_labels_writes_features_only(tmp_path: Path, handover_dir: Path) -> None:
    transactions = handover_dir / "data" / "transactions.csv"
    assert main(["--transactions", str(transactions), "--out", str(tmp_path)]) == 0
    assert not (tmp_path / "training_set.csv").exists()
    assert len(pd.read_csv(tmp_path / "features.csv")) == 5


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "transactions: file not found"),
        (b"", "transactions: the file is empty"),
        (b"transaction_id,customer_id,timestamp,amount\n", "has a header but no data rows"),
        (b"\x89PNG\r\n\x1a\n\x00\x00binary", "is not valid UTF-8"),
        (b"a,b\n1,2\n", "missing required column(s): transaction_id, customer_id"),
    ],
)
def test_cli_refuses_unusable_input_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, message: str
) -> None:
    path = tmp_path / "transactions.csv"
    if content is not None:
        path.write_bytes(content)
    code = main(["--transactions", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and "\n" not in err
    assert not (tmp_path / "out" / "quarantine.csv").exists()


def test_customer_outliers_use_tukey_fences_and_skip_zero_spread() -> None:
    lines = ["transaction_id,customer_id,timestamp,amount,type"]
    for i in range(20):  # 20 customers spending 10..29, one spending 10,000
        lines.append(f"T{i},C{i:02d},2025-02-01,-{10 + i}.00,debit")
    lines.append("T99,C99,2025-02-01,-10000.00,debit")
    result = run_pipeline(csv_bytes("\n".join(lines) + "\n"), now=NOW)
    outliers = result.report.to_dict()["outliers"]["customers"]["features"]
    assert outliers["total_debit"]["count"] == 1
    assert outliers["gambling_spend"]["count"] is None  # everyone 0: no spread to judge
    assert outliers["num_transactions"]["count"] is None


def test_cli_now_sets_the_future_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        "transaction_id,customer_id,timestamp,amount,type\n"
        "T1,C1,2025-02-01,-5.00,debit\nT2,C1,2025-06-01,-5.00,debit\n"
    )
    assert (
        main(["--transactions", str(path), "--out", str(tmp_path / "a"), "--now", "2025-03-01"])
        == 0
    )
    report = json.loads((tmp_path / "a" / "dq_report.json").read_text())
    assert check_count(report, "timestamp_out_of_range") == 1
    assert (
        main(["--transactions", str(path), "--out", str(tmp_path / "b"), "--now", "2025-07-01"])
        == 0
    )
    report = json.loads((tmp_path / "b" / "dq_report.json").read_text())
    assert check_count(report, "timestamp_out_of_range") == 0
