"""Faults: broken model bundles and failing storage writes, and nothing is lost.

Model faults (missing, truncated, wrong sha256, incompatible feature list, ...) must leave
the service up: ``/health`` 200, ``/ready`` and ``/predict`` 503 with the reason, and a
good bundle put in place is served after the holder's retry window, with no restart. This
is checked through the ASGI app for every fault, over a live uvicorn server with the
default 5 s window, and through the Functions HTTP handler with the bundle in Azurite.

Storage faults are injected at the ``BatchStore`` boundary of the blob flow (``blobflow``):
a wrapper around the real Azurite-backed ``BlobStore`` that raises on the Nth write or
delete. The run must raise (so the runtime retries), leave no ``_SUCCESS`` (nor an
``error.json``, which would mark the batch finished), and the retry must publish exactly
the outputs ``_SUCCESS`` lists. The blob function's logs must carry no customer data.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import numpy as np
import pandas as pd
import pytest
from azure.core.exceptions import ServiceResponseError
from azure.storage.blob import BlobClient
from conftest import batch_blobs, bundle_app, call_function, function_handlers, live_server
from conftest import blob_outputs as outputs
from fastapi.testclient import TestClient

import function_app
from blobflow import commit
from blobflow import predict as blob_predict
from blobflow.bundle_source import source_from_settings
from blobflow.commit import Outcome
from blobflow.naming import CURATED, RAW
from blobflow.store import BlobStore, StoreView
from features.outputs import to_csv_text
from features.pipeline import run_pipeline
from scoring.bundle import LocalDirSource, load_bundle
from scoring.holder import ModelHolder
from scoring.schema import BRIEF_EXAMPLE
from scoring.settings import PROJECT_ROOT, local_source

HANDOVER = PROJECT_ROOT / "artifacts"
TRAINED = PROJECT_ROOT / "artifacts" / "trained"
MODEL, MANIFEST = "model.joblib", "model.json"


# ---------------------------------------------------------------- broken bundles


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest(src: Path) -> dict[str, Any]:
    return json.loads((src / MANIFEST).read_text())


def _write(bundle: Path, model: bytes | None, manifest: dict[str, Any] | bytes | None) -> None:
    """Make ``bundle`` hold exactly these files (None: the file is absent)."""
    bundle.mkdir(parents=True, exist_ok=True)
    for name, content in ((MODEL, model), (MANIFEST, manifest)):
        path = bundle / name
        if content is None:
            path.unlink(missing_ok=True)
        elif isinstance(content, dict):
            path.write_text(json.dumps(content))
        else:
            path.write_bytes(content)


def _good() -> tuple[bytes, dict[str, Any]]:
    return (HANDOVER / MODEL).read_bytes(), _manifest(HANDOVER)


def _missing_model() -> tuple[bytes | None, Any]:
    return None, _manifest(HANDOVER)


def _missing_manifest() -> tuple[bytes | None, Any]:
    return (HANDOVER / MODEL).read_bytes(), None


def _truncated() -> tuple[bytes | None, Any]:
    model, manifest = _good()
    return model[: len(model) // 2], manifest


def _truncated_and_resigned() -> tuple[bytes | None, Any]:
    """A truncated file whose manifest was updated to match: the sha passes, unpickling fails."""
    model, manifest = _good()
    cut = model[: len(model) // 2]
    return cut, {**manifest, "sha256": _sha(cut)}


def _empty_model() -> tuple[bytes | None, Any]:
    return b"", _manifest(HANDOVER)


def _wrong_sha() -> tuple[bytes | None, Any]:
    model, manifest = _good()
    return model, {**manifest, "sha256": "ab" * 32}


def _input_dropped() -> tuple[bytes | None, Any]:
    model, manifest = _good()
    return model, {**manifest, "inputs": manifest["inputs"][:-1]}


def _trained_model_handover_inputs() -> tuple[bytes | None, Any]:
    model = (TRAINED / MODEL).read_bytes()
    return model, {**_manifest(HANDOVER), "sha256": _sha(model)}


def _trained_inputs_reordered() -> tuple[bytes | None, Any]:
    manifest = _manifest(TRAINED)
    inputs = manifest["inputs"]
    swapped = [inputs[1], inputs[0], *inputs[2:]]
    return (TRAINED / MODEL).read_bytes(), {**manifest, "inputs": swapped}


def _unknown_feature() -> tuple[bytes | None, Any]:
    model, manifest = _good()
    inputs = [dict(i) for i in manifest["inputs"]]
    inputs[0]["accepts"] = ["income"]
    return model, {**manifest, "inputs": inputs}


def _manifest_not_json() -> tuple[bytes | None, Any]:
    return (HANDOVER / MODEL).read_bytes(), b'{"format_version": 1, '


def _not_a_pickle() -> tuple[bytes | None, Any]:
    junk = b"this is not a pickle at all" * 10
    return junk, {**_manifest(HANDOVER), "sha256": _sha(junk)}


# (fault, the bundle, a phrase the 503 must contain)
FAULTS: list[tuple[str, Callable[[], tuple[bytes | None, Any]], str]] = [
    ("missing-model", _missing_model, "model.joblib not found"),
    ("missing-manifest", _missing_manifest, "model.json not found"),
    ("empty-model", _empty_model, "does not match the manifest"),
    ("truncated", _truncated, "does not match the manifest"),
    ("truncated-resigned", _truncated_and_resigned, "could not be unpickled"),
    ("not-a-pickle", _not_a_pickle, "could not be unpickled"),
    ("wrong-sha256", _wrong_sha, "does not match the manifest"),
    ("input-dropped", _input_dropped, "manifest lists 8 inputs but the estimator expects 9"),
    # Refused for its input count or, when the counts happen to agree, its feature names.
    ("trained-model-handover-inputs", _trained_model_handover_inputs, "estimator"),
    ("inputs-reordered", _trained_inputs_reordered, "feature names differ"),
    ("unknown-feature", _unknown_feature, "unknown request fields ['income']"),
    ("manifest-not-json", _manifest_not_json, "not valid UTF-8 JSON"),
]


def _expected_probability(features: dict[str, Any]) -> float:
    loaded = load_bundle(LocalDirSource(HANDOVER))
    row = [features.get(i.accepts[0], i.default) for i in loaded.manifest.inputs]
    return float(loaded.estimator.predict_proba(np.array([row], dtype=float))[0, 1])


def _wait_past(window: float) -> None:
    time.sleep(window + 0.2)


@pytest.mark.parametrize(("fault", "make", "reason"), FAULTS, ids=[f[0] for f in FAULTS])
def test_a_broken_local_bundle_gives_503_with_the_reason_then_recovers(
    tmp_path: Path,
    fault: str,
    make: Callable[[], tuple[bytes | None, Any]],
    reason: str,
) -> None:
    bundle = tmp_path / "bundle"
    _write(bundle, *make())
    app = bundle_app(bundle, retry_after=0.5)
    holder: ModelHolder = app.state.holder
    client = TestClient(app)

    ready = client.get("/ready")
    assert ready.status_code == 503, fault
    assert reason in ready.json()["detail"], ready.json()
    predict = client.post("/predict", json=BRIEF_EXAMPLE)
    assert predict.status_code == 503
    assert predict.json()["detail"] == f"model unavailable: {ready.json()['detail']}"
    assert predict.headers["retry-after"] == "5"
    batch = client.post("/predict/batch", json={"items": [BRIEF_EXAMPLE]})
    assert batch.status_code == 503 and reason in batch.json()["detail"]
    assert client.get("/model").status_code == 503
    assert client.get("/health").json() == {"status": "ok"}  # alive, not ready
    assert str(tmp_path) not in ready.text + predict.text  # no server paths in answers

    _write(bundle, *_good())  # the fix lands; the cached failure is honoured, then retried
    _wait_past(holder.retry_after)
    assert client.get("/ready").status_code == 200
    body = client.post("/predict", json=BRIEF_EXAMPLE).json()
    assert body["probability"] == pytest.approx(_expected_probability(BRIEF_EXAMPLE), rel=1e-9)
    assert holder.load_count >= 1 and holder.last_error is None


def test_failures_are_cached_for_the_retry_window_not_reread_per_request(
    tmp_path: Path,
) -> None:
    bundle = tmp_path / "bundle"
    _write(bundle, *_truncated())
    # a retry window long enough that no retry can fall inside this test
    app = bundle_app(bundle, retry_after=30.0)
    client = TestClient(app)
    attempts = app.state.holder.attempt_count
    for _ in range(20):
        assert client.post("/predict", json=BRIEF_EXAMPLE).status_code == 503
    assert app.state.holder.attempt_count == attempts + 1


def test_a_live_server_recovers_after_the_default_retry_window_without_restart(
    tmp_path: Path,
) -> None:
    bundle = tmp_path / "bundle"
    _write(bundle, *_input_dropped())
    with live_server(tmp_path / "server.log", str(bundle)) as server:
        with httpx.Client(base_url=server.base, timeout=10) as c:
            ready = c.get("/ready")
            assert ready.status_code == 503
            assert "manifest lists 8 inputs" in ready.json()["detail"]
            predict = c.post("/predict", json=BRIEF_EXAMPLE)
            assert predict.status_code == 503 and predict.headers["retry-after"] == "5"
            _write(bundle, *_good())
            waited = time.monotonic()
            while c.get("/ready").status_code != 200:
                assert time.monotonic() - waited < 30, "not recovered 30 s after the fix"
                time.sleep(0.5)
            body = c.post("/predict", json=BRIEF_EXAMPLE).json()
            assert body["probability"] == pytest.approx(_expected_probability(BRIEF_EXAMPLE))
        assert server.proc.poll() is None  # the same process: no restart was needed


# ---------------------------------------------------------------- Azurite: function app


def _upload_bundle(store: BlobStore, name: str, model: bytes | None, manifest: Any) -> None:
    """Replace ``models/<name>/``: model first, then the manifest, as an operator would."""
    for file, content in ((MODEL, model), (MANIFEST, manifest)):
        if content is None:
            store.delete("models", f"{name}/{file}")
            continue
        data = json.dumps(content).encode() if isinstance(content, dict) else content
        store.write("models", f"{name}/{file}", data, "application/octet-stream")


AZURITE_FAULTS = [f for f in FAULTS if f[0] in ("truncated", "input-dropped", "missing-model")]


@pytest.mark.parametrize(
    ("fault", "make", "reason"), AZURITE_FAULTS, ids=[f[0] for f in AZURITE_FAULTS]
)
def test_a_broken_blob_bundle_gives_503_through_the_function_then_recovers(
    store: BlobStore,
    monkeypatch: pytest.MonkeyPatch,
    function_holder: Callable[..., ModelHolder],
    fault: str,
    make: Callable[[], tuple[bytes | None, Any]],
    reason: str,
) -> None:
    name = f"faults-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("MODEL_CONTAINER", "models")
    monkeypatch.setenv("MODEL_NAME", name)
    holder = function_holder(source_from_settings, retry_after=1.0)
    _upload_bundle(store, name, *make())

    ready = call_function("GET", "/api/ready")
    assert ready.status_code == 503, fault
    detail = json.loads(ready.get_body())["detail"]
    assert reason in detail, detail
    predict = call_function("POST", "/api/predict", BRIEF_EXAMPLE)
    assert predict.status_code == 503 and reason in predict.get_body().decode()
    assert call_function("GET", "/api/health").status_code == 200

    _upload_bundle(store, name, *_good())
    _wait_past(holder.retry_after)
    assert call_function("GET", "/api/ready").status_code == 200
    ok = call_function("POST", "/api/predict", BRIEF_EXAMPLE)
    assert ok.status_code == 200
    expected = _expected_probability(BRIEF_EXAMPLE)
    assert json.loads(ok.get_body())["probability"] == pytest.approx(expected, rel=1e-9)
    info = json.loads(call_function("GET", "/api/model").get_body())
    assert info["runtime"]["source"] == f"blob models/{name}"


# ---------------------------------------------------------------- storage faults


class InjectedStorageError(ServiceResponseError):
    """What a dropped connection mid-run looks like to the SDK's callers."""


