"""Training: the CLI on a small synthetic CSV built here (with known probabilities), the
bundle it writes (pickle, verified linear parameters, checksummed drift reference, inputs
with directions and baselines), out-of-time validation when the set has decision dates, the
lookback, and the shipped trained bundle served through the API."""

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
from conftest import FULL_EXAMPLE
from fastapi.testclient import TestClient

from features.definitions import FEATURE_NAMES, FEATURES, FLAG_FEATURES, ID, TARGET
from scoring import train as training
from scoring.api import create_app
from scoring.bundle import LocalDirSource, load_bundle
from scoring.reasons import RISK_TABLE, model_inputs
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
    names = [i["name"] for i in manifest["inputs"]]
    # The selection's survivors, in definition order; excluded features never enter.
    assert names == manifest["metrics"]["inputs"]["selection"]["kept"]
    assert names == [n for n in model_inputs(FEATURE_NAMES) if n in names]
    assert not {"has_tesco", "has_netflix", "has_transfer"} & set(names)
    assert {"has_gambling", "has_salary", "has_fee"} & set(names)  # the true drivers
    assert {i["name"] for i in manifest["inputs"] if i["optional"]} == set(FLAG_FEATURES) & set(
        names
    )
    assert manifest["placeholder"] is False and manifest["version"] == "t1"
    model = load_bundle(LocalDirSource(trained))
    assert model.scorer.kind == "linear-json"
    assert model.estimator.n_features_in_ == len(names)
    assert model.warnings == ()  # pickled and checked with the same scikit-learn


def test_inputs_carry_direction_family_and_the_training_median(trained: Path) -> None:
    manifest = json.loads((trained / "model.json").read_text())
    df = pd.read_csv(trained.parent / "data" / "training_set.csv")
    for spec in manifest["inputs"]:
        entry = RISK_TABLE[spec["name"]]
        assert spec["risk_direction"] == entry.risk_direction
        assert spec["reason_family"] == entry.family
        assert spec["baseline"] == pytest.approx(df[spec["name"]].median())
    assert manifest["reasons"]["baseline"] == "median"
    assert set(manifest["reasons"]["families"]) >= {i["reason_family"] for i in manifest["inputs"]}
    coef = json.loads((trained / "linear.json").read_text())["coef"]
    for spec, w in zip(manifest["inputs"], coef, strict=True):
        assert spec["risk_direction"] * w >= 0, spec["name"]


def test_reference_profile_describes_every_input_and_the_score(trained: Path) -> None:
    manifest = json.loads((trained / "model.json").read_text())
    ref = json.loads((trained / "reference.json").read_text())
    assert ref["rows"] == manifest["reference"]["rows"] == 600
    assert ref["computed"] == manifest["reference"]["computed"] == manifest["created"]
    assert [i["name"] for i in ref["inputs"]] == [i["name"] for i in manifest["inputs"]]
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
    assert manifest["metrics"]["selected"] == "monotone_gradient_boosting"
    assert manifest["linear"] is None and not (out / "linear.json").exists()
    assert manifest["reference"]["sha256"] == sha(out / "reference.json")
    assert manifest["reasons"] is None and "not a linear model" in manifest["reasons_withheld"]
    model = load_bundle(LocalDirSource(out))
    assert model.scorer.kind == "predict_proba" and model.runtime_sklearn is not None
    assert list(model.estimator.monotonic_cst) == [i["risk_direction"] for i in manifest["inputs"]]
    assert model.describe_reasons()["given"] is False


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
    assert oracle["model_auc_share"] == pytest.approx(cv["auc"] / oracle["auc"], abs=1e-3)
    assert set(m["candidates"]) == {
        "sign_limited_logreg",
        "logreg_unconstrained",
        "monotone_gradient_boosting",
    }
    assert m["selected"] == "sign_limited_logreg" and m["selection_reason"]
    low, high = m["cross_validated_ci"]["auc"]
    assert low < cv["auc"] < high and high - low < 0.2
    # Without decision dates: cross-validation only, and the bundle says why.
    assert m["validation"]["out_of_time"] is False and m["out_of_time"] is None
    assert "decision_date" in m["validation"]["why_not"]
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
    x = _feature_frame(200)[[i.name for i in model.manifest.inputs]]
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
    required = {i["name"] for i in meta["manifest"]["inputs"] if not i["optional"]}
    assert missing == required - set(BRIEF_EXAMPLE) and "fees_per_month" in missing
    full = FULL_EXAMPLE
    r = trained_client.post("/predict", json=full)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == meta["model_version"]
    flags = {i["name"] for i in meta["manifest"]["inputs"] if i["optional"]}
    assert set(body["defaulted_fields"]) == flags - set(full)
    assert body["reasons"] and all(x["contribution"] > 0 for x in body["reasons"])
    assert meta["lookback_days"] == 180 and meta["reasons"]["given"] is True
    assert meta["manifest"]["metrics"]["validation"]["out_of_time"] is True
    gambler = trained_client.post(
        "/predict", json={**full, "has_gambling": 1, "gambling_per_month": 300.0}
    ).json()
    assert gambler["probability"] > body["probability"]  # synthetic risk driver is learned


