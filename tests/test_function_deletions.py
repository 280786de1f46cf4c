"""Deleted inputs reach their batch in Azure (issue 16 item 4), through the function app.

The app is indexed as the worker indexes it (``app.get_functions()``); each handler is
called with the argument the worker would build: the Event Grid trigger's
``EventGridEvent`` decoded by ``azure.functions``' own converter from the JSON the host
forwards, the timer's ``TimerRequest`` likewise. Storage is a real Azurite. The daily
reconcile lists only this module's batches (``Scoped``, a view that narrows ``list_names``
to a prefix), so it does not reprocess what other test modules left in the shared Azurite.
"""

from __future__ import annotations

import json
import logging
import typing
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import pytest
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.timer import TimerRequestConverter
from conftest import blob_outputs as outputs
from conftest import function_handlers

import function_app
from blobflow import commit
from blobflow.commit import Outcome
from blobflow.naming import CURATED, RAW
from blobflow.store import BlobStore, StoreView

HEADER = "transaction_id,customer_id,txn_timestamp,amount,txn_type,description\n"
ROWS = "".join(
    f"T{i},C{i % 3},2025-02-{1 + i % 27:02d}T10:00:00,-{i}.00,debit,SHOP {i}\n"
    for i in range(1, 40)
)
LABELS = "customer_id,defaulted\nC0,0\nC1,1\nC2,0\n"
ACCOUNT = "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st"


def handler(name: str) -> Any:
    return function_handlers()[name].get_user_function()


def annotation(name: str, arg: str) -> Any:
    """The parameter type as the worker resolves it (``typing.get_type_hints``)."""
    return typing.get_type_hints(handler(name))[arg]


def datum(body: dict[str, Any]) -> Any:
    """What the host sends the worker for a JSON trigger payload."""
    return SimpleNamespace(type="json", value=json.dumps(body))


