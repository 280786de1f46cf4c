"""The blob flow's incremental store against a real Azurite: each processed batch lands in
``curated/partials/`` and, with ``INCREMENTAL_BATCHES=all``, ``curated/_all/`` holds what one
run over every batch's rows gives."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest

from blobflow import commit
from blobflow.commit import Outcome
from blobflow.naming import CSV_TYPE, CURATED, QUARANTINE, RAW, SUCCESS, TRANSACTIONS
from blobflow.partials import ALL_BATCH, SETTING, STORE_PREFIX, blob_partials, mode_from_settings
from blobflow.store import BlobStore
from features.outputs import to_csv_text
from features.pipeline import run_pipeline
from features.reader import LINE, open_csv
from features.synthetic import generate

pytestmark = pytest.mark.azurite


def _wipe(store: BlobStore) -> None:
    for container, prefix in ((CURATED, STORE_PREFIX), (CURATED, f"{ALL_BATCH}/")):
        for name in list(store.list_names(container, prefix)):
            store.delete(container, name)
    for name in list(store.list_names(QUARANTINE, f"{ALL_BATCH}/")):
        store.delete(QUARANTINE, name)


@pytest.fixture
def clean(store: BlobStore) -> Iterator[BlobStore]:
    """The account without a partials store or whole-history outputs, before and after."""
    _wipe(store)
    yield store
    _wipe(store)


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """A messy synthetic file cut at a row start into two files (each with the header)."""
    folder = tmp_path_factory.mktemp("history")
    generate(folder, rows=2_000, customers=30, seed=11, messy=True)
    path = folder / "transactions.csv"
    starts = np.concatenate([np.asarray(b.column(LINE)) for b in open_csv(path, "t").batches])
    lines = path.read_bytes().splitlines(keepends=True)
    cut = int(starts[len(starts) // 2]) - 1  # index in ``lines`` of a row start
    return [b"".join(lines[:cut]), lines[0] + b"".join(lines[cut:])]


def _one_run(parts: list[bytes]) -> bytes:
    body = parts[0] + b"".join(p.split(b"\n", 1)[1] for p in parts[1:])
    result = run_pipeline(io.BytesIO(body), now=datetime.now(UTC))
    return to_csv_text(result.features).encode("utf-8")


def _upload(store: BlobStore, batch: str, data: bytes) -> None:
    store.write(RAW, f"{batch}/{TRANSACTIONS}", data, CSV_TYPE)


def _marker(store: BlobStore, batch: str) -> dict:
    return json.loads(store.read_small(CURATED, f"{batch}/{SUCCESS}") or b"{}")


def test_batches_build_whole_history_features_in_curated_all(
    clean: BlobStore, parts: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = clean
    monkeypatch.setenv(SETTING, "all")
    run = uuid.uuid4().hex[:8]
    batches = [f"inc-{run}-2025-01-01", f"inc-{run}-2025-01-02"]
    # The later day first: the earlier one, added second, is folded before it.
    for batch, data in zip(reversed(batches), reversed(parts), strict=True):
        _upload(store, batch, data)
        result = commit.process_batch(store, batch)
        assert result.outcome is Outcome.PROCESSED
        assert _marker(store, batch)["partials"].startswith("added")
    assert blob_partials(store).batch_names() == batches
    assert store.read_small(CURATED, f"{ALL_BATCH}/features.csv") == _one_run(parts)
    marker = json.loads(store.read_small(CURATED, f"{ALL_BATCH}/{SUCCESS}") or b"{}")
    assert marker["batches"] == batches
    report = json.loads(store.read_small(CURATED, f"{ALL_BATCH}/dq_report.json") or b"{}")
    assert report["rows_in"] == sum(p.count(b"\n") for p in parts) - len(parts) == marker["rows_in"]
    assert store.stat(QUARANTINE, f"{ALL_BATCH}/quarantine.csv") is not None

    # Withdrawn transactions leave the store, and the whole history without them.
    store.delete(RAW, f"{batches[0]}/{TRANSACTIONS}")
    assert commit.process_batch(store, batches[0]).outcome is Outcome.WITHDRAWN
    assert blob_partials(store).batch_names() == [batches[1]]
    assert store.read_small(CURATED, f"{ALL_BATCH}/features.csv") == _one_run(parts[1:])
    store.delete(RAW, f"{batches[1]}/{TRANSACTIONS}")
    assert commit.process_batch(store, batches[1]).outcome is Outcome.WITHDRAWN
    assert list(store.list_names(CURATED, f"{ALL_BATCH}/")) == []


def test_off_by_default_and_partials_mode_writes_no_whole_history(
    clean: BlobStore, parts: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = clean
    monkeypatch.delenv(SETTING, raising=False)
    batch = f"inc-{uuid.uuid4().hex[:8]}-off"
    _upload(store, batch, parts[0])
    assert commit.process_batch(store, batch).outcome is Outcome.PROCESSED
    assert "partials" not in _marker(store, batch)
    assert list(store.list_names(CURATED, STORE_PREFIX)) == []

    monkeypatch.setenv(SETTING, "partials")
    assert commit.process_batch(store, batch, force=True).outcome is Outcome.PROCESSED
    assert _marker(store, batch)["partials"] == "added"
    assert blob_partials(store).batch_names() == [batch]
    assert list(store.list_names(CURATED, f"{ALL_BATCH}/")) == []


def test_a_batch_with_another_header_keeps_its_outputs_and_is_not_added(
    clean: BlobStore, parts: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = clean
    monkeypatch.setenv(SETTING, "partials")
    run = uuid.uuid4().hex[:8]
    _upload(store, f"inc-{run}-a", parts[0])
    assert commit.process_batch(store, f"inc-{run}-a").outcome is Outcome.PROCESSED
    other = parts[1].replace(b"customer_id,", b"customer,", 1)
    _upload(store, f"inc-{run}-b", other)
    assert commit.process_batch(store, f"inc-{run}-b").outcome is Outcome.PROCESSED
    assert "header differs" in _marker(store, f"inc-{run}-b")["partials"]
    assert blob_partials(store).batch_names() == [f"inc-{run}-a"]


def test_a_misconfigured_setting_is_noted_and_the_batch_still_published(
    clean: BlobStore, parts: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = clean
    monkeypatch.setenv(SETTING, "yes")
    batch = f"inc-{uuid.uuid4().hex[:8]}-bad-setting"
    _upload(store, batch, parts[0])
    assert commit.process_batch(store, batch).outcome is Outcome.PROCESSED
    assert SETTING in _marker(store, batch)["partials"]
    assert list(store.list_names(CURATED, STORE_PREFIX)) == []


def test_the_setting_refuses_unknown_values() -> None:
    assert mode_from_settings({}) == "off"
    assert mode_from_settings({SETTING: " All "}) == "all"
    with pytest.raises(ValueError, match=SETTING):
        mode_from_settings({SETTING: "yes"})


def test_the_function_app_in_azure_starts_with_the_store_off() -> None:
    from test_infra import app_settings

    value = app_settings()[SETTING]
    assert mode_from_settings({SETTING: value}) == "off"
