"""The Functions app: indexing, settings, and HTTP scoring through the function handler.

HTTP tests call the indexed ASGI function exactly as the worker does (a ``func.HttpRequest``
in, a ``func.HttpResponse`` out); the model is served from a bundle in a real Azurite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import azure.functions as func
import numpy as np
import pandas as pd
import pytest
from conftest import call_function, function_handlers, serving
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import function_app
from blobflow import naming
from blobflow import store as blob_store
from blobflow.bundle_source import BlobBundleSource, source_from_settings
from scoring.bundle import LocalDirSource, load_bundle
from scoring.holder import ModelHolder
from scoring.schema import BRIEF_EXAMPLE
from scoring.settings import MAX_BODY_BYTES

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "artifacts"
_functions = function_handlers
call = call_function


# ---------------------------------------------------------------- indexing and settings


def test_indexing_lists_the_http_blob_deletion_and_reconcile_functions() -> None:
    functions = _functions()
    assert set(functions) == {
        "http_app_func",
        "process_batch_blob",
        "batch_input_deleted",
        "reconcile_batches_daily",
    }

    http = functions["http_app_func"].get_trigger()
    assert http.type == "httpTrigger"
    assert http.route == "/{*route}"
    assert http.auth_level == func.AuthLevel.FUNCTION

    blob = json.loads(functions["process_batch_blob"].get_function_json())["bindings"]
    assert blob == [
        {
            "direction": "IN",
            "type": "blobTrigger",
            "name": "client",
            "path": "raw/{name}",
            "connection": "AzureWebJobsStorage",
            "source": "LogsAndContainerScan",
        }
    ]


def test_the_blob_function_name_is_the_one_infra_subscribes() -> None:
    """infra/scripts/lib.sh reads the name and the watched container from function_app.py
    itself (no second copy); what it reads must be what the worker indexes."""
    script = ROOT / "infra" / "scripts" / "lib.sh"
    read = subprocess.run(
        ["bash", "-c", f'source "{script}" && blob_function_name && blob_container_name'],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    name, container = read.stdout.split()
    assert name == function_app.BLOB_FUNCTION
    assert name in _functions()
    bindings = json.loads(_functions()[name].get_function_json())["bindings"]
    assert bindings[0]["path"] == f"{container}/{{name}}"
    assert container == naming.RAW


def _indexed_source(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = (
        "import json, function_app\n"
        "f = {x.get_function_name(): x for x in function_app.app.get_functions()}\n"
        "print(json.loads(f['process_batch_blob'].get_function_json())['bindings'][0]['source'])"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_http_cold_start_loads_no_pipeline() -> None:
    """Importing the function app (what every cold start does) loads neither pandas nor
    pyarrow nor the pipeline: the blob trigger imports the batch code on its first event."""
    code = (
        "import sys, function_app\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'pandas', 'pyarrow', 'features', 'sklearn'}))\n"
        "print(sorted(m for m in sys.modules if m.startswith('blobflow.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    heavy, glue = done.stdout.strip().splitlines()
    assert heavy == "[]"
    assert "blobflow.commit" not in glue and "blobflow.store" in glue


def test_trigger_source_is_read_from_the_setting_at_import() -> None:
    result = _indexed_source({"BLOB_TRIGGER_SOURCE": "EventGrid"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "EventGrid"


def test_unknown_trigger_source_fails_loudly_naming_the_setting() -> None:
    result = _indexed_source({"BLOB_TRIGGER_SOURCE": "Polling"})
    assert result.returncode != 0
    assert "BLOB_TRIGGER_SOURCE='Polling' is not one of: EventGrid, LogsAndContainerScan" in (
        result.stderr
    )


def test_host_json_and_example_settings() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {
        "id": "Microsoft.Azure.Functions.ExtensionBundle",
        "version": "[4.*, 5.0.0)",
    }
    assert host["extensions"]["http"]["routePrefix"] == "api"
    assert host["functionTimeout"] == "00:30:00"
    values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert values["BLOB_TRIGGER_SOURCE"] == "LogsAndContainerScan"


def test_identity_connection_uses_the_managed_identity_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from azure.identity import ManagedIdentityCredential

    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.setenv("AzureWebJobsStorage__blobServiceUri", "https://acct.blob.core.windows.net")
    monkeypatch.setenv("AzureWebJobsStorage__clientId", "00000000-0000-0000-0000-000000000001")
    client = blob_store.connect()
    assert client.url.startswith("https://acct.blob.core.windows.net")
    assert isinstance(client.credential, ManagedIdentityCredential)


def test_the_development_storage_shorthand_means_local_azurite(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What local.settings.json and the README export: the SDK alone would refuse it."""
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    client = blob_store.connect()
    assert client.url.rstrip("/") == "http://127.0.0.1:10000/devstoreaccount1"
    assert client.account_name == "devstoreaccount1"


def test_missing_connection_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AzureWebJobsStorage"):
            monkeypatch.delenv(name)
    with pytest.raises(blob_store.StorageNotConfiguredError, match="AzureWebJobsStorage__blob"):
        blob_store.connect()


