"""The blob-triggered batch, end to end against a real Azurite.

Files are uploaded to ``raw/<batch>/``; the indexed blob function is invoked the way the
Python worker invokes an SDK-type binding: the host's ``model_binding_data`` (connection,
container and blob name, no content) goes through the extension's own converter, which
builds a real ``azure.storage.blob.BlobClient`` for the blob in Azurite, and that client is
passed to the handler. The outputs are read back from storage. Every test uses its own
batch name, so runs never see each other.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import typing
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, BinaryIO

import azurefunctions.extensions.bindings.blob as blob_types
import numpy as np
import pandas as pd
import pytest
from azure.core.exceptions import ResourceModifiedError, ServiceRequestError
from azure.storage.blob import BlobClient, BlobLeaseClient, BlobServiceClient
from azurefunctions.extensions.base import Datum
from azurefunctions.extensions.bindings.blob.blobClientConverter import BlobClientConverter
from conftest import batch_blobs, function_handlers, serving
from conftest import blob_outputs as outputs

import function_app
from blobflow import commit, naming
from blobflow import store as blob_store
from blobflow.bundle_source import source_from_settings
from blobflow.commit import Outcome
from blobflow.naming import CURATED, RAW
from blobflow.store import BlobStore, StoreView
from blobflow.upload import upload_batch, upload_model
from features.cli import main as cli_main
from features.outputs import to_csv_text
from features.pipeline import run_pipeline
from features.rules import FINDINGS, QUARANTINE_ORDER
from features.synthetic import TRANSACTION_RATES
from scoring.bundle import LocalDirSource, load_bundle

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "artifacts"
# Every transaction rule the synthetic generator injects.
TRANSACTION_CODES = tuple(c for c in (*QUARANTINE_ORDER, *FINDINGS) if c in TRANSACTION_RATES)


@pytest.fixture(scope="module")
def model_name(store: BlobStore) -> Iterator[str]:
    """The handover bundle in Azurite, served to the blob function for predictions."""
    name = f"batch-{uuid.uuid4().hex[:8]}"
    upload_model(store, BUNDLE, name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODEL_CONTAINER", "models")
        mp.setenv("MODEL_NAME", name)
        with serving(function_app.http_app, source_from_settings):
            yield name


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("messy")
    # Labels without decision dates: these tests are about batches and their order, and
    # only in batch mode do features not depend on the labels (features/README.md).
    subprocess.run(
        [sys.executable, "-m", "features.synthetic", "--rows", "5000", "--customers", "300",
         "--seed", "3", "--messy", "--no-decision-dates", "--out", str(out)],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return out


def _blob_handler() -> Any:
    """The blob function as the worker indexed it (once per process, ``conftest``)."""
    return function_handlers()[function_app.BLOB_FUNCTION].get_user_function()


def _client_annotation() -> Any:
    """The parameter's type as the Python worker resolves it: ``typing.get_type_hints`` (the
    worker's functions.Registry does the same, so ``from __future__ import annotations`` in
    function_app.py is fine)."""
    return typing.get_type_hints(_blob_handler())["client"]


def model_binding_data(file_path: str) -> Datum:
    """What the Functions host sends the worker for an SDK-type blob binding: a reference
    (connection setting, container, blob name) and no blob content."""
    container, _, name = file_path.partition("/")
    reference = {"Connection": blob_store.STORAGE_SETTING, "ContainerName": container,
                 "BlobName": name}  # fmt: skip
    value = SimpleNamespace(
        version="1.0", source="AzureStorageBlobs", content_type="application/json",
        content=json.dumps(reference),
    )  # fmt: skip
    return Datum(value=value, type="model_binding_data")


def trigger(store: BlobStore, batch: str, file: str) -> None:
    """Invoke the indexed blob function as the worker does for ``raw/<batch>/<file>``."""
    annotation = _client_annotation()
    client = BlobClientConverter.decode(
        model_binding_data(f"{RAW}/{batch}/{file}"), trigger_metadata=None, pytype=annotation
    )
    assert isinstance(client, BlobClient)
    assert _blob_handler()(client) is None


def new_batch() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def marker(found: dict[str, bytes], batch: str, name: str) -> dict[str, Any]:
    return json.loads(found[f"{CURATED}/{batch}/{name}"])


def comparable(found: dict[str, bytes], batch: str) -> dict[str, Any]:
    """Outputs keyed by file name; report minus timing/upload time; marker minus run facts."""
    out: dict[str, Any] = {}
    for key, data in found.items():
        name = key.split(f"/{batch}/", 1)[1]
        if name == "dq_report.json":
            report = json.loads(data)
            report.pop("elapsed_seconds")
            report.pop("generated_at")
            out[name] = report
        elif name == "dq_report.md":  # its "Generated <upload time>" line aside
            out[name] = [line for line in data.splitlines() if not line.startswith(b"Generated")]
        elif name == "_SUCCESS":
            body = json.loads(data)
            out[name] = {k: body[k] for k in ("status", "rows_in", "rows_used", "customers")}
        else:
            out[name] = data
    return out


def read_csv(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)


# ---------------------------------------------------------------- end to end


def test_handover_batch_gives_the_cli_outputs(
    store: BlobStore, handover_dir: Path, tmp_path: Path
) -> None:
    batch = new_batch()
    files = [handover_dir / "data" / "transactions.csv", handover_dir / "data" / "labels.csv"]
    upload_batch(store, batch, files)
    trigger(store, batch, "transactions.csv")

    found = outputs(store, batch)
    assert set(found) == batch_blobs(batch, labelled=True)
    # python -m features writes the same files under the same names with the same bytes;
    # only the report's time stamp and timing differ (and the blob flow adds its own).
    assert cli_main([*("--transactions", str(files[0]), "--labels", str(files[1])),
                     "--out", str(tmp_path)]) == 0  # fmt: skip
    local = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    by_name = {path.rsplit("/", 1)[1]: data for path, data in found.items()}
    assert set(by_name) - set(local) == {
        "predictions.csv", "_SUCCESS", "rejected_rows.csv", "rejected_labels.csv"
    }  # fmt: skip
    for name in set(local) - {"dq_report.json", "dq_report.md"}:
        assert by_name[name] == local[name], name
    assert by_name["rejected_rows.csv"] == by_name["quarantine.csv"]
    assert by_name["rejected_labels.csv"] == by_name["labels_quarantine.csv"]
    blob_report, cli_report = (
        json.loads(by_name["dq_report.json"]),
        json.loads(local["dq_report.json"]),
    )
    for report in (blob_report, cli_report):
        report.pop("generated_at"), report.pop("elapsed_seconds")
    assert blob_report == cli_report

    report = marker(found, batch, "dq_report.json")
    assert (report["rows_in"], report["rows_used"], report["rows_quarantined"]) == (10, 10, 0)
    assert (report["customers"], report["training_rows"]) == (5, 5)
    rejected = read_csv(found[f"quarantine/{batch}/quarantine.csv"])
    assert rejected.empty and list(rejected.columns)[-2:] == ["reason", "raw_line"]

    done = marker(found, batch, "_SUCCESS")
    assert done["status"] == "ok" and done["rows_in"] == 10
    assert set(done["outputs"]) == set(found) - {f"curated/{batch}/_SUCCESS"}
    for path, described in done["outputs"].items():
        assert hashlib.sha256(found[path]).hexdigest() == described["sha256"], path
    uploaded = store.stat(RAW, f"{batch}/transactions.csv")
    assert uploaded is not None
    assert done["inputs"]["transactions"]["etag"] == uploaded.etag
    assert report["generated_at"] == max(i["last_modified"] for i in done["inputs"].values())


def test_messy_batch_report_matches_the_injected_problems(store: BlobStore, messy: Path) -> None:
    batch = new_batch()
    upload_batch(store, batch, [messy / "transactions.csv", messy / "labels.csv"])
    trigger(store, batch, "labels.csv")

    found = outputs(store, batch)
    injected = json.loads((messy / "injected.json").read_text())
    report = marker(found, batch, "dq_report.json")
    counts = {c["check"]: c["count"] for c in report["checks"]}
    for code in TRANSACTION_CODES:
        assert counts[code] == injected[code], code
    assert report["rows_duplicate"] == injected["duplicate"]
    assert report["rows_in"] == 5000
    label_counts = {c["check"]: c["count"] for c in report["labels"]["checks"]}
    assert label_counts["conflicting_label"] == injected["conflicting_label"]
    assert report["labels_without_transactions"] == injected["labels_without_transactions"]
    assert report["customers_without_label"] == injected["customers_without_label"]

    rejected = read_csv(found[f"quarantine/{batch}/quarantine.csv"])
    assert len(rejected) == report["rows_quarantined"] > 0
    expected_reasons = {c: injected[c] for c in TRANSACTION_CODES if c in _QUARANTINED}
    assert rejected["reason"].value_counts().to_dict() == {
        k: v for k, v in expected_reasons.items() if v
    }
    rejected_labels = read_csv(found[f"quarantine/{batch}/labels_quarantine.csv"])
    assert (rejected_labels["reason"] == "conflicting_label").sum() > 0

    # The streamed blob gives exactly what the file path gives (same "now": upload time).
    uploaded = store.stat(RAW, f"{batch}/transactions.csv")
    assert uploaded is not None
    local = run_pipeline(
        messy / "transactions.csv", messy / "labels.csv", now=uploaded.last_modified
    )
    training = found[f"curated/{batch}/training_set.csv"]
    assert training == to_csv_text(local.training_set).encode("utf-8")
    assert len(read_csv(training)) == report["training_rows"]


_QUARANTINED = set(QUARANTINE_ORDER)


def test_unlabelled_batch_gets_features_and_predictions(
    store: BlobStore, messy: Path, model_name: str
) -> None:
    batch = new_batch()
    upload_batch(store, batch, [messy / "transactions.csv"])
    trigger(store, batch, "transactions.csv")

    found = outputs(store, batch)
    assert f"curated/{batch}/training_set.csv" not in found
    features = pd.read_csv(io.BytesIO(found[f"curated/{batch}/features.csv"]))
    predictions = pd.read_csv(io.BytesIO(found[f"curated/{batch}/predictions.csv"]))
    columns = ["customer_id", "probability", "prediction", "model_version"]
    assert list(predictions.columns) == columns
    assert predictions["customer_id"].tolist() == features["customer_id"].tolist()

    model = load_bundle(LocalDirSource(BUNDLE))
    inputs = [i.accepts[0] for i in model.manifest.inputs]
    expected = model.estimator.predict_proba(features[inputs].to_numpy(dtype=float))[:, 1]
    np.testing.assert_allclose(predictions["probability"], expected, atol=1e-6)
    assert (predictions["prediction"] == (expected >= model.manifest.threshold)).all()
    assert set(predictions["model_version"]) == {model.manifest.model_version}
    assert marker(found, batch, "_SUCCESS")["predictions"] == "written"


def test_without_a_model_the_batch_is_published_without_predictions(
    store: BlobStore, handover_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEL_CONTAINER", "models")
    monkeypatch.setenv("MODEL_NAME", f"absent-{uuid.uuid4().hex[:8]}")
    with serving(function_app.http_app, source_from_settings):
        batch = new_batch()
        upload_batch(store, batch, [handover_dir / "data" / "transactions.csv"])
        trigger(store, batch, "transactions.csv")
    found = outputs(store, batch)
    assert f"curated/{batch}/features.csv" in found
    assert f"curated/{batch}/predictions.csv" not in found
    note = marker(found, batch, "_SUCCESS")["predictions"]
    assert note.startswith("model unavailable:") and "not found in blob storage" in note


# ---------------------------------------------------------------- SDK-type binding


def test_the_trigger_binds_a_blob_client_so_the_host_passes_no_content() -> None:
    """The worker decides per parameter annotation whether the host sends the blob's bytes or
    a ``model_binding_data`` reference; the extension's converter must claim ours."""
    annotation = _client_annotation()
    assert BlobClientConverter.check_input_type_annotation(annotation)
    assert annotation is blob_types.BlobClient


