"""The scoring API through its ASGI app (real HTTP semantics via httpx/TestClient),
serving the default (handover) bundle in artifacts/ from an app built for this module."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import anyio
import numpy as np
import pytest
from conftest import bundle_app
from fastapi import FastAPI
from fastapi.testclient import TestClient

from features.definitions import FEATURE_NAMES, FLAG_FEATURES
from scoring import api
from scoring.bundle import LoadedModel, LocalDirSource, load_bundle
from scoring.holder import ModelHolder
from scoring.schema import BRIEF_EXAMPLE, MAX_BATCH
from scoring.settings import MAX_BODY_BYTES, PROJECT_ROOT, Settings

BRIEF_RESPONSE_KEYS = {"customer_id", "probability", "prediction"}
ARTIFACTS = PROJECT_ROOT / "artifacts"


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return bundle_app(ARTIFACTS)


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def model(app: FastAPI) -> LoadedModel:
    return app.state.holder.get()


def handover_probability(model: LoadedModel, row: list[float]) -> float:
    """The handover estimator's own answer, for comparison."""
    return float(model.estimator.predict_proba(np.array([row]))[0, 1])


@pytest.mark.parametrize("root_path", ["", "/api"])
def test_brief_example_works_with_and_without_the_hosts_prefix(root_path: str) -> None:
    """Plain uvicorn serves /predict; the function app's host passes /api/predict."""
    app = bundle_app(ARTIFACTS, root_path=root_path)
    client = TestClient(app)
    r = client.post(f"{root_path}/predict", json=BRIEF_EXAMPLE)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= BRIEF_RESPONSE_KEYS
    assert body["customer_id"] == "CUST001"
    # 9 inputs in the manifest's order; absent flags defaulted to 0.
    model = app.state.holder.get()
    expected = handover_probability(model, [15, -1250.50, 3500.00, 150.03, 1, 0, 0, 1, 0])
    assert body["probability"] == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert body["prediction"] == int(expected >= body["threshold"])
    assert body["defaulted_fields"] == ["has_netflix", "has_tesco", "has_bonus"]
    assert body["model_version"].startswith("handover-logreg@")
    assert body["ignored_fields"] == []


def test_the_handover_model_gives_no_reasons_and_model_says_why(client: TestClient) -> None:
    """Issue 19 #4: its total_debit sign convention cannot be identified and it has no
    baselines, so reasons measured from zero would mislead; /model says so."""
    body = client.post("/predict", json=BRIEF_EXAMPLE).json()
    assert body["reasons"] is None
    batch = client.post("/predict/batch", json={"items": [BRIEF_EXAMPLE]}).json()
    assert batch["results"][0]["reasons"] is None
    meta = client.get("/model").json()
    assert meta["reasons"]["given"] is False
    why = meta["reasons"]["why"]
    assert "total_debit" in why and "cannot be identified" in why
    notes = meta["manifest"]["notes"]
    # What each sign convention does, measured (python -m scoring.handover), not guessed.
    assert "85.6% of customers get p >= 0.5" in notes and "AUC 0.52" in notes
    assert "approves everyone" in notes and "AUC 0.62" in notes
    assert "near 0 for typical customers" not in notes


def test_every_decision_has_a_unique_request_id(client: TestClient) -> None:
    single = [client.post("/predict", json=BRIEF_EXAMPLE).json()["request_id"] for _ in range(3)]
    items = [{**BRIEF_EXAMPLE, "customer_id": f"C{i}"} for i in range(200)]
    batch = client.post("/predict/batch", json={"items": items}).json()["results"]
    ids = single + [r["request_id"] for r in batch]
    assert len(set(ids)) == len(ids) == 203
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


@pytest.mark.parametrize("value", [1, 90, 180, 365])
def test_a_lookback_the_bundle_does_not_accept_is_422_naming_the_field(
    client: TestClient, value: int
) -> None:
    """The handover bundle records no lookback: any declared one cannot be checked."""
    r = client.post("/predict", json={**BRIEF_EXAMPLE, "lookback_days": value})
    assert _error_fields(r) == ["lookback_days"]
    assert "does not record" in r.json()["detail"][0]["msg"]
    assert str(value) not in r.json()["detail"][0]["msg"].replace("lookback_days", "")
    r = client.post(
        "/predict/batch",
        json={"items": [BRIEF_EXAMPLE, {**BRIEF_EXAMPLE, "lookback_days": value}]},
    )
    assert r.status_code == 422
    assert [e["loc"] for e in r.json()["detail"]] == [["body", "items", 1, "lookback_days"]]


