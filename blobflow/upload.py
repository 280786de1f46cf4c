"""``python -m features.upload``: put a batch or a model bundle into Blob Storage.

    python -m features.upload --batch demo data/transactions.csv data/labels.csv
    python -m features.upload --batch demo data/transactions.csv data/labels.csv --wait 120
    python -m features.upload --batch demo data/transactions.csv --process
    python -m features.upload --model artifacts --name current

Creates the container it writes to (raw or models) if it is missing and streams each file
up (never read whole); in Azure the containers already exist and an operator may not create
them (roles: write raw/ and models/, read curated/ and quarantine/), which is fine. The
connection comes from ``AzureWebJobsStorage`` (Azurite when it is unset). Labels are
uploaded before transactions, so a batch is processed once rather than twice.
``--process`` runs what the blob trigger would run, here, for machines without the
Functions Core Tools; ``--wait`` polls for the outputs of a running function app.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from features import blob_batch

AZURITE = "UseDevelopmentStorage=true"
POLL_SECONDS = 1.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m features.upload",
        description="Upload a batch (raw/<batch>/transactions.csv, labels.csv) or a model "
        "bundle (models/<name>/model.joblib, model.json) to Blob Storage.",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--batch", help="batch name: the folder under raw/")
    what.add_argument("--model", type=Path, help="bundle directory with model.joblib + model.json")
    parser.add_argument("files", nargs="*", type=Path, help="TRANSACTIONS [LABELS] (with --batch)")
    parser.add_argument("--name", default="current", help="bundle name under models/")
    parser.add_argument(
        "--connection-setting",
        default=blob_batch.STORAGE_SETTING,
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
        if blob_batch.parse_blob_path(f"{args.batch}/{blob_batch.TRANSACTIONS}") is None:
            parser.error(f"invalid batch name {args.batch!r} (no empty, '.', '..' or _ prefix)")
        missing = [str(p) for p in args.files if not p.is_file()]
        if missing:
            parser.error(f"file(s) not found: {', '.join(missing)}")
    elif args.files:
        parser.error("files are only taken with --batch")
    if args.wait < 0 or args.wait > 3600:
        parser.error("--wait must be between 0 and 3600 seconds")
    return args


def _store(setting: str, writes_to: tuple[str, ...]) -> blob_batch.BlobStore:
    if not os.environ.get(setting) and not os.environ.get(f"{setting}__blobServiceUri"):
        print(f"{setting} is not set: using Azurite ({AZURITE})", file=sys.stderr)
        os.environ[setting] = AZURITE
    store = blob_batch.BlobStore(blob_batch.connect(setting))
    store.ensure_containers(writes_to)
    return store


def _upload_file(store: blob_batch.BlobStore, container: str, name: str, path: Path) -> str:
    with path.open("rb") as handle:
        content_type = blob_batch.JSON_TYPE if path.suffix == ".json" else blob_batch.CSV_TYPE
        store.write(container, name, handle, content_type)
    target = f"{container}/{name}"
    print(f"uploaded {path} -> {target} ({path.stat().st_size:,} bytes)")
    return target


def upload_batch(store: blob_batch.BlobStore, batch: str, files: list[Path]) -> None:
    """Labels first, then transactions: the transactions upload then finds the batch whole."""
    names = [blob_batch.TRANSACTIONS, blob_batch.LABELS][: len(files)]
    for path, name in reversed(list(zip(files, names, strict=True))):
        _upload_file(store, blob_batch.RAW, f"{batch}/{name}", path)


def upload_model(store: blob_batch.BlobStore, bundle: Path, name: str) -> None:
    """Upload a bundle after checking that model.joblib matches its manifest's sha256."""
    from scoring.bundle import sha256_hex
    from scoring.manifest import MANIFEST_FILE, MODEL_FILE, ManifestError, parse_manifest

    model_path, manifest_path = bundle / MODEL_FILE, bundle / MANIFEST_FILE
    for path in (model_path, manifest_path):
        if not path.is_file():
            raise SystemExit(f"error: {path} not found")
    try:
        manifest = parse_manifest(manifest_path.read_bytes())
    except ManifestError as exc:
        raise SystemExit(f"error: {exc}") from None
    if sha256_hex(model_path.read_bytes()) != manifest.sha256:
        raise SystemExit(f"error: {model_path} does not match the sha256 in {manifest_path}")
    _upload_file(store, blob_batch.MODELS, f"{name}/{MODEL_FILE}", model_path)
    _upload_file(store, blob_batch.MODELS, f"{name}/{MANIFEST_FILE}", manifest_path)
    print(f"model {manifest.model_version} is {blob_batch.MODELS}/{name}")


def _local_predictor() -> blob_batch.Predictor:
    """Predictions with the bundle the function app would use (same settings)."""
    from scoring.blob_source import source_from_settings
    from scoring.bundle import BundleError, load_bundle

    loaded: list[Any] = []

    def predict(features: Any) -> Any:
        if not loaded:
            try:
                loaded.append(load_bundle(source_from_settings()))
            except BundleError as exc:
                raise blob_batch.PredictionsUnavailableError(str(exc)) from exc
        return blob_batch.predictions_frame(loaded[0], features)

    return predict


def wait_for_outputs(store: blob_batch.BlobStore, batch: str, seconds: float) -> int:
    """Poll for ``_SUCCESS`` or ``error.json`` recording the current inputs."""
    deadline = time.monotonic() + seconds
    current = store.stat(blob_batch.RAW, f"{batch}/{blob_batch.TRANSACTIONS}")
    while True:
        for marker, code in ((blob_batch.SUCCESS, 0), (blob_batch.ERROR, 1)):
            raw = store.read_small(blob_batch.CURATED, f"{batch}/{marker}")
            if raw is None:
                continue
            body = json.loads(raw)
            if current and body.get("inputs", {}).get("transactions") == current.record():
                print(f"{blob_batch.CURATED}/{batch}/{marker}:\n{raw.decode('utf-8')}")
                return code
        if time.monotonic() >= deadline:
            print(f"no outputs for batch {batch!r} after {seconds:g} s", file=sys.stderr)
            return 3
        time.sleep(POLL_SECONDS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.model is not None:
        writes_to: tuple[str, ...] = (blob_batch.MODELS,)
    elif args.process:  # processing here writes what the function app would write
        writes_to = (blob_batch.RAW, blob_batch.CURATED, blob_batch.QUARANTINE)
    else:
        writes_to = (blob_batch.RAW,)
    store = _store(args.connection_setting, writes_to)
    if args.model is not None:
        upload_model(store, args.model, args.name)
        return 0
    upload_batch(store, args.batch, args.files)
    if args.process:
        result = blob_batch.process_batch(store, args.batch, predict=_local_predictor())
        print(f"batch {args.batch!r}: {result.outcome}")
        for output in result.outputs:
            print(f"  {output}")
        if result.error:
            print(f"error: {result.error}", file=sys.stderr)
        if result.predictions:
            print(f"note: predictions.csv not written: {result.predictions}", file=sys.stderr)
        return 1 if result.outcome is blob_batch.Outcome.ERROR else 0
    if args.wait:
        return wait_for_outputs(store, args.batch, args.wait)
    return 0


if __name__ == "__main__":
    sys.exit(main())
