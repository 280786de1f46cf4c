"""EDA plots: three real PNGs from a training set and a data-quality report."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.definitions import FEATURE_NAMES, FLAG_FEATURES, ID, TARGET
from features.eda import (
    DISTRIBUTION_PLOT,
    FLAG_PLOT,
    QUALITY_PLOT,
    EdaError,
    flag_default_rates,
    main,
    quality_checks,
    run_eda,
)
from features.synthetic import generate

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _assert_plots(paths: list[Path], out: Path) -> None:
    assert [p.name for p in paths] == [DISTRIBUTION_PLOT, FLAG_PLOT, QUALITY_PLOT]
    for path in paths:
        assert path.parent == out and path.is_file()
        width, height = _png_size(path)
        assert width >= 1000 and height >= 600, path.name
        assert 20_000 < path.stat().st_size < 2_000_000, path.name
    assert not list(out.glob("*.partial*"))


def _training_set(n: int, seed: int) -> pd.DataFrame:
    """A training set with the documented columns and plausible values."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({ID: [f"C{i:05d}" for i in range(n)]})
    for name in FEATURE_NAMES:
        frame[name] = rng.integers(0, 50, n)
    frame["total_credit"] = np.round(rng.lognormal(9, 1, n), 2)
    frame["total_debit"] = -np.round(rng.lognormal(9, 1, n), 2)
    frame["net_flow"] = frame["total_credit"] + frame["total_debit"]
    frame["max_debit"] = np.round(rng.lognormal(6, 1, n), 2)
    frame["gambling_spend"] = np.where(rng.random(n) < 0.2, rng.lognormal(5, 1, n), 0).round(2)
    frame["rent_to_income"] = rng.uniform(0, 0.8, n).round(4)
    frame["days_since_last_salary"] = np.where(rng.random(n) < 0.2, 365, rng.integers(0, 40, n))
    frame["salary_month_share"] = rng.choice([0, 0.5, 0.8, 1.0], n)
    for flag in FLAG_FEATURES:
        frame[flag] = (rng.random(n) < 0.4).astype(int)
    frame[TARGET] = (rng.random(n) < 0.12).astype(int)
    return frame


def _report(rows_in: int) -> dict:
    codes = [
        ("duplicate", "removed (first copy kept)"),
        ("malformed_row", "quarantined"),
        ("missing_amount", "quarantined"),
        ("large_amount", "kept; flagged as outlier"),
    ]
    checks = [
        {"check": c, "column": "*", "count": 7 * i, "action": a, "examples": []}
        for i, (c, a) in enumerate(codes)
    ]
    return {
        "rows_in": rows_in,
        "rows_used": rows_in - 7,
        "rows_duplicate": 0,
        "rows_quarantined": 7,
        "checks": checks,
        "labels": {
            "checks": [
                {"check": "invalid_label", "count": 2, "action": "quarantined", "examples": []}
            ]
        },
    }


def test_plots_from_a_documented_training_set(tmp_path: Path) -> None:
    _training_set(2_000, seed=1).to_csv(tmp_path / "training_set.csv", index=False)
    (tmp_path / "dq_report.json").write_text(json.dumps(_report(50_000)))
    out = tmp_path / "eda"
    paths = run_eda(tmp_path / "training_set.csv", tmp_path / "dq_report.json", out)
    _assert_plots(paths, out)


def test_handover_sized_set_through_the_real_pipeline(tmp_path: Path, handover_dir: Path) -> None:
    from features.pipeline import run_pipeline
    from features.publish import LocalDirectory, publish

    data = handover_dir / "data"
    result = run_pipeline(data / "transactions.csv", data / "labels.csv")
    publish(result, LocalDirectory(tmp_path))
    assert len(pd.read_csv(tmp_path / "training_set.csv")) == 5
    out = tmp_path / "eda"
    _assert_plots(run_eda(tmp_path / "training_set.csv", tmp_path / "dq_report.json", out), out)


def test_messy_synthetic_set_through_the_real_pipeline(tmp_path: Path) -> None:
    from features.pipeline import run_pipeline
    from features.publish import LocalDirectory, publish

    generate(tmp_path / "raw", rows=20_000, customers=400, seed=2, messy=True)
    result = run_pipeline(tmp_path / "raw" / "transactions.csv", tmp_path / "raw" / "labels.csv")
    publish(result, LocalDirectory(tmp_path / "artifacts"))
    report = json.loads((tmp_path / "artifacts" / "dq_report.json").read_text())
    table = quality_checks(report)
    assert table["count"].sum() > 0
    assert "labels: conflicting_label" in set(table["check"])
    out = tmp_path / "eda"
    assert (
        main(
            [
                "--training-set",
                str(tmp_path / "artifacts" / "training_set.csv"),
                "--report",
                str(tmp_path / "artifacts" / "dq_report.json"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    _assert_plots([out / DISTRIBUTION_PLOT, out / FLAG_PLOT, out / QUALITY_PLOT], out)


def test_flag_default_rates_are_counted_per_value() -> None:
    frame = _training_set(4, seed=0)
    frame["has_gambling"] = [1, 1, 0, 0]
    frame["has_fee"] = [1, 1, 1, 1]
    frame[TARGET] = [1, 0, 0, 0]
    rates = flag_default_rates(frame).set_index(["flag", "value"])
    assert rates.loc[("has_gambling", 1), "rate"] == 0.5
    assert rates.loc[("has_gambling", 0), "rate"] == 0.0
    assert rates.loc[("has_gambling", 1), "customers"] == 2
    assert rates.loc[("has_fee", 0), "customers"] == 0
    assert np.isnan(rates.loc[("has_fee", 0), "rate"])


def test_unusable_inputs_are_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    frame = _training_set(50, seed=3).drop(columns=["net_flow", "has_fee"])
    frame.to_csv(tmp_path / "training_set.csv", index=False)
    (tmp_path / "dq_report.json").write_text(json.dumps(_report(100)))
    with pytest.raises(EdaError, match="net_flow, has_fee"):
        run_eda(tmp_path / "training_set.csv", tmp_path / "dq_report.json", tmp_path / "eda")
    _training_set(50, seed=3).to_csv(tmp_path / "training_set.csv", index=False)
    (tmp_path / "dq_report.json").write_text(json.dumps({"checks": []}))
    assert (
        main(
            [
                "--training-set",
                str(tmp_path / "training_set.csv"),
                "--report",
                str(tmp_path / "dq_report.json"),
                "--out",
                str(tmp_path / "eda"),
            ]
        )
        == 2
    )
    assert "rows_in" in capsys.readouterr().err
    assert not (tmp_path / "eda").exists()
