"""Train a model bundle on Part 1 features.

    python -m scoring.train --training-set artifacts/training_set.csv --out artifacts/trained

The model is a sign-limited logistic regression (``scoring.constrained``): every input's
coefficient keeps the sign its risk direction in ``scoring.reasons`` allows, inputs that
only add collinearity are dropped first (``scoring.selection``), and contributions are
measured from each input's training median, so reasons can be given per family in words.
A feature without a declared direction stops training. Two challengers are measured on the
same customers and reported beside it: unconstrained logistic regression (what the sign
limits cost) and histogram gradient boosting with monotonic constraints from the same
directions. Boosting is selected only if it beats the sign-limited model by more than
``--boost-margin`` AUC, since it gives no exact reasons.

Validation: if the training set has a ``decision_date`` column (ISO dates; never a model
input), the latest calendar-month cohorts are held out and everything (selection and fit)
is done on the earlier ones: out-of-time AUC and calibration with bootstrap intervals.
Stratified cross-validation is always reported too; without dates it is the only estimate
and the metrics say why out-of-time validation was not possible.

The decision threshold minimises expected cost for calibrated probabilities: predict default
when p >= 1 / (1 + cost_ratio), cost_ratio = cost of a missed default / cost of declining a
good customer. ``lookback_days`` (history window of the features) comes from
``--lookback-days`` or the training set's ``dq_report.json``; requests may declare only it.

If ``truth.csv`` (customer_id,true_probability) sits beside the training set (synthetic
data), the oracle AUC - the best any model could reach on these labels - is reported too.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from featurespec import FEATURE_NAMES, FLAG_FEATURES, ID, TARGET
from scoring.bundle import sha256_hex
from scoring.explain import NOT_LINEAR, Explainer
from scoring.manifest import (
    LINEAR_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    REFERENCE_FILE,
    InputSpec,
    LookbackSection,
    Manifest,
    ReasonsSection,
)
from scoring.metrics import binary_report, confusion_at
from scoring.packaging import write_bundle
from scoring.reasons import FAMILIES, FeatureRisk, RiskTableError, check_table
from scoring.reference import Reference, build_reference
from scoring.selection import Selection, select_inputs
from scoring.transforms import signed_log1p
from scoring.validation import bootstrap_intervals, cohort_table, time_split

TRUTH_FILE = "truth.csv"
REPORT_FILE = "dq_report.json"
DATE_COLUMN = "decision_date"
LOOKBACK_KEY = "lookback_days"
MAX_FOLDS = 5
TOP_REASONS = 3
SIGN_LIMITED = "sign_limited_logreg"
UNCONSTRAINED = "logreg_unconstrained"
BOOSTING = "monotone_gradient_boosting"
REASON_RULE = (
    "A family is given when the sum of its inputs' contributions (log-odds measured from "
    "each input's baseline) is positive and at least one of its inputs lies on the risky side "
    "of its baseline; only those inputs are listed. Largest first."
)


class TrainingDataError(ValueError):
    """The training set cannot be used; the message says which column or value."""


@dataclass(frozen=True)
class TrainingData:
    ids: pd.Series
    x: pd.DataFrame
    y: np.ndarray
    sha256: str
    dates: pd.Series | None = None  # decision_date per customer, when the set has one


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def read_training_set(path: Path) -> TrainingData:
    """Load and check a training set: ID, every Part 1 feature, TARGET in {0,1}, and an
    optional ``decision_date`` (ISO YYYY-MM-DD, every row)."""
    raw = path.read_bytes()
    df = pd.read_csv(io.BytesIO(raw), dtype={ID: str, DATE_COLUMN: str})
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
    dates = None
    if DATE_COLUMN in df.columns:
        text = df[DATE_COLUMN].fillna("").str.strip()
        parsed = pd.to_datetime(
            text.where(text.str.match(_ISO_DATE)), format="%Y-%m-%d", errors="coerce"
        )
        wrong = int(parsed.isna().sum())
        if wrong:
            raise TrainingDataError(
                f"{DATE_COLUMN} must be an ISO date (YYYY-MM-DD) in every row; {wrong} rows are not"
            )
        dates = parsed
    return TrainingData(
        ids=df[ID], x=x, y=target.to_numpy(dtype=int), sha256=sha256_hex(raw), dates=dates
    )


# ---------------------------------------------------------------- candidates


@dataclass
class Fitted:
    """A fitted candidate: the columns it reads, in order, and the estimator."""

    columns: list[str]
    estimator: Any
    selection: Selection | None = None

    def predict(self, x: pd.DataFrame) -> np.ndarray:
        return self.estimator.predict_proba(x[self.columns])[:, 1]


FitFn = Callable[[pd.DataFrame, np.ndarray], Fitted]


def candidates(directions: dict[str, int], seed: int) -> dict[str, FitFn]:
    """Fitting procedures by name; each gets the model inputs (``directions``' keys)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    from scoring.constrained import SignConstrainedLogisticRegression

    inputs = list(directions)

    def linear(final: Any) -> Pipeline:
        return Pipeline(
            [
                ("signed_log", FunctionTransformer(signed_log1p)),
                ("scale", StandardScaler()),
                ("clf", final),
            ]
        )

    def sign_limited(x: pd.DataFrame, y: np.ndarray) -> Fitted:
        selection = select_inputs(x[inputs], y, directions)
        cols = selection.kept
        clf = SignConstrainedLogisticRegression(directions=[directions[c] for c in cols], C=1.0)
        return Fitted(cols, linear(clf).fit(x[cols], y), selection)

    def unconstrained(x: pd.DataFrame, y: np.ndarray) -> Fitted:
        return Fitted(inputs, linear(LogisticRegression(C=1.0, max_iter=5000)).fit(x[inputs], y))

    def boosting(x: pd.DataFrame, y: np.ndarray) -> Fitted:
        model = HistGradientBoostingClassifier(
            learning_rate=0.05,
            max_iter=300,
            max_leaf_nodes=15,
            l2_regularization=1.0,
            early_stopping=False,
            monotonic_cst=[directions[c] for c in inputs],
            random_state=seed,
        )
        return Fitted(inputs, model.fit(x[inputs], y))

    return {SIGN_LIMITED: sign_limited, UNCONSTRAINED: unconstrained, BOOSTING: boosting}


def cross_validate(
    data: TrainingData, fits: dict[str, FitFn], seed: int
) -> tuple[int, dict[str, np.ndarray]]:
    """Out-of-fold default probabilities per candidate (stratified k-fold); every step of a
    candidate, input selection included, is fitted on the training folds only."""
    from sklearn.model_selection import StratifiedKFold

    smallest = int(min(np.sum(data.y == 0), np.sum(data.y == 1)))
    folds = min(MAX_FOLDS, smallest)
    if folds < 2:
        raise TrainingDataError("need at least 2 customers in each class for cross-validation")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    oof = {name: np.zeros(len(data.y)) for name in fits}
    for train_idx, test_idx in cv.split(data.x, data.y):
        x_train, y_train = data.x.iloc[train_idx], data.y[train_idx]
        for name, fit in fits.items():
            oof[name][test_idx] = fit(x_train, y_train).predict(data.x.iloc[test_idx])
    return folds, oof


def choose(aucs: dict[str, float], boost_margin: float, where: str) -> tuple[str, str]:
    if aucs[BOOSTING] > aucs[SIGN_LIMITED] + boost_margin:
        return BOOSTING, (
            f"{BOOSTING} {where} AUC {aucs[BOOSTING]:.4f} beats {SIGN_LIMITED} "
            f"({aucs[SIGN_LIMITED]:.4f}) by more than {boost_margin}; it gives no reasons"
        )
    return SIGN_LIMITED, (
        f"{SIGN_LIMITED} {where} AUC {aucs[SIGN_LIMITED]:.4f}; monotone boosting "
        f"({aucs[BOOSTING]:.4f}) does not beat it by more than {boost_margin}, and only the "
        f"sign-limited linear model gives exact reasons that never point the wrong way "
        f"(unconstrained logistic regression: {aucs[UNCONSTRAINED]:.4f})"
    )


# ---------------------------------------------------------------- truth, lookback


def read_truth(training_set: Path) -> pd.DataFrame | None:
    path = training_set.with_name(TRUTH_FILE)
    if not path.exists():
        return None
    truth = pd.read_csv(path, dtype={ID: str})
    if not {ID, "true_probability"} <= set(truth.columns):
        raise TrainingDataError(f"{TRUTH_FILE} needs columns {ID},true_probability")
    return truth[[ID, "true_probability"]]


def oracle_report(
    truth: pd.DataFrame | None, ids: pd.Series, y: np.ndarray, model_auc: float | None = None
) -> dict[str, Any] | None:
    """AUC/Brier of the true probabilities for these customers (synthetic data only), and
    the model's AUC as a share of it."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    if truth is None:
        return None
    merged = pd.DataFrame({ID: ids.to_numpy(), "y": y}).merge(truth, on=ID, how="inner")
    if merged.empty or merged["y"].nunique() < 2:
        return {"matched_customers": len(merged), "auc": None}
    p = merged["true_probability"].to_numpy(dtype=float)
    auc = float(roc_auc_score(merged["y"], p))
    out = {
        "matched_customers": len(merged),
        "auc": round(auc, 4),
        "brier": round(float(brier_score_loss(merged["y"], p)), 5),
    }
    if model_auc is not None:
        out["model_auc_share"] = round(model_auc / auc, 4)
    return out


def _find_key(value: Any, key: str) -> list[Any]:
    if isinstance(value, dict):
        found = [value[key]] if key in value else []
        for child in value.values():
            found.extend(_find_key(child, key))
        return found
    if isinstance(value, list):
        return [hit for child in value for hit in _find_key(child, key)]
    return []


def resolve_lookback(training_set: Path, flag: int | None) -> LookbackSection | None:
    """The history window of the training features: ``--lookback-days`` or the pipeline's
    report beside the training set (``lookback_days``); the two must agree."""
    reported: int | None = None
    report = training_set.with_name(REPORT_FILE)
    if report.exists():
        try:
            values = set(_find_key(json.loads(report.read_text(encoding="utf-8")), LOOKBACK_KEY))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TrainingDataError(f"{REPORT_FILE} is not valid JSON: {exc}") from exc
        values.discard(None)
        if len(values) > 1 or any(type(v) is not int or v <= 0 for v in values):
            raise TrainingDataError(f"{REPORT_FILE} has conflicting or invalid {LOOKBACK_KEY}")
        reported = next(iter(values), None)
    if flag is not None and reported is not None and flag != reported:
        raise TrainingDataError(
            f"--lookback-days {flag} disagrees with {REPORT_FILE}'s {LOOKBACK_KEY} {reported}"
        )
    if flag is not None:
        return LookbackSection(days=flag, accepts=[flag], source="--lookback-days")
    if reported is not None:
        return LookbackSection(days=reported, accepts=[reported], source=REPORT_FILE)
    return None


# ---------------------------------------------------------------- reasons statistics


def explainer_for(fitted: Fitted, x: pd.DataFrame, table: dict[str, FeatureRisk]) -> Explainer:
    """The explainer the bundle will serve, for a fitted sign-limited candidate."""
    from scoring.linear import from_estimator

    params = from_estimator(fitted.estimator)
    assert params is not None
    return Explainer.build(
        params,
        baseline=[float(x[c].median()) for c in fitted.columns],
        direction=[int(table[c].risk_direction or 0) for c in fitted.columns],
        families=[str(table[c].family) for c in fitted.columns],
        fields=fitted.columns,
        family_text=FAMILIES,
        top=TOP_REASONS,
    )


def reason_statistics(
    fitted: Fitted,
    baseline_rows: pd.DataFrame,
    x: pd.DataFrame,
    threshold: float,
    table: dict[str, FeatureRisk],
) -> dict[str, Any]:
    """Reasons given to the customers in ``x`` who would be declined, measured from
    baselines of ``baseline_rows``: how many get one, which families, and how many get a
    reason whose value is not on the risky side of its baseline (must be none)."""
    explainer = explainer_for(fitted, baseline_rows, table)
    matrix = x[fitted.columns].to_numpy(dtype=float)
    declined = fitted.predict(x) >= threshold
    reasons = explainer.explain(matrix[declined])
    direction = explainer.direction
    col = {c: j for j, c in enumerate(fitted.columns)}
    wrong = 0
    families: dict[str, int] = {}
    for row, given in zip(matrix[declined], reasons, strict=True):
        bad = False
        for reason in given:
            families[reason["family"]] = families.get(reason["family"], 0) + 1
            for feat in reason["features"]:
                j = col[feat["feature"]]
                bad |= direction[j] * (row[j] - explainer.baseline[j]) <= 0
        wrong += bad
    n = int(declined.sum())
    return {
        "declined": n,
        "with_a_reason": round(sum(1 for r in reasons if r) / n, 4) if n else None,
        "mean_reasons": round(sum(len(r) for r in reasons) / n, 3) if n else None,
        "wrong_direction_share": round(wrong / n, 4) if n else None,
        "families": {k: round(v / n, 4) for k, v in sorted(families.items())} if n else {},
    }


def unconstrained_reason_statistics(
    fitted: Fitted,
    baseline_rows: pd.DataFrame,
    x: pd.DataFrame,
    threshold: float,
    table: dict[str, FeatureRisk],
) -> dict[str, Any]:
    """For comparison: the earlier kind of reasons (top 3 positive per-feature contributions
    of an unconstrained fit, measured from the standardised mean) for declined customers,
    and how often one names a value that is not on the risky side of the training median."""
    from scoring.linear import from_estimator

    params = from_estimator(fitted.estimator)
    assert params is not None
    matrix = x[fitted.columns].to_numpy(dtype=float)
    declined = fitted.predict(x) >= threshold
    contrib = params.contributions(matrix[declined])
    top = np.argsort(-contrib, axis=1, kind="stable")[:, :TOP_REASONS]
    median = baseline_rows[fitted.columns].median().to_numpy(dtype=float)
    direction = np.array([table[c].risk_direction or 0 for c in fitted.columns], dtype=float)
    wrong_by_feature: dict[str, int] = {}
    wrong = 0
    for i, order in enumerate(top):
        bad = False
        for j in order:
            if contrib[i, j] > 0 and direction[j] * (matrix[declined][i, j] - median[j]) <= 0:
                name = fitted.columns[j]
                wrong_by_feature[name] = wrong_by_feature.get(name, 0) + 1
                bad = True
        wrong += bad
    n = int(declined.sum())
    return {
        "declined": n,
        "wrong_direction_share": round(wrong / n, 4) if n else None,
        "wrong_direction_by_feature": {
            k: round(v / n, 4) for k, v in sorted(wrong_by_feature.items(), key=lambda t: -t[1])
        }
        if n
        else {},
        "coefficients_against_direction": [
            c
            for c, w in zip(fitted.columns, params.coef, strict=True)
            if (table[c].risk_direction or 0) * w < 0
        ],
    }


# ---------------------------------------------------------------- out of time


def out_of_time(
    data: TrainingData,
    fits: dict[str, FitFn],
    threshold: float,
    table: dict[str, FeatureRisk],
    truth: pd.DataFrame | None,
    seed: int,
) -> tuple[dict[str, Any] | None, str]:
    """Fit every candidate on the earlier cohorts, measure it on the later ones."""
    assert data.dates is not None
    split, why = time_split(data.dates, data.y)
    if split is None:
        return None, why
    x_train, y_train = data.x[split.train], data.y[split.train]
    x_test, y_test = data.x[split.validate], data.y[split.validate]
    fitted = {name: fit(x_train, y_train) for name, fit in fits.items()}
    scores = {name: f.predict(x_test) for name, f in fitted.items()}
    reports = {name: binary_report(y_test, p) for name, p in scores.items()}
    dates_test = data.dates[split.validate]
    result: dict[str, Any] = {
        "method": "fit on earlier calendar-month cohorts of decision_date, validate on later",
        **split.describe(data.dates, data.y),
        "candidates": {
            name: {
                "auc": r["auc"],
                "brier": r["brier"],
                "calibration_slope": r["calibration_slope"],
                "ci": bootstrap_intervals(y_test, scores[name], seed=seed),
            }
            for name, r in reports.items()
        },
        "reports": reports,
        "cohorts": {name: cohort_table(dates_test, y_test, p) for name, p in scores.items()},
        "reasons": reason_statistics(fitted[SIGN_LIMITED], x_train, x_test, threshold, table),
        "unconstrained_reasons": unconstrained_reason_statistics(
            fitted[UNCONSTRAINED], x_train, x_test, threshold, table
        ),
    }
    result["oracle"] = oracle_report(
        truth, data.ids[split.validate], y_test, reports[SIGN_LIMITED]["auc"]
    )
    return result, ""


# ---------------------------------------------------------------- the bundle


def manifest_inputs(
    columns: list[str], x: pd.DataFrame, table: dict[str, FeatureRisk]
) -> list[InputSpec]:
    """The model's inputs in definition order; 0/1 flags may default to 0. Each carries its
    risk direction, reason family and baseline (training median)."""
    return [
        InputSpec(
            name=n,
            accepts=[n],
            optional=n in FLAG_FEATURES,
            default=0.0 if n in FLAG_FEATURES else None,
            risk_direction=table[n].risk_direction,
            baseline=float(x[n].median()),
            reason_family=table[n].family,
        )
        for n in columns
    ]


def describe_estimator(estimator: Any) -> str:
    """Readable, address-free summary such as 'signed_log1p -> StandardScaler -> LR(C=1.0)'."""
    steps = getattr(estimator, "steps", [("", estimator)])
    parts = []
    for _, step in steps:
        func = getattr(step, "func", None)
        name = type(step).__name__
        if func is not None:
            parts.append(f"{name}({func.__module__}.{func.__name__})")
        elif hasattr(step, "penalty"):
            parts.append(f"{name}(C={step.C}, penalty={step.penalty})")
        elif hasattr(step, "directions"):
            parts.append(f"{name}(C={step.C}, L2, signs limited by risk direction)")
        elif getattr(step, "monotonic_cst", None) is not None:
            parts.append(f"{name}(monotonic constraints by risk direction)")
        else:
            parts.append(name)
    return " -> ".join(parts)


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
    lookback_days: int | None = None,
) -> Manifest:
    from threadpoolctl import threadpool_limits

    try:
        table = check_table(FEATURE_NAMES)
    except RiskTableError as exc:
        raise TrainingDataError(str(exc)) from exc
    excluded = {n: e.why for n, e in table.items() if not e.use}
    directions = {n: int(e.risk_direction or 0) for n, e in table.items() if e.use}
    data = read_training_set(training_set)
    lookback = resolve_lookback(training_set, lookback_days)
    truth = read_truth(training_set)
    threshold = 1.0 / (1.0 + cost_ratio)
    fits = candidates(directions, seed)
    # OpenMP/BLAS thread pools oversubscribe a small shared machine badly (5x slower when
    # other work runs); a fixed count also keeps results reproducible across machines.
    with threadpool_limits(limits=threads):
        folds, oof = cross_validate(data, fits, seed)
        reports = {n: binary_report(data.y, p) for n, p in oof.items()}
        oot, oot_why = (None, f"the training set has no {DATE_COLUMN} column")
        if data.dates is not None:
            oot, oot_why = out_of_time(data, fits, threshold, table, truth, seed)
        if oot is not None:
            selected, why = choose(
                {n: r["auc"] for n, r in oot["reports"].items()}, boost_margin, "out-of-time"
            )
        else:
            selected, why = choose({n: r["auc"] for n, r in reports.items()}, boost_margin, "CV")
        final = fits[selected](data.x, data.y)
        scores = final.predict(data.x)
        in_sample_reasons = (
            reason_statistics(final, data.x, data.x, threshold, table)
            if selected == SIGN_LIMITED
            else None
        )
        unconstrained = fits[UNCONSTRAINED](data.x, data.y)
        old_reasons = unconstrained_reason_statistics(
            unconstrained, data.x, data.x, threshold, table
        )
    now = datetime.now(UTC).replace(microsecond=0)
    inputs = manifest_inputs(final.columns, data.x, table)
    cv_selected = reports[selected]
    metrics: dict[str, Any] = {
        "rows": len(data.y),
        "defaults": int(data.y.sum()),
        "training_set_sha256": data.sha256,
        "lookback_days": lookback.days if lookback else None,
        "validation": {
            "out_of_time": oot is not None,
            "why_not": oot_why or None,
            "selected_on": "out-of-time" if oot is not None else "cross-validation",
        },
        "cv": {
            "method": "stratified k-fold, out-of-fold predictions; input selection refitted "
            "in every fold",
            "folds": folds,
            "seed": seed,
        },
        "candidates": {
            n: {"auc": r["auc"], "brier": r["brier"], "calibration_slope": r["calibration_slope"]}
            for n, r in reports.items()
        },
        "selected": selected,
        "selection_reason": why,
        "cross_validated": cv_selected,
        "cross_validated_ci": bootstrap_intervals(data.y, oof[selected], seed=seed),
        "at_threshold": confusion_at(data.y, oof[selected], threshold),
        "oracle": oracle_report(truth, data.ids, data.y, cv_selected["auc"]),
        "out_of_time": (
            {k: v for k, v in oot.items() if k != "reports"}
            | {"selected": oot["reports"][selected]}
            if oot is not None
            else None
        ),
        "inputs": {
            "excluded": excluded,
            "selection": final.selection.to_json() if final.selection else None,
        },
        "reasons": {
            "in_sample": in_sample_reasons,
            "unconstrained_reference_in_sample": old_reasons,
        },
    }
    linear = selected == SIGN_LIMITED
    notes = (
        f"Trained by scoring.train on {training_set.name} ({len(data.y)} customers, "
        f"{int(data.y.sum())} defaults). Inputs: the features the selection kept (see "
        "metrics.inputs), in features.definitions order; 0/1 flags may be omitted (default 0), "
        "numeric inputs are required. Every coefficient keeps the sign of its input's "
        "risk_direction; contributions are measured from each input's baseline (the training "
        "median). "
        + (
            "Out-of-time validation on the latest decision_date cohorts (metrics.out_of_time). "
            if oot is not None
            else f"No out-of-time validation ({oot_why}): metrics are cross-validated "
            "estimates on the training population. "
        )
        + (
            f"Features were computed over {lookback.days} days of history "
            f"({lookback.source}); requests may declare only that lookback. "
            if lookback
            else "The history window of the training features is not recorded. "
        )
        + "Metrics say nothing about drift or other populations."
        + (f" Data: {data_note}" if data_note else "")
    )
    return write_bundle(
        out,
        final.estimator,
        {
            "format_version": 1,
            "name": f"{name}-{selected.replace('_', '-')}",
            "version": version or now.strftime("%Y%m%d.%H%M%S"),
            "created": now,
            "placeholder": False,
            "estimator": describe_estimator(final.estimator),
            "inputs": inputs,
            "threshold": round(threshold, 6),
            "threshold_reason": (
                f"Expected-cost rule for calibrated probabilities: a missed default is assumed to "
                f"cost {cost_ratio:g}x a wrongly declined good customer, so predict default when "
                f"p >= 1/(1+{cost_ratio:g}). The lender should set the real cost ratio."
            ),
            "metrics": metrics,
            "notes": notes,
            "reasons": (
                ReasonsSection(
                    baseline="median", top=TOP_REASONS, families=dict(FAMILIES), rule=REASON_RULE
                )
                if linear
                else None
            ),
            "reasons_withheld": None if linear else NOT_LINEAR,
            "lookback": lookback,
        },
        verify_rows=data.x[final.columns].to_numpy(dtype=float),
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
        "--lookback-days",
        type=int,
        default=None,
        help="days of history the features were computed over (else from dq_report.json)",
    )
    parser.add_argument(
        "--data-note",
        default="",
        help="provenance of the training set, appended to the manifest notes",
    )
    args = parser.parse_args(argv)
    if args.cost_ratio <= 0:
        parser.error("--cost-ratio must be positive")
    if args.lookback_days is not None and args.lookback_days <= 0:
        parser.error("--lookback-days must be positive")
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
            lookback_days=args.lookback_days,
        )
    except (TrainingDataError, FileNotFoundError, pd.errors.ParserError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = manifest.metrics or {}
    cv, ci = m["cross_validated"], m["cross_validated_ci"]
    files = [MODEL_FILE, MANIFEST_FILE]
    files += [LINEAR_FILE] if manifest.linear else []
    files += [REFERENCE_FILE] if manifest.reference else []
    print(f"wrote {', '.join(files)} to {args.out}: {manifest.model_version}")
    print(f"  selected {m['selected']}: {m['selection_reason']}")
    print(f"  inputs: {[i.name for i in manifest.inputs]}")
    print(
        f"  CV ({m['cv']['folds']}-fold) AUC {cv['auc']} (95% CI {ci['auc'][0]}-{ci['auc'][1]}) "
        f"Gini {cv['gini']} KS {cv['ks']} Brier {cv['brier']} "
        f"calibration slope {cv['calibration_slope']}"
    )
    oot = m.get("out_of_time")
    if oot:
        sel, oci = oot["selected"], oot["candidates"][m["selected"]]["ci"]
        print(
            f"  out-of-time ({', '.join(oot['validate']['cohorts'])}) AUC {sel['auc']} "
            f"(95% CI {oci['auc'][0]}-{oci['auc'][1]}) calibration slope "
            f"{sel['calibration_slope']}"
        )
    else:
        print(f"  out-of-time validation not possible: {m['validation']['why_not']}")
    if m.get("oracle"):
        print(
            f"  oracle AUC {m['oracle']['auc']} (true probabilities); model/oracle "
            f"{m['oracle'].get('model_auc_share')}"
        )
    print(f"  threshold {manifest.threshold}: {m['at_threshold']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
