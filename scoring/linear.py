"""A logistic-regression model as plain numbers: ``linear.json`` in a bundle.

Serving a linear model needs only its transform parameters, coefficients and intercept, and
numpy. Storing them beside the pickle lets the API score without importing scikit-learn or
unpickling anything (most of a cold start). The pickle stays the source of truth: the
parameters are extracted from the fitted estimator and checked against its own
``predict_proba`` and ``decision_function`` when a bundle is written (``scoring.packaging``).

This module imports only numpy at load time; ``from_estimator`` imports scikit-learn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from scoring.transforms import signed_log1p

LINEAR_FORMAT = 1
# Agreement required between these parameters and the estimator, on every verification row.
VERIFY_RTOL = 1e-9
VERIFY_ATOL = 1e-12
_OVR_MODES = {"auto", "ovr", "warn", "deprecated"}
# Element-wise transforms a step may name; a pickle's FunctionTransformer must use exactly
# one of these functions (identity-checked) to be exported.
_FUNCTIONS = {"signed_log1p": signed_log1p}


class LinearParamsError(ValueError):
    """``linear.json`` is malformed or disagrees with the manifest; safe to show."""


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)), as scikit-learn's ``expit``; exp overflow correctly gives 0."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class Step:
    """One transform before the dot product: a named function, or centre-and-scale."""

    op: str  # "function" or "standardise"
    function: str | None = None
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None

    def apply(self, z: np.ndarray) -> np.ndarray:
        if self.op == "function":
            return _FUNCTIONS[str(self.function)](z)
        if self.mean is not None:
            z = z - self.mean
        if self.scale is not None:
            z = z / self.scale
        return z

    def to_json(self) -> dict[str, Any]:
        if self.op == "function":
            return {"op": "function", "function": self.function}
        return {
            "op": "standardise",
            "mean": None if self.mean is None else self.mean.tolist(),
            "scale": None if self.scale is None else self.scale.tolist(),
        }


@dataclass(frozen=True)
class LinearParams:
    """p = sigmoid(T(x) . coef + intercept); contribution_j = T(x)_j * coef_j (log-odds)."""

    steps: tuple[Step, ...]
    coef: np.ndarray
    intercept: float
    feature_names: tuple[str, ...] | None = None

    @property
    def n_inputs(self) -> int:
        return int(self.coef.shape[0])

    def transform(self, x: np.ndarray) -> np.ndarray:
        z = x
        for step in self.steps:
            z = step.apply(z)
        return z

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.transform(x) @ self.coef + self.intercept

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        return sigmoid(self.logits(x))

    def contributions(self, x: np.ndarray) -> np.ndarray:
        return self.transform(x) * self.coef

    def to_json_bytes(self) -> bytes:
        """Stable JSON; floats are written by ``repr`` so they round-trip exactly."""
        data = {
            "format_version": LINEAR_FORMAT,
            "kind": "logistic-regression",
            "feature_names": None if self.feature_names is None else list(self.feature_names),
            "steps": [s.to_json() for s in self.steps],
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
        }
        return (json.dumps(data, indent=1, allow_nan=False) + "\n").encode("utf-8")


def parse_linear(raw: bytes) -> LinearParams:
    """Parse ``linear.json``; every malformed part is a ``LinearParamsError``."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LinearParamsError(f"not valid UTF-8 JSON: {exc}") from exc
    try:
        if data.get("format_version") != LINEAR_FORMAT or data.get("kind") != (
            "logistic-regression"
        ):
            raise LinearParamsError("unknown format_version or kind")
        coef = _vector(data["coef"], "coef")
        intercept = float(data["intercept"])
        if not np.isfinite(intercept):
            raise LinearParamsError("intercept is not finite")
        steps = tuple(_step(s, coef.shape[0]) for s in data["steps"])
        names = data.get("feature_names")
        if names is not None and (
            not isinstance(names, list)
            or len(names) != coef.shape[0]
            or not all(isinstance(n, str) for n in names)
        ):
            raise LinearParamsError("feature_names must be one string per coefficient")
    except LinearParamsError:
        raise
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise LinearParamsError(f"malformed ({type(exc).__name__}: {exc})") from exc
    return LinearParams(
        steps=steps,
        coef=coef,
        intercept=intercept,
        feature_names=None if names is None else tuple(names),
    )


