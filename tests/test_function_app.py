"""The Functions app: indexing, settings, and HTTP scoring through the function handler.

HTTP tests call the indexed ASGI function exactly as the worker does (a ``func.HttpRequest``
in, a ``func.HttpResponse`` out); the model is served from a bundle in a real Azurite.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import numpy as np
import pytest

import function_app
from features import blob_batch
from scoring import api
from scoring.blob_source import BlobBundleSource, source_from_settings
from scoring.bundle import LocalDirSource, load_bundle
from scoring.schema import BRIEF_EXAMPLE
from scoring.settings import local_source

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "artifacts"


@functools.cache
def _functions() -> dict[str, Any]:
    """Indexed once per module (``get_functions`` refuses to index the same names twice;
    the worker indexes once per process)."""
    function_app.app.functions_bindings = {}
    return {f.get_function_name(): f for f in function_app.app.get_functions()}


# ---------------------------------------------------------------- indexing and settings


def test_indexing_lists_the_http_and_blob_functions() -> None:
    functions = _functions()
    assert set(functions) == {"http_app_func", "process_batch_blob"}

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
    assert container == blob_batch.RAW


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
    client = blob_batch.connect()
    assert client.url.startswith("https://acct.blob.core.windows.net")
    assert isinstance(client.credential, ManagedIdentityCredential)


def test_missing_connection_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AzureWebJobsStorage"):
            monkeypatch.delenv(name)
    with pytest.raises(blob_batch.StorageNotConfiguredError, match="AzureWebJobsStorage__blob"):
        blob_batch.connect()


def test_without_model_container_the_local_bundle_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODEL_CONTAINER", raising=False)
    monkeypatch.setenv("MODEL_DIR", str(BUNDLE))
    source = source_from_settings()
    assert isinstance(source, LocalDirSource)
    assert source.directory == BUNDLE


# ---------------------------------------------------------------- HTTP through the function


def call(method: str, path: str, body: object | None = None) -> func.HttpResponse:
    """Invoke the indexed HTTP function the way the Python worker does."""
    handler = _functions()["http_app_func"].get_user_function()
    data = b"" if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    request = func.HttpRequest(
        method=method, url=f"http://localhost:7071{path}", headers=headers, body=data
    )
    return asyncio.run(handler(request, None))


def _upload_bundle(store: blob_batch.BlobStore, name: str, model: bytes | None = None) -> None:
    joblib = model if model is not None else (BUNDLE / "model.joblib").read_bytes()
    store.write("models", f"{name}/model.joblib", joblib, "application/octet-stream")
    store.write("models", f"{name}/model.json", (BUNDLE / "model.json").read_bytes(), "json")


@pytest.fixture
def storage(azurite: str, monkeypatch: pytest.MonkeyPatch) -> blob_batch.BlobStore:
    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    store = blob_batch.BlobStore(blob_batch.connect())
    store.ensure_containers()
    return store


@pytest.fixture
def served(storage: blob_batch.BlobStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The function app's holder, pointed at a fresh bundle name in Azurite."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("MODEL_CONTAINER", "models")
    monkeypatch.setenv("MODEL_NAME", name)
    api.holder.reset(source_from_settings)
    try:
        yield name
    finally:
        api.holder.reset(local_source)


def _expected_probability(features: dict) -> float:
    loaded = load_bundle(LocalDirSource(BUNDLE))
    # Flags absent from the request default to 0, as the manifest says.
    row = [features.get(i.accepts[0], i.default) for i in loaded.manifest.inputs]
    return float(loaded.estimator.predict_proba(np.array([row], dtype=float))[0, 1])


def test_predict_through_the_function_loads_the_blob_model_once(
    storage: blob_batch.BlobStore, served: str
) -> None:
    _upload_bundle(storage, served)
    expected = _expected_probability(BRIEF_EXAMPLE)
    loads, attempts = api.holder.load_count, api.holder.attempt_count
    for _ in range(3):
        response = call("POST", "/api/predict", BRIEF_EXAMPLE)
        assert response.status_code == 200, response.get_body()
        body = json.loads(response.get_body())
        assert body["customer_id"] == BRIEF_EXAMPLE["customer_id"]
        assert body["probability"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert body["model_version"] == "handover-logreg@0.1.0-placeholder"
    assert api.holder.load_count - loads == 1
    assert api.holder.attempt_count - attempts == 1
    info = json.loads(call("GET", "/api/model").get_body())
    assert info["runtime"]["source"] == f"blob models/{served}"
    assert api.holder.load_count - loads == 1


def test_batch_and_health_routes_answer_under_api(
    storage: blob_batch.BlobStore, served: str
) -> None:
    _upload_bundle(storage, served)
    health = call("GET", "/api/health")
    assert health.status_code == 200
    assert json.loads(health.get_body()) == {"status": "ok"}
    batch = call("POST", "/api/predict/batch", {"items": [BRIEF_EXAMPLE, BRIEF_EXAMPLE]})
    assert batch.status_code == 200
    assert len(json.loads(batch.get_body())["results"]) == 2
    assert call("GET", "/api/no-such-route").status_code == 404


def test_corrupt_model_blob_gives_503_with_the_reason(
    storage: blob_batch.BlobStore, served: str
) -> None:
    good = (BUNDLE / "model.joblib").read_bytes()
    _upload_bundle(storage, served, model=good[:-8] + b"tampered")
    loads = api.holder.load_count
    for path, body in (("/api/ready", None), ("/api/predict", BRIEF_EXAMPLE)):
        response = call("GET" if body is None else "POST", path, body)
        assert response.status_code == 503, path
        text = response.get_body().decode()
        assert "sha256" in text and "refusing to unpickle" in text
    assert api.holder.load_count == loads
    assert api.holder.peek() is None


def test_missing_model_blob_gives_503_naming_the_blob(served: str) -> None:
    response = call("POST", "/api/predict", BRIEF_EXAMPLE)
    assert response.status_code == 503
    assert f"models/{served}/model.json not found in blob storage" in response.get_body().decode()
    assert call("GET", "/api/health").status_code == 200


def test_fixed_model_is_served_after_the_retry_interval(
    storage: blob_batch.BlobStore, served: str
) -> None:
    assert call("GET", "/api/ready").status_code == 503
    _upload_bundle(storage, served)
    api.holder.retry_after = 0.0  # reset() in the fixture restores a fresh holder state
    try:
        ready = call("GET", "/api/ready")
    finally:
        api.holder.retry_after = 5.0
    assert ready.status_code == 200
    assert json.loads(ready.get_body())["placeholder"] is True


def test_docs_and_schema_are_served_under_api() -> None:
    docs = call("GET", "/api/docs")
    assert docs.status_code == 200
    assert "/api/openapi.json" in docs.get_body().decode()
    schema = call("GET", "/api/openapi.json")
    assert schema.status_code == 200
    assert "/predict" in json.loads(schema.get_body())["paths"]


def test_blob_bundle_source_describes_without_secrets(storage: blob_batch.BlobStore) -> None:
    source = BlobBundleSource(storage.service.get_container_client("models"), "x")
    assert source.describe() == "blob models/x"