def test_without_model_container_the_local_bundle_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODEL_CONTAINER", raising=False)
    monkeypatch.setenv("MODEL_DIR", str(BUNDLE))
    source = source_from_settings()
    assert isinstance(source, LocalDirSource)
    assert source.directory == BUNDLE


# ---------------------------------------------------------------- HTTP through the function


def test_api_root_is_the_hosts_route_prefix() -> None:
    """The app is told the prefix the host puts in front of every path: keep them equal."""
    prefix = json.loads((ROOT / "host.json").read_text())["extensions"]["http"]["routePrefix"]
    expected = f"/{prefix}" if prefix else ""
    assert expected == function_app.API_ROOT
    assert function_app.http_app.root_path == function_app.API_ROOT


@pytest.fixture
def local_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelHolder]:
    """The function app serving the handover bundle from MODEL_DIR (no MODEL_CONTAINER)."""
    monkeypatch.delenv("MODEL_CONTAINER", raising=False)
    monkeypatch.setenv("MODEL_DIR", str(BUNDLE))
    with serving(function_app.http_app, source_from_settings) as holder:
        yield holder


def test_the_function_serves_the_api_under_api(local_model: ModelHolder) -> None:
    ok = call("POST", "/api/predict", BRIEF_EXAMPLE)
    assert ok.status_code == 200
    assert json.loads(ok.get_body())["customer_id"] == "CUST001"
    plain = call("POST", "/api/predict", content=b"{}", headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415
    bad = call("POST", "/api/predict", {**BRIEF_EXAMPLE, "has_rent": 5})
    assert bad.status_code == 422 and b"has_rent" in bad.get_body()


def test_batch_predictions_use_the_model_the_http_api_serves(local_model: ModelHolder) -> None:
    assert call("GET", "/api/ready").status_code == 200
    customer = {**BRIEF_EXAMPLE, "total_debit": -50.0, "total_credit": 0.0, "avg_amount": 0.0}
    customer |= {"has_netflix": 0, "has_tesco": 1, "has_bonus": 0}
    frame = function_app.batch_predictor()(pd.DataFrame([customer])).predictions
    http = json.loads(call("POST", "/api/predict", customer).get_body())
    assert http["probability"] > 1e-3  # so the batch's 6-decimal rounding still compares
    assert frame["probability"].iloc[0] == pytest.approx(http["probability"], abs=1e-6)
    assert frame["model_version"].iloc[0] == http["model_version"]
    assert local_model.load_count == 1 and local_model.attempt_count == 1


# Paths a caller can send to the function (the host passes them whole, percent-decoded).
SEGMENTS = ["api", "API", "predict", "batch", "health", "", ".", "%61pi", "predict%2Fbatch"]
HOSTILE = {
    # what the guard must answer on a body route; 200 would mean it was walked around
    "duplicate-key": (json.dumps(BRIEF_EXAMPLE)[:-1] + ', "customer_id": "B"}', "json", 422),
    "text/plain": (json.dumps(BRIEF_EXAMPLE), "text/plain", 415),
    "over-the-cap": (json.dumps(BRIEF_EXAMPLE)[:-1] + " " * MAX_BODY_BYTES + "}", "json", 413),
}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    segments=st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=4),
    trailing_slash=st.booleans(),
    kind=st.sampled_from(sorted(HOSTILE)),
)
@example(segments=["api", "api", "predict"], trailing_slash=False, kind="duplicate-key")
@example(segments=["api", "api", "predict"], trailing_slash=False, kind="text/plain")
@example(segments=["api", "api", "predict"], trailing_slash=False, kind="over-the-cap")
@example(segments=["api", "api", "predict", "batch"], trailing_slash=False, kind="text/plain")
@example(segments=["api", "%61pi", "predict"], trailing_slash=False, kind="duplicate-key")
def test_no_path_walks_around_the_body_guard(
    local_model: ModelHolder, segments: list[str], trailing_slash: bool, kind: str
) -> None:
    """Issue 16 #8: whatever the path, a hostile body is either refused by the guard or
    reaches no route at all; it is never parsed, scored or answered 200."""
    path = "/" + "/".join(segments) + ("/" if trailing_slash else "")
    text, media, guard_status = HOSTILE[kind]
    ctype = "application/json" if media == "json" else media
    response = call("POST", path, content=text.encode(), headers={"Content-Type": ctype})
    assert response.status_code in (guard_status, 404, 405, 307), (path, kind)
    if response.status_code == 422:
        assert json.loads(response.get_body())["detail"][0]["type"] == "duplicate_key"


def test_the_guard_answers_on_the_real_body_routes(local_model: ModelHolder) -> None:
    """The counterpart of the property above: on the routes themselves the guard speaks."""
    for path in ("/api/predict", "/api/predict/batch"):
        for kind, (text, media, guard_status) in HOSTILE.items():
            ctype = "application/json" if media == "json" else media
            response = call("POST", path, content=text.encode(), headers={"Content-Type": ctype})
            assert response.status_code == guard_status, (path, kind)


