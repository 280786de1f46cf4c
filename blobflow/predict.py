"""Predictions for a batch: ``predictions.csv`` scores every customer of ``features.csv``
with the model the API serves, through ``scoring.predict.score_table`` (the API's own
threshold rule). A missing or broken model never blocks a batch: the batch is published
without ``predictions.csv`` and ``_SUCCESS`` says why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from scoring.bundle import BundleError, BundleSource, LoadedModel, load_bundle
from scoring.holder import ModelHolder, ModelUnavailableError
from scoring.predict import score_table

Predictor = Callable[[pd.DataFrame], pd.DataFrame]


class PredictionsUnavailableError(RuntimeError):
    """No model to score with; the batch is still published, without predictions.csv."""


def predictions_frame(model: LoadedModel, features: pd.DataFrame) -> pd.DataFrame:
    """``predictions.csv``: customer_id, probability (6 dp), prediction, model_version."""
    return pd.DataFrame(score_table(model, features))


def holder_predictor(holder: Callable[[], ModelHolder]) -> Predictor:
    """Predictions with the model ``holder()`` holds at call time (the function app passes
    its HTTP app's holder, so batch and API score with the same model instance)."""

    def predict(features: pd.DataFrame) -> pd.DataFrame:
        try:
            model = holder().get()
        except ModelUnavailableError as exc:
            raise PredictionsUnavailableError(str(exc)) from exc
        return predictions_frame(model, features)

    return predict


def source_predictor(source: Callable[[], BundleSource]) -> Predictor:
    """Predictions with the bundle ``source()`` gives, loaded on first use."""
    loaded: list[Any] = []

    def predict(features: pd.DataFrame) -> pd.DataFrame:
        if not loaded:
            try:
                loaded.append(load_bundle(source()))
            except BundleError as exc:
                raise PredictionsUnavailableError(str(exc)) from exc
        return predictions_frame(loaded[0], features)

    return predict
