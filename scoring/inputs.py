"""Map validated request fields onto a model's input matrix, as its manifest says.

Pure functions: no I/O, no logging. Errors are collected per field (and per batch item)
so the caller gets every problem at once, each naming its field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from featurespec import ID
from scoring.manifest import Manifest

# Request field declaring the history window (days before the decision) the features were
# computed over. Not a model input: checked against what the bundle accepts.
LOOKBACK_FIELD = "lookback_days"


class InputError(ValueError):
    """Request fields the model needs are missing or contradictory."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__("; ".join(e["msg"] for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class InputPlan:
    """Per model input: the request fields that feed it and its default if absent."""

    names: tuple[str, ...]
    accepts: tuple[tuple[str, ...], ...]
    defaults: tuple[float | None, ...]
    used: frozenset[str]
    # lookback_days values a request may declare; empty: the bundle records none, so a
    # request that declares one cannot be checked and is refused.
    lookbacks: tuple[int, ...] = ()

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> InputPlan:
        return cls(
            names=tuple(i.name for i in manifest.inputs),
            accepts=tuple(tuple(i.accepts) for i in manifest.inputs),
            defaults=tuple(i.default if i.optional else None for i in manifest.inputs),
            used=frozenset(a for i in manifest.inputs for a in i.accepts),
            lookbacks=tuple(manifest.lookback.accepts) if manifest.lookback else (),
        )

    def describe_lookback(self) -> list[int]:
        return list(self.lookbacks)

    def lookback_error(self) -> str:
        if not self.lookbacks:
            return (
                "this model does not record the history window its features were computed "
                "over, so it cannot accept one; omit the field (GET /model)"
            )
        allowed = ", ".join(str(d) for d in self.lookbacks)
        return f"this model accepts features computed over {allowed} days only (GET /model)"

    def describe(self) -> list[dict[str, Any]]:
        return [
            {"input": n, "accepts": list(a), "required": d is None, "default": d}
            for n, a, d in zip(self.names, self.accepts, self.defaults, strict=True)
        ]

    def field_for(self, column: int) -> str:
        """The request field name shown to callers for a model input."""
        return self.accepts[column][0]


@dataclass(frozen=True)
class Assembled:
    matrix: np.ndarray
    defaulted: list[list[str]]
    ignored: list[list[str]]


def assemble(
    plan: InputPlan,
    records: Sequence[dict[str, Any]],
    loc_prefix: tuple = ("body",),
    indexed: bool = False,
) -> Assembled:
    """Build the (n, k) float matrix. ``records`` are field dicts, absent fields = None.

    Error locations start with ``loc_prefix``; ``indexed`` adds the record's position
    (batch items), matching FastAPI's own 422 locations.
    """
    n, k = len(records), len(plan.names)
    matrix = np.empty((n, k), dtype=float)
    defaulted: list[list[str]] = []
    ignored: list[list[str]] = []
    errors: list[dict[str, Any]] = []
    for row, rec in enumerate(records):
        row_defaulted: list[str] = []
        base = (*loc_prefix, row) if indexed else loc_prefix
        lookback = rec.get(LOOKBACK_FIELD)
        if lookback is not None and lookback not in plan.lookbacks:
            errors.append(_error(base, LOOKBACK_FIELD, plan.lookback_error(), "lookback"))
        for col in range(k):
            value = None
            for alias in plan.accepts[col]:
                candidate = rec.get(alias)
                if candidate is None:
                    continue
                if value is not None and candidate != value:
                    errors.append(
                        _error(
                            base,
                            alias,
                            f"conflicts with another field feeding model input {plan.names[col]!r}",
                            "conflict",
                        )
                    )
                value = candidate if value is None else value
            if value is None:
                default = plan.defaults[col]
                if default is None:
                    field = plan.field_for(col)
                    errors.append(
                        _error(
                            base,
                            field,
                            "required by the current model and may not be defaulted",
                            "missing",
                        )
                    )
                    continue
                value = default
                row_defaulted.append(plan.field_for(col))
            matrix[row, col] = value
        defaulted.append(row_defaulted)
        ignored.append(
            sorted(
                f
                for f, v in rec.items()
                if v is not None and f not in (ID, LOOKBACK_FIELD) and f not in plan.used
            )
        )
    if errors:
        raise InputError(errors)
    return Assembled(matrix=matrix, defaulted=defaulted, ignored=ignored)


def _error(base: tuple, field: str, what: str, kind: str) -> dict[str, Any]:
    loc = [*base, field]
    where = ".".join(str(p) for p in loc if p != "body")  # e.g. items.3.total_credit
    return {"loc": loc, "msg": f"{where}: {what}", "type": kind}
