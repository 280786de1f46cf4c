"""pandas engine: per-transaction columns and partial aggregates that combine exactly.

Chunks are aggregated on their own; partial tables are combined by re-applying each
aggregate's operation (sums of sums, minimum of minimums), so the result does not depend
on where chunk boundaries fall.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.definitions import AGGREGATES, ID, MONTH_AGGREGATES
from features.text import CATEGORIES, describe

# How a partial aggregate is combined with another of the same kind.
COMBINE = {"sum": "sum", "min": "min", "max": "max"}


def month_index(ts: np.ndarray) -> np.ndarray:
    """Calendar month as a single integer (year * 12 + month - 1)."""
    months = ts.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)
    return months + 1970 * 12


def derive_rows(
    customer_id: np.ndarray, amount_pence: np.ndarray, ts: np.ndarray, description: pd.Series
) -> pd.DataFrame:
    """The ``ROW_COLUMNS`` of ``features.definitions`` for used transactions."""
    flags = describe(description)
    rows = pd.DataFrame({ID: customer_id, "one": np.ones(len(ts), dtype=np.int64)})
    is_debit = amount_pence < 0
    rows["debit_pence"] = np.where(is_debit, amount_pence, 0)
    rows["credit_pence"] = np.where(is_debit, 0, amount_pence)
    rows["ts"] = ts
    rows["month"] = month_index(ts)
    for c in CATEGORIES:
        rows[f"is_{c}"] = flags[f"is_{c}"].to_numpy().astype(np.int64)
    spend = -rows["debit_pence"].to_numpy()
    rows["rent_pence"] = np.where(rows["is_rent"] == 1, spend, 0)
    rows["gambling_pence"] = np.where(rows["is_gambling"] == 1, spend, 0)
    # Salary credits only: a "salary" debit (e.g. paying a nanny's wages) is not income.
    is_salary_credit = (rows["is_salary"] == 1) & ~is_debit
    rows["salary_ts"] = pd.Series(ts, dtype="Int64").where(is_salary_credit)
    rows["is_salary"] = is_salary_credit.astype(np.int64)
    return rows


def aggregate(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Partial aggregates of one chunk: (per customer, per customer and month)."""
    per_customer = rows.groupby(ID, sort=False).agg(
        **{name: (column, op) for name, op, column in AGGREGATES}
    )
    per_month = rows.groupby([ID, "month"], sort=False).agg(
        **{name: (column, op) for name, op, column in MONTH_AGGREGATES}
    )
    return per_customer, per_month


def combine(
    partials: list[tuple[pd.DataFrame, pd.DataFrame]],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Combine partial aggregates into one pair, exactly."""
    if not partials:
        return empty_aggregates()
    customers = pd.concat([p[0] for p in partials])
    months = pd.concat([p[1] for p in partials])
    if len(partials) > 1:
        customers = customers.groupby(level=0, sort=False).agg(
            {name: COMBINE[op] for name, op, _ in AGGREGATES}
        )
        months = months.groupby(level=[0, 1], sort=False).agg(
            {name: COMBINE[op] for name, op, _ in MONTH_AGGREGATES}
        )
    return customers, months


def empty_aggregates() -> tuple[pd.DataFrame, pd.DataFrame]:
    customers = pd.DataFrame(
        {name: pd.Series(dtype="int64") for name, _, _ in AGGREGATES},
        index=pd.Index([], name=ID, dtype=object),
    )
    months = pd.DataFrame(
        {name: pd.Series(dtype="int64") for name, _, _ in MONTH_AGGREGATES},
        index=pd.MultiIndex.from_arrays([[], []], names=[ID, "month"]),
    )
    return customers, months