@dataclass
class Served:
    name: str
    holder: ModelHolder


def _upload_bundle(store: blob_store.BlobStore, name: str, model: bytes | None = None) -> None:
    joblib = model if model is not None else (BUNDLE / "model.joblib").read_bytes()
    store.write("models", f"{name}/model.joblib", joblib, "application/octet-stream")
    store.write("models", f"{name}/model.json", (BUNDLE / "model.json").read_bytes(), "json")


@pytest.fixture
def storage(azurite: str, monkeypatch: pytest.MonkeyPatch) -> blob_store.BlobStore:
    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    store = blob_store.BlobStore(blob_store.connect())
    store.ensure_containers()
    return store


@pytest.fixture
def served(storage: blob_store.BlobStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """The function app served from a fresh holder, pointed at a new bundle name in Azurite."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("MODEL_CONTAINER", "models")
    monkeypatch.setenv("MODEL_NAME", name)
    with serving(function_app.http_app, source_from_settings) as holder:
        yield Served(name, holder)


def _expected_probability(features: dict) -> float:
    loaded = load_bundle(LocalDirSource(BUNDLE))
    # Flags absent from the request default to 0, as the manifest says.
    row = [features.get(i.accepts[0], i.default) for i in loaded.manifest.inputs]
    return float(loaded.estimator.predict_proba(np.array([row], dtype=float))[0, 1])


def test_predict_through_the_function_loads_the_blob_model_once(
    storage: blob_store.BlobStore, served: Served
) -> None:
    _upload_bundle(storage, served.name)
    expected = _expected_probability(BRIEF_EXAMPLE)
    loads, attempts = served.holder.load_count, served.holder.attempt_count
    for _ in range(3):
        response = call("POST", "/api/predict", BRIEF_EXAMPLE)
        assert response.status_code == 200, response.get_body()
        body = json.loads(response.get_body())
        assert body["customer_id"] == BRIEF_EXAMPLE["customer_id"]
        assert body["probability"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert body["model_version"] == "handover-logreg@0.1.0-placeholder"
    assert served.holder.load_count - loads == 1
    assert served.holder.attempt_count - attempts == 1
    info = json.loads(call("GET", "/api/model").get_body())
    assert info["runtime"]["source"] == f"blob models/{served.name}"
    assert served.holder.load_count - loads == 1


def test_batch_and_health_routes_answer_under_api(
    storage: blob_store.BlobStore, served: Served
) -> None:
    _upload_bundle(storage, served.name)
    health = call("GET", "/api/health")
    assert health.status_code == 200
    assert json.loads(health.get_body()) == {"status": "ok"}
    batch = call("POST", "/api/predict/batch", {"items": [BRIEF_EXAMPLE, BRIEF_EXAMPLE]})
    assert batch.status_code == 200
    assert len(json.loads(batch.get_body())["results"]) == 2
    assert call("GET", "/api/no-such-route").status_code == 404


def test_corrupt_model_blob_gives_503_with_the_reason(
    storage: blob_store.BlobStore, served: Served
) -> None:
    good = (BUNDLE / "model.joblib").read_bytes()
    _upload_bundle(storage, served.name, model=good[:-8] + b"tampered")
    loads = served.holder.load_count
    for path, body in (("/api/ready", None), ("/api/predict", BRIEF_EXAMPLE)):
        response = call("GET" if body is None else "POST", path, body)
        assert response.status_code == 503, path
        text = response.get_body().decode()
        assert "sha256" in text and "refusing to unpickle" in text
    assert served.holder.load_count == loads
    assert served.holder.peek() is None


def test_missing_model_blob_gives_503_naming_the_blob(served: Served) -> None:
    response = call("POST", "/api/predict", BRIEF_EXAMPLE)
    assert response.status_code == 503
    assert (
        f"models/{served.name}/model.json not found in blob storage" in response.get_body().decode()
    )
    assert call("GET", "/api/health").status_code == 200


def test_fixed_model_is_served_after_the_retry_interval(
    storage: blob_store.BlobStore, served: Served
) -> None:
    assert call("GET", "/api/ready").status_code == 503
    _upload_bundle(storage, served.name)
    served.holder.retry_after = 0.0  # this test's own holder: nothing to restore
    ready = call("GET", "/api/ready")
    assert ready.status_code == 200
    assert json.loads(ready.get_body())["placeholder"] is True


def test_docs_and_schema_are_served_under_api() -> None:
    docs = call("GET", "/api/docs")
    assert docs.status_code == 200
    assert "/api/openapi.json" in docs.get_body().decode()
    schema = call("GET", "/api/openapi.json")
    assert schema.status_code == 200
    assert "/predict" in json.loads(schema.get_body())["paths"]


def test_blob_bundle_source_describes_without_secrets(storage: blob_store.BlobStore) -> None:
    source = BlobBundleSource(storage.service.get_container_client("models"), "x")
    assert source.describe() == "blob models/x"
