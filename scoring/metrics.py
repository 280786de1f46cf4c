"""Model-quality measures for binary default scores. Pure functions on numpy arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve


def ks_statistic(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Kolmogorov-Smirnov: max(TPR - FPR) over thresholds, and the threshold where it peaks."""
    fpr, tpr, thresholds = roc_curve(y, p)
    gap = tpr - fpr
    best = int(np.argmax(gap))
    return float(gap[best]), float(min(thresholds[best], 1.0))


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """Reliability by equal-count bins of predicted probability: mean predicted vs observed."""
    order = np.argsort(p, kind="stable")
    rows = []
    for chunk in np.array_split(order, min(bins, len(p))):
        if len(chunk) == 0:
            continue
        rows.append(
            {
                "n": len(chunk),
                "mean_predicted": round(float(p[chunk].mean()), 4),
                "observed_rate": round(float(y[chunk].mean()), 4),
            }
        )
    return rows


def calibration_slope_intercept(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Logistic recalibration y ~ a + b*logit(p): b=1, a=0 means perfectly calibrated."""
    from sklearn.linear_model import LogisticRegression

    eps = 1e-9
    logit = np.log(np.clip(p, eps, 1 - eps) / np.clip(1 - p, eps, 1 - eps)).reshape(-1, 1)
    fit = LogisticRegression(penalty=None, max_iter=1000).fit(logit, y)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def binary_report(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """AUC, Gini, KS, Brier and calibration for out-of-fold predictions."""
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    auc = float(roc_auc_score(y, p))
    ks, ks_threshold = ks_statistic(y, p)
    slope, intercept = calibration_slope_intercept(y, p)
    return {
        "auc": round(auc, 4),
        "gini": round(2 * auc - 1, 4),
        "ks": round(ks, 4),
        "ks_threshold": round(ks_threshold, 4),
        "brier": round(float(brier_score_loss(y, p)), 5),
        "brier_base_rate": round(float(np.mean(y) * (1 - np.mean(y))), 5),
        "mean_predicted": round(float(p.mean()), 4),
        "observed_rate": round(float(y.mean()), 4),
        "calibration_slope": round(slope, 3),
        "calibration_intercept": round(intercept, 3),
        "calibration_bins": calibration_table(y, p),
    }


def confusion_at(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    """Counts and rates when predicting default at p >= threshold."""
    y = np.asarray(y, dtype=int)
    pred = np.asarray(p) >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    return {
        "threshold": round(threshold, 4),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "flagged_share": round(float(pred.mean()), 4),
    }
