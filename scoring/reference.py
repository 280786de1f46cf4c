"""Reference profiles and the Population Stability Index: pure functions on numpy arrays.

A profile is how one variable was distributed on the training data: quantile bins for
numbers (right-closed, open at both ends, so any batch value has a bin) or categories for
0/1 flags (plus an "other" bucket for anything else). ``reference.json`` holds one profile
per model input and one for the model's score; ``scoring.drift`` compares a batch with it.

PSI = sum over bins of (batch - reference) * ln(batch / reference), shares floored at
``PSI_FLOOR`` so an empty bin counts as a large but finite shift. Rule of thumb: < 0.1
stable, 0.1-0.25 watch, >= 0.25 shifted (``DRIFT_THRESHOLD``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any, Literal

import numpy as np

REFERENCE_FORMAT = 1
NUMERIC_BINS = 10
PSI_FLOOR = 1e-4
DRIFT_THRESHOLD = 0.25
FLAG_CATEGORIES = (0.0, 1.0)


class ReferenceError(ValueError):
    """``reference.json`` is malformed or does not fit the model; safe to show."""


@dataclass(frozen=True)
class Profile:
    """Bins and their shares of the training rows.

    numeric: ``edges`` e_0 < ... < e_m cut the line into (-inf, e_0], (e_0, e_1], ...,
    (e_m, inf): m + 2 bins. categorical: one bin per value in ``categories`` plus "other".
    """

    kind: Literal["numeric", "categorical"]
    values: tuple[float, ...]  # edges (numeric) or categories (categorical)
    shares: tuple[float, ...]

    def counts(self, x: np.ndarray) -> np.ndarray:
        """Rows of ``x`` per bin."""
        return bin_counts(self.kind, self.values, x)

    def shares_of(self, x: np.ndarray) -> np.ndarray:
        return bin_shares(self.kind, self.values, x)

    def labels(self) -> list[str]:
        if self.kind == "categorical":
            return [f"{c:g}" for c in self.values] + ["other"]
        e = self.values
        return (
            [f"<= {e[0]:.6g}"]
            + [f"({lo:.6g}, {hi:.6g}]" for lo, hi in pairwise(e)]
            + [f"> {e[-1]:.6g}"]
        )

    def to_json(self) -> dict[str, Any]:
        key = "edges" if self.kind == "numeric" else "categories"
        return {"kind": self.kind, key: list(self.values), "shares": list(self.shares)}


def bin_counts(kind: str, values: Sequence[float], x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` per bin of a profile with these edges (numeric) or categories."""
    x = np.asarray(x, dtype=float)
    if kind == "numeric":
        index = np.searchsorted(np.asarray(values, dtype=float), x, side="left")
        return np.bincount(index, minlength=len(values) + 1)
    hits = [np.count_nonzero(x == c) for c in values]
    return np.array([*hits, x.size - sum(hits)])


def bin_shares(kind: str, values: Sequence[float], x: np.ndarray) -> np.ndarray:
    counts = bin_counts(kind, values, x)
    return counts / max(int(counts.sum()), 1)


def numeric_profile(x: np.ndarray, bins: int = NUMERIC_BINS) -> Profile:
    """Quantile bins: interior edges at the 1/bins, ..., (bins-1)/bins quantiles, merged
    where they coincide (counts, and money that is mostly zero). Edges are data values
    (inverted-CDF quantiles), so a value that repeats is never split across two bins."""
    x = np.asarray(x, dtype=float)
    if x.size == 0 or not np.isfinite(x).all():
        raise ReferenceError("a profile needs at least one row and finite values")
    quantiles = np.quantile(x, np.arange(1, bins) / bins, method="inverted_cdf")
    edges = tuple(float(e) for e in np.unique(quantiles))
    return Profile("numeric", edges, tuple(bin_shares("numeric", edges, x).tolist()))