class FaultyStore(StoreView):
    """A ``BatchStore`` around a real one that fails the Nth mutating call (write or
    delete, counted from 1); reads and the lock pass straight through."""

    def __init__(self, inner: BlobStore, fail_at: int | None = None) -> None:
        super().__init__(inner)
        self.fail_at = fail_at
        self.calls: list[tuple[str, str, str]] = []  # (op, container, name) attempted

    def _mutating(self, op: str, container: str, name: str) -> None:
        self.calls.append((op, container, name))
        if len(self.calls) == self.fail_at:
            raise InjectedStorageError(f"injected failure on {op} {container}/{name}")

    def write(self, container: str, name: str, data: bytes | BinaryIO, content_type: str) -> None:
        self._mutating("write", container, name)
        self.inner.write(container, name, data, content_type)

    def delete(self, container: str, name: str) -> None:
        self._mutating("delete", container, name)
        self.inner.delete(container, name)


@pytest.fixture(scope="module")
def predictor() -> blob_predict.Predictor:
    model = load_bundle(LocalDirSource(HANDOVER))
    return functools.partial(blob_predict.score_batch, model)


def _version_a(handover_dir: Path) -> tuple[bytes, bytes]:
    data = handover_dir / "data"
    return (data / "transactions.csv").read_bytes(), (data / "labels.csv").read_bytes()


