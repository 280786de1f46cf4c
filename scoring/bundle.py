"""Model bundles: where the bytes come from, and loading them safely.

A bundle is ``model.json`` (the manifest) + ``model.joblib`` (the pickled estimator), and
optionally ``linear.json`` (a linear model's parameters) and ``reference.json`` (drift
reference). Loading reads files as bytes from a ``BundleSource`` (a local directory here;
the function app adds blob storage) and checks each file's sha256 against the manifest
*before* using it: before unpickling (unpickling runs code) and before trusting parameters.

Linear bundles are served from ``linear.json``: numpy only, no scikit-learn import, no
unpickling, which is most of a cold start. The pickle's checksum is still verified at load
(a bundle with a wrong file is refused whole); it is unpickled only if something asks for
``LoadedModel.estimator``, or when the bundle has no usable ``linear.json``.
Version-mismatch warnings are kept, not hidden.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from scoring.explain import NO_BASELINES, NOT_LINEAR, Explainer
from scoring.inputs import InputPlan
from scoring.linear import LinearParams, LinearParamsError, parse_linear
from scoring.manifest import (
    BUNDLE_FILES,
    LINEAR_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    LinearSection,
    Manifest,
    ManifestError,
    parse_manifest,
)
from scoring.scorer import LinearScorer, Scorer, build_scorer


class BundleError(RuntimeError):
    """A bundle cannot be served; the message is safe to show to API callers."""


class BundleSource(Protocol):
    """Where a bundle's files come from. ``describe`` must not contain secrets.

    A source may also offer ``read_file(name) -> bytes`` for the optional files
    (``linear.json``, ``reference.json``); without it the model is served from the pickle.
    """

    def describe(self) -> str: ...

    def read_manifest(self) -> bytes: ...

    def read_model(self) -> bytes: ...


@dataclass(frozen=True)
class LocalDirSource:
    """A bundle directory on local disk (``MODEL_DIR``)."""

    directory: Path

    def describe(self) -> str:
        return "local directory"

    def read_file(self, name: str) -> bytes:
        if name not in BUNDLE_FILES:  # never a path from a manifest or a caller
            raise BundleError(f"{name!r} is not a bundle file")
        try:
            return (self.directory / name).read_bytes()
        except FileNotFoundError as exc:
            raise BundleError(f"{name} not found in the bundle directory") from exc
        except OSError as exc:
            raise BundleError(f"{name} could not be read: {exc.strerror}") from exc

    def read_manifest(self) -> bytes:
        return self.read_file(MANIFEST_FILE)

    def read_model(self) -> bytes:
        return self.read_file(MODEL_FILE)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_sha256(data: bytes, expected: str, name: str, action: str) -> None:
    """Refuse ``data`` unless its sha256 is the manifest's (constant-time comparison)."""
    digest = sha256_hex(data)
    if not hmac.compare_digest(digest, expected):
        raise BundleError(
            f"{name} sha256 {digest[:12]}... does not match the manifest's "
            f"{expected[:12]}...; refusing to {action} it"
        )


def _input_count_error(manifest: Manifest, n_in: int) -> BundleError:
    return BundleError(
        f"manifest lists {len(manifest.inputs)} inputs but the estimator expects {n_in}; refusing"
    )


_NAMES_DIFFER = "estimator's feature names differ from the manifest's input order"


def verify_estimator(estimator: Any, manifest: Manifest) -> None:
    """Refuse an estimator that cannot be what the manifest describes."""
    if not hasattr(estimator, "predict_proba"):
        raise BundleError(f"{type(estimator).__name__} has no predict_proba")
    n_in = getattr(estimator, "n_features_in_", None)
    if n_in is None:
        raise BundleError("estimator does not record its number of inputs (not fitted?)")
    if int(n_in) != len(manifest.inputs):
        raise _input_count_error(manifest, int(n_in))
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        manifest_names = [i.name for i in manifest.inputs]
        if [str(n) for n in names] != manifest_names:
            raise BundleError(_NAMES_DIFFER)
    classes = [int(c) for c in getattr(estimator, "classes_", [])]
    if classes != [0, 1]:
        raise BundleError(f"estimator classes are {classes}, expected [0, 1]")


