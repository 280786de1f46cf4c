"""The documented operator path works with the documented roles (issue 13, item 8).

In Azure an operator may write raw/ and models/ and read curated/ and quarantine/, but may
not create containers (the templates create them). Azurite has no role-based access, so the
same limit is imposed with what it does enforce: an account SAS for blob-level operations
only (no container-level ones), over the real HTTP API. Container creation is then refused
with a 403, exactly the answer the upload CLI (`python -m blobflow.upload`) used to crash on.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from azure.storage.blob import (
    AccountSasPermissions,
    BlobServiceClient,
    ResourceTypes,
    generate_account_sas,
)

from blobflow import commit, naming, upload
from blobflow import store as blob_store
from blobflow.naming import CURATED, RAW
from blobflow.store import BlobStore

ROOT = Path(__file__).resolve().parents[1]
OPERATOR_SETTING = "OPERATOR_STORAGE"


@pytest.fixture(scope="module")
def admin(azurite: str) -> BlobStore:
    """The function app's side: full access, containers created as the templates do."""
    store = BlobStore(BlobServiceClient.from_connection_string(azurite))
    store.ensure_containers()
    return store


@pytest.fixture
def operator(admin: BlobStore, monkeypatch: pytest.MonkeyPatch) -> str:
    """A connection that may read, write and list blobs but not create containers."""
    service = admin.service
    sas = generate_account_sas(
        account_name=service.account_name,
        account_key=blob_store.DEV_ACCOUNT_KEY,
        resource_types=ResourceTypes(object=True),
        permission=AccountSasPermissions(read=True, write=True, create=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    connection = f"BlobEndpoint={service.url.rstrip('/')};SharedAccessSignature={sas}"
    monkeypatch.setenv(OPERATOR_SETTING, connection)
    return connection


def test_the_operator_credential_really_cannot_create_containers(operator: str) -> None:
    service = BlobServiceClient.from_connection_string(operator)
    with pytest.raises(HttpResponseError) as refused:
        service.create_container(f"c{uuid.uuid4().hex[:10]}")
    assert refused.value.status_code == 403


def test_upload_and_wait_work_without_container_rights(
    admin: BlobStore, operator: str, handover_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = f"op{uuid.uuid4().hex[:10]}"
    transactions = handover_dir / "data" / "transactions.csv"
    done = threading.Event()

    def function_app() -> None:
        """What the blob trigger does once the upload lands (the operator only waits)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not done.is_set():
            if admin.stat(RAW, f"{batch}/transactions.csv") is not None:
                commit.process_batch(admin, batch)
                return
            time.sleep(0.2)

    worker = threading.Thread(target=function_app)
    worker.start()
    try:
        code = upload.main(
            ["--batch", batch, str(transactions), "--wait", "60",
             "--connection-setting", OPERATOR_SETTING]
        )  # fmt: skip
    finally:
        done.set()
        worker.join(timeout=90)
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"uploaded {transactions} -> raw/{batch}/transactions.csv" in out
    assert f"{CURATED}/{batch}/_SUCCESS" in out


def test_model_upload_works_without_container_rights(
    admin: BlobStore, operator: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"op{uuid.uuid4().hex[:10]}"
    code = upload.main(
        ["--model", str(ROOT / "artifacts"), "--name", name,
         "--connection-setting", OPERATOR_SETTING]
    )  # fmt: skip
    assert code == 0
    assert admin.stat(naming.MODELS, f"{name}/model.joblib") is not None
    assert f"is {naming.MODELS}/{name}" in capsys.readouterr().out


def test_other_storage_errors_still_surface(admin: BlobStore) -> None:
    """Only a refused creation is tolerated; an unreachable account still raises."""
    unreachable = BlobServiceClient(
        "http://127.0.0.1:9/devstoreaccount1", retry_total=0, connection_timeout=2
    )
    with pytest.raises(ServiceRequestError):
        BlobStore(unreachable).ensure_containers((RAW,))
