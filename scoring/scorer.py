"""Turn an input matrix into probabilities and per-feature contributions.

For logistic regression (bare, or after StandardScaler / known FunctionTransformer steps)
scoring is a numpy dot product with the parameters in ``scoring.linear``: the same maths as
``predict_proba`` without scikit-learn's per-call validation, which dominates single-row
latency. Bundles store those parameters in ``linear.json``, so serving them imports neither
scikit-learn nor the pickle. Anything else falls back to the estimator's ``predict_proba``;
tests prove both paths equal it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from scoring.linear import LinearParams, from_estimator


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
    """Scores with ``LinearParams``; ``kind`` says where they came from."""

    params: LinearParams
    kind: str = "linear-numpy"
    explains: bool = True

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        return self.params.probabilities(x)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        return self.params.contributions(x)


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


def build_scorer(estimator: Any) -> Scorer:
    """The fastest scorer that reproduces ``estimator.predict_proba(...)[:, 1]``."""
    params = from_estimator(estimator)
    if params is not None:
        return LinearScorer(params=params)
    names = getattr(estimator, "feature_names_in_", None)
    positive = list(estimator.classes_).index(1)
    return ProbaScorer(
        estimator=estimator,
        columns=tuple(str(n) for n in names) if names is not None else None,
        positive_index=positive,
    )
