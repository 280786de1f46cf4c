"""Train a model bundle on Part 1 features.

    python -m scoring.train --training-set artifacts/training_set.csv --out artifacts/trained

Candidates are compared on stratified cross-validation (out-of-fold predictions):
logistic regression on signed-log money + standardised features, plain standardised
logistic regression, and histogram gradient boosting. A linear model is preferred unless
boosting beats it by more than ``--boost-margin`` AUC, because linear contributions give
exact adverse-action reasons and score in microseconds. The decision threshold minimises
expected cost for calibrated probabilities: predict default when p >= 1 / (1 + cost_ratio),
where cost_ratio = cost of a missed default / cost of declining a good customer.

If ``truth.csv`` (customer_id,true_probability) sits beside the training set (synthetic
data), the oracle AUC - the best any model could reach on these labels - is reported too.
"""

from __future__ import annotations

import argparse
import io
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.definitions import FEATURE_NAMES, FLAG_FEATURES, ID, TARGET
from scoring.bundle import sha256_hex
from scoring.manifest import (
    LINEAR_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    REFERENCE_FILE,
    InputSpec,
    Manifest,
)
from scoring.metrics import binary_report, confusion_at
from scoring.packaging import write_bundle
from scoring.reference import Reference, build_reference
from scoring.transforms import signed_log1p

TRUTH_FILE = "truth.csv"
MAX_FOLDS = 5


class TrainingDataError(ValueError):
    """The training set cannot be used; the message says which column or value."""


@dataclass(frozen=True)
class TrainingData:
    ids: pd.Series
    x: pd.DataFrame
    y: np.ndarray
    sha256: str


def read_training_set(path: Path) -> TrainingData:
    """Load and check a training set: ID, every Part 1 feature, TARGET in {0,1}."""
    raw = path.read_bytes()
    df = pd.read_csv(io.BytesIO(raw), dtype={ID: str})
    missing = [c for c in (ID, *FEATURE_NAMES, TARGET) if c not in df.columns]
    if missing:
        raise TrainingDataError(f"training set is missing columns: {missing}")
    x = df[list(FEATURE_NAMES)]
    non_numeric = [c for c in FEATURE_NAMES if not pd.api.types.is_numeric_dtype(x[c])]
    if non_numeric:
        raise TrainingDataError(f"non-numeric feature columns: {non_numeric}")
    x = x.astype(float)
    bad = [c for c in FEATURE_NAMES if not np.isfinite(x[c]).all()]
    if bad:
        raise TrainingDataError(f"empty or non-finite values in feature columns: {bad}")
    target = df[TARGET]
    if not target.isin([0, 1]).all():
        raise TrainingDataError(f"{TARGET} must be 0 or 1 in every row")
    if df[ID].isna().any() or df[ID].duplicated().any():
        raise TrainingDataError(f"{ID} must be present and unique")
    return TrainingData(ids=df[ID], x=x, y=target.to_numpy(dtype=int), sha256=sha256_hex(raw))


def candidates(seed: int) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    def logreg() -> LogisticRegression:
        return LogisticRegression(C=1.0, max_iter=5000)

    return {
        "logreg_signed_log": Pipeline(
            [
                ("signed_log", FunctionTransformer(signed_log1p)),
                ("scale", StandardScaler()),
                ("clf", logreg()),
            ]
        ),
        "logreg": Pipeline([("scale", StandardScaler()), ("clf", logreg())]),
        "hist_gradient_boosting": HistGradientBoostingClassifier(
            learning_rate=0.05,
            max_iter=300,
            max_leaf_nodes=15,
            l2_regularization=1.0,
            early_stopping=False,
            random_state=seed,
        ),
    }


