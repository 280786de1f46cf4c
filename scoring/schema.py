"""Request and response bodies, built from ``features.definitions`` so names never drift.

Every Part 1 feature is an *optional* field here, and so is ``lookback_days`` (the history
window the features were computed over): which ones a request must send, and which lookback
it may declare, depend on the loaded model's manifest and are checked after parsing
(``scoring.inputs``). Absent fields default to ``None``; an explicit ``null`` is rejected
(the default is not validated, the input is), so "absent" and "null" are never confused.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from featurespec import EXTRA_BOUNDS, FEATURES, ID, MAX_ABS_MONEY, MAX_COUNT, MAX_DAYS
from scoring.inputs import LOOKBACK_FIELD

MAX_BATCH = 1000
MAX_ID_LENGTH = 64
# Letters, digits and a few separators: ids are echoed back and must be safe to display.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$"
# Sanity bounds for money, ratios and counts (MAX_ABS_MONEY, MAX_COUNT) and the sign rules
# (EXTRA_BOUNDS) live in features.definitions: the pipeline withholds customers outside them.
# Longest history window a request may declare (ten years); the bundle says which it accepts.
MAX_LOOKBACK_DAYS = 3660

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
    fields[LOOKBACK_FIELD] = (
        Annotated[int, Field(strict=True, ge=1, le=MAX_LOOKBACK_DAYS)],
        Field(
            default=None,
            description="Days of history before the decision the features were computed "
            "over. Optional; if sent it must be one the model accepts (GET /model: "
            "accepted_lookback_days), else 422.",
        ),
    )
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


class ReasonFeature(BaseModel):
    """One input behind a reason: on the risky side of its baseline, adding to the score."""

    feature: str = Field(description="Request field name.")
    value: float
    baseline: float = Field(description="The training median this input is measured from.")
    contribution: float = Field(description="Log-odds added compared with the baseline.")


class Reason(BaseModel):
    """A reason family that pushed the score towards default (for adverse-action notices)."""

    family: str = Field(description="income, spending, housing, gambling, fees, account_history")
    text: str = Field(description="Plain-English reason a customer can read.")
    contribution: float = Field(
        description="Log-odds the family's inputs add compared with a customer at every baseline."
    )
    features: list[ReasonFeature]


class PredictResponse(BaseModel):
    request_id: str = Field(description="Unique id of this decision (the audit record's key).")
    customer_id: str
    probability: float = Field(description="Probability of default within 90 days.")
    prediction: int = Field(description="1 if probability >= the model's threshold.")
    model_version: str
    threshold: float
    reasons: list[Reason] | None = Field(
        description="Up to 3 reason families that counted against the customer, largest first; "
        "null if the model gives no reasons (GET /model says why)."
    )
    defaulted_fields: list[str] = Field(
        description="Fields that were absent and set to the manifest's default (0 for flags)."
    )
    ignored_fields: list[str] = Field(description="Valid fields this model does not use.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "5f0c9a4e2b7d4c1e8a6f3b2d1c0e9f8a",
                    "customer_id": "CUST001",
                    "probability": 0.31,
                    "prediction": 1,
                    "model_version": "example@1",
                    "threshold": 0.166667,
                    "reasons": [
                        {
                            "family": "fees",
                            "text": "Your account was charged fees, such as overdraft or "
                            "unpaid-item fees.",
                            "contribution": 0.42,
                            "features": [
                                {
                                    "feature": "fee_count",
                                    "value": 4,
                                    "baseline": 0,
                                    "contribution": 0.42,
                                }
                            ],
                        }
                    ],
                    "defaulted_fields": ["has_netflix"],
                    "ignored_fields": [],
                }
            ]
        }
    )


class BatchResponse(BaseModel):
    model_version: str
    results: list[PredictResponse]
