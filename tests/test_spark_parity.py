"""The Spark engine gives the pandas engine's outputs: same customers, counts, flags, sums,
report counts and quarantine reasons. Spark runs in local mode, one session for the file."""

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

pyspark = pytest.importorskip("pyspark", reason="pyspark is in requirements-spark.txt")

from conftest import assert_same_run  # noqa: E402
from test_pipeline import MESSY, NOW  # noqa: E402

from features import spark as engine  # noqa: E402
from features.definitions import FEATURE_NAMES  # noqa: E402
from features.engine import RunResult  # noqa: E402
from features.pipeline import run_pipeline  # noqa: E402
from features.schema import InputError  # noqa: E402
from features.synthetic import generate  # noqa: E402
from features.text import normalise  # noqa: E402

pytestmark = pytest.mark.spark

AFTER_SYNTHETIC = datetime(2025, 7, 1, tzinfo=UTC)


def both(
    spark, tmp_path: Path, text: str, labels: str | None = None, now: datetime = NOW
) -> tuple[RunResult, RunResult]:
    """(pandas, spark) results for the same CSV text."""
    path = tmp_path / "transactions.csv"
    path.write_text(text, encoding="utf-8")
    label_path = None
    if labels is not None:
        label_path = tmp_path / "labels.csv"
        label_path.write_text(labels, encoding="utf-8")
    return run_files(spark, path, label_path, now)


def run_files(spark, path: Path, labels: Path | None, now: datetime) -> tuple[RunResult, RunResult]:
    expected = run_pipeline(path, labels, now=now)
    got = engine.run_spark(spark, str(path), str(labels) if labels else None, now=now)
    return expected, got


def assert_same(got: RunResult, expected: RunResult) -> None:
    """The shared engine comparison, and the same quarantined rows (Spark writes them too)."""
    assert_same_run(got, expected, rtol=1e-9)
    pd.testing.assert_frame_equal(got.quarantine, expected.quarantine.astype(str))


def test_handover_files(spark, handover_dir: Path) -> None:
    data = handover_dir / "data"
    expected, got = run_files(spark, data / "transactions.csv", data / "labels.csv", NOW)
    assert_same(got, expected)
    assert got.training_set["customer_id"].tolist() == [f"CUST_000{i}" for i in range(1, 6)]
    assert got.report.to_dict()["rows_used"] == 10


MALFORMED_LINES = "T30,C3,2025-02-03T12:00:00,-5.00,debit,TOO,MANY\nT31,C3\n"


def test_messy_fixture_with_malformed_rows(spark, tmp_path: Path) -> None:
    labels = "customer_id,defaulted\nC1,0\nC1,0\nC2,1\nC3,maybe\n,1\nC9,1\n"
    expected, got = both(spark, tmp_path, MESSY + MALFORMED_LINES, labels)
    assert_same(got, expected)
    reasons = dict(zip(got.quarantine["transaction_id"], got.quarantine["reason"], strict=False))
    assert reasons["T02"] == "conflicting_transaction_id"
    assert got.quarantine["reason"].tolist()[-2:] == ["malformed_row", "malformed_row"]
    assert got.quarantine["raw_line"].tolist()[-1] == "T31,C3"


# Inputs where a naive translation to Spark differs from Arrow/Python: strptime leniency
# (1-digit fields, day overflow, whitespace runs), Unicode whitespace and letters,
# amount spellings, U+0130 in a type.
EDGE = (
    "transaction_id,customer_id,timestamp,amount,type,description\n"
    "E01,K1,2025-2-3,-1.00,debit,RENT²\n"
    "E02,K1,2025-02-30T10:00:00,-1.00,debit,café RENT\n"
    "E03,K1,2025-02-03  10:00:00,-1.00,debit,STRAẞE TESCO\n"
    "E04,K1,3/2/2025 1:2,-1.00,debit,rent\u0301 x\n"
    "E05,K1,2025-02-03T10:00:60Z,-1.00,debit,NETFLIX_COM\n"
    "E06,K1,25-02-03,-1.00,debit,x\n"
    "E07,K1,2025-02-0310:00:00,+1.00,credit,PAY-ROLL\n"
    "E08,\u00a0K2\u2003,2025-02-03,£-5.00,\u00a0Debit\u3000,BET\u00a0365\n"
    "E09,K2,2025-02-03,£+5,DEBİT,ʻRENT ʼ\n"
    "E10,K2,2025-02-03,\u20091,234.5\u2009,cr,ΟΔΟΣ SALARY\n"
    "E11,K2,2025-02-03,-0.00,CR,\u0130STANBUL RENT\n"
    "E12,K2,2025-02-03t10:00:00,1.00,credit,x\n"
    "E13,K2,2025-13-01,1.00,credit,x\n"
    "E14,K2,2025-02-03,1,23.00,credit,x\n"
    "E15,K2,2025-02-03,007.5,credit,Ⅻ RENT\n"
    "E16,K2,2025-02-03,.50,credit,x\n"
    "E17,K2,2025-02-03,12.,credit,x\n"
    'E18,K3,2025-02-03,"1,000,000.01",credit,"quoted, ""comma"""\n'
    "E19,K3,2025-02-03,１２.00,credit,x\n"
    "E20,K3,2025-02-03 24:00,1.00,credit,x\n"
)


