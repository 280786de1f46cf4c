"""Drift: compare a batch of features with the bundle's training reference.

    python -m scoring.drift --bundle artifacts/trained --features out/features.csv \\
        --out drift.json [--plot drift.png]

For every model input and for the model's score, the batch's shares over the reference
bins give a Population Stability Index (``scoring.reference``); inputs at or above the
threshold are listed in ``drifted``. ``compute_drift`` is pure (numpy in, dict out) so the
blob-triggered batch can call it on the matrix and scores it already has; the CLI adds file
I/O and an optional picture. Nothing here reads or writes customer ids, and errors name
columns, never values.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from scoring.bundle import (
    BundleError,
    BundleSource,
    LoadedModel,
    LocalDirSource,
    load_bundle,
    read_verified,
)
from scoring.manifest import REFERENCE_FILE, Manifest
from scoring.reference import (
    DRIFT_THRESHOLD,
    PSI_FLOOR,
    Profile,
    Reference,
    ReferenceError,
    parse_reference,
    psi,
)

# Below this many rows a 10-bin PSI is mostly sampling noise; the report says so.
MIN_RELIABLE_ROWS = 500


class DriftError(ValueError):
    """Drift cannot be computed; a one-line message, safe to show and log."""


def load_reference(source: BundleSource, manifest: Manifest) -> Reference:
    """The bundle's reference profile, checksum-verified and matched to the manifest."""
    if manifest.reference is None:
        raise DriftError(
            f"bundle {manifest.model_version} has no drift reference ({REFERENCE_FILE}); "
            "bundles written by python -m scoring.train have one"
        )
    try:
        raw = read_verified(source, REFERENCE_FILE, manifest.reference.sha256)
        reference = parse_reference(raw)
    except (BundleError, ReferenceError) as exc:
        raise DriftError(str(exc)) from exc
    if [i.name for i in reference.inputs] != [i.name for i in manifest.inputs]:
        raise DriftError(f"{REFERENCE_FILE} does not describe this model's inputs")
    return reference


def drift_for_model(
    model: LoadedModel, matrix: np.ndarray, scores: np.ndarray, threshold: float = DRIFT_THRESHOLD
) -> dict[str, Any]:
    """``compute_drift`` with the reference of the bundle ``model`` was loaded from (read
    and checksum-verified now). Raises ``DriftError`` (no reference, tampered, unreadable)."""
    if model.bundle_source is None:
        raise DriftError("the model does not record where its bundle came from")
    reference = load_reference(model.bundle_source, model.manifest)
    return compute_drift(reference, model.manifest, matrix, scores, threshold)