def cross_validate(data: TrainingData, seed: int) -> tuple[int, dict[str, np.ndarray]]:
    """Out-of-fold default probabilities per candidate (stratified k-fold)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    smallest = int(min(np.sum(data.y == 0), np.sum(data.y == 1)))
    folds = min(MAX_FOLDS, smallest)
    if folds < 2:
        raise TrainingDataError("need at least 2 customers in each class for cross-validation")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    oof = {
        name: cross_val_predict(est, data.x, data.y, cv=cv, method="predict_proba")[:, 1]
        for name, est in candidates(seed).items()
    }
    return folds, oof


def choose(aucs: dict[str, float], boost_margin: float) -> tuple[str, str]:
    linear = max((n for n in aucs if n.startswith("logreg")), key=lambda n: aucs[n])
    boost = "hist_gradient_boosting"
    if aucs[boost] > aucs[linear] + boost_margin:
        return boost, (
            f"{boost} CV AUC {aucs[boost]:.4f} beats the best linear model "
            f"({linear}, {aucs[linear]:.4f}) by more than {boost_margin}"
        )
    return linear, (
        f"{linear} has the best linear CV AUC ({aucs[linear]:.4f}); boosting "
        f"({aucs[boost]:.4f}) does not beat it by more than {boost_margin}, and a "
        "linear model gives exact per-feature reasons for adverse-action notices"
    )


def oracle_report(training_set: Path, data: TrainingData) -> dict[str, Any] | None:
    """AUC/Brier of the true probabilities, when the data is synthetic and they are known."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    path = training_set.with_name(TRUTH_FILE)
    if not path.exists():
        return None
    truth = pd.read_csv(path, dtype={ID: str})
    if not {ID, "true_probability"} <= set(truth.columns):
        raise TrainingDataError(f"{TRUTH_FILE} needs columns {ID},true_probability")
    merged = pd.DataFrame({ID: data.ids, "y": data.y}).merge(truth, on=ID, how="inner")
    if merged.empty or merged["y"].nunique() < 2:
        return {"matched_customers": len(merged), "auc": None}
    p = merged["true_probability"].to_numpy(dtype=float)
    return {
        "matched_customers": len(merged),
        "auc": round(float(roc_auc_score(merged["y"], p)), 4),
        "brier": round(float(brier_score_loss(merged["y"], p)), 5),
    }


def describe_estimator(estimator: Any) -> str:
    """Readable, address-free summary such as 'signed_log1p -> StandardScaler -> LR(C=1.0)'."""
    steps = getattr(estimator, "steps", [("", estimator)])
    parts = []
    for _, step in steps:
        func = getattr(step, "func", None)
        name = type(step).__name__
        if func is not None:
            parts.append(f"{name}({func.__module__}.{func.__name__})")
        elif hasattr(step, "C"):
            parts.append(f"{name}(C={step.C}, penalty={step.penalty})")
        else:
            parts.append(name)
    return " -> ".join(parts)


def manifest_inputs() -> list[InputSpec]:
    """All Part 1 features in definition order; 0/1 flags may default to 0."""
    return [
        InputSpec(
            name=n,
            accepts=[n],
            optional=n in FLAG_FEATURES,
            default=0.0 if n in FLAG_FEATURES else None,
        )
        for n in FEATURE_NAMES
    ]


