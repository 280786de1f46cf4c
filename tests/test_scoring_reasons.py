"""Issue 19: a sign-limited model whose reasons never point the wrong way.

The constrained fit keeps every coefficient on its declared side; the selection drops inputs
that only add collinearity; reasons are families measured from training medians and are
given only for values on the risky side. Checked on the shipped trained bundle with a fresh
synthetic population (features.synthetic, another seed: customers it never saw), through
the API, and on small fitted examples.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import FULL_EXAMPLE, bundle_app
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from features.definitions import FEATURES, ID
from scoring.bundle import LoadedModel, LocalDirSource, load_bundle
from scoring.constrained import SignConstrainedLogisticRegression
from scoring.explain import Explainer
from scoring.linear import LinearParams
from scoring.reasons import FAMILIES, RISK_TABLE
from scoring.schema import MAX_BATCH
from scoring.selection import select_inputs, standardise, vif
from scoring.settings import PROJECT_ROOT

TRAINED = PROJECT_ROOT / "artifacts" / "trained"
KINDS = {f.name: f.kind for f in FEATURES}


def run(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Features and labels of 3,000 synthetic customers the shipped model never saw
    (seed 7; it was trained on seed 1)."""
    out = tmp_path_factory.mktemp("population")
    run("features.synthetic", "--rows", "150000", "--customers", "3000", "--seed", "7",
        "--out", str(out))  # fmt: skip
    run("features", "--transactions", str(out / "transactions.csv"), "--labels",
        str(out / "labels.csv"), "--out", str(out), "--now", "2025-07-01T00:00:00")  # fmt: skip
    return pd.read_csv(out / "training_set.csv", dtype={ID: str})


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(bundle_app(TRAINED)) as c:
        yield c


@pytest.fixture(scope="module")
def shipped() -> LoadedModel:
    return load_bundle(LocalDirSource(TRAINED))


def request_items(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """API request bodies from feature rows: integers for counts, days and flags."""
    items = []
    for row in frame.to_dict("records"):
        item: dict[str, Any] = {"customer_id": row[ID]}
        for name, kind in KINDS.items():
            value = row[name]
            item[name] = int(value) if kind in ("count", "days", "flag") else float(value)
        items.append(item)
    return items


def score(client: TestClient, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results = []
    for start in range(0, len(items), MAX_BATCH):
        r = client.post("/predict/batch", json={"items": items[start : start + MAX_BATCH]})
        assert r.status_code == 200, r.text[:500]
        results.extend(r.json()["results"])
    return results


def test_every_reason_on_a_held_out_population_lies_on_the_risky_side(
    client: TestClient, shipped: LoadedModel, population: pd.DataFrame
) -> None:
    items = request_items(population)
    results = score(client, items)
    specs = {i.accepts[0]: i for i in shipped.manifest.inputs}
    declined = [r for r in results if r["prediction"] == 1]
    assert len(declined) > 300  # enough to mean something
    checked = 0
    for item, result in zip(items, results, strict=True):
        for reason in result["reasons"]:
            assert reason["contribution"] > 0
            assert reason["text"] == FAMILIES[reason["family"]]
            assert reason["features"]
            for feat in reason["features"]:
                spec = specs[feat["feature"]]
                assert spec.reason_family == reason["family"]
                assert feat["value"] == item[feat["feature"]]
                assert feat["baseline"] == spec.baseline
                assert spec.risk_direction * (feat["value"] - feat["baseline"]) > 0, feat
                assert feat["contribution"] > 0
                checked += 1
    assert checked > len(declined)
    # Nearly every declined customer is told at least one reason.
    assert sum(1 for r in declined if r["reasons"]) >= 0.99 * len(declined)


def test_the_briefs_example_is_never_told_it_spent_too_little_or_was_paid_every_month(
    client: TestClient, shipped: LoadedModel
) -> None:
    specs = {i.accepts[0]: i for i in shipped.manifest.inputs}
    frugal = {**FULL_EXAMPLE, "total_debit": -10.0, "avg_amount": 300.0, "net_flow": 3490.0,
              "debit_per_month": -3.38, "spend_to_income": 0.0029}  # fmt: skip
    for body in (FULL_EXAMPLE, frugal):
        r = client.post("/predict", json=body)
        assert r.status_code == 200, r.text
        listed = {f["feature"] for reason in r.json()["reasons"] for f in reason["features"]}
        assert listed  # the example does get reasons
        for name in listed:
            spec = specs[name]
            assert spec.risk_direction * (body[name] - spec.baseline) > 0, name
        # Spending below the typical customer's is never a reason; salary every month never is.
        spending = {"total_debit", "avg_amount", "net_flow", "max_debit", "debit_per_month"}
        assert not (spending | {"spend_to_income"}) & listed
        assert "salary_month_share" not in listed and "has_salary" not in listed


def spend_more(frame: pd.DataFrame, factor: float = 1.2) -> pd.DataFrame:
    """The same customers spending ``factor`` times as much (every debit scaled): totals,
    the largest debit, gambling and rent grow; net flow and the mean amount follow."""
    out = frame.copy()
    extra = (factor - 1.0) * frame["total_debit"]  # negative: more money out
    out["total_debit"] = frame["total_debit"] * factor
    out["max_debit"] = frame["max_debit"] * factor
    out["gambling_spend"] = frame["gambling_spend"] * factor
    out["rent_to_income"] = frame["rent_to_income"] * factor
    out["net_flow"] = frame["net_flow"] + extra
    out["avg_amount"] = frame["avg_amount"] + extra / frame["num_transactions"]
    # The per-month rates and shares grow alike (shares up to their caps).
    out["debit_per_month"] = frame["debit_per_month"] * factor
    out["gambling_per_month"] = frame["gambling_per_month"] * factor
    out["rent_burden"] = (frame["rent_burden"] * factor).clip(upper=1.0)
    out["spend_to_income"] = (frame["spend_to_income"] * factor).clip(upper=10.0)
    return out


def probabilities(model: LoadedModel, frame: pd.DataFrame) -> np.ndarray:
    columns = [i.accepts[0] for i in model.manifest.inputs]
    return model.scorer.probabilities(frame[columns].to_numpy(dtype=float))


def test_raising_spending_by_20_percent_never_lowers_predicted_risk(
    shipped: LoadedModel, population: pd.DataFrame
) -> None:
    before = probabilities(shipped, population)
    after = probabilities(shipped, spend_more(population))
    assert np.all(after >= before - 1e-12)
    assert np.mean(after > before) > 0.5  # and it does raise it for most customers


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_moving_any_input_towards_risk_never_lowers_the_score(data: st.DataObject) -> None:
    model = load_bundle(LocalDirSource(TRAINED))
    inputs = model.manifest.inputs
    row = np.array(
        [
            data.draw(st.floats(-1e5, 1e5, allow_nan=False))
            if KINDS[i.name] == "money"
            else float(data.draw(st.integers(0, 1 if KINDS[i.name] == "flag" else 400)))
            for i in inputs
        ]
    )
    j = data.draw(st.integers(0, len(inputs) - 1))
    step = data.draw(st.floats(1e-3, 1e4))
    moved = row.copy()
    moved[j] += inputs[j].risk_direction * step
    p, q = model.scorer.probabilities(np.vstack([row, moved]))
    assert q >= p


# ---------------------------------------------------------------- the constrained fit


def correlated(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x1 drives default; x2 is x1 plus noise. An unconstrained fit gives x2 the opposite
    sign whenever the noise is informative in reverse (here by construction)."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    noise = rng.normal(size=n)
    x2 = x1 + 0.3 * noise
    y = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * x1 - 1.0 * noise)))).astype(int)
    return np.column_stack([x1, x2]), y