def test_edge_cases_of_the_rule_translations(spark, tmp_path: Path) -> None:
    expected, got = both(spark, tmp_path, EDGE)
    assert_same(got, expected)
    # Anchors: no 30 February, no unpadded fields; a UK date and a £ amount are fine.
    reasons = dict(zip(got.quarantine["transaction_id"], got.quarantine["reason"], strict=False))
    assert reasons["E02"] == reasons["E01"] == reasons["E04"] == "invalid_timestamp"
    assert "E08" not in reasons and "E10" not in reasons


def test_messy_synthetic_batch_read_in_many_partitions(spark, tmp_path: Path) -> None:
    generate(tmp_path, rows=4_000, customers=120, seed=7, layout="handover", messy=True)
    injected = json.loads((tmp_path / "injected.json").read_text())
    spark.conf.set("spark.sql.files.maxPartitionBytes", "16384")  # ~20 partitions
    try:
        expected, got = run_files(
            spark, tmp_path / "transactions.csv", tmp_path / "labels.csv", AFTER_SYNTHETIC
        )
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    assert_same(got, expected)
    counts = {c["check"]: c["count"] for c in got.report.to_dict()["checks"]}
    assert got.report.to_dict()["decisions"]["mode"] == "decision_dates"
    assert counts["outside_decision_window"] > 0 and counts["no_decision_date"] > 0
    assert counts["duplicate"] == injected["duplicate"] > 0
    assert counts["conflicting_transaction_id"] == injected["conflicting_transaction_id"] > 0


def test_decision_windows_and_the_lookback_through_both_clis(spark, tmp_path: Path) -> None:
    """Decision-date mode: the hand-made window edges (time zones, the decision's midnight,
    the lookback's first second, customers without a date or without rows in their window),
    with --lookback-days through `python -m features` for either engine, byte for byte."""
    from test_point_in_time import EDGE_LABELS, EDGES

    from features.cli import main as pandas_main

    (tmp_path / "t.csv").write_text(EDGES + "\n")
    (tmp_path / "l.csv").write_text(EDGE_LABELS + "\n")
    args = ["--transactions", str(tmp_path / "t.csv"), "--labels", str(tmp_path / "l.csv"),
            "--now", "2025-07-01T00:00:00", "--lookback-days", "30"]  # fmt: skip
    assert pandas_main([*args, "--out", str(tmp_path / "pandas")]) == 0
    assert pandas_main([*args, "--engine", "spark", "--out", str(tmp_path / "spark")]) == 0
    for name in ("features.csv", "training_set.csv", "quarantine.csv", "labels_quarantine.csv"):
        spark_bytes = (tmp_path / "spark" / name).read_bytes()
        assert spark_bytes == (tmp_path / "pandas" / name).read_bytes(), name
    reports = [
        json.loads((tmp_path / d / "dq_report.json").read_text()) for d in ("pandas", "spark")
    ]
    for report in reports:
        report.pop("engine"), report.pop("generated_at"), report.pop("elapsed_seconds")
    assert reports[0] == reports[1]
    assert reports[1]["decisions"]["lookback_days"] == 30
    training = pd.read_csv(tmp_path / "spark" / "training_set.csv")
    assert training["decision_date"].tolist() == ["2025-03-01", "2025-04-01"]
    for days in (31, 60):  # the window moves in both engines alike
        expected, got = run_files_with(spark, tmp_path, days)
        assert_same(got, expected)


