"""Model bundles in Blob Storage: ``<MODEL_CONTAINER>/<MODEL_NAME>/<bundle file>``.

A ``BundleSource`` for ``scoring.bundle.load_bundle``, which checks every file's sha256
before using it; this module only fetches bytes (only names in
``scoring.manifest.BUNDLE_FILES``, never a path from a manifest) and turns storage failures
into ``BundleError`` messages that are safe to show (no account keys, no URLs with
tokens). Because it reads ``linear.json``, a linear model is served without unpickling, as
from a local directory. The function app installs ``source_from_settings`` as the model
holder's factory, so the bundle is fetched once per warm instance, on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blobflow.store import StorageNotConfiguredError, connect
from scoring.bundle import BundleError, BundleSource
from scoring.manifest import BUNDLE_FILES, MANIFEST_FILE, MODEL_FILE
from scoring.settings import Settings

# A pickled logistic regression is kilobytes; refuse anything absurd before downloading it.
MAX_BUNDLE_FILE_BYTES = 256 << 20


@dataclass(frozen=True)
class BlobBundleSource:
    """A bundle under ``<container>/<name>/`` read through a ``ContainerClient``."""

    container: Any  # azure.storage.blob.ContainerClient
    name: str

    def describe(self) -> str:
        return f"blob {self.container.container_name}/{self.name}"

    def read_file(self, file: str) -> bytes:
        """A bundle file's bytes; only the names in ``BUNDLE_FILES`` are read."""
        from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError

        if file not in BUNDLE_FILES:  # never a path from a manifest or a caller
            raise BundleError(f"{file!r} is not a bundle file")
        where = f"{self.container.container_name}/{self.name}/{file}"
        try:
            download = self.container.download_blob(f"{self.name}/{file}")
            if download.size > MAX_BUNDLE_FILE_BYTES:
                raise BundleError(f"{where} is {download.size} bytes; refusing to load it")
            return download.readall()
        except ResourceNotFoundError as exc:
            raise BundleError(f"{where} not found in blob storage") from exc
        except HttpResponseError as exc:
            raise BundleError(f"{where} could not be read (HTTP {exc.status_code})") from exc
        except AzureError as exc:  # connection, auth or timeout: message only by type
            raise BundleError(f"{where} could not be read ({type(exc).__name__})") from exc

    def read_manifest(self) -> bytes:
        return self.read_file(MANIFEST_FILE)

    def read_model(self) -> bytes:
        return self.read_file(MODEL_FILE)


def model_location(settings: Settings | None = None) -> tuple[str, str] | None:
    """``(container, name)`` when ``MODEL_CONTAINER`` is set, else None (local bundle)."""
    settings = settings or Settings.from_env()
    if settings.model_container is None:
        return None
    return settings.model_container, settings.model_name


def source_from_settings(settings: Settings | None = None) -> BundleSource:
    """The bundle source the settings ask for: blob storage when ``MODEL_CONTAINER`` is set
    (connection ``AzureWebJobsStorage``), otherwise ``MODEL_DIR`` on local disk. Without an
    argument the environment is read at each call.

    Called by ``ModelHolder`` on each load attempt; storage misconfiguration becomes a
    ``BundleError`` (a 503 naming the missing setting), never a crash at import.
    """
    settings = settings or Settings.from_env()
    location = model_location(settings)
    if location is None:
        return settings.local_source()
    container, name = location
    try:
        service = connect()
    except (StorageNotConfiguredError, ValueError) as exc:
        raise BundleError(f"model storage is not configured: {exc}") from exc
    return BlobBundleSource(service.get_container_client(container), name)