def test_the_constrained_fit_respects_every_direction_where_an_unconstrained_one_does_not() -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = correlated()
    free = LogisticRegression(C=1.0).fit(x, y).coef_[0]
    assert free[1] < 0  # the unconstrained fit points x2 the "wrong" way
    limited = SignConstrainedLogisticRegression(directions=[1, 1]).fit(x, y)
    assert np.all(limited.coef_[0] >= 0) and limited.coef_[0][1] == 0.0
    assert limited.converged_


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    directions=st.lists(st.sampled_from([-1, 0, 1]), min_size=1, max_size=5),
)
def test_constrained_coefficients_never_take_the_forbidden_sign(
    seed: int, directions: list[int]
) -> None:
    rng = np.random.default_rng(seed)
    k = len(directions)
    x = rng.normal(size=(400, k)) @ rng.normal(size=(k, k))  # correlated columns
    y = (rng.random(400) < 1 / (1 + np.exp(-x @ rng.normal(size=k)))).astype(int)
    if y.min() == y.max():
        y[0] = 1 - y[0]
    coef = SignConstrainedLogisticRegression(directions=directions).fit(x, y).coef_[0]
    assert np.all(np.asarray(directions) * coef >= 0)


def test_without_limits_it_is_scikit_learns_logistic_regression() -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = correlated(seed=3)
    ours = SignConstrainedLogisticRegression(directions=[0, 0], C=0.5).fit(x, y)
    theirs = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(x, y)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours.intercept_, theirs.intercept_, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours.predict_proba(x), theirs.predict_proba(x), atol=1e-6)


def test_the_shipped_bundle_respects_its_declared_directions(shipped: LoadedModel) -> None:
    coef = shipped.scorer.params.coef  # type: ignore[attr-defined]
    directions = [i.risk_direction for i in shipped.manifest.inputs]
    assert all(d in (-1, 1) for d in directions)
    assert np.all(np.asarray(directions) * coef >= 0)
    assert [i.risk_direction for i in shipped.manifest.inputs] == [
        RISK_TABLE[i.name].risk_direction for i in shipped.manifest.inputs
    ]


