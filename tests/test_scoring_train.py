"""Training: the CLI on a small synthetic CSV built here (with known probabilities), the
bundle it writes (pickle, verified linear parameters, checksummed drift reference), and the
shipped trained bundle served through the API."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from features.definitions import FEATURE_NAMES, FEATURES, FLAG_FEATURES, ID, TARGET
from scoring.api import create_app
from scoring.bundle import LocalDirSource, load_bundle
from scoring.schema import BRIEF_EXAMPLE
from scoring.scorer import LinearScorer
from scoring.settings import PROJECT_ROOT, local_source, model_dir

TRAINED = PROJECT_ROOT / "artifacts" / "trained"


def build_training_set(directory: Path, n: int = 600, seed: int = 3) -> Path:
    """Feature columns with plausible ranges; default drawn from a known logistic model.

    Writes training_set.csv and truth.csv (customer_id,true_probability) side by side.
    """
    rng = np.random.default_rng(seed)
    kinds = {f.name: f.kind for f in FEATURES}
    df = pd.DataFrame({ID: [f"C{i:05d}" for i in range(n)]})
    for name in FEATURE_NAMES:
        kind = kinds[name]
        if kind == "flag":
            df[name] = rng.integers(0, 2, n)
        elif kind in ("count", "days"):
            df[name] = rng.integers(1, 300, n)
        elif name == "total_debit":
            df[name] = -rng.gamma(2.0, 800.0, n).round(2)
        elif kind == "money":
            df[name] = rng.gamma(2.0, 500.0, n).round(2)
        else:
            df[name] = rng.uniform(0, 1, n).round(4)
    z = -1.5 + 2.0 * df["has_gambling"] - 1.5 * df["has_salary"] + 1.0 * df["has_fee"]
    p = 1 / (1 + np.exp(-z))
    df[TARGET] = rng.binomial(1, p)
    directory.mkdir(parents=True, exist_ok=True)
    df.to_csv(directory / "training_set.csv", index=False)
    pd.DataFrame({ID: df[ID], "true_probability": p}).to_csv(directory / "truth.csv", index=False)
    return directory / "training_set.csv"


def run_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scoring.train", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("train")
    csv = build_training_set(base / "data")
    out = base / "bundle"
    done = run_train("--training-set", str(csv), "--out", str(out), "--version", "t1")
    assert done.returncode == 0, done.stderr
    assert "oracle AUC" in done.stdout
    return out


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_writes_a_verifiable_bundle(trained: Path) -> None:
    manifest = json.loads((trained / "model.json").read_text())
    assert manifest["sha256"] == sha(trained / "model.joblib")
    assert manifest["linear"]["sha256"] == sha(trained / "linear.json")
    assert manifest["linear"]["verified"]["rows"] > 600  # training rows plus the wide grid
    assert manifest["reference"]["sha256"] == sha(trained / "reference.json")
    assert [i["name"] for i in manifest["inputs"]] == list(FEATURE_NAMES)
    assert {i["name"] for i in manifest["inputs"] if i["optional"]} == set(FLAG_FEATURES)
    assert manifest["placeholder"] is False and manifest["version"] == "t1"
    model = load_bundle(LocalDirSource(trained))
    assert model.scorer.kind == "linear-json"
    assert model.estimator.n_features_in_ == len(FEATURE_NAMES)
    assert model.warnings == ()  # pickled and checked with the same scikit-learn


def test_reference_profile_describes_every_input_and_the_score(trained: Path) -> None:
    manifest = json.loads((trained / "model.json").read_text())
    ref = json.loads((trained / "reference.json").read_text())
    assert ref["rows"] == manifest["reference"]["rows"] == 600
    assert ref["computed"] == manifest["reference"]["computed"] == manifest["created"]
    assert [i["name"] for i in ref["inputs"]] == list(FEATURE_NAMES)
    df = pd.read_csv(trained.parent / "data" / "training_set.csv")
    for entry in ref["inputs"]:
        assert sum(entry["shares"]) == pytest.approx(1.0)
        values = df[entry["column"]]
        if entry["name"] in FLAG_FEATURES:
            assert entry["kind"] == "categorical" and entry["categories"] == [0.0, 1.0]
            assert entry["shares"][1] == pytest.approx(values.mean())
        else:
            assert entry["kind"] == "numeric"
            edges = entry["edges"]
            assert edges == sorted(set(edges)) and len(edges) <= 9
            # right-closed bins: the first share is the rows at or below the first edge
            assert entry["shares"][0] == pytest.approx((values <= edges[0]).mean())
    score = ref["score"]
    assert score["kind"] == "numeric" and len(score["shares"]) == 10  # continuous: 10 deciles
    assert all(s == pytest.approx(0.1, abs=0.002) for s in score["shares"])


def test_a_boosting_bundle_has_no_linear_file_and_scores_through_the_pickle(
    trained: Path, tmp_path: Path
) -> None:
    out = tmp_path / "b"
    shutil.copytree(trained, out)  # an earlier linear bundle in the same directory
    csv = trained.parent / "data" / "training_set.csv"
    done = run_train("--training-set", str(csv), "--out", str(out), "--boost-margin", "-1")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["metrics"]["selected"] == "hist_gradient_boosting"
    assert manifest["linear"] is None and not (out / "linear.json").exists()
    assert manifest["reference"]["sha256"] == sha(out / "reference.json")
    model = load_bundle(LocalDirSource(out))
    assert model.scorer.kind == "predict_proba" and model.runtime_sklearn is not None


def test_metrics_are_consistent_and_learn_the_signal(trained: Path) -> None:
    m = json.loads((trained / "model.json").read_text())["metrics"]
    cv = m["cross_validated"]
    assert m["cv"]["folds"] == 5 and m["rows"] == 600
    assert cv["gini"] == pytest.approx(2 * cv["auc"] - 1, abs=1e-4)
    assert 0.0 < cv["ks"] <= 1.0 and 0.0 < cv["brier"] < cv["brier_base_rate"]
    assert sum(b["n"] for b in cv["calibration_bins"]) == 600
    oracle = m["oracle"]
    assert oracle["matched_customers"] == 600
    # The model sees the true drivers: clearly better than chance, not better than the truth
    # by more than sampling noise.
    assert 0.65 < cv["auc"] <= oracle["auc"] + 0.03
    assert set(m["candidates"]) == {"logreg_signed_log", "logreg", "hist_gradient_boosting"}
    assert m["selected"] in m["candidates"] and m["selection_reason"]
    at = m["at_threshold"]
    assert at["tp"] + at["fp"] + at["fn"] + at["tn"] == 600


def test_threshold_follows_the_stated_cost_ratio(tmp_path: Path) -> None:
    csv = build_training_set(tmp_path / "d", n=300)
    done = run_train("--training-set", str(csv), "--out", str(tmp_path / "b"), "--cost-ratio", "3")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "b" / "model.json").read_text())
    assert manifest["threshold"] == pytest.approx(0.25)
    assert "1/(1+3)" in manifest["threshold_reason"]
    assert manifest["metrics"]["oracle"] is not None


def test_missing_columns_are_named(tmp_path: Path) -> None:
    csv = build_training_set(tmp_path / "d", n=50)
    pd.read_csv(csv).drop(columns=["net_flow", TARGET]).to_csv(csv, index=False)
    done = run_train("--training-set", str(csv), "--out", str(tmp_path / "b"))
    assert done.returncode == 2
    assert "net_flow" in done.stderr and TARGET in done.stderr
    assert not (tmp_path / "b").exists()


def test_bad_labels_are_refused(tmp_path: Path) -> None:
    csv = build_training_set(tmp_path / "d", n=50)
    df = pd.read_csv(csv)
    df.loc[3, TARGET] = 2
    df.to_csv(csv, index=False)
    done = run_train("--training-set", str(csv), "--out", str(tmp_path / "b"))
    assert done.returncode == 2 and "0 or 1" in done.stderr


@pytest.mark.parametrize("bundle", ["fixture", "shipped"])
def test_fast_path_equals_pipeline_predict_proba(trained: Path, bundle: str) -> None:
    model = load_bundle(LocalDirSource(trained if bundle == "fixture" else TRAINED))
    if model.manifest.estimator.startswith("FunctionTransformer"):
        assert isinstance(model.scorer, LinearScorer) and model.scorer.kind == "linear-json"
    x = _feature_frame(200)
    expected = model.estimator.predict_proba(x)[:, 1]
    np.testing.assert_allclose(
        model.scorer.probabilities(x.to_numpy(float)), expected, rtol=1e-10, atol=1e-15
    )


def _feature_frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    data = {}
    for f in FEATURES:
        if f.kind == "flag":
            data[f.name] = rng.integers(0, 2, n).astype(float)
        elif f.name == "total_debit":
            data[f.name] = -rng.gamma(2.0, 800.0, n)
        else:
            data[f.name] = rng.gamma(2.0, 50.0, n) if f.kind != "ratio" else rng.uniform(0, 1, n)
    return pd.DataFrame(data)


def test_model_dir_setting_selects_the_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_DIR", "artifacts/trained")
    assert model_dir() == TRAINED
    assert load_bundle(local_source()).manifest.name.startswith("part1-")
    monkeypatch.delenv("MODEL_DIR")
    assert model_dir() == PROJECT_ROOT / "artifacts"


@pytest.fixture
def trained_client(monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("MODEL_DIR", "artifacts/trained")
    return TestClient(create_app())  # the factory reads MODEL_DIR, as under uvicorn


def test_shipped_trained_bundle_through_the_api(trained_client: TestClient) -> None:
    meta = trained_client.get("/model").json()
    assert meta["placeholder"] is False
    assert (
        meta["manifest"]["metrics"]["oracle"]["auc"]
        > meta["manifest"]["metrics"]["cross_validated"]["auc"] - 0.1
    )
    # The brief's example lacks numeric features this model needs: refused, each named.
    r = trained_client.post("/predict", json=BRIEF_EXAMPLE)
    assert r.status_code == 422
    missing = {e["loc"][-1] for e in r.json()["detail"]}
    assert "net_flow" in missing and "has_tesco" not in missing  # flags may default
    full = {
        **BRIEF_EXAMPLE,
        "net_flow": 2249.5,
        "max_debit": 650.0,
        "rent_to_income": 0.19,
        "gambling_spend": 0.0,
        "fee_count": 0,
        "days_since_last_salary": 3,
        "salary_month_share": 1.0,
        "active_days": 90,
    }
    r = trained_client.post("/predict", json=full)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == meta["model_version"]
    assert set(body["defaulted_fields"]) == {
        "has_tesco",
        "has_netflix",
        "has_transfer",
        "has_gambling",
        "has_bonus",
        "has_fee",
    }
    assert body["reasons"] and all(x["contribution"] > 0 for x in body["reasons"])
    gambler = trained_client.post(
        "/predict", json={**full, "has_gambling": 1, "gambling_spend": 900.0}
    ).json()
    assert gambler["probability"] > body["probability"]  # synthetic risk driver is learned