def psi_records(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat record per PSI (every feature, then the score), for structured logs and
    metrics: names, numbers and the model version only, never customer data."""
    entries = [*report["features"].items(), ("score", report["score"])]
    return [
        {
            "metric": "drift_psi",
            "feature": name,
            "psi": entry["psi"],
            "drifted": entry["drifted"],
            "threshold": report["threshold"],
            "rows": report["rows"],
            "model_version": report["model_version"],
        }
        for name, entry in entries
    ]


def _entry(profile: Profile, batch: np.ndarray, threshold: float) -> dict[str, Any]:
    shares = profile.shares_of(batch)
    value = psi(np.asarray(profile.shares), shares)
    return {
        "psi": round(value, 6),
        "drifted": value >= threshold,
        "kind": profile.kind,
        "bins": profile.labels(),
        "reference": [round(s, 6) for s in profile.shares],
        "batch": [round(float(s), 6) for s in shares],
    }


def compute_drift(
    reference: Reference,
    manifest: Manifest,
    matrix: np.ndarray,
    scores: np.ndarray,
    threshold: float = DRIFT_THRESHOLD,
) -> dict[str, Any]:
    """The drift report for one batch: ``matrix`` is (rows, model inputs) in manifest
    order, as assembled for scoring, and ``scores`` the model's probabilities for it.

    Features are keyed by the features-file column that feeds each input.
    """
    matrix = np.asarray(matrix, dtype=float)
    scores = np.asarray(scores, dtype=float)
    if [i.name for i in reference.inputs] != [i.name for i in manifest.inputs]:
        raise DriftError(f"{REFERENCE_FILE} does not describe this model's inputs")
    if matrix.ndim != 2 or matrix.shape[1] != len(reference.inputs):
        raise DriftError(f"expected {len(reference.inputs)} input columns")
    if matrix.shape[0] == 0 or scores.shape != (matrix.shape[0],):
        raise DriftError("the batch has no rows, or scores do not match its rows")
    if not (np.isfinite(matrix).all() and np.isfinite(scores).all()):
        raise DriftError("the batch has empty or non-finite values")
    features = {
        spec.column: {"input": spec.name, **_entry(spec.profile, matrix[:, j], threshold)}
        for j, spec in enumerate(reference.inputs)
    }
    rows = int(matrix.shape[0])
    report = {
        "rows": rows,
        "threshold": threshold,
        "psi_floor": PSI_FLOOR,
        "model_version": manifest.model_version,
        "reference": {"computed": _iso(reference), "rows": reference.rows},
        "features": features,
        "score": _entry(reference.score, scores, threshold),
        "drifted": [name for name, f in features.items() if f["drifted"]],
        "warnings": [],
    }
    if rows < MIN_RELIABLE_ROWS:
        report["warnings"].append(
            f"only {rows} rows: PSI over {len(reference.score.shares)} bins is noisy below "
            f"about {MIN_RELIABLE_ROWS} rows"
        )
    return report


def _iso(reference: Reference) -> str:
    return reference.computed.isoformat().replace("+00:00", "Z")


def matrix_from_features(manifest: Manifest, path: Path) -> np.ndarray:
    """The model-input matrix from a features CSV (``features.csv`` or a training set):
    each input from the first column its manifest entry accepts."""
    import pandas as pd

    try:
        header = pd.read_csv(path, nrows=0).columns
    except FileNotFoundError as exc:
        raise DriftError(f"features file not found: {path.name}") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DriftError(f"features file is not a readable CSV ({type(exc).__name__})") from exc
    chosen, missing = [], []
    for spec in manifest.inputs:
        column = next((a for a in spec.accepts if a in header), None)
        if column is None:
            missing.append(spec.accepts[0])
        else:
            chosen.append(column)
    if missing:
        raise DriftError(f"features file lacks columns the model needs: {missing}")
    try:
        frame = pd.read_csv(path, usecols=chosen)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DriftError(f"features file is not a readable CSV ({type(exc).__name__})") from exc
    bad = [c for c in chosen if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise DriftError(f"non-numeric values in columns {bad}")
    matrix = frame[chosen].to_numpy(dtype=float)
    if matrix.shape[0] == 0:
        raise DriftError("features file has no rows")
    empty = [c for j, c in enumerate(chosen) if not np.isfinite(matrix[:, j]).all()]
    if empty:
        raise DriftError(f"empty or non-finite values in columns {empty}")
    return matrix


def plot_drift(report: dict[str, Any], out: Path) -> None:
    """Reference vs batch shares for the score and every drifted input, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("model score", report["score"])] + [
        (name, report["features"][name]) for name in report["drifted"]
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.2 * len(panels)), squeeze=False)
    for ax, (name, entry) in zip(axes[:, 0], panels, strict=True):
        x = np.arange(len(entry["bins"]))
        ax.bar(x - 0.2, entry["reference"], width=0.4, label="reference (training)")
        ax.bar(x + 0.2, entry["batch"], width=0.4, label="this batch")
        ax.set_xticks(x, entry["bins"], rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("share of rows")
        flag = "DRIFTED" if entry["drifted"] else "stable"
        ax.set_title(f"{name}: PSI {entry['psi']:.3f} ({flag}, threshold {report['threshold']})")
        ax.legend(fontsize=8)
    if not report["drifted"]:
        fig.suptitle("No input at or above the PSI threshold")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def run(bundle: Path, features: Path, threshold: float = DRIFT_THRESHOLD) -> dict[str, Any]:
    """Load the bundle (checksums verified), score the file, compare with the reference."""
    source = LocalDirSource(bundle)
    try:
        model = load_bundle(source)
    except BundleError as exc:
        raise DriftError(f"bundle cannot be loaded: {exc}") from exc
    reference = load_reference(source, model.manifest)
    matrix = matrix_from_features(model.manifest, features)
    scores = model.scorer.probabilities(matrix)
    return compute_drift(reference, model.manifest, matrix, scores, threshold)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True, help="model bundle directory")
    parser.add_argument("--features", type=Path, required=True, help="features CSV")
    parser.add_argument("--out", type=Path, required=True, help="drift.json to write")
    parser.add_argument("--plot", type=Path, help="PNG of reference vs batch distributions")
    parser.add_argument("--threshold", type=float, default=DRIFT_THRESHOLD)
    args = parser.parse_args(argv)
    if args.threshold <= 0:
        parser.error("--threshold must be positive")
    import json

    from scoring.packaging import atomic_write

    try:
        report = run(args.bundle, args.features, args.threshold)
    except DriftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    atomic_write(args.out, (json.dumps(report, indent=2) + "\n").encode("utf-8"))
    if args.plot:
        plot_drift(report, args.plot)
    print(
        f"{report['rows']} rows vs reference of {report['reference']['rows']}: "
        f"score PSI {report['score']['psi']}, drifted inputs: {report['drifted'] or 'none'}"
    )
    for warning in report["warnings"]:
        print(f"warning: {warning}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
