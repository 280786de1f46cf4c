"""Logistic regression whose coefficients keep the sign each input's risk direction allows.

Why: with correlated inputs an unconstrained fit happily gives one of a correlated pair the
"wrong" sign (salary in *every* month raising risk, because days since the last salary
already carries the signal). Scores stay good, but the per-feature contributions a customer
is told about then point the wrong way. Bounding each coefficient at zero on the wrong side
makes every input monotone in its declared direction: raising a riskier-when-higher input
can never lower the score.

The fit is the L2-penalised log-loss scikit-learn's ``LogisticRegression`` minimises
(``C * sum(log-loss) + ||w||^2 / 2``, intercept not penalised), solved with L-BFGS-B and
box bounds: ``w_j >= 0`` for direction +1, ``w_j <= 0`` for -1, free for 0. Use it after a
scaler (as the last step of a Pipeline) so the penalty treats inputs alike.

The estimator is pickled into bundles, so this module path must not move. Serving never
imports it: ``scoring.linear`` exports its coefficients to ``linear.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class SignConstrainedLogisticRegression(ClassifierMixin, BaseEstimator):
    """Binary logistic regression with per-coefficient sign limits.

    ``directions``: one of +1 (coefficient >= 0), -1 (<= 0) or 0 (free) per input column.
    """

    def __init__(
        self,
        directions: Sequence[int] | None = None,
        C: float = 1.0,  # noqa: N803 - scikit-learn's name for the inverse penalty
        max_iter: int = 15000,
        tol: float = 1e-9,
    ):
        self.directions = directions
        self.C = C
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X: Any, y: Any) -> SignConstrainedLogisticRegression:  # noqa: N803
        from scipy.optimize import minimize
        from scipy.special import expit, log_expit

        x = np.asarray(X, dtype=float)
        target = np.asarray(y)
        if x.ndim != 2 or x.shape[0] != target.shape[0]:
            raise ValueError("X must be 2-D with one row per label")
        if not np.isfinite(x).all():
            raise ValueError("X has non-finite values")
        classes = np.unique(target)
        if not np.array_equal(classes, [0, 1]):
            raise ValueError(f"labels must be 0 and 1, got {classes.tolist()}")
        k = x.shape[1]
        directions = np.zeros(k, dtype=int) if self.directions is None else self.directions
        signs = np.asarray(directions, dtype=int)
        if signs.shape != (k,) or not np.isin(signs, (-1, 0, 1)).all():
            raise ValueError(f"directions must hold {k} values, each -1, 0 or +1")
        if not self.C > 0:
            raise ValueError("C must be positive")
        t = target.astype(float)
        c = float(self.C)

        def objective(params: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = params[:k], params[k]
            z = x @ w + b
            loss = -float(np.sum(t * log_expit(z) + (1.0 - t) * log_expit(-z)))
            residual = expit(z) - t
            grad = np.empty(k + 1)
            grad[:k] = c * (x.T @ residual) + w
            grad[k] = c * residual.sum()
            return c * loss + 0.5 * float(w @ w), grad

        bounds = [(0.0, None) if s > 0 else (None, 0.0) if s < 0 else (None, None) for s in signs]
        bounds.append((None, None))
        prior = float(np.clip(t.mean(), 1e-6, 1 - 1e-6))
        start = np.zeros(k + 1)
        start[k] = np.log(prior / (1 - prior))
        result = minimize(
            objective,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": self.max_iter, "gtol": self.tol, "ftol": 1e-15},
        )
        # L-BFGS-B keeps to the bounds; the clip makes "never the wrong sign" exact.
        w = np.clip(
            result.x[:k], np.where(signs > 0, 0.0, -np.inf), np.where(signs < 0, 0.0, np.inf)
        )
        self.coef_ = w.reshape(1, k)
        self.intercept_ = np.array([result.x[k]])
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = k
        self.n_iter_ = np.array([int(result.nit)])
        self.converged_ = bool(result.success)
        return self

    def decision_function(self, X: Any) -> np.ndarray:  # noqa: N803
        x = np.asarray(X, dtype=float)
        if x.ndim != 2 or x.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} columns")
        return x @ self.coef_[0] + self.intercept_[0]

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        from scipy.special import expit

        p = expit(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        return (self.decision_function(X) > 0).astype(int)