def test_binding_a_blob_client_reads_nothing_from_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    """Conversion makes no request at all: with storage unreachable it still yields a
    client for the right blob, so no copy of the content exists before our code streams it."""
    monkeypatch.setenv(
        blob_store.STORAGE_SETTING,
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={blob_store.DEV_ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;",
    )
    client = BlobClientConverter.decode(
        model_binding_data("raw/b1/transactions.csv"), trigger_metadata=None,
        pytype=blob_types.BlobClient,
    )  # fmt: skip
    assert isinstance(client, BlobClient)
    assert (client.container_name, client.blob_name) == ("raw", "b1/transactions.csv")


def test_the_handler_streams_the_batch_given_a_plain_sdk_client(
    store: BlobStore, handover_dir: Path
) -> None:
    """Called with an ordinary ``azure.storage.blob.BlobClient`` on Azurite (no extension
    involved), the handler processes the batch the blob belongs to."""
    batch = new_batch()
    upload_batch(store, batch, [handover_dir / "data" / "transactions.csv"])
    service = BlobServiceClient.from_connection_string(os.environ[blob_store.STORAGE_SETTING])
    client = service.get_blob_client(RAW, f"{batch}/transactions.csv")
    assert _blob_handler()(client) is None
    found = outputs(store, batch)
    assert f"curated/{batch}/_SUCCESS" in found
    assert f"curated/{batch}/features.csv" in found


# ---------------------------------------------------------------- idempotency and order


def test_reprocessing_and_arrival_order_give_the_same_outputs(
    store: BlobStore, messy: Path, model_name: str
) -> None:
    transactions, labels = messy / "transactions.csv", messy / "labels.csv"

    # Order 1: transactions alone (processed unlabelled), then labels (processed again).
    first = new_batch()
    upload_batch(store, first, [transactions])
    trigger(store, first, "transactions.csv")
    unlabelled = outputs(store, first)
    assert f"curated/{first}/predictions.csv" in unlabelled
    store.write(RAW, f"{first}/labels.csv", labels.read_bytes(), "text/csv")
    trigger(store, first, "labels.csv")
    final = outputs(store, first)
    assert set(unlabelled) == batch_blobs(first, labelled=False)
    assert set(final) == batch_blobs(first, labelled=True)  # the labelled outputs replace them
    assert final[f"curated/{first}/features.csv"] == unlabelled[f"curated/{first}/features.csv"]

    # The runtime delivers the same events again: nothing changes, not even the marker.
    trigger(store, first, "labels.csv")
    trigger(store, first, "transactions.csv")
    assert outputs(store, first) == final

    # Forced reprocessing of the same upload rewrites identical outputs.
    result = commit.process_batch(store, first, predict=function_app.batch_predictor(), force=True)
    assert result.outcome is Outcome.PROCESSED
    again = outputs(store, first)
    assert comparable(again, first) == comparable(final, first)
    report_then = marker(final, first, "dq_report.json")
    report_now = marker(again, first, "dq_report.json")
    assert report_now["generated_at"] == report_then["generated_at"]

    # Order 2: labels first (nothing to do yet), then transactions.
    second = new_batch()
    store.write(RAW, f"{second}/labels.csv", labels.read_bytes(), "text/csv")
    trigger(store, second, "labels.csv")
    assert outputs(store, second) == {}
    store.write(RAW, f"{second}/transactions.csv", transactions.read_bytes(), "text/csv")
    trigger(store, second, "transactions.csv")
    assert comparable(outputs(store, second), second) == comparable(final, first)


def test_concurrent_events_for_one_batch_are_serialised(store: BlobStore, messy: Path) -> None:
    batch = new_batch()
    upload_batch(store, batch, [messy / "transactions.csv", messy / "labels.csv"])
    results: list[Any] = []
    errors: list[BaseException] = []

    def run(file: str) -> None:
        try:
            results.append(commit.handle_blob_event(store, f"raw/{batch}/{file}"))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f,)) for f in ("transactions.csv", "labels.csv")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert sorted(r.outcome for r in results) == [Outcome.PROCESSED, Outcome.SKIPPED]
    found = outputs(store, batch)
    assert set(found) == batch_blobs(batch, labelled=True, predictions=False)


