"""Writing bundles: the pickle, its linear parameters, the drift reference, the manifest.

    python -m scoring.packaging --bundle artifacts    # add linear.json to an existing bundle

``write_bundle`` (used by ``scoring.train``) writes every file, then the manifest that
lists their sha256, last: a half-written bundle fails its checksums instead of serving a
mix. For a linear model the parameters are extracted from the fitted estimator and must
reproduce its ``predict_proba`` and ``decision_function`` on the given rows and on a wide
synthetic grid, or nothing is written. The CLI does the same for a bundle that already
exists (the handover model), leaving ``model.joblib`` byte for byte as it was.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scoring.bundle import (
    BundleError,
    LocalDirSource,
    read_checked,
    sha256_hex,
    unpickle,
    verify_estimator,
)
from scoring.linear import LinearParamsError, from_estimator, verify_against
from scoring.manifest import (
    LINEAR_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    REFERENCE_FILE,
    InputSpec,
    LinearSection,
    Manifest,
    ReferenceSection,
    dump_manifest,
)
from scoring.reference import Reference

VERIFY_ROWS = 5000


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; bundles are read by other processes
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def verification_matrix(inputs: Sequence[InputSpec], rows: int = VERIFY_ROWS) -> np.ndarray:
    """Rows far wider than real customers: 0/1 for optional flags; zeros and both signs
    over eight orders of magnitude elsewhere, so probabilities near 0, 1 and 0.5 all occur."""
    rng = np.random.default_rng(20261125)
    columns = []
    for spec in inputs:
        if spec.optional:
            columns.append(rng.integers(0, 2, rows).astype(float))
            continue
        magnitude = 10.0 ** rng.uniform(-3, 5, rows)
        sign = rng.choice([-1.0, 0.0, 1.0], rows, p=[0.3, 0.1, 0.6])
        columns.append(sign * magnitude)
    return np.column_stack(columns)


def linear_section(
    estimator: Any, inputs: Sequence[InputSpec], rows: np.ndarray | None = None
) -> tuple[bytes, LinearSection] | None:
    """``linear.json`` bytes and their manifest entry, or None if the model is not linear.

    Raises ``LinearParamsError`` if the extracted parameters do not reproduce the estimator.
    """
    import sklearn

    params = from_estimator(estimator)
    if params is None:
        return None
    grid = verification_matrix(inputs)
    x = grid if rows is None else np.vstack([np.asarray(rows, dtype=float), grid])
    record = verify_against(params, estimator, x)
    raw = params.to_json_bytes()
    return raw, LinearSection(
        sha256=sha256_hex(raw), verified={**record, "sklearn_version": sklearn.__version__}
    )


def write_bundle(
    out: Path,
    estimator: Any,
    manifest_fields: dict[str, Any],
    *,
    verify_rows: np.ndarray | None = None,
    reference: Reference | None = None,
) -> Manifest:
    """Write model.joblib, linear.json (linear models), reference.json (if given), then
    model.json listing their sha256. Stale optional files from an earlier bundle go."""
    import joblib
    import sklearn

    buf = io.BytesIO()
    joblib.dump(estimator, buf)
    blob = buf.getvalue()
    linear = linear_section(estimator, manifest_fields["inputs"], verify_rows)
    ref_raw = reference.to_json_bytes() if reference is not None else None
    manifest = Manifest(
        sha256=sha256_hex(blob),
        sklearn_version=sklearn.__version__,
        linear=linear[1] if linear else None,
        reference=(
            ReferenceSection(
                sha256=sha256_hex(ref_raw), computed=reference.computed, rows=reference.rows
            )
            if reference is not None and ref_raw is not None
            else None
        ),
        **manifest_fields,
    )
    files = {MODEL_FILE: blob, LINEAR_FILE: linear[0] if linear else None, REFERENCE_FILE: ref_raw}
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if data is not None:
            atomic_write(out / name, data)
    atomic_write(out / MANIFEST_FILE, dump_manifest(manifest))
    for name, data in files.items():
        if data is None:
            (out / name).unlink(missing_ok=True)
    return manifest


def add_linear(bundle: Path) -> Manifest:
    """Add verified ``linear.json`` to an existing bundle; ``model.joblib`` is untouched."""
    source = LocalDirSource(bundle)
    manifest, blob = read_checked(source)
    estimator, _, _ = unpickle(blob)
    verify_estimator(estimator, manifest)
    linear = linear_section(estimator, manifest.inputs)
    if linear is None:
        raise BundleError(f"{type(estimator).__name__} is not a supported linear model")
    raw, section = linear
    updated = manifest.model_copy(update={"linear": section})
    atomic_write(bundle / LINEAR_FILE, raw)
    atomic_write(bundle / MANIFEST_FILE, dump_manifest(updated))
    return updated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True, help="bundle directory")
    args = parser.parse_args(argv)
    try:
        manifest = add_linear(args.bundle)
    except (BundleError, LinearParamsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    assert manifest.linear is not None
    v = manifest.linear.verified
    print(
        f"wrote {LINEAR_FILE} for {manifest.model_version}: matches predict_proba on {v['rows']} "
        f"rows (max difference {v['max_abs_diff_probability']:.2g}, "
        f"scikit-learn {v['sklearn_version']})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