def verify_linear(params: LinearParams, manifest: Manifest) -> None:
    """The same agreement checks as ``verify_estimator``, on stored parameters."""
    if params.n_inputs != len(manifest.inputs):
        raise _input_count_error(manifest, params.n_inputs)
    if params.feature_names is not None and list(params.feature_names) != [
        i.name for i in manifest.inputs
    ]:
        raise BundleError(_NAMES_DIFFER)


def unpickle(blob: bytes) -> tuple[Any, list[str], str]:
    """(estimator, warnings raised while unpickling, running scikit-learn version).

    Callers must have checked ``blob``'s sha256 against the manifest first.
    """
    import joblib  # imported late: only bundles served from the pickle pay for it
    import sklearn

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            estimator = joblib.load(io.BytesIO(blob))
        except Exception as exc:  # a verified file that still fails is a broken bundle
            raise BundleError(f"{MODEL_FILE} could not be unpickled: {type(exc).__name__}") from exc
    notes = [f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught]
    return estimator, notes, sklearn.__version__


class _PickledEstimator:
    """The verified pickle, unpickled on first use (at most once, thread-safe)."""

    def __init__(self, blob: bytes, manifest: Manifest, estimator: Any = None):
        self._blob, self._manifest = blob, manifest
        self._estimator = estimator
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self._estimator is None:
            with self._lock:
                if self._estimator is None:
                    estimator, _, _ = unpickle(self._blob)
                    verify_estimator(estimator, self._manifest)
                    self._estimator = estimator
        return self._estimator


@dataclass(frozen=True)
class LoadedModel:
    """A verified, ready-to-score model and what the service may say about it."""

    manifest: Manifest
    scorer: Scorer
    plan: InputPlan
    warnings: tuple[str, ...]
    runtime_sklearn: str | None  # None: scikit-learn was not needed to serve this model
    loaded_at: datetime
    load_seconds: float
    source: str = field(default="")
    pickled: _PickledEstimator | None = field(default=None, repr=False, compare=False)
    # Where the bundle was read from, for files read later (the drift reference).
    bundle_source: BundleSource | None = field(default=None, repr=False, compare=False)
    # Reasons: an explainer when the bundle can give them, else why not (shown in /model).
    explainer: Explainer | None = field(default=None, repr=False, compare=False)
    reasons_withheld: str = ""

    @property
    def estimator(self) -> Any:
        """The unpickled estimator (loaded now if the model is served from linear.json)."""
        if self.pickled is None:
            raise BundleError("this model was loaded without its pickle")
        return self.pickled.get()

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
            "lookback_days": self.manifest.lookback.days if self.manifest.lookback else None,
            "accepted_lookback_days": self.plan.describe_lookback(),
            "reasons": self.describe_reasons(),
        }

    def describe_reasons(self) -> dict[str, Any]:
        """Whether responses carry reasons, and if not, why (``reasons: null``)."""
        explainer, section = self.explainer, self.manifest.reasons
        if explainer is None or section is None:
            return {"given": False, "why": self.reasons_withheld}
        return {
            "given": True,
            "baseline": f"training {section.baseline} of each input",
            "baseline_log_odds": round(explainer.baseline_log_odds, 6),
            "top": section.top,
            "rule": section.rule,
            "families": section.families,
        }


def read_verified(source: BundleSource, name: str, sha256: str) -> bytes:
    """An optional bundle file, checked against its manifest sha256 before anyone uses it.

    Raises ``BundleError`` if the source cannot read it or the checksum differs.
    """
    reader = getattr(source, "read_file", None)
    if reader is None:
        raise BundleError(f"this bundle source cannot read {name}")
    data = reader(name)
    check_sha256(data, sha256, name, "use")
    return data