def train(
    training_set: Path,
    out: Path,
    *,
    seed: int = 0,
    cost_ratio: float = 5.0,
    boost_margin: float = 0.01,
    name: str = "part1",
    version: str | None = None,
    data_note: str = "",
    threads: int = 1,
) -> Manifest:
    from threadpoolctl import threadpool_limits

    data = read_training_set(training_set)
    # OpenMP/BLAS thread pools oversubscribe a small shared machine badly (5x slower when
    # other work runs); a fixed count also keeps results reproducible across machines.
    with threadpool_limits(limits=threads):
        folds, oof = cross_validate(data, seed)
        reports = {n: binary_report(data.y, p) for n, p in oof.items()}
        selected, why = choose({n: r["auc"] for n, r in reports.items()}, boost_margin)
        estimator = candidates(seed)[selected].fit(data.x, data.y)
        scores = estimator.predict_proba(data.x)[:, 1]
    threshold = 1.0 / (1.0 + cost_ratio)
    now = datetime.now(UTC).replace(microsecond=0)
    inputs = manifest_inputs()
    metrics = {
        "rows": len(data.y),
        "defaults": int(data.y.sum()),
        "training_set_sha256": data.sha256,
        "cv": {
            "method": "stratified k-fold, out-of-fold predictions",
            "folds": folds,
            "seed": seed,
        },
        "candidates": {n: {"auc": r["auc"], "brier": r["brier"]} for n, r in reports.items()},
        "selected": selected,
        "selection_reason": why,
        "cross_validated": reports[selected],
        "at_threshold": confusion_at(data.y, oof[selected], threshold),
        "oracle": oracle_report(training_set, data),
    }
    return write_bundle(
        out,
        estimator,
        {
            "format_version": 1,
            "name": f"{name}-{selected.replace('_', '-')}",
            "version": version or now.strftime("%Y%m%d.%H%M%S"),
            "created": now,
            "placeholder": False,
            "estimator": describe_estimator(estimator),
            "inputs": inputs,
            "threshold": round(threshold, 6),
            "threshold_reason": (
                f"Expected-cost rule for calibrated probabilities: a missed default is assumed to "
                f"cost {cost_ratio:g}x a wrongly declined good customer, so predict default when "
                f"p >= 1/(1+{cost_ratio:g}). The lender should set the real cost ratio."
            ),
            "metrics": metrics,
            "notes": (
                f"Trained by scoring.train on {training_set.name} ({len(data.y)} customers, "
                f"{int(data.y.sum())} defaults). Inputs are the Part 1 features in "
                "features.definitions order; 0/1 flags may be omitted (default 0), numeric "
                "features are required. Metrics are out-of-fold cross-validation estimates on the "
                "training population; they say nothing about drift or other populations."
                + (f" Data: {data_note}" if data_note else "")
            ),
        },
        verify_rows=data.x.to_numpy(dtype=float),
        reference=training_reference(inputs, data, scores, now),
    )


def training_reference(
    inputs: list[InputSpec], data: TrainingData, scores: np.ndarray, computed: datetime
) -> Reference:
    """Drift reference: every input's distribution on the training rows (quantile bins;
    categories for 0/1 flags) and the fitted model's in-sample scores, which is what a
    batch scored by this model is compared with."""
    columns = [spec.accepts[0] for spec in inputs]
    return build_reference(
        names=[spec.name for spec in inputs],
        columns=columns,
        is_flag=[all(a in FLAG_FEATURES for a in spec.accepts) for spec in inputs],
        matrix=data.x[columns].to_numpy(dtype=float),
        scores=scores,
        computed=computed,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--training-set", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cost-ratio",
        type=float,
        default=5.0,
        help="cost of a missed default / cost of declining a good customer",
    )
    parser.add_argument("--boost-margin", type=float, default=0.01)
    parser.add_argument("--name", default="part1")
    parser.add_argument("--version", default=None)
    parser.add_argument(
        "--threads", type=int, default=1, help="OpenMP/BLAS threads for fitting (default 1)"
    )
    parser.add_argument(
        "--data-note",
        default="",
        help="provenance of the training set, appended to the manifest notes",
    )
    args = parser.parse_args(argv)
    if args.cost_ratio <= 0:
        parser.error("--cost-ratio must be positive")
    try:
        manifest = train(
            args.training_set,
            args.out,
            seed=args.seed,
            cost_ratio=args.cost_ratio,
            boost_margin=args.boost_margin,
            name=args.name,
            version=args.version,
            data_note=args.data_note,
            threads=args.threads,
        )
    except (TrainingDataError, FileNotFoundError, pd.errors.ParserError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = manifest.metrics or {}
    cv = m["cross_validated"]
    files = [MODEL_FILE, MANIFEST_FILE]
    files += [LINEAR_FILE] if manifest.linear else []
    files += [REFERENCE_FILE] if manifest.reference else []
    print(f"wrote {', '.join(files)} to {args.out}: {manifest.model_version}")
    print(f"  selected {m['selected']}: {m['selection_reason']}")
    print(
        f"  CV ({m['cv']['folds']}-fold) AUC {cv['auc']} Gini {cv['gini']} KS {cv['ks']} "
        f"Brier {cv['brier']} calibration slope {cv['calibration_slope']}"
    )
    if m.get("oracle"):
        print(f"  oracle AUC {m['oracle']['auc']} (true probabilities)")
    print(f"  threshold {manifest.threshold}: {m['at_threshold']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