def test_a_held_batch_lock_makes_the_event_retry(store: BlobStore, handover_dir: Path) -> None:
    batch = new_batch()
    upload_batch(store, batch, [handover_dir / "data" / "transactions.csv"])
    impatient = BlobStore(store.service, lock_wait_seconds=0.5, lock_poll_seconds=0.1)
    with store.lock(batch), pytest.raises(blob_store.BatchBusyError):
        commit.process_batch(impatient, batch)
    assert outputs(store, batch) == {}
    assert commit.process_batch(impatient, batch).outcome is Outcome.PROCESSED


# ---------------------------------------------------------------- a lost lease


class LeaseThief(StoreView):
    """A run's store that, when the run starts reading its data, has another process break
    the batch's lease, change the batch (labels arrive) and publish it with a run of its own:
    the overlap a lost lease allows."""

    def __init__(self, inner: BlobStore, batch: str, labels: bytes) -> None:
        super().__init__(inner)
        self.batch, self.labels = batch, labels
        self.newer: Any = None

    def open_read(self, container: str, name: str, etag: str) -> BinaryIO:
        if self.newer is None:
            lock = self.inner.service.get_blob_client(CURATED, f"_locks/{self.batch}")
            BlobLeaseClient(lock).break_lease(lease_break_period=0)
            self.inner.write(RAW, f"{self.batch}/labels.csv", self.labels, "text/csv")
            self.newer = commit.process_batch(self.inner, self.batch)
        return self.inner.open_read(container, name, etag)


