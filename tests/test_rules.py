"""The rules are typed data, every engine implements all of them (or refuses to run), and
the engine contract is one: one result, one tally, one report built without the clock."""

from __future__ import annotations

import ast
import io
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from benchmarks.duckdb_pipeline import run_duckdb, run_features
from features import rules
from features.labels import clean_labels
from features.pipeline import run_pipeline
from features.rules import (
    FINDINGS,
    LABEL_RULES,
    QUARANTINE_ORDER,
    READER_RULES,
    RULES,
    WINDOW_RULES,
    Rule,
    RuleCode,
    RuleKind,
    UnimplementedRuleError,
    require_every_rule,
)

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2025, 3, 1, tzinfo=UTC)
SMALL = (
    "transaction_id,customer_id,timestamp,amount,type,description\n"
    "T1,C1,2025-02-01T10:00:00,-12.50,debit,TESCO\n"
    "T2,C1,2025-02-02T10:00:00,1000.00,credit,ACME PAYROLL\n"
    "T3,C2,2025-02-03T10:00:00,abc,debit,BAD AMOUNT\n"
)
# A rule added to the table that no engine implements (a plain string: the enum is closed).
NEW_RULE = Rule("brand_new_rule", RuleKind.QUARANTINED, "amount", "quarantined", "New.")  # type: ignore[arg-type]


def test_kinds_are_typed_and_the_tables_derive_from_them() -> None:
    assert all(isinstance(r.code, RuleCode) and isinstance(r.kind, RuleKind) for r in RULES)
    assert tuple(r.code for r in RULES if r.kind is RuleKind.QUARANTINED) == QUARANTINE_ORDER
    assert tuple(r.code for r in RULES if r.kind is RuleKind.KEPT) == FINDINGS
    assert [r.code for r in RULES if r.kind is RuleKind.REMOVED] == [RuleCode.DUPLICATE]
    # Valid rows a decision window keeps out of the features: a kind of their own, neither
    # quarantined nor a finding.
    assert tuple(r.code for r in RULES if r.kind is RuleKind.OUTSIDE_WINDOW) == WINDOW_RULES
    assert WINDOW_RULES == (RuleCode.NO_DECISION_DATE, RuleCode.OUTSIDE_DECISION_WINDOW)
    assert set(READER_RULES) <= set(QUARANTINE_ORDER)
    # Label rules sit beside the transaction rules, with the same types.
    assert {r.code for r in LABEL_RULES} >= {RuleCode.INVALID_LABEL, RuleCode.CONFLICTING_LABEL}
    assert all(isinstance(r.kind, RuleKind) for r in LABEL_RULES)


def test_the_guard_names_the_engine_and_what_is_missing_or_unknown() -> None:
    every = [r.code for r in RULES]
    require_every_rule("x", every)  # complete: no error
    with pytest.raises(
        UnimplementedRuleError, match=r"x engine: no implementation of large_amount"
    ):
        require_every_rule("x", [c for c in every if c is not RuleCode.LARGE_AMOUNT])
    with pytest.raises(UnimplementedRuleError, match="not rules: invalid_label"):
        require_every_rule("x", [*every, RuleCode.INVALID_LABEL])
    # A rule an engine cannot decide by design is excused only when it says why.
    without_utf8 = [c for c in every if c is not RuleCode.INVALID_UTF8]
    with pytest.raises(UnimplementedRuleError):
        require_every_rule("x", without_utf8)
    require_every_rule("x", without_utf8, unsupported={RuleCode.INVALID_UTF8: "why"})


def test_pandas_refuses_to_run_with_a_rule_it_does_not_implement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert run_pipeline(io.BytesIO(SMALL.encode()), now=NOW).report.rows_in == 3
    monkeypatch.setattr(rules, "RULES", (*RULES, NEW_RULE))
    with pytest.raises(UnimplementedRuleError, match=r"pandas engine: .*brand_new_rule"):
        run_pipeline(io.BytesIO(SMALL.encode()), now=NOW)


