"""Turn an input matrix into probabilities and per-feature contributions.

For logistic regression (bare, or in a Pipeline of StandardScaler / known
FunctionTransformer steps) scoring is a numpy dot product: the same maths as
``predict_proba`` without sklearn's per-call validation, which dominates single-row latency.
The estimator stays the source of truth: anything not recognised falls back to
``predict_proba``, and a test proves the fast path equals it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit

from scoring.transforms import signed_log1p

# FunctionTransformer functions the fast path may replicate (identity-checked).
_KNOWN_FUNCS: dict[Any, Callable[[np.ndarray], np.ndarray]] = {signed_log1p: signed_log1p}
_OVR_MODES = {"auto", "ovr", "warn", "deprecated"}


class Scorer:
    """Interface: ``probabilities`` for every model, ``contributions`` when explainable."""

    kind: str = "abstract"
    explains: bool = False

    def probabilities(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def contributions(self, x: np.ndarray) -> np.ndarray | None:
        return None


@dataclass(frozen=True)
class LinearScorer(Scorer):
    """p = expit(T(x) . coef + intercept); contribution_j = T(x)_j * coef_j (log-odds)."""

    steps: tuple[Callable[[np.ndarray], np.ndarray], ...]
    coef: np.ndarray
    intercept: float
    kind: str = "linear-numpy"
    explains: bool = True

    def _transform(self, x: np.ndarray) -> np.ndarray:
        z = x
        for step in self.steps:
            z = step(z)
        return z

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        return expit(self._transform(x) @ self.coef + self.intercept)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        return self._transform(x) * self.coef


@dataclass(frozen=True)
class ProbaScorer(Scorer):
    """Generic fallback: the estimator's own ``predict_proba``."""

    estimator: Any
    columns: tuple[str, ...] | None
    positive_index: int
    kind: str = "predict_proba"
    explains: bool = False

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        data: Any = x
        if self.columns is not None:
            import pandas as pd  # only models fitted on named columns need it

            data = pd.DataFrame(x, columns=list(self.columns))
        return self.estimator.predict_proba(data)[:, self.positive_index]


def _scaler_step(scaler: Any) -> Callable[[np.ndarray], np.ndarray]:
    mean = np.array(scaler.mean_, dtype=float) if scaler.with_mean else None
    scale = np.array(scaler.scale_, dtype=float) if scaler.with_std else None

    def step(z: np.ndarray) -> np.ndarray:
        if mean is not None:
            z = z - mean
        if scale is not None:
            z = z / scale
        return z

    return step


def _linear_steps(estimator: Any) -> tuple[list[Callable], Any] | None:
    """(transform steps, final LogisticRegression) if the fast path can replicate it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    steps: list[Callable] = []
    final = estimator
    if isinstance(estimator, Pipeline):
        *pre, (_, final) = estimator.steps
        for _, step in pre:
            if step is None or step == "passthrough":
                continue
            if type(step) is StandardScaler:
                steps.append(_scaler_step(step))
            elif (
                type(step) is FunctionTransformer and step.func in _KNOWN_FUNCS and not step.kw_args
            ):
                steps.append(_KNOWN_FUNCS[step.func])
            else:
                return None
    if type(final) is not LogisticRegression:
        return None
    if list(final.classes_) != [0, 1] or final.coef_.shape[0] != 1:
        return None
    if getattr(final, "multi_class", "auto") not in _OVR_MODES:
        return None
    return steps, final


def build_scorer(estimator: Any) -> Scorer:
    """The fastest scorer that reproduces ``estimator.predict_proba(...)[:, 1]``."""
    linear = _linear_steps(estimator)
    if linear is not None:
        steps, lr = linear
        return LinearScorer(
            steps=tuple(steps),
            coef=np.array(lr.coef_[0], dtype=float),
            intercept=float(lr.intercept_[0]),
        )
    names = getattr(estimator, "feature_names_in_", None)
    positive = list(estimator.classes_).index(1)
    return ProbaScorer(
        estimator=estimator,
        columns=tuple(str(n) for n in names) if names is not None else None,
        positive_index=positive,
    )