def _version_b(transactions: bytes) -> bytes:
    """A re-upload with different content: the first data row dropped, one bad row added."""
    lines = transactions.decode().splitlines()
    bad = "T99999,CUST_0001,2025-02-03T10:00:00,12.345,debit,BAD AMOUNT"
    return "\n".join([lines[0], *lines[2:], bad, ""]).encode()


def _prepare(store: BlobStore, handover_dir: Path, predictor: blob_predict.Predictor) -> str:
    """A batch published from version A (labelled), then re-uploaded as version B
    (unlabelled, other rows): B's run must replace A's outputs, and a failure must not
    leave A's ``_SUCCESS`` standing over a mix of A and B."""
    batch = f"f{uuid.uuid4().hex[:12]}"
    transactions, labels = _version_a(handover_dir)
    store.write(RAW, f"{batch}/labels.csv", labels, "text/csv")
    store.write(RAW, f"{batch}/transactions.csv", transactions, "text/csv")
    assert commit.process_batch(store, batch, predict=predictor).outcome is Outcome.PROCESSED
    assert f"curated/{batch}/training_set.csv" in outputs(store, batch)
    store.delete(RAW, f"{batch}/labels.csv")
    store.write(RAW, f"{batch}/transactions.csv", _version_b(transactions), "text/csv")
    return batch


