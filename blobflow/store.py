"""Blob Storage for the batch flow: the storage operations a run needs (``BatchStore``),
their Azure SDK implementation (``BlobStore``) with its per-batch lease lock, and
``connect``, which builds a client from the Functions-style connection settings.

The lock is a lease on ``curated/_locks/<batch>``, renewed in the background while a run
holds it. A run may lose it (a renewal fails, or another process breaks it): ``Lease.confirm``
renews it on the spot and raises ``LeaseLostError`` if it is gone, and the commit protocol
confirms before every write and delete (``blobflow.commit``), so a run that lost its lease
stops before it touches a newer run's outputs. A lease cannot condition writes to other
blobs, hence the check; a broken lease cannot be renewed (Azure's Lease Blob rules).

The Azure SDK is imported where it is used, so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from blobflow.naming import CONTAINERS, CURATED, LOCK_PREFIX, QUARANTINE

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

log = logging.getLogger("blobflow.store")

STORAGE_SETTING = "AzureWebJobsStorage"

# Azurite's development account. Its key is the public, documented emulator constant (the
# same for every Azurite install); it is not a secret and only ever reaches 127.0.0.1.
DEV_ACCOUNT = "devstoreaccount1"
DEV_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
DEV_BLOB_ENDPOINT = "http://127.0.0.1:10000/devstoreaccount1"


class BatchBusyError(RuntimeError):
    """Another run holds the batch lock; raised so the runtime retries this event later."""


class LeaseLostError(BatchBusyError):
    """This run no longer holds its batch's lease (it expired and was taken, or was
    broken): it must not write. Raised so the runtime retries the event later."""


class StorageNotConfiguredError(RuntimeError):
    """No usable storage connection settings; the message names the settings to set."""


@dataclass(frozen=True)
class BlobInfo:
    etag: str
    last_modified: datetime
    size: int

    def record(self) -> dict[str, Any]:
        return {
            "etag": self.etag,
            "last_modified": self.last_modified.isoformat(),
            "size": self.size,
        }


class Lease(Protocol):
    """A held batch lock."""

    def confirm(self) -> None:
        """Raise ``LeaseLostError`` unless the lock is still held (checked with storage)."""
        ...


class BatchStore(Protocol):
    """The storage operations a batch run needs (Blob Storage in production)."""

    def stat(self, container: str, name: str) -> BlobInfo | None: ...

    def open_read(self, container: str, name: str, etag: str) -> BinaryIO:
        """A binary stream of the blob, failing if it changes while being read."""
        ...

    def read_small(self, container: str, name: str) -> bytes | None: ...

    def write(
        self, container: str, name: str, data: bytes | BinaryIO, content_type: str
    ) -> None: ...

    def delete(self, container: str, name: str) -> None:
        """Delete if present."""
        ...

    def lock(self, key: str) -> AbstractContextManager[Lease]:
        """Exclusive per-batch lock, held for the ``with`` block."""
        ...

    def list_names(self, container: str, prefix: str) -> Iterator[str]:
        """Names of the blobs in ``container`` starting with ``prefix``."""
        ...


class StoreView:
    """A ``BatchStore`` that passes every call to ``inner``: the base of views that add a
    check to some calls (``blobflow.commit.LeasedStore``; the tests' fault injectors)."""

    def __init__(self, inner: BatchStore) -> None:
        self.inner = inner

    def stat(self, container: str, name: str) -> BlobInfo | None:
        return self.inner.stat(container, name)

    def open_read(self, container: str, name: str, etag: str) -> BinaryIO:
        return self.inner.open_read(container, name, etag)

    def read_small(self, container: str, name: str) -> bytes | None:
        return self.inner.read_small(container, name)

    def write(self, container: str, name: str, data: bytes | BinaryIO, content_type: str) -> None:
        self.inner.write(container, name, data, content_type)

    def delete(self, container: str, name: str) -> None:
        self.inner.delete(container, name)

    def lock(self, key: str) -> AbstractContextManager[Lease]:
        return self.inner.lock(key)

    def list_names(self, container: str, prefix: str) -> Iterator[str]:
        return self.inner.list_names(container, prefix)


class ChunkReader(io.RawIOBase):
    """A readable raw stream over an iterator of byte chunks (a blob download's
    ``chunks()``), so the CSV reader pulls the blob range by range instead of whole."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")
        self.chunks_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self.chunks_read += 1
            self._pending = memoryview(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def connect(setting: str = STORAGE_SETTING, **client_options: Any) -> BlobServiceClient:
    """A Blob service client from the Functions-style connection settings named ``setting``.

    ``<setting>`` holding a connection string (``UseDevelopmentStorage=true`` = Azurite)
    wins; otherwise an identity-based connection: ``<setting>__blobServiceUri`` (or
    ``__serviceUri`` / ``__accountName``) with the managed identity ``<setting>__clientId``
    (or ``DefaultAzureCredential``). No key ever comes from code or reaches a log.
    """
    from azure.storage.blob import BlobServiceClient

    value = (os.environ.get(setting) or "").strip()
    if value:
        if value.replace(" ", "").lower().startswith("usedevelopmentstorage=true"):
            value = (
                f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};"
                f"AccountKey={DEV_ACCOUNT_KEY};BlobEndpoint={DEV_BLOB_ENDPOINT};"
            )
        return BlobServiceClient.from_connection_string(value, **client_options)
    uri = os.environ.get(f"{setting}__blobServiceUri") or os.environ.get(f"{setting}__serviceUri")
    account = os.environ.get(f"{setting}__accountName")
    if not uri and account:
        uri = f"https://{account}.blob.core.windows.net"
    if not uri:
        raise StorageNotConfiguredError(
            f"set {setting} (a connection string, or UseDevelopmentStorage=true for Azurite) "
            f"or {setting}__blobServiceUri for an identity-based connection"
        )
    client_id = os.environ.get(f"{setting}__clientId")
    if client_id:
        from azure.identity import ManagedIdentityCredential

        credential: Any = ManagedIdentityCredential(client_id=client_id)
    else:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return BlobServiceClient(uri, credential=credential, **client_options)


class BlobStore:
    """``BatchStore`` over Azure Blob Storage (or Azurite)."""

    def __init__(
        self,
        service: BlobServiceClient,
        *,
        lease_seconds: int = 60,
        lock_wait_seconds: float = 120.0,
        lock_poll_seconds: float = 1.0,
    ) -> None:
        self.service = service
        self.lease_seconds = lease_seconds
        self.lock_wait_seconds = lock_wait_seconds
        self.lock_poll_seconds = lock_poll_seconds
        self._containers_ready = False

    def ensure_containers(self, names: tuple[str, ...] = CONTAINERS) -> None:
        """Create missing containers. A 403 means the caller may not create containers (in
        Azure the templates create them; an operator's roles cover only some): carry on, and
        let the real read or write report a genuine lack of access."""
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        for name in names:
            try:
                self.service.create_container(name)
            except ResourceExistsError:
                pass
            except HttpResponseError as exc:
                if exc.status_code != 403:
                    raise
        self._containers_ready = True

    def _blob(self, container: str, name: str) -> Any:
        return self.service.get_blob_client(container, name)

    def stat(self, container: str, name: str) -> BlobInfo | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            p = self._blob(container, name).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return BlobInfo(etag=p.etag, last_modified=p.last_modified, size=p.size)

    def open_read(self, container: str, name: str, etag: str) -> BinaryIO:
        from azure.core import MatchConditions

        download = self._blob(container, name).download_blob(
            max_concurrency=1, etag=etag, match_condition=MatchConditions.IfNotModified
        )
        return io.BufferedReader(ChunkReader(download.chunks()), buffer_size=1 << 20)

    def read_small(self, container: str, name: str) -> bytes | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._blob(container, name).download_blob().readall()
        except ResourceNotFoundError:
            return None

    def write(self, container: str, name: str, data: bytes | BinaryIO, content_type: str) -> None:
        from azure.storage.blob import ContentSettings

        if not self._containers_ready:
            self.ensure_containers((CURATED, QUARANTINE))
        self._blob(container, name).upload_blob(
            data,
            overwrite=True,
            content_settings=ContentSettings(content_type=content_type),
            max_concurrency=2,
        )

    def delete(self, container: str, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            self._blob(container, name).delete_blob()

    def list_names(self, container: str, prefix: str) -> Iterator[str]:
        client = self.service.get_container_client(container)
        for blob in client.list_blobs(name_starts_with=prefix or None):
            yield blob.name

    @contextmanager
    def lock(self, key: str) -> Iterator[BlobLease]:
        """Exclusive per-batch lock: a renewed lease on ``curated/_locks/<key>``.

        A crashed holder's lease expires after ``lease_seconds``. Waits up to
        ``lock_wait_seconds``, then raises ``BatchBusyError`` (the runtime retries the event).
        """
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        if not self._containers_ready:
            self.ensure_containers((CURATED, QUARANTINE))
        blob = self._blob(CURATED, f"{LOCK_PREFIX}{key}")
        if not blob.exists():
            try:
                blob.upload_blob(b"", overwrite=False)
            except ResourceExistsError:
                pass
            except HttpResponseError as exc:  # leased by a racing run: exists already
                if exc.status_code != 412:
                    raise
        deadline = time.monotonic() + self.lock_wait_seconds
        while True:
            try:
                lease = blob.acquire_lease(lease_duration=self.lease_seconds)
                break
            except HttpResponseError as exc:
                if exc.status_code != 409:
                    raise
                if time.monotonic() >= deadline:
                    raise BatchBusyError(
                        f"batch {key!r} is being processed by another run"
                    ) from None
                time.sleep(self.lock_poll_seconds)
        held = BlobLease(lease, key)
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.lease_seconds / 3):
                try:
                    if not held.renew():
                        log.warning("batch=%s lock lease is lost; this run writes no more", key)
                        return
                except Exception as exc:  # network: try again at the next interval
                    log.warning("batch=%s lock lease renewal failed (%s)", key, type(exc).__name__)

        renewer = threading.Thread(target=renew, name="batch-lock-renew", daemon=True)
        renewer.start()
        try:
            yield held
        finally:
            stop.set()
            renewer.join(timeout=10)
            try:
                lease.release()
            except HttpResponseError:
                log.warning("batch=%s lock lease could not be released; it expires", key)


class BlobLease:
    """``Lease`` over a ``BlobLeaseClient``: renewing is how it checks the lease is held
    (renewal fails once the lease was broken or another client took it)."""

    def __init__(self, client: Any, key: str) -> None:
        self._client = client
        self._key = key
        self._mutex = threading.Lock()
        self.lost = False

    def renew(self) -> bool:
        """Renew now; False (and lost from then on) if the lease is gone."""
        from azure.core.exceptions import HttpResponseError

        with self._mutex:
            if self.lost:
                return False
            try:
                self._client.renew()
            except HttpResponseError:
                self.lost = True
            return not self.lost

    def confirm(self) -> None:
        if not self.renew():
            raise LeaseLostError(f"batch {self._key!r}: this run lost its lock lease; not writing")
