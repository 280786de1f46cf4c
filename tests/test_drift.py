"""Drift: PSI against the bundle's training reference, through ``python -m scoring.drift``.

A bundle is trained here on a synthetic training set with a known generating process; a
fresh batch from the same process must drift nowhere, and a batch with one input shifted
must name exactly that input. The handover bundle (no reference) and a tampered reference
fail with one line and exit code 2.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_scoring_train import build_training_set, run_train

from features.definitions import FEATURES, ID
from scoring.bundle import LocalDirSource, load_bundle
from scoring.drift import DriftError, compute_drift, drift_for_model, load_reference, psi_records
from scoring.reference import (
    PSI_FLOOR,
    categorical_profile,
    numeric_profile,
    parse_reference,
    psi,
)
from scoring.settings import PROJECT_ROOT

HANDOVER = PROJECT_ROOT / "artifacts"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("drift")
    csv = build_training_set(base / "data", n=3000, seed=5)
    done = run_train("--training-set", str(csv), "--out", str(base / "bundle"))
    assert done.returncode == 0, done.stderr
    return base / "bundle"


def inputs_of(bundle: Path) -> list[str]:
    """The bundle's model inputs (the training selection keeps a subset of the features)."""
    return [i["name"] for i in json.loads((bundle / "model.json").read_text())["inputs"]]


def batch(directory: Path, seed: int, n: int = 2000) -> pd.DataFrame:
    """A features file from the training process (a different seed: new customers)."""
    csv = build_training_set(directory / f"batch{seed}", n=n, seed=seed)
    return pd.read_csv(csv).drop(columns=["defaulted"])


def drift(bundle: Path, features: pd.DataFrame, tmp_path: Path, *extra: str):
    csv = tmp_path / "features.csv"
    features.to_csv(csv, index=False)
    out = tmp_path / "drift.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "scoring.drift",
            "--bundle",
            str(bundle),
            "--features",
            str(csv),
            "--out",
            str(out),
            *extra,
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(out.read_text()) if done.returncode == 0 else None
    return done, report


def test_a_batch_from_the_training_process_drifts_nowhere(bundle: Path, tmp_path: Path) -> None:
    features = batch(tmp_path, seed=11)
    done, report = drift(bundle, features, tmp_path)
    assert done.returncode == 0, done.stderr
    assert report["rows"] == 2000 and report["threshold"] == 0.25
    assert report["drifted"] == []
    assert set(report["features"]) == set(inputs_of(bundle))
    assert {"has_gambling", "has_salary", "has_fee"} & set(report["features"])
    assert max(f["psi"] for f in report["features"].values()) < 0.05
    assert report["score"]["psi"] < 0.05 and report["score"]["drifted"] is False
    assert report["warnings"] == []
    assert "drifted inputs: none" in done.stdout
    # No customer data in the report: ids never appear.
    text = (tmp_path / "drift.json").read_text()
    assert not any(cid in text for cid in features[ID].head(50))


@pytest.mark.parametrize(
    ("kind", "shift"),
    [
        ("money", lambda s: s * 3),  # money: a richer population
        ("flag", lambda s: (s | (np.arange(len(s)) % 3 > 0)).astype(int)),  # a flag
    ],
)
def test_a_shifted_input_is_named(bundle: Path, tmp_path: Path, kind: str, shift) -> None:
    kinds = {f.name: f.kind for f in FEATURES}
    column = next(n for n in inputs_of(bundle) if kinds[n] == kind)
    features = batch(tmp_path, seed=12)
    features[column] = shift(features[column])
    done, report = drift(bundle, features, tmp_path)
    assert done.returncode == 0, done.stderr
    assert report["drifted"] == [column]
    entry = report["features"][column]
    assert entry["psi"] >= 0.25 and entry["drifted"] is True
    # The entry is self-explanatory: the PSI follows from the shares it shows.
    assert entry["psi"] == pytest.approx(psi(entry["reference"], entry["batch"]), abs=1e-5)
    others = [f["psi"] for name, f in report["features"].items() if name != column]
    assert max(others) < 0.05