def _assert_complete(store: BlobStore, batch: str) -> None:
    """``_SUCCESS`` present, for the current inputs, listing exactly the outputs present,
    each with the bytes it records; and the features are what the pipeline gives."""
    found = outputs(store, batch)
    marker = json.loads(found.pop(f"curated/{batch}/_SUCCESS"))
    assert marker["status"] == "ok"
    uploaded = store.stat(RAW, f"{batch}/transactions.csv")
    assert uploaded is not None
    assert marker["inputs"] == {"transactions": uploaded.record(), "labels": None}
    assert set(found) == set(marker["outputs"])
    assert set(found) | {f"curated/{batch}/_SUCCESS"} == batch_blobs(batch, labelled=False)
    for path, described in marker["outputs"].items():
        assert _sha(found[path]) == described["sha256"], path
    assert marker["predictions"] == "written"
    raw = store.read_small(RAW, f"{batch}/transactions.csv")
    assert raw is not None
    local = run_pipeline(io.BytesIO(raw), None, now=uploaded.last_modified)
    assert found[f"curated/{batch}/features.csv"] == to_csv_text(local.features).encode()
    rejected = pd.read_csv(io.BytesIO(found[f"quarantine/{batch}/quarantine.csv"]), dtype=str)
    assert rejected["transaction_id"].tolist() == ["T99999"]


