"""The bundle manifest (``model.json``): what a model expects and how far to trust it.

The manifest is the only record of a model's input order, so it is validated hard: every
accepted request field must be a Part 1 feature, no field feeds two inputs, and only 0/1
flags may be optional (defaulting to 0). Numeric aggregates are never imputed.

Inputs of a model trained by ``scoring.train`` also carry their ``risk_direction`` (+1: higher
is riskier, -1: lower is), ``baseline`` (the training median, the value contributions are
measured from) and ``reason_family``; the ``reasons`` section then says how reasons are
given. ``lookback`` records the history window the training features were computed over,
which is the only window a request may declare.

It is also the bundle's table of contents: the sha256 of ``model.joblib`` and, when present,
of ``linear.json`` (the linear model's parameters, served without unpickling) and
``reference.json`` (the training data's distributions, for drift). Every file is checked
against its sha256 before it is used. File names are fixed here, never taken from a manifest.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from featurespec import FEATURE_NAMES, FLAG_FEATURES
from scoring.reasons import FAMILIES

MANIFEST_FILE = "model.json"
MODEL_FILE = "model.joblib"
LINEAR_FILE = "linear.json"
REFERENCE_FILE = "reference.json"
# Every file a bundle may hold; sources read nothing else.
BUNDLE_FILES = (MANIFEST_FILE, MODEL_FILE, LINEAR_FILE, REFERENCE_FILE)

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class ManifestError(ValueError):
    """The manifest is unreadable or inconsistent."""


class InputSpec(BaseModel):
    """One model input, in estimator column order."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="The model's own name for this input.")
    accepts: Annotated[list[str], Field(min_length=1)] = Field(
        description="Request field names that feed this input, first match wins."
    )
    optional: bool = Field(description="May be absent from a request (flags only).")
    default: float | None = Field(default=None, description="Value used when absent.")
    risk_direction: Literal[-1, 1] | None = Field(
        default=None, description="+1: a higher value is riskier; -1: a lower value is."
    )
    baseline: float | None = Field(
        default=None,
        description="Value contributions are measured from (the manifest's reasons.baseline "
        "says which statistic of the training rows).",
        allow_inf_nan=False,
    )
    reason_family: str | None = Field(
        default=None, description="Reason family this input's contribution counts towards."
    )

    @model_validator(mode="after")
    def _check(self) -> InputSpec:
        if self.reason_family is not None and self.reason_family not in FAMILIES:
            raise ValueError(
                f"input {self.name!r} has unknown reason_family {self.reason_family!r}"
            )
        unknown = [a for a in self.accepts if a not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"input {self.name!r} accepts unknown request fields {unknown}")
        if self.optional:
            not_flags = [a for a in self.accepts if a not in FLAG_FEATURES]
            if not_flags:
                raise ValueError(
                    f"input {self.name!r} is optional but {not_flags} are not 0/1 flags; "
                    "numeric aggregates may not be defaulted"
                )
            if self.default != 0:
                raise ValueError(f"optional input {self.name!r} must default to 0")
        elif self.default is not None:
            raise ValueError(f"required input {self.name!r} must not have a default")
        return self


class LinearSection(BaseModel):
    """``linear.json``: its checksum and how it was verified against the pickle."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    sha256: Sha256
    verified: dict[str, Any] = Field(
        description="Rows compared with predict_proba when written, largest differences, and "
        "the scikit-learn version that computed the estimator's side."
    )


class ReferenceSection(BaseModel):
    """``reference.json``: training-data distributions for drift monitoring."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    sha256: Sha256
    computed: datetime = Field(description="When the profile was computed (UTC).")
    rows: Annotated[int, Field(gt=0)] = Field(description="Training rows it describes.")


class ReasonsSection(BaseModel):
    """How the bundle's reasons are given: per family, from each input's baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    baseline: Literal["median"] = Field(
        description="Statistic of the training rows each input's baseline is."
    )
    top: Annotated[int, Field(ge=1, le=10)] = Field(description="Most reasons per decision.")
    families: dict[str, str] = Field(description="Reason family -> the text a customer reads.")
    rule: str = Field(description="When a reason is given, in words.")


class LookbackSection(BaseModel):
    """The history window (days before the decision) the training features were computed over."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    days: Annotated[int, Field(gt=0)]
    accepts: Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=1)] = Field(
        description="lookback_days values a request may declare."
    )
    source: str = Field(description="Where the value came from (training report or flag).")


class Manifest(BaseModel):
    """Everything a service needs to serve a model and to tell its users what it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format_version: Literal[1]
    name: str
    version: str
    created: datetime
    placeholder: bool = Field(description="True for a model that is not fit for decisions.")
    sha256: Sha256
    sklearn_version: str = Field(description="scikit-learn version the model was pickled with.")
    estimator: str
    inputs: Annotated[list[InputSpec], Field(min_length=1)]
    threshold: Annotated[float, Field(gt=0, lt=1)]
    threshold_reason: str
    metrics: dict[str, Any] | None
    notes: str
    linear: LinearSection | None = Field(
        default=None, description="Set when linear.json lets the model be served unpickled."
    )
    reference: ReferenceSection | None = Field(
        default=None, description="Set when reference.json holds a drift reference profile."
    )
    reasons: ReasonsSection | None = Field(
        default=None, description="Set when every input has a direction, baseline and family."
    )
    reasons_withheld: str | None = Field(
        default=None, description="Why this bundle gives no reasons (shown in /model)."
    )
    lookback: LookbackSection | None = Field(
        default=None, description="History window of the training features; None: unknown."
    )

    @model_validator(mode="after")
    def _check_inputs(self) -> Manifest:
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError("input names must be unique")
        fields = [a for i in self.inputs for a in i.accepts]
        dup = sorted({a for a in fields if fields.count(a) > 1})
        if dup:
            raise ValueError(f"request fields {dup} feed more than one input")
        if self.reasons is not None:
            incomplete = [
                i.name
                for i in self.inputs
                if i.risk_direction is None or i.baseline is None or i.reason_family is None
            ]
            if incomplete:
                raise ValueError(
                    f"reasons need risk_direction, baseline and reason_family on every input; "
                    f"missing on {incomplete}"
                )
            unknown = sorted({i.reason_family for i in self.inputs} - set(self.reasons.families))
            if unknown:
                raise ValueError(f"reasons.families has no text for {unknown}")
        return self

    @property
    def model_version(self) -> str:
        return f"{self.name}@{self.version}"


def parse_manifest(raw: bytes) -> Manifest:
    """Parse and validate manifest bytes; errors name the offending part."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{MANIFEST_FILE} is not valid UTF-8 JSON: {exc}") from exc
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ManifestError(f"{MANIFEST_FILE} invalid at {where}: {first['msg']}") from exc


def dump_manifest(manifest: Manifest) -> bytes:
    """Stable, human-readable JSON for a manifest."""
    return (json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n").encode("utf-8")
