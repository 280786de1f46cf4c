"""How the per-customer features are computed (what each one is: ``featurespec``).

This module is the one place a feature's computation is defined. Every engine uses it:

* row level -> ``ROW_COLUMNS`` says which per-transaction columns the engines derive
  (signed pence, debit/credit split, one 0/1 column per lexicon category, ...);
* aggregation -> ``AGGREGATES`` lists decomposable per-customer aggregates
  (sum/min/max), so partial results from chunks or Spark partitions combine exactly;
* finalisation -> ``finalise`` turns the aggregate table (one row per customer, small)
  into the feature table. Spark and pandas both call this same function.

Money stays in integer pence until ``finalise``, which converts to pounds (floats) at the
edge, rounded to 2 dp. The names of ``featurespec`` are re-exported here for the engines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from features.text import CATEGORIES
from featurespec import (
    DAYS_PER_MONTH,
    EXTRA_BOUNDS,
    FEATURE_NAMES,
    FEATURES,
    FLAG_CATEGORIES,
    FLAG_FEATURES,
    ID,
    KIND_BOUNDS,
    MAX_ABS_MONEY,
    MAX_COUNT,
    MAX_DAYS,
    MAX_RENT_BURDEN,
    MAX_SPEND_TO_INCOME,
    SALARY_GAP_DAYS,
    TARGET,
    Feature,
    feature_bounds,
)

if TYPE_CHECKING:  # numpy and pandas are imported where used
    import numpy as np
    import pandas as pd

__all__ = [
    "AGGREGATES",
    "DAYS_PER_MONTH",
    "EXTRA_BOUNDS",
    "FEATURES",
    "FEATURE_NAMES",
    "FLAG_CATEGORIES",
    "FLAG_FEATURES",
    "ID",
    "KIND_BOUNDS",
    "MAX_ABS_MONEY",
    "MAX_COUNT",
    "MAX_DAYS",
    "MAX_RENT_BURDEN",
    "MAX_SPEND_TO_INCOME",
    "MONTH_AGGREGATES",
    "PENCE_PER_POUND",
    "ROW_COLUMNS",
    "SALARY_GAP_DAYS",
    "SECONDS_PER_DAY",
    "TARGET",
    "Feature",
    "feature_bounds",
    "finalise",
    "month_span",
    "out_of_bounds",
    "per_month",
]

PENCE_PER_POUND = 100
SECONDS_PER_DAY = 86_400
if not set(FLAG_CATEGORIES) <= set(CATEGORIES):  # a has_<c> flag needs lexicon category c
    raise RuntimeError(f"flag categories missing from the lexicon: {FLAG_CATEGORIES}")


def out_of_bounds(features: pd.DataFrame) -> np.ndarray:
    """True for each customer with a feature value outside ``feature_bounds`` (or NaN)."""
    import numpy as np

    outside = np.zeros(len(features), dtype=bool)
    for feature in FEATURES:
        low, high = feature_bounds(feature)
        values = features[feature.name].to_numpy(dtype=float)
        outside |= ~((values >= low) & (values <= high))
    return outside


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


def month_span(as_of_ts: pd.Series | int, first_ts: pd.Series) -> pd.Series:
    """Days of observed history per customer as a rate's denominator: whole days from the
    first transaction to the as-of point, never less than one month (``DAYS_PER_MONTH``)."""
    import numpy as np

    days = (as_of_ts - first_ts.astype("int64")) // SECONDS_PER_DAY
    return np.maximum(days.astype("float64"), DAYS_PER_MONTH)


def per_month(total: pd.Series, span_days: pd.Series) -> pd.Series:
    """``total`` per month of observed history (float64; the caller rounds). Multiplying
    first keeps the arithmetic the same in every engine: total * 30.4375 is exact."""
    return total.astype("int64").astype("float64") * DAYS_PER_MONTH / span_days


def finalise(
    aggregates: pd.DataFrame, months: pd.DataFrame, as_of_ts: int | pd.Series
) -> pd.DataFrame:
    """Features from the combined aggregate table.

    ``aggregates`` is indexed by customer_id with the ``AGGREGATES`` columns; ``months``
    has one row per (customer_id, month) with ``salary_in_month``; ``as_of_ts`` is the
    as-of point time features count from, in UK wall-clock epoch seconds: the batch's
    (latest valid transaction) for every customer, or one per customer (a Series indexed
    by customer_id: the start of each customer's decision date).
    """
    import numpy as np
    import pandas as pd

    a = aggregates.sort_index()
    if isinstance(as_of_ts, pd.Series):
        as_of_ts = as_of_ts.reindex(a.index).astype("int64")
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
    observed = month_span(as_of_ts, a["first_ts"])
    out["transactions_per_month"] = per_month(n, observed).round(4)
    out["credit_per_month"] = (per_month(credit, observed) / PENCE_PER_POUND).round(2)
    out["debit_per_month"] = (per_month(debit, observed) / PENCE_PER_POUND).round(2)
    gambling = per_month(a["gambling_pence"], observed)
    out["gambling_per_month"] = (gambling / PENCE_PER_POUND).round(2)
    out["fees_per_month"] = per_month(a["n_fee"], observed).round(4)
    spend = (-debit).astype("float64") / credit.where(credit > 0, 1).astype("float64")
    no_income = np.where(debit < 0, MAX_SPEND_TO_INCOME, 0.0)
    out["spend_to_income"] = np.where(credit > 0, np.minimum(spend, MAX_SPEND_TO_INCOME), no_income)
    out["spend_to_income"] = out["spend_to_income"].round(4)
    rent = a["rent_pence"].astype("int64")
    burden = rent.astype("float64") / credit.where(credit > 0, 1).astype("float64")
    unpaid_from = np.where(rent > 0, MAX_RENT_BURDEN, 0.0)
    out["rent_burden"] = np.where(credit > 0, np.minimum(burden, MAX_RENT_BURDEN), unpaid_from)
    out["rent_burden"] = out["rent_burden"].round(4)
    gap = (as_of_ts - last_salary) // SECONDS_PER_DAY  # NaN or <NA> without a salary
    out["salary_stopped"] = (gap > SALARY_GAP_DAYS).fillna(False).astype("int64")
    out.index.name = ID
    return out[list(FEATURE_NAMES)]