# Every write and delete of a run, by position: 2 marker deletes; 6 output writes (the
# quarantine and its old name, features, the report as JSON and Markdown, predictions); 3
# stale-output deletes (A's training set, labels quarantine and its old name); then the
# _SUCCESS write.
N_MUTATIONS = 12


def test_a_clean_rerun_publishes_everything(
    store: BlobStore, handover_dir: Path, predictor: blob_predict.Predictor
) -> None:
    batch = _prepare(store, handover_dir, predictor)
    counting = FaultyStore(store)
    result = commit.process_batch(counting, batch, predict=predictor)
    assert result.outcome is Outcome.PROCESSED
    _assert_complete(store, batch)
    # The fault positions below cover every mutation: if the commit protocol gains a step,
    # N_MUTATIONS must follow.
    assert len(counting.calls) == N_MUTATIONS, counting.calls
    assert [op for op, _, _ in counting.calls].count("write") == 7
    assert counting.calls[-1] == ("write", CURATED, f"{batch}/_SUCCESS")


@pytest.mark.parametrize("fail_at", range(1, N_MUTATIONS + 1))
def test_a_storage_failure_midway_leaves_no_success_and_the_retry_completes(
    store: BlobStore, handover_dir: Path, predictor: blob_predict.Predictor, fail_at: int
) -> None:
    batch = _prepare(store, handover_dir, predictor)
    faulty = FaultyStore(store, fail_at=fail_at)
    with pytest.raises(InjectedStorageError):
        commit.handle_blob_event(faulty, f"raw/{batch}/transactions.csv", predictor)
    assert len(faulty.calls) == fail_at
    failed_op = faulty.calls[-1]
    after = outputs(store, batch)
    assert f"curated/{batch}/error.json" not in after, failed_op
    marker_blob = after.pop(f"curated/{batch}/_SUCCESS", None)
    if marker_blob is not None:
        # Only possible when removing the old marker was what failed: then nothing was
        # touched, and the marker still describes the earlier publication exactly; it
        # does not claim the new upload.
        assert failed_op == ("delete", CURATED, f"{batch}/_SUCCESS")
        marker = json.loads(marker_blob)
        uploaded = store.stat(RAW, f"{batch}/transactions.csv")
        assert uploaded is not None
        assert marker["inputs"]["transactions"] != uploaded.record()
        assert {p: _sha(b) for p, b in after.items()} == {
            p: d["sha256"] for p, d in marker["outputs"].items()
        }

    # The runtime retries the event: the lock was released and the batch completes.
    retried = commit.handle_blob_event(store, f"raw/{batch}/transactions.csv", predictor)
    assert retried.outcome is Outcome.PROCESSED
    _assert_complete(store, batch)
    # A redelivery after that changes nothing.
    again = commit.handle_blob_event(store, f"raw/{batch}/transactions.csv", predictor)
    assert again.outcome is Outcome.SKIPPED


def test_the_blob_function_raises_on_a_storage_fault_so_the_runtime_retries(
    store: BlobStore,
    handover_dir: Path,
    predictor: blob_predict.Predictor,
    monkeypatch: pytest.MonkeyPatch,
    function_holder: Callable[..., ModelHolder],
) -> None:
    monkeypatch.delenv("MODEL_CONTAINER", raising=False)
    function_holder(local_source)
    batch = _prepare(store, handover_dir, predictor)
    blob_fn = function_handlers()[function_app.BLOB_FUNCTION].get_user_function()
    client = store.service.get_blob_client(RAW, f"{batch}/transactions.csv")

    def event() -> BlobClient:  # the SDK-type binding hands the function a BlobClient
        return client

    faulty = FaultyStore(store, fail_at=5)  # a write in the middle of publishing
    monkeypatch.setattr(function_app, "batch_store", lambda: faulty)
    with pytest.raises(InjectedStorageError):
        blob_fn(event())
    assert faulty.calls[-1][0] == "write"
    assert f"curated/{batch}/_SUCCESS" not in outputs(store, batch)
    monkeypatch.setattr(function_app, "batch_store", lambda: store)
    assert blob_fn(event()) is None
    _assert_complete(store, batch)


# ---------------------------------------------------------------- blob log privacy