def _vector(value: Any, what: str, length: int | None = None) -> np.ndarray:
    if not isinstance(value, list) or not value:
        raise LinearParamsError(f"{what} must be a non-empty list of numbers")
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in value):
        raise LinearParamsError(f"{what} must contain only numbers")
    arr = np.array(value, dtype=float)
    if not np.isfinite(arr).all():
        raise LinearParamsError(f"{what} has non-finite values")
    if length is not None and arr.shape[0] != length:
        raise LinearParamsError(f"{what} has {arr.shape[0]} values, expected {length}")
    return arr


def _step(data: dict[str, Any], n: int) -> Step:
    if data["op"] == "function":
        if data.get("function") not in _FUNCTIONS:
            raise LinearParamsError(f"unknown transform function {data.get('function')!r}")
        return Step(op="function", function=data["function"])
    if data["op"] == "standardise":
        mean = None if data["mean"] is None else _vector(data["mean"], "mean", n)
        scale = None if data["scale"] is None else _vector(data["scale"], "scale", n)
        if scale is not None and (scale == 0).any():
            raise LinearParamsError("scale has zeros")
        return Step(op="standardise", mean=mean, scale=scale)
    raise LinearParamsError(f"unknown step {data['op']!r}")


def from_estimator(estimator: Any) -> LinearParams | None:
    """The parameters of a binary logistic regression (scikit-learn's, or the sign-limited
    one in ``scoring.constrained``), bare or after StandardScaler / known FunctionTransformer
    steps in a Pipeline; None for anything else."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    steps: list[Step] = []
    final = estimator
    if isinstance(estimator, Pipeline):
        *pre, (_, final) = estimator.steps
        for _, step in pre:
            if step is None or step == "passthrough":
                continue
            if type(step) is StandardScaler:
                steps.append(
                    Step(
                        op="standardise",
                        mean=np.array(step.mean_, dtype=float) if step.with_mean else None,
                        scale=np.array(step.scale_, dtype=float) if step.with_std else None,
                    )
                )
                continue
            if type(step) is FunctionTransformer and not step.kw_args:
                name = next((k for k, f in _FUNCTIONS.items() if f is step.func), None)
                if name is not None:
                    steps.append(Step(op="function", function=name))
                    continue
            return None
    from scoring.constrained import SignConstrainedLogisticRegression

    if type(final) not in (LogisticRegression, SignConstrainedLogisticRegression):
        return None
    if [int(c) for c in final.classes_] != [0, 1] or final.coef_.shape[0] != 1:
        return None
    if getattr(final, "multi_class", "auto") not in _OVR_MODES:
        return None
    names = getattr(estimator, "feature_names_in_", None)
    return LinearParams(
        steps=tuple(steps),
        coef=np.array(final.coef_[0], dtype=float),
        intercept=float(final.intercept_[0]),
        feature_names=None if names is None else tuple(str(n) for n in names),
    )


def verify_against(params: LinearParams, estimator: Any, x: np.ndarray) -> dict[str, Any]:
    """Check ``params`` reproduce the estimator's probabilities and log-odds on ``x``.

    Returns a record for the manifest; raises ``LinearParamsError`` on any disagreement,
    so a bundle whose parameters are not the model is never written.
    """
    data: Any = x
    if params.feature_names is not None:
        import pandas as pd  # the estimator was fitted on named columns

        data = pd.DataFrame(x, columns=list(params.feature_names))
    expected_p = estimator.predict_proba(data)[:, 1]
    expected_z = np.asarray(estimator.decision_function(data), dtype=float).reshape(-1)
    got_p, got_z = params.probabilities(x), params.logits(x)
    contrib_z = params.contributions(x).sum(axis=1) + params.intercept
    checks = {
        "probability": (got_p, expected_p),
        "log-odds": (got_z, expected_z),
        "sum of contributions": (contrib_z, expected_z),
    }
    for what, (got, expected) in checks.items():
        if not np.allclose(got, expected, rtol=VERIFY_RTOL, atol=VERIFY_ATOL):
            worst = float(np.max(np.abs(got - expected)))
            raise LinearParamsError(
                f"linear parameters disagree with the estimator's {what} (max diff {worst:.3g})"
            )
    return {
        "rows": int(x.shape[0]),
        "max_abs_diff_probability": float(np.max(np.abs(got_p - expected_p))),
        "max_abs_diff_log_odds": float(np.max(np.abs(got_z - expected_z))),
        "rtol": VERIFY_RTOL,
        "atol": VERIFY_ATOL,
    }
