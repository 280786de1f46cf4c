"""Scores for a batch: ``predictions.csv`` for every customer of ``features.csv``, and the
drift report (``drift.json``) comparing the batch with the model's training reference.

Both come from one pass: the model-input matrix is assembled once
(``scoring.predict.table_matrix``), scored with the API's own threshold rule
(``scoring.predict.score_matrix``), and the same matrix and probabilities go to
``scoring.drift.drift_for_model``, which reads the bundle's ``reference.json``
(checksum-verified) from where the model was loaded. A missing or broken model never blocks
a batch: the batch is published without ``predictions.csv`` and ``_SUCCESS`` says why. A
bundle without a reference (the handover model) gives predictions and no drift report, with
the reason in ``_SUCCESS``; drift is advisory and never fails a batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from featurespec import ID
from scoring.bundle import BundleError, BundleSource, LoadedModel, load_bundle
from scoring.drift import DriftError, drift_for_model
from scoring.holder import ModelHolder, ModelUnavailableError
from scoring.predict import PREDICTION_COLUMNS, PROBABILITY_DECIMALS, score_matrix, table_matrix


@dataclass(frozen=True)
class BatchScores:
    """What a model gives a batch: predictions always; a drift report when it can."""

    predictions: pd.DataFrame  # PREDICTION_COLUMNS, one row per customer of features.csv
    drift: dict[str, Any] | None  # scoring.drift's report, or None
    drift_note: str | None  # why there is no drift report; None when there is one


Predictor = Callable[[pd.DataFrame], BatchScores]


class PredictionsUnavailableError(RuntimeError):
    """No model to score with; the batch is still published, without predictions.csv."""


def score_batch(model: LoadedModel, features: pd.DataFrame) -> BatchScores:
    """Predictions and drift for a features table, from one model-input matrix."""
    ids = np.asarray(features[ID])
    matrix = table_matrix(model.plan, features, len(ids))
    scores = score_matrix(model, matrix)
    predictions = pd.DataFrame(
        {
            ID: ids,
            "probability": np.round(scores.probability, PROBABILITY_DECIMALS),
            "prediction": scores.prediction,
            "model_version": np.full(len(ids), scores.model_version, dtype=object),
        },
        columns=list(PREDICTION_COLUMNS),
    )
    drift, note = batch_drift(model, matrix, scores.probability)
    return BatchScores(predictions, drift, note)


def batch_drift(
    model: LoadedModel, matrix: np.ndarray, probability: np.ndarray
) -> tuple[dict[str, Any] | None, str | None]:
    """``(report, None)``, or ``(None, why not)``: no reference in the bundle, a reference that
    fails its checksum, an empty batch... ``DriftError`` messages name files and columns,
    never values; anything else is reported by its type only."""
    try:
        return drift_for_model(model, matrix, probability), None
    except (DriftError, BundleError) as exc:
        return None, f"drift not computed: {exc}"
    except Exception as exc:  # advisory: a drift bug must not cost the batch its outputs
        return None, f"drift not computed: internal error ({type(exc).__name__})"


def holder_predictor(holder: Callable[[], ModelHolder]) -> Predictor:
    """Scores with the model ``holder()`` holds at call time (the function app passes its
    HTTP app's holder, so batch and API score with the same model instance)."""

    def predict(features: pd.DataFrame) -> BatchScores:
        try:
            model = holder().get()
        except ModelUnavailableError as exc:
            raise PredictionsUnavailableError(str(exc)) from exc
        return score_batch(model, features)

    return predict


def source_predictor(source: Callable[[], BundleSource]) -> Predictor:
    """Scores with the bundle ``source()`` gives, loaded on first use."""
    loaded: list[LoadedModel] = []

    def predict(features: pd.DataFrame) -> BatchScores:
        if not loaded:
            try:
                loaded.append(load_bundle(source()))
            except BundleError as exc:
                raise PredictionsUnavailableError(str(exc)) from exc
        return score_batch(loaded[0], features)

    return predict