@pytest.mark.parametrize("value", ["180", 180.0, 0, -5, 3661, True])
def test_a_malformed_lookback_is_422_naming_the_field(client: TestClient, value: object) -> None:
    r = client.post("/predict", json={**BRIEF_EXAMPLE, "lookback_days": value})
    assert _error_fields(r) == ["lookback_days"]


def test_supplied_flags_are_used_not_defaulted(client: TestClient, model: LoadedModel) -> None:
    req = {**BRIEF_EXAMPLE, "has_netflix": 1, "has_tesco": 1, "has_bonus": 1}
    body = client.post("/predict", json=req).json()
    assert body["defaulted_fields"] == []
    expected = handover_probability(model, [15, -1250.50, 3500.00, 150.03, 1, 1, 1, 1, 1])
    assert body["probability"] == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_known_fields_the_model_does_not_use_are_reported(client: TestClient) -> None:
    body = client.post(
        "/predict", json={**BRIEF_EXAMPLE, "has_gambling": 1, "net_flow": 10.0}
    ).json()
    assert body["ignored_fields"] == ["has_gambling", "net_flow"]


def test_the_model_route_shows_the_lookback_and_that_decisions_are_not_recorded(
    client: TestClient,
) -> None:
    meta = client.get("/model").json()
    assert meta["lookback_days"] is None and meta["accepted_lookback_days"] == []
    assert meta["decision_log"] == {"enabled": False}


def _error_fields(r) -> list[str]:
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    for err in detail:  # every message names its field
        assert str(err["loc"][-1]) in err["msg"]
    return [str(e["loc"][-1]) for e in detail]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_transactions", "15"),  # string for a number
        ("num_transactions", 15.5),  # non-integer count
        ("num_transactions", 15.0),  # counts are integers, strictly
        ("num_transactions", -1),  # negative count
        ("num_transactions", True),  # bool is not a number here
        ("total_credit", "3500"),
        ("total_credit", -1.0),  # credits are >= 0
        ("total_debit", 1250.5),  # debits are <= 0 (contract sign)
        ("avg_amount", None),  # explicit null is not "absent"
        ("avg_amount", 1e300),  # beyond any plausible amount
        ("has_rent", 2),  # flags are 0/1
        ("has_rent", -1),
        ("has_rent", 0.5),
        ("has_rent", True),
        ("has_salary", "1"),
        ("customer_id", 123),
        ("customer_id", ""),
        ("customer_id", "X" * 65),
        ("customer_id", "CUST 001"),  # whitespace is not allowed in ids
        ("salary_month_share", 1.5),
        ("days_since_last_salary", 400),
    ],
)
def test_invalid_values_are_rejected_naming_the_field(
    client: TestClient, field: str, value: object
) -> None:
    r = client.post("/predict", json={**BRIEF_EXAMPLE, field: value})
    assert _error_fields(r) == [field]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_json_nan_and_infinity_are_rejected(client: TestClient, literal: str) -> None:
    raw = json.dumps(BRIEF_EXAMPLE).replace("150.03", literal)
    r = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert _error_fields(r) == ["avg_amount"]


def test_unknown_field_is_rejected(client: TestClient) -> None:
    r = client.post("/predict", json={**BRIEF_EXAMPLE, "income": 1})
    assert _error_fields(r) == ["income"]
    assert r.json()["detail"][0]["type"] == "extra_forbidden"


@pytest.mark.parametrize(
    "field", ["num_transactions", "total_debit", "total_credit", "avg_amount", "customer_id"]
)
def test_missing_required_field_is_rejected(client: TestClient, field: str) -> None:
    req = {k: v for k, v in BRIEF_EXAMPLE.items() if k != field}
    r = client.post("/predict", json=req)
    assert _error_fields(r) == [field]
    assert r.json()["detail"][0]["type"] == "missing"


def test_all_missing_required_fields_are_listed_together(client: TestClient) -> None:
    r = client.post("/predict", json={"customer_id": "C1"})
    assert sorted(_error_fields(r)) == sorted(
        ["num_transactions", "total_debit", "total_credit", "avg_amount"]
    )


def test_every_part1_feature_is_accepted_with_a_valid_value(client: TestClient) -> None:
    req = {**BRIEF_EXAMPLE}
    for name in FEATURE_NAMES:
        req.setdefault(name, 1 if name in FLAG_FEATURES else 0)
    r = client.post("/predict", json=req)
    assert r.status_code == 200, r.text
    assert r.json()["defaulted_fields"] == []


