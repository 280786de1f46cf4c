"""No customer ids, amounts or descriptions in logs at INFO and above."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from features.cli import main


def test_pipeline_logs_carry_no_customer_data(
    tmp_path: Path, handover_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    transactions = handover_dir / "data" / "transactions.csv"
    caplog.set_level(logging.INFO)
    assert main(["--transactions", str(transactions), "--out", str(tmp_path), "--no-labels"]) == 0
    text = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert "rows in 10" in text  # the logs do say something useful
    raw = pd.read_csv(transactions, dtype=str)
    secrets = set(raw["customer_id"]) | set(raw["description"]) | set(raw["amount"])
    secrets |= {a.lstrip("-") for a in raw["amount"]}
    leaked = sorted(s for s in secrets if s in text)
    assert leaked == []