def test_duckdb_refuses_to_run_with_a_rule_it_does_not_implement(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "t.csv"
    path.write_text(SMALL)
    assert len(run_features(path, NOW)) == 1
    monkeypatch.setattr(rules, "RULES", (*RULES, NEW_RULE))
    with pytest.raises(UnimplementedRuleError, match=r"duckdb engine: .*brand_new_rule"):
        run_features(path, NOW)


def test_the_label_rules_are_guarded_too(monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd

    args = {
        "customer": pd.Series(["C1"]),
        "value": pd.Series(["1"]),
        "reader_reason": pd.Series([None]),
        "raw_line": pd.Series(["C1,1"]),
    }
    assert clean_labels(**args).counts[RuleCode.DUPLICATE] == 0
    monkeypatch.setattr(
        "features.labels.LABEL_RULES", (*LABEL_RULES, replace(NEW_RULE, column="defaulted"))
    )
    with pytest.raises(UnimplementedRuleError, match="labels engine"):
        clean_labels(**args)


ENGINE_SOURCES = [
    "features/spark.py",
    "features/spark_rows.py",
    "benchmarks/duckdb_pipeline.py",
    "features/labels.py",
    "features/synthetic.py",
    "features/pipeline.py",
    "features/quality.py",
    "features/reader.py",
    "features/report.py",
    "features/eda.py",
]


@pytest.mark.parametrize("source", ENGINE_SOURCES)
def test_no_rule_code_is_spelt_as_a_bare_string(source: str) -> None:
    """Engines name rules through ``RuleCode``, so a renamed or removed rule cannot leave a
    stale spelling behind."""
    codes = {c.value for c in RuleCode}
    tree = ast.parse((ROOT / source).read_text(encoding="utf-8"))
    bare = sorted(
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in codes
    )
    assert bare == []


def test_the_report_never_reads_the_clock() -> None:
    """``generated_at`` is passed in; the report module has no call to ``now``."""
    tree = ast.parse((ROOT / "features" / "report.py").read_text(encoding="utf-8"))
    calls = [
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    ]
    assert "now" not in calls and "today" not in calls and "utcnow" not in calls


def test_reruns_with_the_same_instants_give_the_same_report() -> None:
    stamp = datetime(2025, 3, 2, 9, 30, tzinfo=UTC)
    first = run_pipeline(io.BytesIO(SMALL.encode()), now=NOW, generated_at=stamp).report
    second = run_pipeline(io.BytesIO(SMALL.encode()), now=NOW, generated_at=stamp).report
    assert first.generated_at == "2025-03-02T09:30:00+00:00"
    assert replace(first, elapsed_seconds=0) == replace(second, elapsed_seconds=0)
    # Without generated_at, the report is stamped with the run's instant, not the clock.
    assert run_pipeline(io.BytesIO(SMALL.encode()), now=NOW).report.generated_at.startswith(
        "2025-03-01T00:00:00"
    )


def test_duckdb_fills_the_same_contract(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(SMALL)
    labels = tmp_path / "labels.csv"
    labels.write_text("customer_id,defaulted\nC1,0\nC2,1\nC3,maybe\n")
    expected = run_pipeline(path, labels, now=NOW, generated_at=NOW)
    got = run_duckdb(path, labels, now=NOW, generated_at=NOW)
    assert type(got) is type(expected)
    assert got.report.engine == "duckdb" and expected.report.engine == "pandas"
    same = {"engine": "x", "elapsed_seconds": 0.0}
    # Every count, label figure and outlier fence agrees; DuckDB keeps no example values.
    assert replace(got.report, **same, checks=()) == replace(expected.report, **same, checks=())
    assert [(c.check, c.count) for c in got.report.checks] == [
        (c.check, c.count) for c in expected.report.checks
    ]
    assert got.training_set.equals(expected.training_set)
    assert got.label_quarantine.equals(expected.label_quarantine)