def categorical_profile(x: np.ndarray, categories: Sequence[float] = FLAG_CATEGORIES) -> Profile:
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        raise ReferenceError("a profile needs at least one row")
    values = tuple(float(c) for c in categories)
    return Profile("categorical", values, tuple(bin_shares("categorical", values, x).tolist()))


def psi(reference: np.ndarray, batch: np.ndarray, floor: float = PSI_FLOOR) -> float:
    """Population Stability Index of two share vectors over the same bins."""
    e = np.maximum(np.asarray(reference, dtype=float), floor)
    a = np.maximum(np.asarray(batch, dtype=float), floor)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class InputProfile:
    """One model input: its name, the features column that feeds it, its profile."""

    name: str
    column: str
    profile: Profile


@dataclass(frozen=True)
class Reference:
    """The training data's distributions, as stored in ``reference.json``."""

    computed: datetime
    rows: int
    inputs: tuple[InputProfile, ...]  # in the model's input order
    score: Profile

    def to_json_bytes(self) -> bytes:
        data = {
            "format_version": REFERENCE_FORMAT,
            "computed": self.computed.isoformat().replace("+00:00", "Z"),
            "rows": self.rows,
            "psi_floor": PSI_FLOOR,
            "inputs": [
                {"name": i.name, "column": i.column, **i.profile.to_json()} for i in self.inputs
            ],
            "score": self.score.to_json(),
        }
        return (json.dumps(data, indent=1, allow_nan=False) + "\n").encode("utf-8")


def build_reference(
    names: Sequence[str],
    columns: Sequence[str],
    is_flag: Sequence[bool],
    matrix: np.ndarray,
    scores: np.ndarray,
    computed: datetime,
    bins: int = NUMERIC_BINS,
) -> Reference:
    """Profiles of every column of ``matrix`` (model input order) and of ``scores``."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.ndim != 2 or matrix.shape[1] != len(names) or len(scores) != matrix.shape[0]:
        raise ReferenceError("matrix, names and scores do not line up")
    inputs = tuple(
        InputProfile(
            name,
            column,
            categorical_profile(matrix[:, j]) if flag else numeric_profile(matrix[:, j], bins),
        )
        for j, (name, column, flag) in enumerate(zip(names, columns, is_flag, strict=True))
    )
    return Reference(computed, int(matrix.shape[0]), inputs, numeric_profile(scores, bins))


def _profile(data: dict[str, Any]) -> Profile:
    kind = data["kind"]
    if kind not in ("numeric", "categorical"):
        raise ReferenceError(f"unknown profile kind {kind!r}")
    values = tuple(float(v) for v in data["edges" if kind == "numeric" else "categories"])
    shares = tuple(float(s) for s in data["shares"])
    n_bins = len(values) + 1
    if len(shares) != n_bins or any(not 0 <= s <= 1 for s in shares):
        raise ReferenceError(f"{kind} profile needs {n_bins} shares between 0 and 1")
    if abs(sum(shares) - 1) > 1e-6:
        raise ReferenceError("profile shares do not sum to 1")
    if kind == "numeric" and (not values or any(b <= a for a, b in pairwise(values))):
        raise ReferenceError("numeric profile edges must be non-empty and increasing")
    if not all(np.isfinite(values)):
        raise ReferenceError("profile values must be finite")
    return Profile(kind, values, shares)


def parse_reference(raw: bytes) -> Reference:
    """Parse ``reference.json``; anything malformed is a ``ReferenceError``."""
    try:
        data = json.loads(raw.decode("utf-8"))
        if data.get("format_version") != REFERENCE_FORMAT:
            raise ReferenceError("unknown reference format_version")
        inputs = tuple(
            InputProfile(str(i["name"]), str(i["column"]), _profile(i)) for i in data["inputs"]
        )
        return Reference(
            computed=datetime.fromisoformat(data["computed"]),
            rows=int(data["rows"]),
            inputs=inputs,
            score=_profile(data["score"]),
        )
    except ReferenceError:
        raise
    except (UnicodeDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ReferenceError(f"reference.json is malformed ({type(exc).__name__})") from exc
