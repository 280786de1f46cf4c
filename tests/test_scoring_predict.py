"""One threshold rule: the API and a features table are scored by ``scoring.predict``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import FULL_EXAMPLE, NEGATIVE_FEATURES, bundle_app
from fastapi.testclient import TestClient

from featurespec import EXTRA_BOUNDS, FEATURES, MAX_DAYS
from scoring.bundle import LocalDirSource, load_bundle
from scoring.inputs import InputError
from scoring.predict import PREDICTION_COLUMNS, score_table
from scoring.settings import PROJECT_ROOT

HANDOVER, TRAINED = PROJECT_ROOT / "artifacts", PROJECT_ROOT / "artifacts" / "trained"


def table(rows: int = 40, seed: int = 5) -> pd.DataFrame:
    """A features table around the brief's customer: every feature, valid for the API."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"customer_id": [f"C{i}" for i in range(rows)]})
    for feature in FEATURES:
        base = float(FULL_EXAMPLE.get(feature.name, 1))
        if feature.kind == "flag":
            frame[feature.name] = rng.integers(0, 2, rows)
        elif feature.kind in ("count", "days"):
            frame[feature.name] = rng.integers(0, max(int(abs(base)) * 3, 2), rows).clip(
                max=MAX_DAYS
            )
        else:
            frame[feature.name] = np.round(abs(base) * rng.uniform(0.2, 3.0, rows), 2)
    for name in NEGATIVE_FEATURES:  # signed sums of debits: zero or negative
        frame[name] = -frame[name]
    for name, bound in EXTRA_BOUNDS.items():  # capped shares (rent_burden <= 1, ...)
        if bound.get("le", 0) > 0:
            frame[name] = frame[name].clip(upper=bound["le"])
    frame["salary_month_share"] = np.round(rng.uniform(0, 1, rows), 4)
    return frame


@pytest.mark.parametrize("bundle", [HANDOVER, TRAINED], ids=["handover", "trained"])
def test_a_features_table_scores_as_the_api_scores_each_row(bundle) -> None:
    features = table()
    model = load_bundle(LocalDirSource(bundle))
    scored = pd.DataFrame(score_table(model, features))
    assert list(scored.columns) == list(PREDICTION_COLUMNS)
    assert scored["customer_id"].tolist() == features["customer_id"].tolist()
    client = TestClient(bundle_app(bundle))
    items = [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        for row in features.to_dict(orient="records")
    ]
    answers = client.post("/predict/batch", json={"items": items}).json()["results"]
    api = np.array([a["probability"] for a in answers])
    np.testing.assert_allclose(scored["probability"], np.round(api, 6), rtol=0, atol=0)
    assert scored["prediction"].tolist() == [a["prediction"] for a in answers]
    assert set(scored["model_version"]) == {answers[0]["model_version"]}


def test_absent_optional_inputs_take_their_default_and_required_ones_are_named() -> None:
    model = load_bundle(LocalDirSource(TRAINED))
    features = table(5)
    optional = [i for i in model.manifest.inputs if i.optional]
    required = [i for i in model.manifest.inputs if not i.optional]
    assert optional and required
    filled = features.copy()
    for spec in optional:
        filled[spec.accepts[0]] = spec.default
    dropped = features.drop(columns=[spec.accepts[0] for spec in optional])
    assert pd.DataFrame(score_table(model, dropped)).equals(
        pd.DataFrame(score_table(model, filled))
    )
    with pytest.raises(InputError, match=required[0].accepts[0]):
        score_table(model, features.drop(columns=[required[0].accepts[0]]))