def _linear_scorer(
    source: BundleSource, manifest: Manifest, section: LinearSection
) -> tuple[LinearScorer | None, str]:
    """A scorer from verified ``linear.json``, or (None, why not) to fall back to the pickle.

    An unreadable or absent file falls back (the pickle is verified and equivalent); a file
    that fails its checksum, does not parse or disagrees with the manifest is refused.
    """
    reader = getattr(source, "read_file", None)
    if reader is None:
        return None, f"this bundle source cannot read {LINEAR_FILE}; scoring through the pickle"
    try:
        raw = reader(LINEAR_FILE)
    except BundleError as exc:
        return None, f"{exc}; scoring through the pickle instead"
    check_sha256(raw, section.sha256, LINEAR_FILE, "use")
    try:
        params = parse_linear(raw)
    except LinearParamsError as exc:
        raise BundleError(f"{LINEAR_FILE} is invalid: {exc}") from exc
    verify_linear(params, manifest)
    return LinearScorer(params=params, kind="linear-json"), ""


def read_checked(source: BundleSource) -> tuple[Manifest, bytes]:
    """The bundle's manifest and the model bytes it vouches for (checksum matched, nothing
    unpickled yet). Raises ``BundleError``."""
    try:
        manifest = parse_manifest(source.read_manifest())
    except ManifestError as exc:
        raise BundleError(str(exc)) from exc
    blob = source.read_model()
    check_sha256(blob, manifest.sha256, MODEL_FILE, "unpickle")
    return manifest, blob


def load_bundle(source: BundleSource) -> LoadedModel:
    """Read, verify and prepare a bundle for scoring. Raises ``BundleError``."""
    started = time.perf_counter()
    manifest, blob = read_checked(source)
    notes: list[str] = []
    scorer: Scorer | None = None
    if manifest.linear is not None:
        scorer, why_not = _linear_scorer(source, manifest, manifest.linear)
        if why_not:
            notes.append(why_not)
    if scorer is not None and manifest.linear is not None:
        verified_with = manifest.linear.verified.get("sklearn_version")
        if verified_with and manifest.sklearn_version != verified_with:
            notes.append(
                f"model pickled with scikit-learn {manifest.sklearn_version}; served from "
                f"{LINEAR_FILE}, checked against its predict_proba under scikit-learn "
                f"{verified_with}"
            )
        pickled = _PickledEstimator(blob, manifest)
        runtime_sklearn = None
    else:
        estimator, unpickle_notes, runtime_sklearn = unpickle(blob)
        notes.extend(unpickle_notes)
        if manifest.sklearn_version != runtime_sklearn:
            notes.append(
                f"model pickled with scikit-learn {manifest.sklearn_version}, "
                f"running {runtime_sklearn}"
            )
        verify_estimator(estimator, manifest)
        scorer = build_scorer(estimator)
        pickled = _PickledEstimator(blob, manifest, estimator)
    plan = InputPlan.from_manifest(manifest)
    explainer = None
    if isinstance(scorer, LinearScorer):
        fields = [plan.field_for(j) for j in range(len(manifest.inputs))]
        explainer = Explainer.for_model(scorer.params, manifest, fields)
    withheld = ""
    if explainer is None:
        withheld = manifest.reasons_withheld or (
            NOT_LINEAR if manifest.reasons is not None else NO_BASELINES
        )
    return LoadedModel(
        manifest=manifest,
        scorer=scorer,
        plan=plan,
        warnings=tuple(dict.fromkeys(notes)),
        runtime_sklearn=runtime_sklearn,
        loaded_at=datetime.now(UTC),
        load_seconds=time.perf_counter() - started,
        source=source.describe(),
        pickled=pickled,
        bundle_source=source,
        explainer=explainer,
        reasons_withheld=withheld,
    )