PRIVATE_IDS = ["ZEBRA_CUST_4411", "ZEBRA_CUST_5522", "ZEBRA_CUST_6633"]
PRIVATE_TEXT = ["QUOKKA BAKERY", "WOMBAT RENT LTD", "NARWHAL SALARY", "OKAPI BETS"]
PRIVATE_AMOUNTS = ["-873.61", "4917.29", "-1234.57", "-66.19", "12345.678", "-31415.92"]


def _private_batch() -> tuple[bytes, bytes]:
    rows = [
        "transaction_id,customer_id,txn_timestamp,amount,txn_type,description",
        f"P1,{PRIVATE_IDS[0]},2025-02-01T10:00:00,{PRIVATE_AMOUNTS[0]},debit,{PRIVATE_TEXT[0]}",
        f"P2,{PRIVATE_IDS[0]},2025-02-02T10:00:00,{PRIVATE_AMOUNTS[1]},credit,{PRIVATE_TEXT[2]}",
        f"P3,{PRIVATE_IDS[1]},2025-02-03T10:00:00,{PRIVATE_AMOUNTS[2]},debit,{PRIVATE_TEXT[1]}",
        f"P4,{PRIVATE_IDS[1]},2025-02-04T10:00:00,{PRIVATE_AMOUNTS[3]},debit,{PRIVATE_TEXT[3]}",
        # quarantined (3 dp) and a large amount: both are findings, neither may be logged
        f"P5,{PRIVATE_IDS[2]},2025-02-05T10:00:00,{PRIVATE_AMOUNTS[4]},debit,{PRIVATE_TEXT[0]}",
        f"P6,{PRIVATE_IDS[2]},05/02/2025,{PRIVATE_AMOUNTS[5]},DEBIT ,{PRIVATE_TEXT[3]}",
    ]
    labels = f"customer_id,defaulted_within_90d\n{PRIVATE_IDS[0]},1\n{PRIVATE_IDS[1]},maybe\n"
    return ("\n".join(rows) + "\n").encode(), labels.encode()


def test_blob_function_logs_carry_no_customer_data(
    store: BlobStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    function_holder: Callable[..., ModelHolder],
) -> None:
    monkeypatch.delenv("MODEL_CONTAINER", raising=False)
    function_holder(local_source)
    monkeypatch.setattr(function_app, "batch_store", lambda: store)
    blob_fn = function_handlers()[function_app.BLOB_FUNCTION].get_user_function()
    transactions, labels = _private_batch()
    caplog.set_level(logging.INFO)

    def run(batch: str, file: str, data: bytes) -> None:
        store.write(RAW, f"{batch}/{file}", data, "text/csv")
        assert blob_fn(store.service.get_blob_client(RAW, f"{batch}/{file}")) is None

    unlabelled = f"p{uuid.uuid4().hex[:12]}"
    run(unlabelled, "transactions.csv", transactions)  # features + predictions
    labelled = f"p{uuid.uuid4().hex[:12]}"
    store.write(RAW, f"{labelled}/labels.csv", labels, "text/csv")
    run(labelled, "transactions.csv", transactions)  # training set + rejected labels
    broken = f"p{uuid.uuid4().hex[:12]}"
    header_only = f"customer_id,amount\n{PRIVATE_IDS[0]},{PRIVATE_AMOUNTS[0]}\n".encode()
    run(broken, "transactions.csv", header_only)  # an input error (error.json)

    done = outputs(store, unlabelled)
    assert f"curated/{unlabelled}/predictions.csv" in done  # the runs did real work
    assert PRIVATE_IDS[0].encode() in done[f"curated/{unlabelled}/predictions.csv"]
    assert f"curated/{broken}/error.json" in outputs(store, broken)
    text = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if r.levelno >= logging.INFO
    )
    assert "outcome=processed" in text and "outcome=error" in text
    secrets = [*PRIVATE_IDS, *PRIVATE_TEXT, *PRIVATE_AMOUNTS]
    secrets += [a.lstrip("-") for a in PRIVATE_AMOUNTS] + ["ZEBRA", "QUOKKA", "WOMBAT"]
    leaked = sorted(s for s in secrets if s in text)
    assert leaked == []