def run_files_with(spark, directory: Path, lookback: int) -> tuple[RunResult, RunResult]:
    paths = (directory / "t.csv", directory / "l.csv")
    expected = run_pipeline(*paths, now=AFTER_SYNTHETIC, lookback_days=lookback)
    got = engine.run_spark(spark, *(str(p) for p in paths), now=AFTER_SYNTHETIC,
                           lookback_days=lookback)  # fmt: skip
    return expected, got


def test_normalise_matches_python_on_every_bmp_code_point(spark) -> None:
    codes = [c for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF]
    texts = [f"Rent{chr(c)}x 9" for c in codes] + ["RENT 😀 𝐀B", "İSTANBUL", "ΟΔΟΣ."]
    frame = spark.createDataFrame(pd.DataFrame({"i": range(len(texts)), "t": texts}))
    clean = engine.normalise(frame["t"], engine.non_letter_class(spark))
    got = frame.select("i", clean.alias("n"), pyspark.sql.functions.lower("t").alias("low"))
    got = got.toPandas().sort_values("i")
    wrong = [
        (t, n)
        for t, n, low in zip(texts, got["n"], got["low"], strict=True)
        if n != normalise(t) and low == t.lower()
    ]
    # Only code points the two Unicode versions lowercase differently may differ.
    assert wrong == []
    assert sum(n == normalise(t) for t, n in zip(texts, got["n"], strict=True)) > 0.999 * len(texts)


def test_cli_writes_the_pandas_cli_files(spark, tmp_path: Path, handover_dir: Path) -> None:
    from features.cli import main as pandas_main

    text = (handover_dir / "data" / "transactions.csv").read_text() + "\n" + MESSY.split("\n", 1)[1]
    source = tmp_path / "transactions.csv"
    source.write_text(text)
    labels = str(handover_dir / "data" / "labels.csv")
    args = ["--transactions", str(source), "--labels", labels]
    assert pandas_main([*args, "--out", str(tmp_path / "pandas")]) == 0
    # `python -m features --engine spark` hands over to the Spark engine.
    assert pandas_main([*args, "--engine", "spark", "--out", str(tmp_path / "spark")]) == 0
    for name in ("features.csv", "training_set.csv", "quarantine.csv", "labels_quarantine.csv"):
        spark_bytes = (tmp_path / "spark" / name).read_bytes()
        assert spark_bytes == (tmp_path / "pandas" / name).read_bytes(), name
    report = json.loads((tmp_path / "spark" / "dq_report.json").read_text())
    assert report["engine"] == "spark" and report["rows_quarantined"] > 0
    assert (tmp_path / "spark" / "dq_report.md").read_text().startswith("# Data-quality report")
    assert not [p.name for p in (tmp_path / "spark").iterdir() if p.name.startswith(("_", "."))]

    assert engine.main([*args, "--out", str(tmp_path / "pq"), "--format", "parquet"]) == 0
    training = pd.read_parquet(tmp_path / "pq" / "training_set.parquet")
    assert list(training.columns) == ["customer_id", *FEATURE_NAMES, "defaulted"]
    quarantine = pd.read_parquet(tmp_path / "pq" / "quarantine.parquet")
    assert (
        quarantine["reason"].tolist()
        == pd.read_csv(tmp_path / "pandas" / "quarantine.csv", keep_default_na=False)[
            "reason"
        ].tolist()
    )