def test_a_run_that_loses_its_lease_stops_before_it_writes(
    store: BlobStore, handover_dir: Path
) -> None:
    """Issue 17: a lost lease used to be a logged warning, and the run went on to overwrite
    the newer run's outputs and delete its training set. Now it raises (the runtime
    retries) without writing, and the newer run's outputs stand, verified."""
    data = handover_dir / "data"
    batch = new_batch()
    upload_batch(store, batch, [data / "transactions.csv"])
    thief = LeaseThief(store, batch, (data / "labels.csv").read_bytes())
    with pytest.raises(blob_store.LeaseLostError):
        commit.process_batch(thief, batch)
    assert thief.newer.outcome is Outcome.PROCESSED
    found = outputs(store, batch)
    assert set(found) == batch_blobs(batch, labelled=True, predictions=False)
    assert commit.verify_batch(store, batch)  # _SUCCESS records the labels it used
    assert marker(found, batch, "_SUCCESS")["inputs"]["labels"] is not None
    # The retry finds the batch done.
    assert commit.handle_blob_event(store, f"raw/{batch}/transactions.csv").outcome is (
        Outcome.SKIPPED
    )


def test_a_lease_lost_before_the_commit_marker_leaves_no_success(
    store: BlobStore, handover_dir: Path
) -> None:
    batch = new_batch()
    upload_batch(store, batch, [handover_dir / "data" / "transactions.csv"])

    class BreakBeforeMarker(StoreView):
        def write(self, container: str, name: str, data: Any, content_type: str) -> None:
            if name.endswith("/_SUCCESS"):
                raise AssertionError("the marker must not be written")
            self.inner.write(container, name, data, content_type)
            if name.endswith("/dq_report.md"):  # the last output the pipeline writes
                lock = store.service.get_blob_client(CURATED, f"_locks/{batch}")
                BlobLeaseClient(lock).break_lease(lease_break_period=0)

    with pytest.raises(blob_store.LeaseLostError):
        commit.process_batch(BreakBeforeMarker(store), batch)
    assert f"curated/{batch}/_SUCCESS" not in outputs(store, batch)
    assert not commit.verify_batch(store, batch)
    assert commit.process_batch(store, batch).outcome is Outcome.PROCESSED  # the retry
    assert commit.verify_batch(store, batch)