# ---------------------------------------------------------------- decision dates, lookback


def with_decision_dates(csv: Path, months: int = 5, seed: int = 4) -> pd.DataFrame:
    """Give every customer an ISO decision_date as the second column (the features side's
    contract), spread over ``months`` calendar months of 2025."""
    df = pd.read_csv(csv, dtype={ID: str})
    rng = np.random.default_rng(seed)
    days = rng.integers(0, 30 * months, len(df))
    dates = (pd.Timestamp("2025-01-01") + pd.to_timedelta(days, unit="D")).strftime("%Y-%m-%d")
    df.insert(1, "decision_date", dates)
    df.to_csv(csv, index=False)
    return df


@pytest.fixture(scope="module")
def dated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, str]:
    base = tmp_path_factory.mktemp("dated")
    csv = build_training_set(base / "data", n=1500, seed=8)
    df = with_decision_dates(csv)
    done = run_train("--training-set", str(csv), "--out", str(base / "bundle"))
    assert done.returncode == 0, done.stderr
    return base / "bundle", df, done.stdout


def test_out_of_time_validation_fits_on_earlier_cohorts_and_validates_on_later(
    dated: tuple[Path, pd.DataFrame, str],
) -> None:
    bundle, df, stdout = dated
    m = json.loads((bundle / "model.json").read_text())["metrics"]
    assert m["validation"] == {
        "out_of_time": True,
        "why_not": None,
        "selected_on": "out-of-time",
    }
    oot = m["out_of_time"]
    train, validate = oot["train"], oot["validate"]
    assert train["to"] < validate["from"]  # strictly earlier cohorts
    assert max(train["cohorts"]) < min(validate["cohorts"])
    dates = pd.to_datetime(df["decision_date"])
    later = dates.dt.to_period("M").astype(str).isin(validate["cohorts"])
    assert validate["rows"] == int(later.sum()) >= 0.2 * len(df)
    assert train["rows"] + validate["rows"] == len(df) == m["rows"]
    assert validate["defaults"] == int(df.loc[later, TARGET].sum())
    for name, result in oot["candidates"].items():
        low, high = result["ci"]["auc"]
        assert low <= result["auc"] <= high, name
        assert len(result["ci"]["calibration_slope"]) == 2
    assert oot["selected"]["auc"] == oot["candidates"]["sign_limited_logreg"]["auc"]
    assert sum(row["rows"] for row in oot["cohorts"]["sign_limited_logreg"]) == validate["rows"]
    assert oot["oracle"]["matched_customers"] == validate["rows"]
    assert oot["reasons"]["wrong_direction_share"] == 0.0  # held-out declines, new reasons
    assert "out-of-time (" in stdout and "AUC" in stdout
    manifest = json.loads((bundle / "model.json").read_text())
    assert "decision_date" not in [i["name"] for i in manifest["inputs"]]