def storage_event(event_type: str, container: str, name: str) -> func.EventGridEvent:
    """An Event Grid schema event as Blob Storage publishes it, decoded as the worker does."""
    body = {
        "topic": ACCOUNT,
        "subject": f"/blobServices/default/containers/{container}/blobs/{name}",
        "eventType": event_type,
        "id": str(uuid.uuid4()),
        "data": {
            "api": "DeleteBlob",
            "requestId": str(uuid.uuid4()),
            "contentType": "text/csv",
            "blobType": "BlockBlob",
            "url": f"https://st.blob.core.windows.net/{container}/{name}",
            "sequencer": "0000000000000000000000000000000000000000000000000",
        },
        "dataVersion": "",
        "metadataVersion": "1",
        "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    event = EventGridEventInConverter.decode(datum(body), trigger_metadata=None)
    assert isinstance(event, func.EventGridEvent)
    return event


def deleted(container: str, name: str) -> None:
    """Invoke the indexed Event Grid function for a BlobDeleted event."""
    assert (
        handler(function_app.DELETED_FUNCTION)(
            storage_event(commit.BLOB_DELETED_EVENT, container, name)
        )
        is None
    )


def publish(store: BlobStore, batch: str, labels: bool = True) -> None:
    store.write(RAW, f"{batch}/transactions.csv", (HEADER + ROWS).encode(), "text/csv")
    if labels:
        store.write(RAW, f"{batch}/labels.csv", LABELS.encode(), "text/csv")
    assert commit.process_batch(store, batch).outcome is Outcome.PROCESSED
    assert commit.verify_batch(store, batch)


@pytest.fixture
def batch() -> str:
    return f"d{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------- the Event Grid trigger


def test_the_deletion_function_is_an_event_grid_trigger_the_worker_can_feed() -> None:
    functions = function_handlers()
    bindings = functions[function_app.DELETED_FUNCTION].get_bindings_dict()["bindings"]
    assert [(b["type"], b["direction"].name) for b in bindings] == [("eventGridTrigger", "IN")]
    hint = annotation(function_app.DELETED_FUNCTION, bindings[0]["name"])
    assert EventGridEventInConverter.check_input_type_annotation(hint)


def test_deleting_the_transactions_withdraws_the_batch(store: BlobStore, batch: str) -> None:
    publish(store, batch)
    store.delete(RAW, f"{batch}/transactions.csv")
    deleted(RAW, f"{batch}/transactions.csv")
    found = outputs(store, batch)
    assert set(found) == {f"{CURATED}/{batch}/_WITHDRAWN"}
    assert json.loads(found[f"{CURATED}/{batch}/_WITHDRAWN"])["status"] == "withdrawn"
    deleted(RAW, f"{batch}/transactions.csv")  # a redelivery changes nothing
    assert outputs(store, batch) == found


def test_deleting_the_labels_republishes_without_them(store: BlobStore, batch: str) -> None:
    publish(store, batch)
    store.delete(RAW, f"{batch}/labels.csv")
    deleted(RAW, f"{batch}/labels.csv")
    found = outputs(store, batch)
    assert f"{CURATED}/{batch}/training_set.csv" not in found
    assert json.loads(found[f"{CURATED}/{batch}/_SUCCESS"])["inputs"]["labels"] is None
    assert commit.verify_batch(store, batch)


def test_a_late_event_for_a_reuploaded_input_changes_nothing(store: BlobStore, batch: str) -> None:
    """Events can arrive late: the handler looks at storage, not at the event."""
    publish(store, batch, labels=False)
    store.delete(RAW, f"{batch}/transactions.csv")
    publish(store, batch, labels=False)  # uploaded again (and processed) before the event
    before = outputs(store, batch)
    deleted(RAW, f"{batch}/transactions.csv")
    assert outputs(store, batch) == before and commit.verify_batch(store, batch)


@pytest.mark.parametrize(
    ("event_type", "container", "name"),
    [
        ("Microsoft.Storage.BlobCreated", RAW, "{batch}/transactions.csv"),
        ("Microsoft.Storage.BlobDeleted", CURATED, "{batch}/transactions.csv"),
        ("Microsoft.Storage.BlobDeleted", RAW, "{batch}/notes.txt"),
        ("Microsoft.Storage.BlobDeleted", RAW, "{batch}\nFORGED/transactions.csv"),
    ],
    ids=["created", "other-container", "other-file", "forged-line"],
)
def test_other_events_are_ignored_and_logged_on_one_line(
    store: BlobStore,
    batch: str,
    event_type: str,
    container: str,
    name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    publish(store, batch, labels=False)
    store.delete(RAW, f"{batch}/transactions.csv")  # so a wrong handling would withdraw it
    before = outputs(store, batch)
    caplog.set_level(logging.INFO)
    event = storage_event(event_type, container, name.format(batch=batch))
    assert handler(function_app.DELETED_FUNCTION)(event) is None
    assert outputs(store, batch) == before
    ignored = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert ignored and all("\n" not in m and m.isascii() for m in ignored)


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        (
            "/blobServices/default/containers/raw/blobs/b1/transactions.csv",
            "raw/b1/transactions.csv",
        ),
        (
            "/blobServices/default/containers/raw/blobs/2025/06/a/labels.csv",
            "raw/2025/06/a/labels.csv",
        ),
        ("/blobServices/default/containers/raw/blobs/", None),
        ("/blobServices/default/containers/raw/x/b1/transactions.csv", None),
        ("/blobServices/default/containers//blobs/b1/transactions.csv", None),
        ("/queueServices/default/queues/raw/blobs/b1/transactions.csv", None),
        ("", None),
    ],
)
def test_event_subjects_name_a_container_and_a_blob(subject: str, expected: str | None) -> None:
    from blobflow.naming import blob_path_from_subject

    assert blob_path_from_subject(subject) == expected


# ---------------------------------------------------------------- the daily reconcile