# ---------------------------------------------------------------- bad data and failures


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"foo,bar\n1,2\n", "transactions: missing required column(s)"),
        (b"", "transactions: the file is empty"),
        (b"transaction_id,customer_id,txn_timestamp,amount\n", "has a header but no data rows"),
    ],
    ids=["unmappable", "empty", "header-only"],
)
def test_bad_batch_writes_error_json_and_does_not_raise(
    store: BlobStore, content: bytes, message: str
) -> None:
    batch = new_batch()
    store.write(RAW, f"{batch}/transactions.csv", content, "text/csv")
    trigger(store, batch, "transactions.csv")
    found = outputs(store, batch)
    assert set(found) == {f"curated/{batch}/error.json"}
    error = marker(found, batch, "error.json")
    assert error["status"] == "error" and message in error["error"]
    trigger(store, batch, "transactions.csv")  # a redelivery: same answer, no exception
    assert outputs(store, batch) == found


def test_bad_labels_are_an_input_error_too(store: BlobStore, handover_dir: Path) -> None:
    batch = new_batch()
    upload_batch(store, batch, [handover_dir / "data" / "transactions.csv"])
    store.write(RAW, f"{batch}/labels.csv", b"customer_id,colour\nC1,red\n", "text/csv")
    trigger(store, batch, "labels.csv")
    error = marker(outputs(store, batch), batch, "error.json")
    assert "labels:" in error["error"] and "defaulted" in error["error"]


