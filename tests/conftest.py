"""Shared fixtures: the handover files, and a real Azurite blob service on loopback.

Azurite is the npm package installed by ``npm ci``. If one already listens on the
default port (e.g. started by ``.ci/run`` or by a developer), it is reused; otherwise the
fixture starts one for the test session and stops it afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from features.blob_batch import _DEV_KEY as DEV_ACCOUNT_KEY
from features.blob_batch import CURATED, QUARANTINE, BlobStore

ROOT = Path(__file__).resolve().parents[1]
HANDOVER = ROOT.parent / "shared" / "handover"
AZURITE_HOST = "127.0.0.1"
# Another port lets two checkouts run their suites side by side (AZURITE_BLOB_PORT=10010).
AZURITE_BLOB_PORT = int(os.environ.get("AZURITE_BLOB_PORT") or 10000)
# Azurite's development account, addressed the way the Functions runtime does locally; on
# another port, the same account spelt out as a full connection string.
AZURITE_CONNECTION = (
    "UseDevelopmentStorage=true"
    if AZURITE_BLOB_PORT == 10000
    else "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    f"AccountKey={DEV_ACCOUNT_KEY};"
    f"BlobEndpoint=http://{AZURITE_HOST}:{AZURITE_BLOB_PORT}/devstoreaccount1;"
)


@pytest.fixture(scope="session")
def handover_dir() -> Path:
    """The data-science team's files as delivered (read-only). Falls back to our copies."""
    if (HANDOVER / "data" / "transactions.csv").is_file():
        return HANDOVER
    return ROOT  # data/ and artifacts/ hold byte-identical copies


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Connection string of a running Azurite blob service."""
    if _listening(AZURITE_HOST, AZURITE_BLOB_PORT):
        yield AZURITE_CONNECTION
        return
    binary = ROOT / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        pytest.fail("Azurite is not installed: run `npm ci` in the repo root")
    workdir = tmp_path_factory.mktemp("azurite")
    process = subprocess.Popen(
        [
            str(binary),
            "--blobHost",
            AZURITE_HOST,
            "--blobPort",
            str(AZURITE_BLOB_PORT),
            "--location",
            str(workdir),
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--loose",
            "--silent",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not _listening(AZURITE_HOST, AZURITE_BLOB_PORT):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"Azurite did not start on {AZURITE_HOST}:{AZURITE_BLOB_PORT}")
        time.sleep(0.1)
    try:
        yield AZURITE_CONNECTION
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def blob_outputs(store: BlobStore, batch: str) -> dict[str, bytes]:
    """Every blob under curated/<batch>/ and quarantine/<batch>/ with its bytes."""
    found = {}
    for container in (CURATED, QUARANTINE):
        client = store.service.get_container_client(container)
        for blob in client.list_blobs(name_starts_with=f"{batch}/"):
            found[f"{container}/{blob.name}"] = client.download_blob(blob.name).readall()
    return found