def test_without_later_cohorts_out_of_time_is_reported_impossible(tmp_path: Path) -> None:
    csv = build_training_set(tmp_path / "d", n=300)
    with_decision_dates(csv, months=1)
    done = run_train("--training-set", str(csv), "--out", str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr
    m = json.loads((tmp_path / "b" / "model.json").read_text())["metrics"]
    assert (
        m["validation"]["out_of_time"] is False
        and "one calendar month" in m["validation"]["why_not"]
    )
    assert "out-of-time validation not possible" in done.stdout


@pytest.mark.parametrize("bad", ["2025/01/02", "02-01-2025", "", "2025-02-30"])
def test_a_bad_decision_date_is_refused_naming_the_column(tmp_path: Path, bad: str) -> None:
    csv = build_training_set(tmp_path / "d", n=60)
    df = with_decision_dates(csv)
    df.loc[7, "decision_date"] = bad
    df.to_csv(csv, index=False)
    done = run_train("--training-set", str(csv), "--out", str(tmp_path / "b"))
    assert done.returncode == 2 and "decision_date" in done.stderr and "1 rows" in done.stderr
    assert bad == "" or bad not in done.stderr  # values are not echoed


def test_lookback_comes_from_the_report_or_the_flag_and_must_agree(tmp_path: Path) -> None:
    csv = build_training_set(tmp_path / "d", n=300)
    (tmp_path / "d" / "dq_report.json").write_text(
        json.dumps({"rows_in": 5, "parameters": {"lookback_days": 90}})
    )
    done = run_train("--training-set", str(csv), "--out", str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "b" / "model.json").read_text())
    assert manifest["lookback"] == {"days": 90, "accepts": [90], "source": "dq_report.json"}
    assert manifest["metrics"]["lookback_days"] == 90
    clash = run_train(
        "--training-set", str(csv), "--out", str(tmp_path / "c"), "--lookback-days", "180"
    )
    assert clash.returncode == 2 and "180" in clash.stderr and "90" in clash.stderr
    (tmp_path / "d" / "dq_report.json").unlink()
    flagged = run_train(
        "--training-set", str(csv), "--out", str(tmp_path / "c"), "--lookback-days", "180"
    )
    assert flagged.returncode == 0, flagged.stderr
    manifest = json.loads((tmp_path / "c" / "model.json").read_text())
    assert (
        manifest["lookback"]["days"] == 180 and manifest["lookback"]["source"] == "--lookback-days"
    )
    # Served: /model shows it, and a request may declare only that lookback.
    client = TestClient(create_app(settings_for(tmp_path / "c")))
    meta = client.get("/model").json()
    assert meta["lookback_days"] == 180 and meta["accepted_lookback_days"] == [180]
    row = _request_row(meta)
    assert client.post("/predict", json={**row, "lookback_days": 180}).status_code == 200
    assert client.post("/predict", json=row).status_code == 200  # declaring it is optional
    r = client.post("/predict", json={**row, "lookback_days": 30})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "lookback_days"]
    assert "180" in r.json()["detail"][0]["msg"]


def settings_for(bundle: Path):
    from scoring.settings import Settings

    return Settings(model_dir=bundle)


def _request_row(meta: dict) -> dict:
    """A valid request with every field the model reads."""
    kinds = {f.name: f.kind for f in FEATURES}
    values = {"flag": 0, "count": 1, "days": 1, "money": 0.5, "ratio": 0.5}
    row: dict = {"customer_id": "C1"}
    for spec in meta["request_fields"]:
        name = spec["accepts"][0]
        row[name] = -0.5 if name == "total_debit" else values[kinds[name]]
    return row


def test_every_feature_declares_a_direction_and_family() -> None:
    assert set(RISK_TABLE) == set(FEATURE_NAMES)
    for name in model_inputs(FEATURE_NAMES):
        assert RISK_TABLE[name].risk_direction in (-1, 1)
        assert RISK_TABLE[name].family


def test_training_refuses_a_feature_without_a_direction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A feature added to FEATURES without an entry in scoring/reasons.py stops training."""
    from scoring.reasons import RiskTableError, check_table

    with pytest.raises(RiskTableError, match=r"\['spend_per_month'\].*RISK_TABLE"):
        check_table([*FEATURE_NAMES, "spend_per_month"])
    csv = build_training_set(tmp_path / "d", n=60)
    monkeypatch.delitem(RISK_TABLE, "fee_count")
    with pytest.raises(training.TrainingDataError, match=r"\['fee_count'\]"):
        training.train(csv, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_the_model_card_quotes_the_shipped_bundle() -> None:
    """scoring/MODEL_CARD.md repeats figures from artifacts/trained/model.json: retraining
    without updating the card fails here."""
    card = (PROJECT_ROOT / "scoring" / "MODEL_CARD.md").read_text()
    manifest = json.loads((TRAINED / "model.json").read_text())
    m = manifest["metrics"]
    assert f"`{manifest['name']}@{manifest['version']}`" in card
    assert f"| AUC | {m['cross_validated']['auc']:.3f} |" in card
    low, high = m["cross_validated_ci"]["auc"]
    assert f"{low:.3f}-{high:.3f}" in card
    assert f"{m['oracle']['auc']:.3f}" in card and f"{m['oracle']['model_auc_share']:.3f}x" in card
    for spec in manifest["inputs"]:
        assert f"| `{spec['name']}` |" in card
    selection = m["inputs"]["selection"]
    dropped = {d["feature"]: d["why"] for d in selection["dropped"]}
    for name, before in selection["vif_before"].items():
        after = selection["vif_after"].get(name)
        shown = (
            f"{after:.2f}"
            if after is not None
            else ("zero" if dropped[name].startswith("held at zero") else "dropped")
        )
        assert f"| `{name}` | {before:.1f} | {shown} |" in card, name
    wrong = m["reasons"]["unconstrained_reference_in_sample"]["wrong_direction_share"]
    assert f"| {100 * wrong:.1f}% |" in card
    assert m["reasons"]["in_sample"]["wrong_direction_share"] == 0.0