def test_a_bad_reupload_replaces_good_outputs_and_a_good_one_recovers(
    store: BlobStore, handover_dir: Path
) -> None:
    batch = new_batch()
    good = handover_dir / "data" / "transactions.csv"
    upload_batch(store, batch, [good])
    trigger(store, batch, "transactions.csv")
    assert f"curated/{batch}/_SUCCESS" in outputs(store, batch)

    store.write(RAW, f"{batch}/transactions.csv", b"nothing,useful\n1,2\n", "text/csv")
    trigger(store, batch, "transactions.csv")
    assert set(outputs(store, batch)) == {f"curated/{batch}/error.json"}

    upload_batch(store, batch, [good])
    trigger(store, batch, "transactions.csv")
    found = outputs(store, batch)
    assert f"curated/{batch}/_SUCCESS" in found
    assert f"curated/{batch}/error.json" not in found


def test_other_blobs_are_ignored(store: BlobStore) -> None:
    batch = new_batch()
    store.write(RAW, f"{batch}/notes.txt", b"hello", "text/plain")
    trigger(store, batch, "notes.txt")
    assert outputs(store, batch) == {}


def test_storage_errors_raise_so_the_runtime_retries() -> None:
    unreachable = BlobServiceClient(
        "http://127.0.0.1:9/devstoreaccount1", retry_total=0, connection_timeout=2
    )
    with pytest.raises(ServiceRequestError):
        commit.handle_blob_event(BlobStore(unreachable), "raw/b1/transactions.csv")


# ---------------------------------------------------------------- streaming


@pytest.fixture(scope="module")
def small_chunks(azurite_env: str) -> BlobStore:
    """A store that downloads in 64 KiB ranges, so a few hundred KB take many requests."""
    client = blob_store.connect(max_single_get_size=64 << 10, max_chunk_get_size=64 << 10)
    return BlobStore(client)


