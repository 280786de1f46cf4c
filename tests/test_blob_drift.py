"""Drift with every blob batch (issue 18), end to end against a real Azurite.

The retrained bundle (``artifacts/trained``, which carries ``reference.json``) is uploaded to
``models/`` and served to the function app from there, as in Azure. Batches of synthetic
transactions from the generating process behind that bundle go through the indexed blob
function: a fresh batch drifts nowhere, a batch whose credits are ten times larger names
the money inputs that moved. ``drift.json`` is listed (with its sha256) in ``_SUCCESS``,
every PSI is logged as one ``drift_psi`` line of names and numbers, and a bundle without a
reference (the handover model) or with a tampered one gives no ``drift.json`` and a note in
``_SUCCESS``, never an error.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import blob_outputs as outputs
from conftest import serving
from test_function_blob import new_batch, trigger

import function_app
from blobflow import commit
from blobflow.bundle_source import source_from_settings
from blobflow.commit import Outcome
from blobflow.metrics import DRIFT_METRIC, parse_metric_line
from blobflow.naming import CURATED, MODELS, RAW
from blobflow.store import BlobStore
from blobflow.upload import upload_batch, upload_model
from scoring.bundle import LocalDirSource, load_bundle
from scoring.drift import compute_drift, load_reference, matrix_from_features
from scoring.manifest import REFERENCE_FILE

ROOT = Path(__file__).resolve().parents[1]
TRAINED = ROOT / "artifacts" / "trained"
HANDOVER = ROOT / "artifacts"

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Transactions (and, beside them, labels with decision dates) from the process the
    trained bundle was fitted on (its card: 150 rows per applicant, decision dates, histories
    of mixed lengths), with a seed of their own: new customers."""
    out = tmp_path_factory.mktemp("synthetic")
    subprocess.run(
        [sys.executable, "-m", "features.synthetic", "--rows", "180000", "--customers", "1200",
         "--seed", "7", "--out", str(out)],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return out / "transactions.csv"


@pytest.fixture
def serve_bundle(store: BlobStore) -> Iterator[Any]:
    """``serve_bundle(directory)`` uploads a bundle to ``models/<unique>/`` and serves the
    function app (HTTP and batch) from it, through the blob bundle source used in Azure."""
    with pytest.MonkeyPatch.context() as mp:
        stack: list[Any] = []

        def serve(directory: Path) -> str:
            name = f"drift-{uuid.uuid4().hex[:8]}"
            upload_model(store, directory, name)
            mp.setenv("MODEL_CONTAINER", MODELS)
            mp.setenv("MODEL_NAME", name)
            context = serving(function_app.http_app, source_from_settings)
            context.__enter__()
            stack.append(context)
            return name

        try:
            yield serve
        finally:
            for context in reversed(stack):
                context.__exit__(None, None, None)


def drift_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    found = []
    for record in caplog.records:
        parsed = parse_metric_line(record.getMessage(), DRIFT_METRIC)
        if parsed is not None:
            found.append(parsed)
    return found


def credits_times_ten(path: Path) -> bytes:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    credit = table["type"] == "credit"
    table.loc[credit, "amount"] = [str(Decimal(a) * 10) for a in table.loc[credit, "amount"]]
    return table.to_csv(index=False).encode("utf-8")


def expected_report(features_csv: bytes, tmp_path: Path) -> dict[str, Any]:
    """The drift report computed independently of the blob flow: the bundle loaded from disk,
    the published features.csv read back as a file, ``scoring.drift``'s pure core."""
    path = tmp_path / "features.csv"
    path.write_bytes(features_csv)
    source = LocalDirSource(TRAINED)
    model = load_bundle(source)
    matrix = matrix_from_features(model.manifest, path)
    scores = model.scorer.probabilities(matrix)
    return compute_drift(load_reference(source, model.manifest), model.manifest, matrix, scores)


def test_a_batch_from_the_training_process_writes_drift_json_and_drifts_nowhere(
    store: BlobStore,
    synthetic: Path,
    serve_bundle: Any,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    serve_bundle(TRAINED)
    batch = new_batch()
    upload_batch(store, batch, [synthetic, synthetic.parent / "labels.csv"])
    caplog.set_level(logging.INFO)
    trigger(store, batch, "transactions.csv")

    found = outputs(store, batch)
    done = json.loads(found[f"{CURATED}/{batch}/_SUCCESS"])
    path = f"{CURATED}/{batch}/drift.json"
    assert done["drift"] == "written" and done["drifted"] == []
    assert done["outputs"][path]["sha256"] == hashlib.sha256(found[path]).hexdigest()
    report = json.loads(found[path])
    assert report["rows"] == done["customers"] == 1200
    assert report["drifted"] == [] and not report["score"]["drifted"]
    # The same numbers as scoring.drift on the published features.csv, computed apart.
    assert report == expected_report(found[f"{CURATED}/{batch}/features.csv"], tmp_path)

    lines = drift_lines(caplog)
    names = [*report["features"], "score"]
    assert [line["feature"] for line in lines] == names  # one line per PSI, in order
    for line in lines:
        entry = (
            report["score"] if line["feature"] == "score" else report["features"][line["feature"]]
        )
        assert line["psi"] == entry["psi"] and line["drifted"] is False
        assert line["batch"] == batch and line["threshold"] == report["threshold"]
        assert set(line) == {"metric", "feature", "psi", "drifted", "threshold", "rows",
                             "model_version", "batch"}  # fmt: skip
    # Names and numbers only: no customer id from the batch appears in any log line.
    ids = set(pd.read_csv(io.BytesIO(found[f"{CURATED}/{batch}/features.csv"]))["customer_id"])
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert not [i for i in ids if i in text]


def test_a_shifted_batch_names_the_inputs_that_moved(
    store: BlobStore, synthetic: Path, serve_bundle: Any, caplog: pytest.LogCaptureFixture
) -> None:
    serve_bundle(TRAINED)
    batch = new_batch()
    labels = synthetic.parent / "labels.csv"
    store.write(RAW, f"{batch}/labels.csv", labels.read_bytes(), "text/csv")
    store.write(RAW, f"{batch}/transactions.csv", credits_times_ten(synthetic), "text/csv")
    caplog.set_level(logging.INFO)
    trigger(store, batch, "transactions.csv")

    found = outputs(store, batch)
    report = json.loads(found[f"{CURATED}/{batch}/drift.json"])
    assert "rent_burden" in report["drifted"]  # rent over ten times the income
    assert "transactions_per_month" not in report["drifted"]  # counts did not move
    assert json.loads(found[f"{CURATED}/{batch}/_SUCCESS"])["drifted"] == report["drifted"]
    # What the alert query does with the logged lines: PSI at or above the threshold.
    lines = drift_lines(caplog)
    alerting = {line["feature"] for line in lines if line["psi"] >= line["threshold"]}
    expected = set(report["drifted"]) | ({"score"} if report["score"]["drifted"] else set())
    assert alerting == expected and alerting
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "drift:" in r.getMessage()
    ]
    assert len(warnings) == 1 and "rent_burden" in warnings[0].getMessage()


def test_the_handover_bundle_has_no_reference_so_no_drift_json_and_a_note(
    store: BlobStore, synthetic: Path, serve_bundle: Any, caplog: pytest.LogCaptureFixture
) -> None:
    serve_bundle(HANDOVER)
    batch = new_batch()
    upload_batch(store, batch, [synthetic])
    caplog.set_level(logging.INFO)
    trigger(store, batch, "transactions.csv")

    found = outputs(store, batch)
    assert f"{CURATED}/{batch}/predictions.csv" in found
    assert f"{CURATED}/{batch}/drift.json" not in found
    done = json.loads(found[f"{CURATED}/{batch}/_SUCCESS"])
    assert done["status"] == "ok" and done["predictions"] == "written"
    assert done["drift"].startswith("drift not computed:") and REFERENCE_FILE in done["drift"]
    assert done["drifted"] is None
    assert drift_lines(caplog) == []


def test_a_tampered_reference_is_a_note_not_an_error(
    store: BlobStore, synthetic: Path, serve_bundle: Any
) -> None:
    name = serve_bundle(TRAINED)
    reference = json.loads((TRAINED / REFERENCE_FILE).read_text())
    reference["rows"] += 1  # still valid JSON, no longer the bytes the manifest vouches for
    store.write(
        MODELS, f"{name}/{REFERENCE_FILE}", json.dumps(reference).encode(), "application/json"
    )
    batch = new_batch()
    upload_batch(store, batch, [synthetic])
    trigger(store, batch, "transactions.csv")

    found = outputs(store, batch)
    done = json.loads(found[f"{CURATED}/{batch}/_SUCCESS"])
    assert f"{CURATED}/{batch}/drift.json" not in found
    assert done["status"] == "ok" and done["predictions"] == "written"
    assert "sha256" in done["drift"] or "checksum" in done["drift"]


def test_a_rerun_without_a_reference_removes_the_old_drift_json(
    store: BlobStore, synthetic: Path, serve_bundle: Any
) -> None:
    serve_bundle(TRAINED)
    batch = new_batch()
    upload_batch(store, batch, [synthetic])
    trigger(store, batch, "transactions.csv")
    assert f"{CURATED}/{batch}/drift.json" in outputs(store, batch)

    serve_bundle(HANDOVER)  # the model behind the service changes; the batch is rerun
    result = commit.process_batch(store, batch, predict=function_app.batch_predictor(), force=True)
    assert result.outcome is Outcome.PROCESSED and result.drift is not None
    found = outputs(store, batch)
    assert f"{CURATED}/{batch}/drift.json" not in found
    done = json.loads(found[f"{CURATED}/{batch}/_SUCCESS"])
    assert not [p for p in done["outputs"] if p.endswith("drift.json")]
    assert commit.verify_batch(store, batch)


def test_without_a_model_the_note_says_so(store: BlobStore, synthetic: Path) -> None:
    batch = new_batch()
    upload_batch(store, batch, [synthetic])
    result = commit.process_batch(store, batch)  # no predictor: as with --process and no model
    assert result.outcome is Outcome.PROCESSED
    done = json.loads(outputs(store, batch)[f"{CURATED}/{batch}/_SUCCESS"])
    assert done["drift"] == done["predictions"] == "no model configured for this run"


def test_batch_predictions_are_the_api_rule_on_the_same_matrix(
    synthetic: Path, tmp_path: Path
) -> None:
    """``score_batch`` assembles the input matrix once for predictions and drift; its
    predictions must be exactly ``scoring.predict.score_table``'s (one threshold rule)."""
    from blobflow.predict import score_batch
    from features.pipeline import run_pipeline
    from scoring.predict import score_table

    features = run_pipeline(synthetic, None).features
    model = load_bundle(LocalDirSource(TRAINED))
    scores = score_batch(model, features)
    pd.testing.assert_frame_equal(scores.predictions, pd.DataFrame(score_table(model, features)))
    assert scores.drift is not None and scores.drift_note is None
    assert scores.drift["rows"] == len(features)


@pytest.mark.parametrize(("bundle", "drift_written"), [(TRAINED, True), (HANDOVER, False)])
def test_the_upload_cli_process_writes_drift_or_says_why_not(
    store: BlobStore,
    synthetic: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    bundle: Path,
    drift_written: bool,
) -> None:
    """``python -m blobflow.upload --process`` (for machines without Functions Core Tools)
    runs the same batch code with the local bundle: drift.json, or a note on stderr."""
    from blobflow.upload import main

    monkeypatch.delenv("MODEL_CONTAINER", raising=False)
    monkeypatch.setenv("MODEL_DIR", str(bundle))
    batch = new_batch()
    assert main(["--batch", batch, str(synthetic), "--process"]) == 0
    err = capsys.readouterr().err
    found = outputs(store, batch)
    assert (f"{CURATED}/{batch}/drift.json" in found) is drift_written
    assert ("drift.json not written" in err) is not drift_written
