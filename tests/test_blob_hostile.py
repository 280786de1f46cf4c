"""The blob flow with hostile inputs (issue 16), against a real Azurite.

A broken file is published with every row accounted for, or refused with ``error.json``;
a failure the data causes is never retried forever; outputs never outlive their input;
batch names are checked against one pattern and never forge a log line.
"""

from __future__ import annotations

import io
import json
import logging
import re
import string
import uuid

import pandas as pd
import pytest
from conftest import blob_outputs as outputs
from hypothesis import given, settings
from hypothesis import strategies as st

from blobflow import commit, naming, runner
from blobflow.commit import Outcome, handle_blob_event
from blobflow.naming import RAW, parse_blob_path
from blobflow.store import BlobStore

HEADER = "transaction_id,customer_id,txn_timestamp,amount,txn_type,description\n"
LABELS = "customer_id,defaulted\nC0,0\nC1,1\n"

pytestmark = pytest.mark.timeout(300)


def new_batch() -> str:
    return f"h{uuid.uuid4().hex[:12]}"


def rows(n: int) -> list[str]:
    return [
        f"T{i},C{i % 2},2025-02-{1 + i % 27:02d}T10:00:00,-1.00,debit,SHOP {i}" for i in range(n)
    ]


def upload(store: BlobStore, batch: str, name: str, data: bytes) -> None:
    store.write(RAW, f"{batch}/{name}", data, "text/csv")


@pytest.mark.parametrize("where", [3, 2_999, 1_500])
def test_a_stray_quote_is_published_with_every_row_accounted_for(
    store: BlobStore, where: int
) -> None:
    lines = rows(3_000)
    lines[where] = lines[where].replace("SHOP", '"SHOP')
    batch = new_batch()
    upload(store, batch, "transactions.csv", (HEADER + "\n".join(lines) + "\n").encode())
    assert handle_blob_event(store, f"raw/{batch}/transactions.csv").outcome is Outcome.PROCESSED
    out = outputs(store, batch)
    done = json.loads(out[f"curated/{batch}/_SUCCESS"])
    assert (done["rows_in"], done["rows_used"], done["rows_quarantined"]) == (3_000, 2_999, 1)
    rejected = pd.read_csv(
        io.BytesIO(out[f"quarantine/{batch}/quarantine.csv"]), dtype=str, keep_default_na=False
    )
    assert rejected["reason"].tolist() == ["unterminated_quote"]
    assert rejected["raw_line"].tolist() == [lines[where]]


def test_old_mac_files_are_processed_or_refused_never_retried(store: BlobStore) -> None:
    good = HEADER.replace("\n", "\r") + (
        'T1,C1,2025-02-01T10:00:00,-5.00,debit,"TESCO\nLONDON"\rT2,C1,2025-02-02,-6,debit,X\r'
    )
    header_only = HEADER.replace("\n", "\r")
    for data, outcome in ((good, Outcome.PROCESSED), (header_only, Outcome.ERROR)):
        batch = new_batch()
        upload(store, batch, "transactions.csv", data.encode())
        assert handle_blob_event(store, f"raw/{batch}/transactions.csv").outcome is outcome
        # A redelivery of the same event finds the answer already written.
        assert handle_blob_event(store, f"{batch}/transactions.csv").outcome is Outcome.SKIPPED
    error = json.loads(outputs(store, batch)[f"curated/{batch}/error.json"])
    assert error["error"] == "transactions: has a header but no data rows"