def _opened(store: BlobStore, data: bytes) -> tuple[str, BinaryIO]:
    """``data`` uploaded as a new batch's transactions, opened for reading as a run does."""
    batch = new_batch()
    store.write(RAW, f"{batch}/transactions.csv", data, "text/csv")
    info = store.stat(RAW, f"{batch}/transactions.csv")
    assert info is not None
    return batch, store.open_read(RAW, f"{batch}/transactions.csv", info.etag)


def test_blobs_are_read_range_by_range(small_chunks: BlobStore, messy: Path) -> None:
    data = (messy / "transactions.csv").read_bytes()
    _, reader = _opened(small_chunks, data)
    assert reader.read(10) == data[:10]
    assert reader.raw.chunks_read == 1  # type: ignore[attr-defined]
    assert reader.read() == data[10:]
    assert reader.raw.chunks_read == -(-len(data) // (64 << 10))  # type: ignore[attr-defined]


def test_small_ranges_give_the_same_outputs(
    store: BlobStore, small_chunks: BlobStore, messy: Path
) -> None:
    files = [messy / "transactions.csv", messy / "labels.csv"]
    batches = []
    for target in (store, small_chunks):
        batch = new_batch()
        upload_batch(target, batch, files)
        assert commit.process_batch(target, batch).outcome is Outcome.PROCESSED
        batches.append(batch)
    a, b = (comparable(outputs(store, x), x) for x in batches)
    assert a == b


def test_a_blob_changed_mid_read_fails_instead_of_mixing_versions(
    small_chunks: BlobStore, messy: Path
) -> None:
    data = (messy / "transactions.csv").read_bytes()
    batch, reader = _opened(small_chunks, data)
    reader.read(10)
    small_chunks.write(RAW, f"{batch}/transactions.csv", data[::-1], "text/csv")
    with pytest.raises(ResourceModifiedError):
        reader.read()


def test_chunk_reader_handles_uneven_and_empty_chunks() -> None:
    chunks = [b"ab", b"", b"cde", b"f", b"", b"ghij"]
    reader = io.BufferedReader(blob_store.ChunkReader(iter(chunks)), buffer_size=3)
    assert reader.read(4) == b"abcd"
    assert reader.read() == b"efghij"
    assert reader.read() == b""


# ---------------------------------------------------------------- naming


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("raw/b1/transactions.csv", ("b1", "transactions.csv")),
        ("b1/labels.csv", ("b1", "labels.csv")),
        ("raw/2025/06/bank-a/labels.csv", ("2025/06/bank-a", "labels.csv")),
        ("raw/transactions.csv", None),
        ("raw/b1/other.csv", None),
        ("raw/b1/Transactions.CSV", None),
        ("raw/_locks/transactions.csv", None),
        ("raw/a/../transactions.csv", None),
        ("raw/a//transactions.csv", None),
    ],
)
def test_blob_paths_name_a_batch_and_file(path: str, expected: tuple[str, str] | None) -> None:
    assert naming.parse_blob_path(path) == expected


def test_quarantine_file_keeps_rows_unchanged(store: BlobStore) -> None:
    batch = new_batch()
    body = (
        "transaction_id,customer_id,txn_timestamp,amount,txn_type,description\n"
        'T1,C1,2025-02-01T10:00:00,12.345,debit,"A, B"\n'
        "T2,C1,2025-02-01T11:00:00,-5.00,debit,TESCO\n"
    )
    store.write(RAW, f"{batch}/transactions.csv", body.encode(), "text/csv")
    trigger(store, batch, "transactions.csv")
    found = outputs(store, batch)
    rows = list(csv.reader(io.StringIO(found[f"quarantine/{batch}/quarantine.csv"].decode())))
    assert rows[1][:6] == ["T1", "C1", "2025-02-01T10:00:00", "12.345", "debit", "A, B"]
    assert rows[1][6] == "invalid_amount"
    assert marker(found, batch, "dq_report.json")["rows_used"] == 1
