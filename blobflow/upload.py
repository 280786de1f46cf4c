"""``python -m blobflow.upload``: put a batch or a model bundle into Blob Storage.

    python -m blobflow.upload --batch demo data/transactions.csv data/labels.csv
    python -m blobflow.upload --batch demo data/transactions.csv data/labels.csv --wait 120
    python -m blobflow.upload --batch demo data/transactions.csv --process
    python -m blobflow.upload --model artifacts --name current

(``python -m features.upload`` still works for one release: it runs this module.)

Creates the container it writes to (raw or models) if it is missing and streams each file
up (never read whole); in Azure the containers already exist and an operator may not create
them (roles: write raw/ and models/, read curated/ and quarantine/), which is fine. The
connection comes from ``AzureWebJobsStorage`` (Azurite when it is unset). Labels are
uploaded before transactions, so a batch is processed once rather than twice.
``--process`` runs what the blob trigger would run, here, for machines without the
Functions Core Tools; ``--wait`` polls for the outputs of a running function app.

A model bundle is uploaded whole: every file its manifest checksums (``model.joblib`` and,
when the manifest lists them, ``linear.json`` and ``reference.json``), each checked
against the manifest first, and ``model.json`` last, so a reader never finds a manifest
whose files are not there yet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from blobflow.bundle_source import source_from_settings
from blobflow.commit import Outcome, process_batch
from blobflow.naming import (
    CSV_TYPE,
    CURATED,
    ERROR,
    JSON_TYPE,
    LABELS,
    MODELS,
    QUARANTINE,
    RAW,
    SUCCESS,
    TRANSACTIONS,
    parse_blob_path,
)
from blobflow.predict import source_predictor
from blobflow.store import STORAGE_SETTING, BlobStore, connect
from scoring.bundle import sha256_hex
from scoring.manifest import (
    LINEAR_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    REFERENCE_FILE,
    Manifest,
    ManifestError,
    parse_manifest,
)

AZURITE = "UseDevelopmentStorage=true"
POLL_SECONDS = 1.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m blobflow.upload",
        description="Upload a batch (raw/<batch>/transactions.csv, labels.csv) or a model "
        "bundle (models/<name>/: model.json and the files it checksums) to Blob Storage.",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--batch", help="batch name: the folder under raw/")
    what.add_argument("--model", type=Path, help="bundle directory (model.json and its files)")
    parser.add_argument("files", nargs="*", type=Path, help="TRANSACTIONS [LABELS] (with --batch)")
    parser.add_argument("--name", default="current", help="bundle name under models/")
    parser.add_argument(
        "--connection-setting",
        default=STORAGE_SETTING,
        help="environment variable holding the connection (default: %(default)s)",
    )
    parser.add_argument(
        "--process", action="store_true", help="process the batch here, as the trigger would"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to SECONDS for the function app to publish the batch's outputs",
    )
    args = parser.parse_args(argv)
    if args.batch is not None:
        if not 1 <= len(args.files) <= 2:
            parser.error("--batch needs TRANSACTIONS and optionally LABELS")
        if parse_blob_path(f"{args.batch}/{TRANSACTIONS}") is None:
            parser.error(f"invalid batch name {args.batch!r} (no empty, '.', '..' or _ prefix)")
        missing = [str(p) for p in args.files if not p.is_file()]
        if missing:
            parser.error(f"file(s) not found: {', '.join(missing)}")
    elif args.files:
        parser.error("files are only taken with --batch")
    if args.wait < 0 or args.wait > 3600:
        parser.error("--wait must be between 0 and 3600 seconds")
    return args


def _store(setting: str, writes_to: tuple[str, ...]) -> BlobStore:
    if not os.environ.get(setting) and not os.environ.get(f"{setting}__blobServiceUri"):
        print(f"{setting} is not set: using Azurite ({AZURITE})", file=sys.stderr)
        os.environ[setting] = AZURITE
    store = BlobStore(connect(setting))
    store.ensure_containers(writes_to)
    return store


def _upload_file(store: BlobStore, container: str, name: str, path: Path) -> str:
    with path.open("rb") as handle:
        content_type = JSON_TYPE if path.suffix == ".json" else CSV_TYPE
        store.write(container, name, handle, content_type)
    target = f"{container}/{name}"
    print(f"uploaded {path} -> {target} ({path.stat().st_size:,} bytes)")
    return target


def upload_batch(store: BlobStore, batch: str, files: list[Path]) -> None:
    """Labels first, then transactions: the transactions upload then finds the batch whole."""
    names = [TRANSACTIONS, LABELS][: len(files)]
    for path, name in reversed(list(zip(files, names, strict=True))):
        _upload_file(store, RAW, f"{batch}/{name}", path)


def checksummed_files(manifest: Manifest) -> dict[str, str]:
    """Every bundle file the manifest vouches for, with the sha256 it records."""
    files = {MODEL_FILE: manifest.sha256}
    if manifest.linear is not None:
        files[LINEAR_FILE] = manifest.linear.sha256
    if manifest.reference is not None:
        files[REFERENCE_FILE] = manifest.reference.sha256
    return files


def upload_model(store: BlobStore, bundle: Path, name: str) -> None:
    """Upload a bundle: each file the manifest checksums, after checking it matches, then
    the manifest itself (last)."""
    manifest_path = bundle / MANIFEST_FILE
    if not manifest_path.is_file():
        raise SystemExit(f"error: {manifest_path} not found")
    try:
        manifest = parse_manifest(manifest_path.read_bytes())
    except ManifestError as exc:
        raise SystemExit(f"error: {exc}") from None
    files = checksummed_files(manifest)
    for file, sha256 in files.items():
        path = bundle / file
        if not path.is_file():
            raise SystemExit(f"error: {path} not found (listed in {manifest_path})")
        if sha256_hex(path.read_bytes()) != sha256:
            raise SystemExit(f"error: {path} does not match the sha256 in {manifest_path}")
    for file in files:
        _upload_file(store, MODELS, f"{name}/{file}", bundle / file)
    _upload_file(store, MODELS, f"{name}/{MANIFEST_FILE}", manifest_path)
    print(f"model {manifest.model_version} is {MODELS}/{name}")


def wait_for_outputs(store: BlobStore, batch: str, seconds: float) -> int:
    """Poll for ``_SUCCESS`` or ``error.json`` recording the current inputs."""
    deadline = time.monotonic() + seconds
    current = store.stat(RAW, f"{batch}/{TRANSACTIONS}")
    while True:
        for marker, code in ((SUCCESS, 0), (ERROR, 1)):
            raw = store.read_small(CURATED, f"{batch}/{marker}")
            if raw is None:
                continue
            body = json.loads(raw)
            if current and body.get("inputs", {}).get("transactions") == current.record():
                print(f"{CURATED}/{batch}/{marker}:\n{raw.decode('utf-8')}")
                return code
        if time.monotonic() >= deadline:
            print(f"no outputs for batch {batch!r} after {seconds:g} s", file=sys.stderr)
            return 3
        time.sleep(POLL_SECONDS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.model is not None:
        writes_to: tuple[str, ...] = (MODELS,)
    elif args.process:  # processing here writes what the function app would write
        writes_to = (RAW, CURATED, QUARANTINE)
    else:
        writes_to = (RAW,)
    store = _store(args.connection_setting, writes_to)
    if args.model is not None:
        upload_model(store, args.model, args.name)
        return 0
    upload_batch(store, args.batch, args.files)
    if args.process:
        # Predictions with the bundle the function app would use (same settings).
        result = process_batch(store, args.batch, predict=source_predictor(source_from_settings))
        print(f"batch {args.batch!r}: {result.outcome}")
        for output in result.outputs:
            print(f"  {output}")
        if result.error:
            print(f"error: {result.error}", file=sys.stderr)
        if result.predictions:
            print(f"note: predictions.csv not written: {result.predictions}", file=sys.stderr)
        elif result.drift:
            print(f"note: drift.json not written: {result.drift}", file=sys.stderr)
        return 1 if result.outcome is Outcome.ERROR else 0
    if args.wait:
        return wait_for_outputs(store, args.batch, args.wait)
    return 0


if __name__ == "__main__":
    sys.exit(main())