def test_a_failure_the_data_causes_writes_error_json_and_is_not_retried(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug the data triggers (here simulated) would fail the same way on every retry."""

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ValueError("cannot convert 'CUST_SECRET_42' at T9 (£12,345.67)")

    monkeypatch.setattr(runner, "run_pipeline", broken)
    caplog.set_level(logging.INFO)
    batch = new_batch()
    upload(store, batch, "transactions.csv", (HEADER + "\n".join(rows(5)) + "\n").encode())
    result = handle_blob_event(store, f"raw/{batch}/transactions.csv")  # does not raise
    assert result.outcome is Outcome.ERROR
    error = json.loads(outputs(store, batch)[f"curated/{batch}/error.json"])
    # Only the exception's type and where it was raised: the message may quote data.
    assert re.fullmatch(r"internal error .*\(ValueError at [\w.]+\.py:\d+\).*", error["error"])
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for text in (error["error"], logged):
        assert "CUST_SECRET_42" not in text and "12,345" not in text
    assert handle_blob_event(store, f"raw/{batch}/transactions.csv").outcome is Outcome.SKIPPED


def test_storage_faults_still_raise_for_a_retry() -> None:
    from azure.core.exceptions import ServiceRequestError

    assert commit._is_transient(ServiceRequestError("down"))
    assert commit._is_transient(OSError("disk"))
    assert not commit._is_transient(ValueError("data"))


# ---------------------------------------------------------------- deleted inputs (item 4)


def publish(store: BlobStore, labels: bool = True, batch: str | None = None) -> str:
    batch = batch or new_batch()
    upload(store, batch, "transactions.csv", (HEADER + "\n".join(rows(20)) + "\n").encode())
    if labels:
        upload(store, batch, "labels.csv", LABELS.encode())
    assert handle_blob_event(store, f"raw/{batch}/transactions.csv").outcome is Outcome.PROCESSED
    assert commit.verify_batch(store, batch)
    return batch


def test_deleting_the_transactions_withdraws_the_outputs(store: BlobStore) -> None:
    batch = publish(store)
    store.delete(RAW, f"{batch}/transactions.csv")
    assert not commit.verify_batch(store, batch)  # a consumer checking _SUCCESS sees it at once
    result = commit.handle_blob_deleted(store, f"raw/{batch}/transactions.csv")
    assert result.outcome is Outcome("withdrawn")
    out = outputs(store, batch)
    assert set(out) == {f"curated/{batch}/_WITHDRAWN"}  # no features, no quarantine rows
    withdrawn = json.loads(out[f"curated/{batch}/_WITHDRAWN"])
    assert withdrawn["status"] == "withdrawn" and withdrawn["inputs"]["transactions"]["etag"]
    # Uploading again publishes again, and the withdrawal note goes.
    upload(store, batch, "transactions.csv", (HEADER + "\n".join(rows(20)) + "\n").encode())
    assert handle_blob_event(store, f"raw/{batch}/transactions.csv").outcome is Outcome.PROCESSED
    assert f"curated/{batch}/_WITHDRAWN" not in outputs(store, batch)
    assert commit.verify_batch(store, batch)


def test_deleting_the_labels_republishes_without_them(store: BlobStore) -> None:
    batch = publish(store)
    assert f"curated/{batch}/training_set.csv" in outputs(store, batch)
    store.delete(RAW, f"{batch}/labels.csv")
    assert not commit.verify_batch(store, batch)
    assert commit.handle_blob_deleted(store, f"raw/{batch}/labels.csv").outcome is Outcome.PROCESSED
    out = outputs(store, batch)
    assert f"curated/{batch}/features.csv" in out
    assert f"curated/{batch}/training_set.csv" not in out
    assert f"quarantine/{batch}/rejected_labels.csv" not in out
    assert json.loads(out[f"curated/{batch}/_SUCCESS"])["inputs"]["labels"] is None
    assert commit.verify_batch(store, batch)


def test_reconcile_catches_a_deletion_whose_event_was_lost(store: BlobStore) -> None:
    prefix = f"{new_batch()}/"
    kept = publish(store, labels=False, batch=f"{prefix}kept")
    gone = publish(store, labels=False, batch=f"{prefix}gone")
    store.delete(RAW, f"{gone}/transactions.csv")
    results = commit.reconcile_batches(store, prefix=prefix)
    outcomes = {r.batch: r.outcome for r in results}
    assert outcomes == {gone: Outcome("withdrawn")}  # kept still matches its inputs: untouched
    assert commit.verify_batch(store, kept) and not commit.verify_batch(store, gone)
    assert commit.reconcile_batches(store, prefix=prefix) == []  # nothing left to do


# ---------------------------------------------------------------- batch names (item 9)


@pytest.mark.parametrize(
    "name",
    [
        "raw/b1\nINFO forged line/transactions.csv",
        "raw/b1\rx/transactions.csv",
        "raw/a\\b/transactions.csv",
        "raw/batch./transactions.csv",
        "raw/2025/06./transactions.csv",
        "raw/./transactions.csv",
        "raw/a/../transactions.csv",
        "raw/_locks/transactions.csv",
        "raw/.hidden/transactions.csv",
        "raw/-dash/transactions.csv",
        "raw/a b/transactions.csv",
        "raw/caf\u00e9/transactions.csv",
        "raw/b\u202e1/transactions.csv",
        "raw/" + "a" * 201 + "/transactions.csv",
    ],
)
def test_unsafe_batch_names_are_ignored_and_logged_escaped(
    store: BlobStore, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    assert parse_blob_path(name) is None
    assert handle_blob_event(store, name).outcome is Outcome.IGNORED
    messages = [r.getMessage() for r in caplog.records]
    assert messages and all("\n" not in m and "\r" not in m for m in messages)
    assert all(m.isascii() for m in messages)


@settings(max_examples=500, deadline=None)
@given(name=st.text(alphabet=string.printable + "\u00e9\u202e\x00\x1f", max_size=40))
def test_a_batch_name_is_accepted_only_if_it_matches_the_pattern(name: str) -> None:
    parsed = parse_blob_path(f"raw/{name}/transactions.csv")
    if parsed is None:
        return
    batch = parsed[0]
    assert batch == name and naming.BATCH_NAME.fullmatch(batch)
    for segment in batch.split("/"):
        assert segment and segment[0].isalnum() and not segment.endswith(".")
        assert all(c.isascii() and (c.isalnum() or c in "._-") for c in segment)


@pytest.mark.parametrize(
    "name", ["b1", "2025/06/bank-a", "A.b_c-d", "x/y.z/v1_2", "/".join(["a" * 64] * 3)]
)
def test_ordinary_batch_names_still_work(name: str) -> None:
    assert parse_blob_path(f"raw/{name}/labels.csv") == (name, "labels.csv")