def test_more_gamblers_also_move_the_score(bundle: Path, tmp_path: Path) -> None:
    """has_gambling drives default in the generating process, so the score shifts too."""
    features = batch(tmp_path, seed=13)
    features["has_gambling"] = 1
    _, report = drift(bundle, features, tmp_path, "--plot", str(tmp_path / "drift.png"))
    assert report["score"]["drifted"] is True
    png = (tmp_path / "drift.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_the_handover_bundle_has_no_reference_one_line_exit_2(tmp_path: Path) -> None:
    features = batch(tmp_path, seed=14, n=50)
    done, _ = drift(HANDOVER, features, tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: bundle handover-logreg@0.1.0-placeholder has no drift")
    assert not (tmp_path / "drift.json").exists()


def test_a_tampered_reference_is_refused(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    ref = json.loads((copy / "reference.json").read_text())
    ref["inputs"][1]["shares"] = list(reversed(ref["inputs"][1]["shares"]))
    (copy / "reference.json").write_text(json.dumps(ref))
    done, _ = drift(copy, batch(tmp_path, seed=15, n=100), tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "reference.json sha256" in done.stderr and "refusing to use it" in done.stderr


def test_missing_and_bad_columns_are_named_without_values(bundle: Path, tmp_path: Path) -> None:
    features = batch(tmp_path, seed=16, n=100)
    first, last = inputs_of(bundle)[0], inputs_of(bundle)[-1]
    done, _ = drift(bundle, features.drop(columns=[first]), tmp_path)
    assert done.returncode == 2 and f"['{first}']" in done.stderr
    features[last] = features[last].astype(object)
    features.loc[3, last] = "lots"
    done, _ = drift(bundle, features, tmp_path)
    assert done.returncode == 2 and f"['{last}']" in done.stderr and "lots" not in done.stderr


def test_small_batches_are_flagged_as_noisy(bundle: Path, tmp_path: Path) -> None:
    done, report = drift(bundle, batch(tmp_path, seed=17, n=40), tmp_path)
    assert done.returncode == 0
    assert report["rows"] == 40 and "noisy" in report["warnings"][0]


def test_compute_drift_is_the_pure_call_the_blob_batch_makes(bundle: Path, tmp_path: Path) -> None:
    """The in-process API: a loaded model, its verified reference, the matrix it scored."""
    source = LocalDirSource(bundle)
    model = load_bundle(source)
    reference = load_reference(source, model.manifest)
    features = batch(tmp_path, seed=18)
    matrix = features[inputs_of(bundle)].to_numpy(dtype=float)
    scores = model.scorer.probabilities(matrix)
    report = compute_drift(reference, model.manifest, matrix, scores)
    assert report["drifted"] == [] and report["rows"] == 2000
    assert drift_for_model(model, matrix, scores) == report  # the model knows its bundle
    records = psi_records(report)
    assert [r["feature"] for r in records] == [*inputs_of(bundle), "score"]
    assert all(set(r) == {"metric", "feature", "psi", "drifted", "threshold", "rows",
                          "model_version"} for r in records)  # fmt: skip
    json.dumps(report)  # plain JSON types only
    with pytest.raises(DriftError, match="non-finite"):
        matrix[0, 0] = np.nan
        compute_drift(reference, model.manifest, matrix, scores)
    handover = load_bundle(LocalDirSource(HANDOVER))
    with pytest.raises(DriftError, match="does not describe this model's inputs"):
        compute_drift(
            reference, handover.manifest, np.zeros((len(matrix), 9)), np.zeros(len(matrix))
        )
    with pytest.raises(DriftError, match="has no drift reference"):
        drift_for_model(handover, np.zeros((len(matrix), 9)), np.zeros(len(matrix)))


def test_the_shipped_trained_bundle_has_a_checksummed_reference() -> None:
    bundle = PROJECT_ROOT / "artifacts" / "trained"
    manifest = json.loads((bundle / "model.json").read_text())
    raw = (bundle / "reference.json").read_bytes()
    assert manifest["reference"]["sha256"] == hashlib.sha256(raw).hexdigest()
    reference = parse_reference(raw)
    assert reference.rows == manifest["metrics"]["rows"] == manifest["reference"]["rows"]
    assert [i.name for i in reference.inputs] == [i["name"] for i in manifest["inputs"]]


# ---------------------------------------------------------------- PSI and profiles


def test_psi_by_hand() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0
    expected = (0.9 - 0.5) * np.log(0.9 / 0.5) + (0.1 - 0.5) * np.log(0.1 / 0.5)
    assert psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(expected)
    # An empty bin counts at the floor: large but finite.
    floored = (PSI_FLOOR - 0.5) * np.log(PSI_FLOOR / 0.5) + 0.5 * np.log(1 / 0.5)
    assert psi([0.5, 0.5], [0.0, 1.0]) == pytest.approx(floored)


def test_numeric_bins_are_right_closed_and_open_ended() -> None:
    profile = numeric_profile(np.array([0, 0, 0, 0, 0, 0, 1, 2, 3, 4], dtype=float), bins=5)
    assert profile.values == (0.0, 2.0)  # the 20/40/60% quantiles are all 0: merged
    assert profile.shares == (0.6, 0.2, 0.2)
    assert profile.counts(np.array([-5.0, 0.0, 0.5, 2.0, 2.1, 99.0])).tolist() == [2, 2, 2]
    flags = categorical_profile(np.array([0, 1, 1, 1.0]))
    assert flags.shares == (0.25, 0.75, 0.0)
    assert flags.counts(np.array([0, 1, 2.0])).tolist() == [1, 1, 1]  # 2 is "other"


shares = st.lists(st.floats(min_value=0, max_value=1), min_size=2, max_size=12).filter(
    lambda xs: sum(xs) > 0
)


@settings(max_examples=200, deadline=None)
@given(a=shares, b=shares)
def test_psi_properties(a: list[float], b: list[float]) -> None:
    n = min(len(a), len(b))
    e, x = np.array(a[:n]), np.array(b[:n])
    if e.sum() == 0 or x.sum() == 0:
        return
    e, x = e / e.sum(), x / x.sum()
    value = psi(e, x)
    assert np.isfinite(value) and value >= 0
    assert value == pytest.approx(psi(x, e))  # symmetric
    assert psi(e, e) == 0
