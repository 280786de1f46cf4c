"""Which features enter the sign-limited model: drop the ones that only add collinearity.

Correlated inputs make single coefficients unstable and their reasons arbitrary (the same
signal split between, or fought over by, several columns). The rule, applied on the
model's own scale (signed log, standardised):

1. Drop columns that are constant in the training rows.
2. While some input has a variance inflation factor (VIF) above ``vif_limit``: among those
   inputs, find the one whose removal costs the sign-limited fit least (likelihood-ratio
   statistic 2 * delta log-likelihood). If that cost is below ``lr_limit`` (3.84: not
   significant at 5% on one degree of freedom) the input only adds collinearity: drop it
   and repeat. Otherwise stop: the remaining collinearity carries signal, and is reported.
3. Drop inputs the sign limit holds at exactly zero: they cannot change any score, and
   removing them leaves the fit unchanged.

Every VIF before and after, and each dropped input with its VIF and cost, is recorded in
the bundle's metrics (and the model card).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scoring.transforms import signed_log1p

VIF_LIMIT = 5.0
LR_LIMIT = 3.84  # chi-squared, 1 degree of freedom, 5%


def standardise(x: pd.DataFrame) -> np.ndarray:
    """The model's own scale: signed log, then centred and scaled (constant columns: 0)."""
    z = signed_log1p(x.to_numpy(dtype=float))
    sd = z.std(axis=0)
    return (z - z.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def vif(z: np.ndarray) -> np.ndarray:
    """Variance inflation factor of each column: the diagonal of the inverse correlation
    matrix (1 / (1 - R^2) of the column regressed on all the others)."""
    if z.shape[1] == 1:
        return np.ones(1)
    corr = np.corrcoef(z, rowvar=False)
    return np.diag(np.linalg.pinv(corr, hermitian=True))


def _log_likelihood(z: np.ndarray, y: np.ndarray, directions: Sequence[int], c: float) -> float:
    from scipy.special import log_expit

    from scoring.constrained import SignConstrainedLogisticRegression

    model = SignConstrainedLogisticRegression(directions=list(directions), C=c).fit(z, y)
    logit = model.decision_function(z)
    return float(np.sum(y * log_expit(logit) + (1 - y) * log_expit(-logit)))


@dataclass
class Selection:
    kept: list[str]
    vif_before: dict[str, float]
    vif_after: dict[str, float]
    dropped: list[dict[str, Any]] = field(default_factory=list)
    vif_limit: float = VIF_LIMIT
    lr_limit: float = LR_LIMIT

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": (
                f"drop an input with VIF > {self.vif_limit:g} when removing it costs the "
                f"sign-limited fit a likelihood-ratio statistic < {self.lr_limit:g}; then drop "
                "inputs the sign limit holds at zero"
            ),
            "scale": "signed_log1p, standardised",
            "kept": list(self.kept),
            "dropped": list(self.dropped),
            "vif_before": {k: round(v, 2) for k, v in self.vif_before.items()},
            "vif_after": {k: round(v, 2) for k, v in self.vif_after.items()},
        }


def select_inputs(
    x: pd.DataFrame,
    y: np.ndarray,
    directions: dict[str, int],
    *,
    vif_limit: float = VIF_LIMIT,
    lr_limit: float = LR_LIMIT,
    c: float = 1.0,
) -> Selection:
    """Apply the module's rule to the columns of ``x`` (every one must have a direction)."""
    from scoring.constrained import SignConstrainedLogisticRegression

    names = list(x.columns)
    z_all = standardise(x)
    dropped: list[dict[str, Any]] = []
    constant = [n for n, sd in zip(names, x.to_numpy(float).std(axis=0), strict=True) if sd == 0]
    for name in constant:
        dropped.append({"feature": name, "why": "constant in the training rows"})
    kept = [n for n in names if n not in constant]
    if not kept:
        raise ValueError("every candidate input is constant in the training rows")
    column = {n: i for i, n in enumerate(names)}

    def matrix(cols: list[str]) -> np.ndarray:
        return z_all[:, [column[n] for n in cols]]

    before = dict(zip(kept, vif(matrix(kept)).tolist(), strict=True))
    while len(kept) > 1:
        factors = dict(zip(kept, vif(matrix(kept)).tolist(), strict=True))
        high = [n for n in kept if factors[n] > vif_limit]
        if not high:
            break
        full = _log_likelihood(matrix(kept), y, [directions[n] for n in kept], c)
        costs = {}
        for name in high:
            rest = [n for n in kept if n != name]
            without = _log_likelihood(matrix(rest), y, [directions[n] for n in rest], c)
            costs[name] = max(0.0, 2.0 * (full - without))
        cheapest = min(high, key=lambda n: (costs[n], -factors[n]))
        if costs[cheapest] >= lr_limit:
            break
        dropped.append(
            {
                "feature": cheapest,
                "why": "collinear: removing it does not significantly worsen the fit",
                "vif": round(factors[cheapest], 2),
                "lr_statistic": round(costs[cheapest], 3),
            }
        )
        kept.remove(cheapest)
    model = SignConstrainedLogisticRegression(directions=[directions[n] for n in kept], C=c)
    coef = model.fit(matrix(kept), y).coef_[0]
    zero = [n for n, w in zip(kept, coef, strict=True) if w == 0.0]
    if len(zero) < len(kept):  # keep at least one input
        for name in zero:
            dropped.append(
                {"feature": name, "why": "held at zero by its sign limit: cannot change a score"}
            )
        kept = [n for n in kept if n not in zero]
    after = dict(zip(kept, vif(matrix(kept)).tolist(), strict=True))
    return Selection(
        kept=kept,
        vif_before=before,
        vif_after=after,
        dropped=dropped,
        vif_limit=vif_limit,
        lr_limit=lr_limit,
    )
