"""How well a model does on customers it was not fitted on, with uncertainty.

* Out of time: when the training set carries ``decision_date``, customers are grouped into
  calendar-month cohorts; the latest cohorts (at least ``VALIDATION_SHARE`` of customers)
  are held out and the model is fitted on the earlier ones only. That is the question a
  lender asks: does a model built on the past rank and calibrate the next applicants?
* Confidence intervals: percentile bootstrap (resampling customers) for AUC, Brier score,
  calibration-in-the-large (observed minus mean predicted rate) and calibration slope.

Pure functions on numpy / pandas; scikit-learn only for the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

VALIDATION_SHARE = 0.2
BOOTSTRAP_ROUNDS = 200
CONFIDENCE = 0.95


@dataclass(frozen=True)
class TimeSplit:
    train: np.ndarray  # boolean masks over the training rows
    validate: np.ndarray
    train_cohorts: list[str]
    validate_cohorts: list[str]

    def describe(self, dates: pd.Series, y: np.ndarray) -> dict[str, Any]:
        def side(mask: np.ndarray, cohorts: list[str]) -> dict[str, Any]:
            return {
                "cohorts": cohorts,
                "from": str(dates[mask].min().date()),
                "to": str(dates[mask].max().date()),
                "rows": int(mask.sum()),
                "defaults": int(y[mask].sum()),
            }

        return {
            "train": side(self.train, self.train_cohorts),
            "validate": side(self.validate, self.validate_cohorts),
        }


def time_split(
    dates: pd.Series, y: np.ndarray, share: float = VALIDATION_SHARE
) -> tuple[TimeSplit | None, str]:
    """Earlier month cohorts to fit, the latest ones (>= ``share`` of rows) to validate;
    (None, why) when that is not possible."""
    months = dates.dt.to_period("M")
    counts = months.value_counts().sort_index()
    if len(counts) < 2:
        return None, "every decision_date falls in one calendar month, so there is no later cohort"
    held, total = [], 0
    for month in reversed(counts.index):
        if total >= share * len(dates) or len(held) == len(counts) - 1:
            break
        held.append(month)
        total += int(counts[month])
    validate = months.isin(held).to_numpy()
    train = ~validate
    for name, mask in (("earlier", train), ("later", validate)):
        if len(np.unique(y[mask])) < 2:
            return None, f"the {name} cohorts do not hold both outcomes"
    return (
        TimeSplit(
            train=train,
            validate=validate,
            train_cohorts=[str(m) for m in counts.index if m not in held],
            validate_cohorts=[str(m) for m in sorted(held)],
        ),
        "",
    )


def _calibration(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    from scoring.metrics import calibration_slope_intercept

    slope, _ = calibration_slope_intercept(y, p)
    return slope, float(y.mean() - p.mean())


def bootstrap_intervals(
    y: np.ndarray, p: np.ndarray, *, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0
) -> dict[str, Any]:
    """Percentile bootstrap intervals (resampling customers) for the headline measures."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    rng = np.random.default_rng(seed)
    stats: dict[str, list[float]] = {
        "auc": [],
        "brier": [],
        "calibration_slope": [],
        "calibration_in_the_large": [],
    }
    for _ in range(rounds):
        idx = rng.integers(0, len(y), len(y))
        yb, pb = y[idx], p[idx]
        if yb.min() == yb.max():
            continue
        stats["auc"].append(float(roc_auc_score(yb, pb)))
        stats["brier"].append(float(brier_score_loss(yb, pb)))
        slope, citl = _calibration(yb, pb)
        stats["calibration_slope"].append(slope)
        stats["calibration_in_the_large"].append(citl)
    tail = (1 - CONFIDENCE) / 2 * 100
    out: dict[str, Any] = {
        "method": f"percentile bootstrap over customers, {rounds} rounds, seed {seed}",
        "level": CONFIDENCE,
    }
    for name, values in stats.items():
        low, high = np.percentile(values, [tail, 100 - tail]) if values else (np.nan, np.nan)
        out[name] = [round(float(low), 4), round(float(high), 4)]
    return out


def cohort_table(dates: pd.Series, y: np.ndarray, p: np.ndarray) -> list[dict[str, Any]]:
    """Per calendar month: customers, observed and predicted default rates, AUC."""
    from sklearn.metrics import roc_auc_score

    months = dates.dt.to_period("M").to_numpy()
    rows = []
    for month in sorted(set(months)):
        mask = months == month
        yy, pp = y[mask], p[mask]
        rows.append(
            {
                "cohort": str(month),
                "rows": int(mask.sum()),
                "observed_rate": round(float(yy.mean()), 4),
                "mean_predicted": round(float(pp.mean()), 4),
                "auc": round(float(roc_auc_score(yy, pp)), 4) if 0 < yy.sum() < len(yy) else None,
            }
        )
    return rows
