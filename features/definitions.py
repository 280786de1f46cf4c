"""The per-customer features: names, meaning, and how they are computed.

This module is the one place a feature is defined. Every engine uses it:

* row level -> ``ROW_COLUMNS`` says which per-transaction columns the engines derive
  (signed pence, debit/credit split, one 0/1 column per lexicon category, ...);
* aggregation -> ``AGGREGATES`` lists decomposable per-customer aggregates
  (sum/min/max), so partial results from chunks or Spark partitions combine exactly;
* finalisation -> ``finalise`` turns the aggregate table (one row per customer, small)
  into the feature table. Spark and pandas both call this same function.

Money stays in integer pence until ``finalise``, which converts to pounds (floats) at the
edge, rounded to 2 dp.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from features.text import CATEGORIES

if TYPE_CHECKING:  # numpy and pandas are imported where used: the API reads only the names
    import numpy as np
    import pandas as pd

PENCE_PER_POUND = 100
SECONDS_PER_DAY = 86_400
# Cap for day counts: one year. Also the value of days_since_last_salary with no salary.
MAX_DAYS = 365
# The range every feature value must lie in, shared with the API (``scoring.schema`` reads
# these): larger values are data errors, not customers. The pipeline withholds a customer
# whose features fall outside it (``out_of_bounds``), so it never publishes a value the API
# would refuse.
MAX_ABS_MONEY = 1e10
MAX_COUNT = 10**9
# Sign rules from the team contract (total_debit <= 0, credits and debit sizes >= 0, ...)
# that a feature's kind alone does not imply.
EXTRA_BOUNDS: dict[str, dict[str, float]] = {
    "total_debit": {"le": 0},
    "total_credit": {"ge": 0},
    "max_debit": {"ge": 0},
    "gambling_spend": {"ge": 0},
    "salary_month_share": {"le": 1},
}
KIND_BOUNDS: dict[str, tuple[float, float]] = {
    "count": (0, MAX_COUNT),
    "days": (0, MAX_DAYS),
    "flag": (0, 1),
    "money": (-MAX_ABS_MONEY, MAX_ABS_MONEY),
    "ratio": (0, MAX_ABS_MONEY),
}


@dataclass(frozen=True)
class Feature:
    """One output column: its type and the words an analyst needs to trust it."""

    name: str
    kind: str  # "count", "money", "flag", "ratio", "days"
    definition: str
    why: str
    missing_rule: str = "always defined for a customer with at least one used transaction"


FLAG_CATEGORIES = ("rent", "salary", "tesco", "netflix", "transfer", "gambling", "bonus", "fee")

FEATURES: tuple[Feature, ...] = (
    Feature(
        "num_transactions",
        "count",
        "Number of used transactions.",
        "Activity level; thin files are riskier and less certain.",
    ),
    Feature("total_debit", "money", "Sum of debits in GBP (zero or negative).", "Total outgoings."),
    Feature(
        "total_credit",
        "money",
        "Sum of credits in GBP (zero or positive).",
        "Total income and inflows.",
    ),
    Feature(
        "avg_amount",
        "money",
        "Mean signed amount in GBP (credits +, debits -).",
        "Typical transaction size and direction.",
    ),
    Feature(
        "net_flow",
        "money",
        "total_credit + total_debit, in GBP.",
        "Money left over; persistent negative flow precedes arrears.",
    ),
    Feature(
        "max_debit",
        "money",
        "Largest single debit in GBP, as a positive number; 0 if none.",
        "Large one-off outgoings signal shocks or big commitments.",
    ),
    *(
        Feature(
            f"has_{c}",
            "flag",
            f"1 if any transaction falls in the '{c}' category, else 0.",
            f"Presence of {c} activity (lexicon category '{c}').",
        )
        for c in FLAG_CATEGORIES
    ),
    Feature(
        "rent_to_income",
        "ratio",
        "Rent debits (GBP, positive) divided by total_credit.",
        "Housing-cost burden, a classic affordability measure.",
        "0 when total_credit is 0 (no income seen); has_salary and total_credit tell why",
    ),
    Feature(
        "gambling_spend",
        "money",
        "Sum of gambling debits in GBP, as a positive number.",
        "Gambling spend is a recognised affordability red flag.",
    ),
    Feature(
        "fee_count",
        "count",
        "Number of bank-fee transactions (overdraft, unpaid, ...).",
        "Overdraft and unpaid-item fees show an account already under strain.",
    ),
    Feature(
        "days_since_last_salary",
        "days",
        "Whole days from the last salary credit to the batch's as-of date, capped at 365.",
        "A stopped salary is the strongest early sign of default.",
        "365 (the cap) when no salary was seen",
    ),
    Feature(
        "salary_month_share",
        "ratio",
        "Share of the customer's active calendar months that contain a salary credit.",
        "Income regularity: steady monthly pay versus irregular income.",
        "always defined (a customer has at least one active month)",
    ),
    Feature(
        "active_days",
        "days",
        "Days from first to last transaction, plus one, capped at 365.",
        "Length of observed history; short histories make every other feature noisier.",
    ),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)


def feature_bounds(feature: Feature) -> tuple[float, float]:
    """(lowest, highest) accepted value of a feature: its kind's range and any sign rule."""
    low, high = KIND_BOUNDS[feature.kind]
    extra = EXTRA_BOUNDS.get(feature.name, {})
    return max(low, extra.get("ge", low)), min(high, extra.get("le", high))


