"""pandas engine: per-transaction columns and partial aggregates that combine exactly.

Chunks are aggregated on their own; partial tables are combined by re-applying each
aggregate's operation (sums of sums, minimum of minimums), so the result does not depend
on where chunk boundaries fall. Partials are keyed by an integer code per customer
(``CustomerCodes``), not by the id strings, which keeps them small and quick to combine.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.definitions import AGGREGATES, ID, MONTH_AGGREGATES
from features.text import CATEGORIES, describe_distinct

# salary_ts of a transaction that is not a salary credit; real timestamps are positive.
NO_SALARY = -1


def month_index(ts: np.ndarray) -> np.ndarray:
    """Calendar month as a single integer (year * 12 + month - 1)."""
    months = ts.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)
    return months + 1970 * 12


def derive_rows(
    customer_code: np.ndarray, amount_pence: np.ndarray, ts: np.ndarray, description: pa.Array
) -> pd.DataFrame:
    """The ``ROW_COLUMNS`` of ``features.definitions`` for used transactions."""
    description_code, categories = describe_distinct(description)
    rows = pd.DataFrame({ID: customer_code, "one": np.ones(len(ts), dtype=np.int64)})
    is_debit = amount_pence < 0
    rows["debit_pence"] = np.where(is_debit, amount_pence, 0)
    rows["credit_pence"] = np.where(is_debit, 0, amount_pence)
    rows["ts"] = ts
    rows["month"] = month_index(ts)
    for c in CATEGORIES:
        rows[f"is_{c}"] = categories[f"is_{c}"].to_numpy()[description_code].astype(np.int64)
    spend = -rows["debit_pence"].to_numpy()
    rows["rent_pence"] = np.where(rows["is_rent"] == 1, spend, 0)
    rows["gambling_pence"] = np.where(rows["is_gambling"] == 1, spend, 0)
    # Salary credits only: a "salary" debit (e.g. paying a nanny's wages) is not income.
    is_salary_credit = (rows["is_salary"].to_numpy() == 1) & ~is_debit
    rows["is_salary"] = is_salary_credit.astype(np.int64)
    rows["salary_ts"] = np.where(is_salary_credit, ts, NO_SALARY)
    return rows


def _group(rows: pd.DataFrame, keys: list[str], specs: tuple) -> pd.DataFrame:
    """Apply (name, op, column) specs with one grouped reduction per operation."""
    grouped = rows.groupby(keys, sort=False)
    parts = []
    for op in ("sum", "min", "max"):
        chosen = [(name, column) for name, o, column in specs if o == op]
        if chosen:
            reduced = getattr(grouped[[column for _, column in chosen]], op)()
            reduced.columns = [name for name, _ in chosen]
            parts.append(reduced)
    return pd.concat(parts, axis=1)[[name for name, _, _ in specs]]


class CustomerCodes:
    """A stable integer code for each customer id, across all chunks of a run."""

    def __init__(self) -> None:
        self._ids = pd.Index([], dtype=object)

    def encode(self, customer_id: pa.Array) -> np.ndarray:
        encoded = pc.dictionary_encode(customer_id)
        names = np.asarray(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object)
        codes = self._ids.get_indexer(names)
        new = codes < 0
        if new.any():
            codes[new] = np.arange(len(self._ids), len(self._ids) + int(new.sum()))
            self._ids = self._ids.append(pd.Index(names[new], dtype=object))
        return codes[np.asarray(encoded.indices)]

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self._ids.to_numpy()[codes]

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> pd.Index:
        """Every customer id encoded so far, in code order."""
        return self._ids


# decision_ts of a customer without a decision date (real ones are positive).
NO_DECISION = np.iinfo(np.int64).min


class DecisionLookup:
    """Each customer code's decision instant (``NO_DECISION`` when it has none), filled in
    as new customers get codes. ``decisions``: customer_id -> decision instant."""

    def __init__(self, decisions: pd.Series, codes: CustomerCodes) -> None:
        self._decisions = decisions
        self._codes = codes
        self._by_code = np.empty(0, dtype=np.int64)

    def __call__(self, customer_code: np.ndarray) -> np.ndarray:
        known = len(self._codes)
        if known > len(self._by_code):
            new = self._codes.decode(np.arange(len(self._by_code), known))
            found = self._decisions.reindex(new).fillna(NO_DECISION).astype(np.int64)
            self._by_code = np.concatenate([self._by_code, found.to_numpy()])
        return self._by_code[customer_code]


def in_window(ts: np.ndarray, decision: np.ndarray, lookback_seconds: int) -> np.ndarray:
    """The window rule (``features.engine``): decision - lookback <= ts < decision."""
    return (decision != NO_DECISION) & (ts < decision) & (ts >= decision - lookback_seconds)


def aggregate(
    customer_code: np.ndarray, amount_pence: np.ndarray, ts: np.ndarray, description: pa.Array
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Partial aggregates of one chunk of used rows: (per customer, per customer-month)."""
    rows = derive_rows(customer_code, amount_pence, ts, description)
    return _group(rows, [ID], AGGREGATES), _group(rows, [ID, "month"], MONTH_AGGREGATES)


def with_customer_ids(
    aggregates: tuple[pd.DataFrame, pd.DataFrame], codes: CustomerCodes
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Replace integer customer codes in the index by the customer ids."""
    customers, months = aggregates
    customers = customers.set_axis(
        pd.Index(codes.decode(customers.index.to_numpy()), name=ID, dtype=object)
    )
    months = months.set_axis(
        pd.MultiIndex.from_arrays(
            [
                codes.decode(months.index.get_level_values(ID).to_numpy()),
                months.index.get_level_values("month"),
            ],
            names=[ID, "month"],
        )
    )
    return customers, months


def combine(
    partials: list[tuple[pd.DataFrame, pd.DataFrame]],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Combine partial aggregates into one pair, exactly."""
    if not partials:
        return empty_aggregates()
    customers = pd.concat([p[0] for p in partials])
    months = pd.concat([p[1] for p in partials])
    if len(partials) > 1:
        customers = _group(customers.reset_index(), [ID], _recombine(AGGREGATES))
        months = _group(months.reset_index(), [ID, "month"], _recombine(MONTH_AGGREGATES))
    return customers, months


def _recombine(specs: tuple) -> tuple:
    """Specs that fold partial results: each output column reduced with its own op."""
    return tuple((name, op, name) for name, op, _ in specs)


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