class Scoped(StoreView):
    """The Azurite store, listing only names under ``prefix`` (this test's batches)."""

    def __init__(self, inner: BlobStore, prefix: str) -> None:
        super().__init__(inner)
        self.prefix = prefix

    def list_names(self, container: str, prefix: str) -> Iterator[str]:
        assert prefix == ""  # the timer reconciles everything...
        return self.inner.list_names(container, self.prefix)  # ...which here is ours


def run_timer(past_due: bool = False) -> None:
    body = {"Schedule": {"AdjustForDST": True}, "ScheduleStatus": None, "IsPastDue": past_due}
    timer = TimerRequestConverter.decode(datum(body), trigger_metadata=None)
    assert handler(function_app.RECONCILE_FUNCTION)(timer) is None


def test_the_reconcile_function_is_a_daily_timer() -> None:
    functions = function_handlers()
    (binding,) = functions[function_app.RECONCILE_FUNCTION].get_bindings_dict()["bindings"]
    assert binding["type"] == "timerTrigger" and binding["schedule"] == "0 17 3 * * *"
    assert binding["runOnStartup"] is False  # a restart must not start a full scan
    fields = function_app.RECONCILE_SCHEDULE.split()
    assert len(fields) == 6 and fields[3:] == ["*", "*", "*"]  # NCRONTAB: once every day
    hint = annotation(function_app.RECONCILE_FUNCTION, binding["name"])
    assert TimerRequestConverter.check_input_type_annotation(hint)


def test_the_timer_catches_what_events_missed(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = f"r{uuid.uuid4().hex[:10]}/"
    kept, gone, unlabelled, never, failed = (
        f"{prefix}{n}" for n in ("kept", "gone", "unlabelled", "never", "failed")
    )
    for name in (kept, gone, unlabelled):
        publish(store, name)
    store.write(RAW, f"{failed}/transactions.csv", b"no,header\n1,2\n", "text/csv")
    assert commit.process_batch(store, failed).outcome is Outcome.ERROR
    store.delete(RAW, f"{gone}/transactions.csv")  # their events were lost
    store.delete(RAW, f"{unlabelled}/labels.csv")
    store.write(RAW, f"{never}/transactions.csv", (HEADER + ROWS).encode(), "text/csv")

    monkeypatch.setattr(function_app, "batch_store", lambda: Scoped(store, prefix))
    caplog.set_level(logging.INFO)
    run_timer()
    assert set(outputs(store, gone)) == {f"{CURATED}/{gone}/_WITHDRAWN"}
    assert f"{CURATED}/{unlabelled}/training_set.csv" not in outputs(store, unlabelled)
    for name in (kept, unlabelled, never):
        assert commit.verify_batch(store, name), name
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reconcile:")]
    assert summary == ["reconcile: 3 batch(es) brought up to date {'processed': 2, 'withdrawn': 1}"]

    # Nothing left to do: unchanged batches, the bad one included, are not run again.
    caplog.clear()
    before = {name: outputs(store, name) for name in (kept, gone, unlabelled, never, failed)}
    run_timer(past_due=True)
    assert {name: outputs(store, name) for name in before} == before
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reconcile:")]
    assert summary == ["reconcile: 0 batch(es) brought up to date {} (the timer was past due)"]


def test_a_batch_another_run_holds_is_left_to_it(store: BlobStore) -> None:
    prefix = f"r{uuid.uuid4().hex[:10]}/"
    held, other = f"{prefix}held", f"{prefix}other"
    for name in (held, other):
        publish(store, name, labels=False)
        store.delete(RAW, f"{name}/transactions.csv")
    impatient = BlobStore(store.service, lock_wait_seconds=0.3, lock_poll_seconds=0.1)
    with store.lock(held):
        results = commit.reconcile_batches(impatient, prefix=prefix)
    assert {r.batch: r.outcome for r in results} == {other: Outcome.WITHDRAWN}
    assert [r.batch for r in commit.reconcile_batches(store, prefix=prefix)] == [held]