def out_of_bounds(features: pd.DataFrame) -> np.ndarray:
    """True for each customer with a feature value outside ``feature_bounds`` (or NaN)."""
    import numpy as np

    outside = np.zeros(len(features), dtype=bool)
    for feature in FEATURES:
        low, high = feature_bounds(feature)
        values = features[feature.name].to_numpy(dtype=float)
        outside |= ~((values >= low) & (values <= high))
    return outside


FLAG_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.kind == "flag")
TARGET = "defaulted"
ID = "customer_id"

# Per-transaction columns every engine derives before aggregation.
# amount_pence: signed int64; ts: int64 epoch seconds; month: int64 (year*12 + month - 1).
ROW_COLUMNS = (
    "amount_pence",
    "debit_pence",
    "credit_pence",
    "ts",
    "month",
    *(f"is_{c}" for c in CATEGORIES),
    "rent_pence",
    "gambling_pence",
    "salary_ts",
)

# Decomposable aggregates: (output name, operation, row column). Combining partial
# results re-applies the same operation (count partials are summed).
AGGREGATES: tuple[tuple[str, str, str], ...] = (
    ("n", "sum", "one"),
    ("debit_pence", "sum", "debit_pence"),
    ("credit_pence", "sum", "credit_pence"),
    ("min_debit_pence", "min", "debit_pence"),
    ("rent_pence", "sum", "rent_pence"),
    ("gambling_pence", "sum", "gambling_pence"),
    *((f"n_{c}", "sum", f"is_{c}") for c in CATEGORIES),
    ("first_ts", "min", "ts"),
    ("last_ts", "max", "ts"),
    ("last_salary_ts", "max", "salary_ts"),
)
# Per (customer, month) aggregate for income regularity: months active and salary months.
MONTH_AGGREGATES: tuple[tuple[str, str, str], ...] = (("salary_in_month", "max", "is_salary"),)


def _pounds(pence: pd.Series) -> pd.Series:
    return (pence.astype("int64") / PENCE_PER_POUND).round(2)


def finalise(aggregates: pd.DataFrame, months: pd.DataFrame, as_of_ts: int) -> pd.DataFrame:
    """Features from the combined aggregate table.

    ``aggregates`` is indexed by customer_id with the ``AGGREGATES`` columns; ``months``
    has one row per (customer_id, month) with ``salary_in_month``; ``as_of_ts`` is the
    batch's as-of instant (latest valid transaction) in epoch seconds.
    """
    import numpy as np
    import pandas as pd

    a = aggregates.sort_index()
    n = a["n"].astype("int64")
    debit = a["debit_pence"].astype("int64")
    credit = a["credit_pence"].astype("int64")
    out = pd.DataFrame(index=a.index)
    out["num_transactions"] = n
    out["total_debit"] = _pounds(debit)
    out["total_credit"] = _pounds(credit)
    out["avg_amount"] = ((debit + credit) / n / PENCE_PER_POUND).round(2)
    out["net_flow"] = _pounds(debit + credit)
    out["max_debit"] = _pounds(-a["min_debit_pence"].clip(upper=0).astype("int64"))
    for c in FLAG_CATEGORIES:
        out[f"has_{c}"] = (a[f"n_{c}"] > 0).astype("int64")
    out["rent_to_income"] = np.where(credit > 0, a["rent_pence"] / credit.where(credit > 0, 1), 0.0)
    out["rent_to_income"] = out["rent_to_income"].round(4)
    out["gambling_spend"] = _pounds(a["gambling_pence"])
    out["fee_count"] = a["n_fee"].astype("int64")
    # No salary: NaN, or a negative sentinel from engines that keep the column integer.
    last_salary = a["last_salary_ts"].where(a["last_salary_ts"] >= 0)
    days = (as_of_ts - last_salary) // SECONDS_PER_DAY
    out["days_since_last_salary"] = days.fillna(MAX_DAYS).clip(0, MAX_DAYS).astype("int64")
    per_customer = months.groupby(ID)["salary_in_month"].agg(["size", "sum"])
    share = (per_customer["sum"] / per_customer["size"]).reindex(a.index)
    out["salary_month_share"] = share.fillna(0.0).round(4)
    span = (a["last_ts"] - a["first_ts"]) // SECONDS_PER_DAY + 1
    out["active_days"] = span.clip(1, MAX_DAYS).astype("int64")
    out.index.name = ID
    return out[list(FEATURE_NAMES)]
