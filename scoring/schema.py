"""Request and response bodies, built from ``features.definitions`` so names never drift.

Every Part 1 feature is an *optional* field here: which ones a request must send depends on
the loaded model's manifest and is checked after parsing (``scoring.inputs``). Absent fields
default to ``None``; an explicit ``null`` is rejected (the default is not validated, the
input is), so "absent" and "null" are never confused.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from features.definitions import EXTRA_BOUNDS, FEATURES, ID, MAX_ABS_MONEY, MAX_COUNT, MAX_DAYS

MAX_BATCH = 1000
MAX_ID_LENGTH = 64
# Letters, digits and a few separators: ids are echoed back and must be safe to display.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$"
# Sanity bounds for money, ratios and counts (MAX_ABS_MONEY, MAX_COUNT) and the sign rules
# (EXTRA_BOUNDS) live in features.definitions: the pipeline withholds customers outside them.

_KIND_TYPES: dict[str, tuple[type, dict[str, Any]]] = {
    "count": (int, {"strict": True, "ge": 0, "le": MAX_COUNT}),
    "days": (int, {"strict": True, "ge": 0, "le": MAX_DAYS}),
    "flag": (int, {"strict": True, "ge": 0, "le": 1}),
    "money": (
        float,
        {"strict": True, "allow_inf_nan": False, "ge": -MAX_ABS_MONEY, "le": MAX_ABS_MONEY},
    ),
    "ratio": (float, {"strict": True, "allow_inf_nan": False, "ge": 0, "le": MAX_ABS_MONEY}),
}

BRIEF_EXAMPLE: dict[str, Any] = {
    "customer_id": "CUST001",
    "num_transactions": 15,
    "total_debit": -1250.50,
    "total_credit": 3500.00,
    "avg_amount": 150.03,
    "has_rent": 1,
    "has_salary": 1,
}


def _feature_field(feature: Any) -> tuple[Any, Any]:
    py_type, constraints = _KIND_TYPES[feature.kind]
    merged = {**constraints, **EXTRA_BOUNDS.get(feature.name, {})}
    annotated = Annotated[py_type, Field(**merged)]
    return (annotated, Field(default=None, description=feature.definition))


def _build_features_request() -> type[BaseModel]:
    unknown = set(EXTRA_BOUNDS) - {f.name for f in FEATURES}
    if unknown:  # a renamed feature must not silently lose its bound
        raise RuntimeError(f"EXTRA_BOUNDS names unknown features: {sorted(unknown)}")
    fields: dict[str, Any] = {
        ID: (
            Annotated[
                str, Field(strict=True, min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)
            ],
            Field(description="Caller's customer id, echoed back (max 64 chars)."),
        )
    }
    fields.update({f.name: _feature_field(f) for f in FEATURES})
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [BRIEF_EXAMPLE]}),
        __doc__="One customer's Part 1 features. Which are required depends on the model "
        "(GET /model): 0/1 flags the model allows may be omitted and default to 0.",
        **fields,
    )


PredictRequest = _build_features_request()


class BatchRequest(BaseModel):
    """Up to 1000 customers, each validated like a single /predict body."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"items": [BRIEF_EXAMPLE]}]}
    )
    items: Annotated[list[PredictRequest], Field(min_length=1, max_length=MAX_BATCH)]  # type: ignore[valid-type]


class Reason(BaseModel):
    """A feature that pushed the score towards default (for adverse-action notices)."""

    feature: str = Field(description="Request field name.")
    value: float
    contribution: float = Field(description="Log-odds added relative to the model's baseline.")


class PredictResponse(BaseModel):
    customer_id: str
    probability: float = Field(description="Probability of default within 90 days.")
    prediction: int = Field(description="1 if probability >= the model's threshold.")
    model_version: str
    threshold: float
    reasons: list[Reason] | None = Field(
        description="Top contributions towards default; null if the model cannot explain."
    )
    defaulted_fields: list[str] = Field(
        description="Fields that were absent and set to the manifest's default (0 for flags)."
    )
    ignored_fields: list[str] = Field(description="Valid fields this model does not use.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "CUST001",
                    "probability": 0.81,
                    "prediction": 1,
                    "model_version": "example@1",
                    "threshold": 0.5,
                    "reasons": [{"feature": "total_debit", "value": -1250.5, "contribution": 0.42}],
                    "defaulted_fields": ["has_netflix"],
                    "ignored_fields": [],
                }
            ]
        }
    )


class BatchResponse(BaseModel):
    model_version: str
    results: list[PredictResponse]