def test_invalid_json_is_422(client: TestClient) -> None:
    r = client.post(
        "/predict", content=b'{"customer_id": ', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert "not valid JSON" in r.json()["detail"][0]["msg"]


def test_non_object_body_is_422(client: TestClient) -> None:
    r = client.post("/predict", json=[BRIEF_EXAMPLE])
    assert r.status_code == 422


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(client: TestClient, ctype: str | None) -> None:
    headers = {"content-type": ctype} if ctype else {}
    r = client.post("/predict", content=json.dumps(BRIEF_EXAMPLE), headers=headers)
    assert r.status_code == 415
    assert "application/json" in r.json()["detail"]


def test_json_with_charset_is_accepted(client: TestClient) -> None:
    r = client.post(
        "/predict",
        content=json.dumps(BRIEF_EXAMPLE),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 200


def test_oversized_body_is_413(client: TestClient) -> None:
    big = json.dumps({**BRIEF_EXAMPLE, "customer_id": "A" * (MAX_BODY_BYTES + 10)})
    r = client.post("/predict", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_batch_scores_like_single_calls(client: TestClient) -> None:
    items = [
        {**BRIEF_EXAMPLE, "customer_id": f"C{i}", "num_transactions": i, "total_debit": -10.0 * i}
        for i in range(1, 21)
    ]
    r = client.post("/predict/batch", json={"items": items})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["customer_id"] for x in results] == [f"C{i}" for i in range(1, 21)]
    for item, res in zip(items, results, strict=True):
        single = client.post("/predict", json=item).json()
        assert res["probability"] == pytest.approx(single["probability"], rel=1e-9, abs=1e-15)
        assert res["prediction"] == single["prediction"]


def test_batch_at_the_limit_is_accepted(client: TestClient) -> None:
    items = [{**BRIEF_EXAMPLE, "customer_id": f"C{i}"} for i in range(MAX_BATCH)]
    r = client.post("/predict/batch", json={"items": items})
    assert r.status_code == 200
    assert len(r.json()["results"]) == MAX_BATCH


def test_batch_over_the_limit_is_422(client: TestClient) -> None:
    items = [{**BRIEF_EXAMPLE, "customer_id": f"C{i}"} for i in range(MAX_BATCH + 1)]
    r = client.post("/predict/batch", json={"items": items})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "items"]
    assert "items" in r.json()["detail"][0]["msg"]


def test_empty_batch_is_422(client: TestClient) -> None:
    assert client.post("/predict/batch", json={"items": []}).status_code == 422


def test_batch_errors_name_item_and_field(client: TestClient) -> None:
    items = [
        BRIEF_EXAMPLE,
        {**BRIEF_EXAMPLE, "has_rent": 7},
        {k: v for k, v in BRIEF_EXAMPLE.items() if k != "total_credit"},
    ]
    r = client.post("/predict/batch", json={"items": items})
    assert r.status_code == 422
    locs = [e["loc"] for e in r.json()["detail"]]
    assert locs == [["body", "items", 1, "has_rent"]]  # schema errors first
    r = client.post("/predict/batch", json={"items": [items[0], items[2]]})
    assert [e["loc"] for e in r.json()["detail"]] == [["body", "items", 1, "total_credit"]]
    assert (
        "items.1.has_rent"
        in client.post("/predict/batch", json={"items": items[:2]}).json()["detail"][0]["msg"]
    )


def test_health_ready_and_model(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert ready.json()["placeholder"] is True
    model = client.get("/model")
    assert model.status_code == 200
    meta = model.json()
    assert meta["manifest"]["placeholder"] is True
    assert "placeholder" in meta["manifest"]["notes"].lower()
    assert [i["name"] for i in meta["manifest"]["inputs"]][:2] == ["txn_count", "total_debit"]
    # the sklearn 1.1.3 -> current mismatch is surfaced, not hidden
    assert any("1.1.3" in w for w in meta["warnings"])
    assert str(PROJECT_ROOT) not in model.text and "/work" not in model.text


ROUTES = {"/health", "/ready", "/model", "/predict", "/predict/batch"}


def test_each_route_exists_once_without_a_prefix(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths) == ROUTES
    routed = [r.path for r in client.app.routes if getattr(r, "path", "") in ROUTES]
    assert sorted(routed) == sorted(ROUTES)  # one copy of each, nothing hidden
    assert client.get("/api/health").status_code == 404  # plain uvicorn: no /api
    assert client.post("/api/predict", json=BRIEF_EXAMPLE).status_code == 404


def test_the_hosts_prefix_is_the_apps_root_path() -> None:
    """Under the Functions host (routePrefix "api") the ASGI path is /api/...: the app is
    told its root_path and matches routes without it; /api/api/... is not a route."""
    client = TestClient(bundle_app(ARTIFACTS, root_path="/api"))
    assert client.get("/api/health").json() == {"status": "ok"}
    assert client.post("/api/predict/batch", json={"items": [BRIEF_EXAMPLE]}).status_code == 200
    assert client.get("/api/api/health").status_code == 404
    assert client.post("/api/api/predict", json=BRIEF_EXAMPLE).status_code == 404
    assert "/api/openapi.json" in client.get("/api/docs").text
    schema = client.get("/api/openapi.json").json()
    assert schema["servers"] == [{"url": "/api"}] and set(schema["paths"]) == ROUTES


def test_apps_hold_their_own_model_and_dependencies_can_be_overridden(
    client: TestClient,
) -> None:
    """No module state: a second app serves another bundle beside this module's app, and a
    test can swap the holder through FastAPI's dependency overrides."""
    trained = bundle_app(ARTIFACTS / "trained")
    with TestClient(trained) as other:
        assert other.get("/model").json()["placeholder"] is False
        assert other.post("/predict", json=BRIEF_EXAMPLE).status_code == 422  # needs more
    assert client.get("/model").json()["placeholder"] is True
    override = ModelHolder(lambda: LocalDirSource(ARTIFACTS / "trained"))
    client.app.dependency_overrides[api.model_holder] = lambda: override
    try:
        assert client.get("/ready").json()["placeholder"] is False
        assert override.load_count == 1
    finally:
        client.app.dependency_overrides.clear()
    assert client.get("/ready").json()["placeholder"] is True


def test_the_module_level_app_is_built_by_the_factory_from_the_settings() -> None:
    """``uvicorn scoring.api:app`` serves what ``create_app()`` builds from MODEL_DIR."""
    assert isinstance(api.app, FastAPI)
    assert api.app.state.settings == Settings.from_env()
    loaded = load_bundle(Settings.from_env().local_source())
    assert api.app.state.holder.get().manifest.sha256 == loaded.manifest.sha256


def test_openapi_documents_the_brief_example(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    req = schema["components"]["schemas"]["PredictRequest"]
    assert BRIEF_EXAMPLE in req["examples"]
    assert req["additionalProperties"] is False
    assert client.get("/docs").status_code == 200


def test_probabilities_are_finite_for_extreme_valid_inputs(client: TestClient) -> None:
    req = {**BRIEF_EXAMPLE, "total_debit": -1e10, "total_credit": 0.0, "avg_amount": -1e10}
    body = client.post("/predict", json=req).json()
    assert math.isfinite(body["probability"]) and 0.0 <= body["probability"] <= 1.0


@pytest.mark.parametrize(
    ("path", "body", "key"),
    [
        (
            "/predict",
            '{"customer_id": "A", "num_transactions": 1, "customer_id": "B"}',
            "customer_id",
        ),
        (
            "/predict/batch",
            '{"items": [{"customer_id": "A", "has_rent": 1, "has_rent": 0}]}',
            "has_rent",
        ),
    ],
)
def test_duplicate_json_keys_are_refused_not_last_wins(
    client: TestClient, path: str, body: str, key: str
) -> None:
    r = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["type"] == "duplicate_key" and error["loc"] == ["body", key]


def test_same_key_in_different_objects_is_fine(client: TestClient) -> None:
    items = [{**BRIEF_EXAMPLE, "customer_id": f"C{i}"} for i in range(2)]
    assert client.post("/predict/batch", json={"items": items}).status_code == 200


def test_error_response_does_not_amplify_a_hostile_body(client: TestClient) -> None:
    body = {**BRIEF_EXAMPLE, **{f"unknown_{i}_" + "x" * 5000: 1 for i in range(200)}}
    r = client.post("/predict", json=body)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert len(detail) == 21 and detail[-1]["type"] == "too_many"
    assert len(r.content) < 20_000  # the request was about 1 MB


def test_only_large_bodies_are_parsed_in_a_worker_thread(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16 #10: heavy parsing off the event loop; a normal request pays no thread hop
    (a plain ``def`` dependency would be run in a worker thread on every request)."""
    client.get("/ready")  # the model is loaded
    threaded: list[str] = []
    real = anyio.to_thread.run_sync

    async def spy(func: Any, *args: Any, **kwargs: Any) -> Any:
        inner = getattr(func, "func", func)  # run_in_threadpool wraps it in a partial
        threaded.append(getattr(inner, "__name__", repr(inner)))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", spy)
    assert client.post("/predict", json=BRIEF_EXAMPLE).status_code == 200
    assert threaded == []
    items = [{**BRIEF_EXAMPLE, "customer_id": f"C{i}"} for i in range(600)]
    big = json.dumps({"items": items}).encode()
    assert len(big) > Settings().body.thread_above_bytes
    r = client.post("/predict/batch", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 200 and threaded == ["parse_json"]
