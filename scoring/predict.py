"""Predictions: a model's probabilities and the threshold rule, for a matrix of model inputs
or a whole features table. The API (``scoring.api``) and the batch flow (``blobflow``)
both score through ``score_matrix``, so the rule ``prediction = probability >= threshold``
exists once.

Pure functions on numpy arrays; a features table is anything indexable by column name
(a pandas DataFrame, a dict of arrays), so this module needs no pandas.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from featurespec import ID
from scoring.bundle import LoadedModel
from scoring.inputs import InputError, InputPlan

PROBABILITY_DECIMALS = 6  # in a predictions table (the API returns the full float)
PREDICTION_COLUMNS = (ID, "probability", "prediction", "model_version")


@dataclass(frozen=True)
class Scores:
    probability: np.ndarray  # float64, one per row
    prediction: np.ndarray  # int64: 1 where probability >= threshold, else 0
    threshold: float
    model_version: str


def score_matrix(model: LoadedModel, matrix: np.ndarray) -> Scores:
    """Probabilities and predictions for an (n, k) matrix in the model's input order."""
    probability = np.asarray(model.scorer.probabilities(matrix), dtype=float)
    threshold = model.manifest.threshold
    return Scores(
        probability=probability,
        prediction=(probability >= threshold).astype(np.int64),
        threshold=threshold,
        model_version=model.manifest.model_version,
    )


def table_matrix(plan: InputPlan, table: Mapping[str, Any], rows: int) -> np.ndarray:
    """The model inputs from a features table: each from the first column the table has
    that feeds it; an input no column feeds takes its default, or ``InputError`` names it
    when it has none."""
    matrix = np.empty((rows, len(plan.names)), dtype=float)
    missing = []
    for col, accepts in enumerate(plan.accepts):
        column = next((name for name in accepts if name in table), None)
        if column is not None:
            matrix[:, col] = np.asarray(table[column], dtype=float)
        elif plan.defaults[col] is not None:
            matrix[:, col] = plan.defaults[col]
        else:
            missing.append(plan.field_for(col))
    if missing:
        what = "no column of the table feeds it and it has no default"
        raise InputError(
            [{"loc": [name], "msg": f"{name}: {what}", "type": "missing"} for name in missing]
        )
    return matrix


def score_table(model: LoadedModel, table: Mapping[str, Any]) -> dict[str, Any]:
    """Predictions for every customer of a features table (``customer_id`` and features),
    as the columns of ``PREDICTION_COLUMNS``."""
    ids = np.asarray(table[ID])
    scores = score_matrix(model, table_matrix(model.plan, table, len(ids)))
    return {
        ID: ids,
        "probability": np.round(scores.probability, PROBABILITY_DECIMALS),
        "prediction": scores.prediction,
        "model_version": np.full(len(ids), scores.model_version, dtype=object),
    }