def test_the_cli_hands_now_and_every_argument_to_spark(
    spark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m features --engine=spark --now ...` runs Spark with that instant (it used
    to die: the Spark parser had no --now, `--engine=spark` reached it unfiltered, and an
    argument that was literally `spark` was dropped)."""
    from features.cli import main as cli_main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "transactions.csv").write_text(
        "transaction_id,customer_id,timestamp,amount,type,description\n"
        "T1,C1,2025-02-27T10:00:00,-5.00,debit,TESCO\n"
        "T2,C1,2025-03-01T23:00:00,-6.00,debit,WITHIN A DAY OF NOW\n"
        "T3,C2,2025-03-05T10:00:00,-7.00,debit,AFTER NOW\n"
    )
    args = ["--transactions", "transactions.csv", "--no-labels", "--now", "2025-03-01T00:00"]
    assert cli_main([*args, "--out", "pandas"]) == 0
    assert cli_main([*args, "--engine=spark", "--out", "spark"]) == 0
    for name in ("features.csv", "quarantine.csv"):
        assert (tmp_path / "spark" / name).read_bytes() == (tmp_path / "pandas" / name).read_bytes()
    report = json.loads((tmp_path / "spark" / "dq_report.json").read_text())
    counts = {c["check"]: c["count"] for c in report["checks"]}
    assert report["engine"] == "spark" and counts["timestamp_out_of_range"] == 1
    assert engine.main([*args, "--out", "spark2"]) == 0  # python -m features.spark, same args
    assert (tmp_path / "spark2" / "quarantine.csv").read_bytes() == (
        tmp_path / "pandas" / "quarantine.csv"
    ).read_bytes()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "transactions: file not found"),
        (b"transaction_id,customer_id,timestamp,amount\n", "has a header but no data rows"),
        (b"a,b\n1,2\n", "missing required column(s): transaction_id, customer_id"),
    ],
)
def test_unusable_input_is_refused_like_pandas(
    spark, tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "transactions.csv"
    if content is not None:
        path.write_bytes(content)
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            run_pipeline(io.BytesIO(content))
    with pytest.raises(InputError) as refused:
        engine.run_spark(spark, str(path))
    assert message in str(refused.value)


def test_spark_refuses_to_run_with_a_rule_it_does_not_implement(
    spark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_rules import NEW_RULE, SMALL

    from features import rules

    path = tmp_path / "transactions.csv"
    path.write_text(SMALL)
    monkeypatch.setattr(rules, "RULES", (*rules.RULES, NEW_RULE))
    with pytest.raises(rules.UnimplementedRuleError, match=r"spark engine: .*brand_new_rule"):
        engine.run_spark(spark, str(path), now=NOW)


def test_runtime_modules_never_import_pyspark() -> None:
    root = Path(__file__).resolve().parents[1]
    modules = ["features", "features.pipeline", "features.cli", "features.outputs"]
    modules += [f"scoring.{p.stem}" for p in (root / "scoring").glob("*.py")]
    modules += [f"blobflow.{p.stem}" for p in (root / "blobflow").glob("*.py")]
    if (root / "function_app.py").is_file():
        modules.append("function_app")
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pyspark'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


# --- issue 16: the row rule, new timestamp forms, new quarantine reasons -------------------

CORPUS = Path(__file__).parent / "hostile"
# Spark reads text as UTF-8 (bytes that are not UTF-8 become U+FFFD): no invalid_utf8.
SPARK_CANNOT = {"latin1_bytes.csv"}
CORPUS_NOW = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "name", sorted(p.name for p in CORPUS.glob("*.csv") if p.name not in SPARK_CANNOT)
)
def test_hostile_corpus(spark, tmp_path: Path, name: str) -> None:
    try:
        expected = run_pipeline(CORPUS / name, now=CORPUS_NOW)
    except InputError as refused:
        with pytest.raises(InputError) as spark_refused:
            engine.run_spark(spark, str(CORPUS / name), now=CORPUS_NOW)
        assert str(spark_refused.value) == str(refused)
        return
    got = engine.run_spark(spark, str(CORPUS / name), now=CORPUS_NOW)
    assert_same(got, expected)


def test_new_timestamp_forms_and_clock_changes(spark, tmp_path: Path) -> None:
    from test_duckdb_parity import TIMESTAMPS

    expected, got = both(spark, tmp_path, TIMESTAMPS, now=datetime(2025, 3, 1, tzinfo=UTC))
    assert_same(got, expected)
    assert got.report.to_dict()["as_of"] == expected.report.to_dict()["as_of"]


def test_generated_files_with_stray_quotes_nuls_and_odd_line_ends(spark, tmp_path: Path) -> None:
    """Random cells put in unquoted (quotes, NULs and line breaks land anywhere), with every
    line ending: Spark and pandas count and use the same rows."""
    rng = np.random.default_rng(16)
    alphabet = list('ab ,"\n\r\x00')
    for ending in ("\n", "\r\n", "\r"):
        lines = ["transaction_id,customer_id,timestamp,amount,type,description"]
        for i in range(300):
            cells = ["".join(rng.choice(alphabet, rng.integers(0, 4))) for _ in range(2)]
            lines.append(
                f"T{i}{cells[0]},C{i % 7},2025-02-0{1 + i % 9},-{i}.50,debit,SHOP{cells[1]}"
            )
        path = tmp_path / f"g{len(ending)}{ending == chr(13)}.csv"
        path.write_bytes((ending.join(lines) + ending).encode())
        expected, got = run_files(spark, path, None, NOW)
        assert_same(got, expected)
        assert got.report.to_dict()["rows_in"] == expected.report.to_dict()["rows_in"] > 0