# ---------------------------------------------------------------- selection


def test_vif_is_one_over_one_minus_r_squared() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=2000), rng.normal(size=2000)
    z = np.column_stack([a, b, a + 0.5 * b + 0.2 * rng.normal(size=2000)])
    z = (z - z.mean(0)) / z.std(0)
    others = np.column_stack([np.ones(2000), z[:, :2]])
    fitted = others @ np.linalg.lstsq(others, z[:, 2], rcond=None)[0]
    r2 = 1 - np.sum((z[:, 2] - fitted) ** 2) / np.sum(z[:, 2] ** 2)
    assert vif(z)[2] == pytest.approx(1 / (1 - r2), rel=1e-6)


def test_selection_drops_a_column_that_only_adds_collinearity() -> None:
    rng = np.random.default_rng(2)
    n = 4000
    income = rng.gamma(3.0, 800.0, n)
    fees = rng.poisson(1.0, n).astype(float)
    frame = pd.DataFrame(
        {
            "total_credit": income,
            "net_flow": income * rng.normal(1.0, 0.01, n),  # a near copy
            "fee_count": fees,
        }
    )
    logit = -1.0 - 0.8 * (np.log1p(income) - np.log1p(income).mean()) + 0.9 * fees
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    directions = {"total_credit": -1, "net_flow": -1, "fee_count": 1}
    chosen = select_inputs(frame, y, directions)
    assert chosen.vif_before["net_flow"] > 100
    assert len(chosen.kept) == 2 and "fee_count" in chosen.kept
    (dropped,) = [d for d in chosen.dropped if d["why"].startswith("collinear")]
    assert dropped["vif"] > 100 and dropped["lr_statistic"] < 3.84
    assert max(chosen.vif_after.values()) < 5
    z = standardise(frame[chosen.kept])
    assert np.allclose(vif(z), list(chosen.vif_after.values()))


# ---------------------------------------------------------------- the explainer


def toy_explainer() -> Explainer:
    """Three inputs, identity transform: credits (lower riskier) and days since salary
    (higher riskier) in the income family, fee count alone in fees."""
    params = LinearParams(steps=(), coef=np.array([-1.0, 2.0, 0.5]), intercept=-2.0)
    return Explainer.build(
        params,
        baseline=[10.0, 1.0, 0.0],
        direction=[-1, 1, 1],
        families=["income", "income", "fees"],
        fields=["total_credit", "days_since_last_salary", "fee_count"],
        family_text=FAMILIES,
        top=3,
    )


def test_a_family_is_given_only_when_its_net_contribution_is_positive() -> None:
    explainer = toy_explainer()
    x = np.array(
        [
            [8.0, 1.5, 4.0],  # income risky (+2, +1), fees risky (+2)
            [20.0, 2.0, 0.0],  # days risky (+2) but income well above baseline (-10): net < 0
            [10.0, 1.0, 0.0],  # everything at the baseline
        ]
    )
    reasons = explainer.explain(x)
    assert [r["family"] for r in reasons[0]] == ["income", "fees"]
    assert reasons[0][0]["contribution"] == pytest.approx(3.0)
    assert [f["feature"] for f in reasons[0][0]["features"]] == [
        "total_credit",
        "days_since_last_salary",
    ]
    assert reasons[1] == [] and reasons[2] == []
    np.testing.assert_allclose(
        explainer.contributions(x).sum(axis=1) + explainer.baseline_log_odds,
        explainer.params.logits(x),
    )


def test_a_feature_on_the_safe_side_is_never_listed_even_if_its_weight_is_wrong() -> None:
    """A hand-made bundle whose coefficient contradicts its direction still never gives a
    reason for a value on the safe side of the baseline."""
    params = LinearParams(steps=(), coef=np.array([1.0]), intercept=0.0)
    explainer = Explainer.build(
        params,
        baseline=[0.5],
        direction=[-1],  # lower riskier, but the weight says higher raises the score
        families=["income"],
        fields=["salary_month_share"],
        family_text=FAMILIES,
        top=3,
    )
    assert explainer.explain(np.array([[1.0], [0.0]])) == [[], []]


def test_reasons_shape_in_the_api(client: TestClient) -> None:
    fees = {"fee_count": 9, "fees_per_month": 3.04, "has_fee": 1}  # nine fees in 90 days
    body = client.post("/predict", json={**FULL_EXAMPLE, **fees}).json()
    assert 1 <= len(body["reasons"]) <= 3
    contributions = [r["contribution"] for r in body["reasons"]]
    assert contributions == sorted(contributions, reverse=True)
    assert body["reasons"][0]["family"] == "fees"
    assert set(body["reasons"][0]) == {"family", "text", "contribution", "features"}
    meta = client.get("/model").json()["reasons"]
    assert meta["given"] is True and meta["baseline"] == "training median of each input"
    assert json.dumps(meta["families"]) == json.dumps(FAMILIES)
