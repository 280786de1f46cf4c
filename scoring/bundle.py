"""Model bundles: where the bytes come from, and loading them safely.

A bundle is ``model.joblib`` + ``model.json``. Loading reads both as bytes from a
``BundleSource`` (a local directory here; the function app adds blob storage), checks the
joblib bytes' sha256 against the manifest *before* unpickling (unpickling runs code), then
checks that manifest and estimator agree. Version-mismatch warnings are kept, not hidden.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from scoring.inputs import InputPlan
from scoring.manifest import MANIFEST_FILE, MODEL_FILE, Manifest, ManifestError, parse_manifest
from scoring.scorer import Scorer, build_scorer


class BundleError(RuntimeError):
    """A bundle cannot be served; the message is safe to show to API callers."""


class BundleSource(Protocol):
    """Where a bundle's two files come from. ``describe`` must not contain secrets."""

    def describe(self) -> str: ...

    def read_manifest(self) -> bytes: ...

    def read_model(self) -> bytes: ...


@dataclass(frozen=True)
class LocalDirSource:
    """A bundle directory on local disk (``MODEL_DIR``)."""

    directory: Path

    def describe(self) -> str:
        return "local directory"

    def _read(self, name: str) -> bytes:
        try:
            return (self.directory / name).read_bytes()
        except FileNotFoundError as exc:
            raise BundleError(f"{name} not found in the bundle directory") from exc
        except OSError as exc:
            raise BundleError(f"{name} could not be read: {exc.strerror}") from exc

    def read_manifest(self) -> bytes:
        return self._read(MANIFEST_FILE)

    def read_model(self) -> bytes:
        return self._read(MODEL_FILE)


@dataclass(frozen=True)
class LoadedModel:
    """A verified, ready-to-score model and what the service may say about it."""

    manifest: Manifest
    estimator: Any
    scorer: Scorer
    plan: InputPlan
    warnings: tuple[str, ...]
    runtime_sklearn: str
    loaded_at: datetime
    load_seconds: float
    source: str = field(default="")

    def metadata(self) -> dict[str, Any]:
        """Public description: the manifest plus runtime facts; no paths, no secrets."""
        return {
            "manifest": self.manifest.model_dump(mode="json"),
            "model_version": self.manifest.model_version,
            "placeholder": self.manifest.placeholder,
            "runtime": {
                "sklearn_version": self.runtime_sklearn,
                "scorer": self.scorer.kind,
                "explains": self.scorer.explains,
                "loaded_at": self.loaded_at.isoformat(),
                "load_seconds": round(self.load_seconds, 4),
                "source": self.source,
            },
            "warnings": list(self.warnings),
            "request_fields": self.plan.describe(),
        }


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_estimator(estimator: Any, manifest: Manifest) -> None:
    """Refuse an estimator that cannot be what the manifest describes."""
    if not hasattr(estimator, "predict_proba"):
        raise BundleError(f"{type(estimator).__name__} has no predict_proba")
    expected = len(manifest.inputs)
    n_in = getattr(estimator, "n_features_in_", None)
    if n_in is None:
        raise BundleError("estimator does not record its number of inputs (not fitted?)")
    if int(n_in) != expected:
        raise BundleError(
            f"manifest lists {expected} inputs but the estimator expects {int(n_in)}; refusing"
        )
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        manifest_names = [i.name for i in manifest.inputs]
        if [str(n) for n in names] != manifest_names:
            raise BundleError("estimator's feature names differ from the manifest's input order")
    classes = [int(c) for c in getattr(estimator, "classes_", [])]
    if classes != [0, 1]:
        raise BundleError(f"estimator classes are {classes}, expected [0, 1]")


def load_bundle(source: BundleSource) -> LoadedModel:
    """Read, verify, unpickle and check a bundle. Raises ``BundleError``."""
    started = time.perf_counter()
    try:
        manifest = parse_manifest(source.read_manifest())
    except ManifestError as exc:
        raise BundleError(str(exc)) from exc
    blob = source.read_model()
    digest = sha256_hex(blob)
    if not hmac.compare_digest(digest, manifest.sha256):
        raise BundleError(
            f"{MODEL_FILE} sha256 {digest[:12]}... does not match the manifest's "
            f"{manifest.sha256[:12]}...; refusing to unpickle it"
        )
    import joblib  # imported late: sklearn comes in with the pickle anyway
    import sklearn

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            estimator = joblib.load(io.BytesIO(blob))
        except Exception as exc:  # a verified file that still fails is a broken bundle
            raise BundleError(f"{MODEL_FILE} could not be unpickled: {type(exc).__name__}") from exc
    notes = [f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught]
    if manifest.sklearn_version != sklearn.__version__:
        notes.append(
            f"model pickled with scikit-learn {manifest.sklearn_version}, "
            f"running {sklearn.__version__}"
        )
    verify_estimator(estimator, manifest)
    return LoadedModel(
        manifest=manifest,
        estimator=estimator,
        scorer=build_scorer(estimator),
        plan=InputPlan.from_manifest(manifest),
        warnings=tuple(dict.fromkeys(notes)),
        runtime_sklearn=sklearn.__version__,
        loaded_at=datetime.now(UTC),
        load_seconds=time.perf_counter() - started,
        source=source.describe(),
    )
