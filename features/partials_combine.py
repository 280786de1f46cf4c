"""The day partials of every stored batch, combined per customer (``Combine``).

``combine_days`` is the local engine: one batch's ``days.parquet`` at a time, the decision
window decided on whole days (windows start and end at the start of a UK day), each
customer's days reduced as runs (the file keeps them together), then folded across batches
with Arrow's group-by; every partial folds with its own operation, so integers stay exact.
``features.spark.store_combine`` is the same fold on Spark.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features import aggregate
from features.batch_fold import DAY, REDUCE, SALARY_IN_MONTH
from features.definitions import AGGREGATES, ID, SECONDS_PER_DAY
from features.engine import Window
from features.partials_store import DAYS, PartialsStore
from features.rules import RuleCode

# Per-batch partials are folded per customer once this many partial rows pile up.
COMPACT_ROWS = 1_000_000
_AGGREGATE_OPS = [(name, op) for name, op, _ in AGGREGATES]


def _grouped(table: pa.Table, keys: list[str], ops: list[tuple[str, str]]) -> pa.Table:
    """``ops`` (column, sum/min/max) per group of ``keys``, columns keeping their names.
    Partials fold by re-applying their own operation, so this both aggregates day
    partials and combines the results, exactly (integers throughout)."""
    grouped = table.group_by(keys, use_threads=True).aggregate(ops)
    columns = {k: grouped.column(k) for k in keys}
    columns |= {c: grouped.column(f"{c}_{op}") for c, op in ops}
    return pa.table(columns)


def _runs_reduced(
    table: pa.Table, keys: dict[str, np.ndarray], ops: list[tuple[str, str]]
) -> pa.Table:
    """One row per run of equal ``keys`` (each key's rows are together in ``table``; a key
    is compared as the integer codes given) with ``ops`` applied over the run: no hashing,
    one ``reduceat`` per column."""
    change = np.zeros(table.num_rows, dtype=bool)
    change[:1] = True
    for codes in keys.values():
        change[1:] |= codes[1:] != codes[:-1]
    starts = np.flatnonzero(change)
    columns = {k: _strings(table.column(k).take(pa.array(starts))) for k in keys}
    for name, op in ops:
        columns[name] = REDUCE[op].reduceat(np.asarray(table.column(name)), starts)
    return pa.table(columns)


def _strings(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return pc.cast(values, pa.string()) if pa.types.is_dictionary(values.type) else values


def _per_customer(days: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Day partials folded to (per customer ``AGGREGATES``, per customer-month salary).
    days.parquet keeps each customer's days together and in order, so customers and their
    months are runs (``days``' customer ids dictionary-encoded, one dictionary)."""
    customer = np.asarray(days.column(ID).combine_chunks().indices)
    month = aggregate.month_index(np.asarray(days.column(DAY)) * SECONDS_PER_DAY)
    months = pa.table(
        {ID: days.column(ID), "month": month, SALARY_IN_MONTH: days.column(SALARY_IN_MONTH)}
    )
    return (
        _runs_reduced(days, {ID: customer}, _AGGREGATE_OPS),
        _runs_reduced(months, {ID: customer, "month": month}, [(SALARY_IN_MONTH, "max")]),
    )


def _folded(parts: list[tuple[pa.Table, pa.Table]]) -> tuple[pa.Table, pa.Table]:
    customers = pa.concat_tables([p[0] for p in parts])
    months = pa.concat_tables([p[1] for p in parts])
    if len(parts) == 1:
        return customers, months
    return (
        _grouped(customers, [ID], _AGGREGATE_OPS),
        _grouped(months, [ID, "month"], [(SALARY_IN_MONTH, "max")]),
    )


def _as_frames(parts: tuple[pa.Table, pa.Table]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``features.aggregate`` pair ``finalise`` takes. The months' index is built from
    Arrow's dictionary codes: ``set_index`` would hash every customer id again."""
    customers = parts[0].to_pandas().set_index(ID)
    months = parts[1]
    ids = pc.dictionary_encode(months.column(ID).combine_chunks())
    month_codes, month_values = pd.factorize(np.asarray(months.column("month")))
    names = pd.Index(ids.dictionary.to_numpy(zero_copy_only=False), dtype=object)
    index = pd.MultiIndex(
        levels=[names, month_values],
        codes=[np.asarray(ids.indices), month_codes],
        names=[ID, "month"],
        verify_integrity=False,
    )
    values = [c for c in months.column_names if c not in (ID, "month")]
    return customers, pd.DataFrame({c: np.asarray(months.column(c)) for c in values}, index=index)


@dataclass(frozen=True)
class Combined:
    """The stored day partials combined over every batch: what an engine adds to a build."""

    customers: pd.DataFrame  # ``AGGREGATES`` by customer_id
    months: pd.DataFrame  # salary_in_month by (customer_id, month)
    outside: dict[RuleCode, int]  # rows kept out by the decision window (``WINDOW_RULES``)
    valid: pd.Index | None  # with a window: every customer with a used row


# (store, batches, decision window, first day kept by --window-days) -> Combined
Combine = Callable[[PartialsStore, list[str], Window | None, int | None], Combined]


def combine_days(
    store: PartialsStore, batches: list[str], window: Window | None, first_day: int | None
) -> Combined:
    """The local engine: each batch's day partials folded per customer on a small pool
    (Parquet decoding, Arrow compute and numpy reductions release the GIL), then folded
    across batches. At most ``_THREADS`` batches' day partials are in memory at once."""
    return combine_days_later(store, batches, lambda: window, first_day)


def combine_days_later(
    store: PartialsStore,
    batches: list[str],
    window_of: Callable[[], Window | None],
    first_day: int | None,
) -> Combined:
    """``combine_days`` with the window asked for (``window_of``, called from the pool's
    threads, may block) once the first batches' day partials are read, so reading them
    overlaps whatever decides the window (reading the labels)."""
    parts: list[tuple[pa.Table, pa.Table]] = []
    seen: list[pa.Array] = []
    outside = {RuleCode.NO_DECISION_DATE: 0, RuleCode.OUTSIDE_DECISION_WINDOW: 0}
    with ThreadPoolExecutor(_THREADS, thread_name_prefix="combine-days") as pool:
        pending = deque()
        for batch in batches:
            pending.append(pool.submit(_one_batch, store, batch, window_of, first_day))
            if len(pending) < _THREADS:
                continue
            parts, seen = _take(pending.popleft().result(), parts, seen, outside)
        while pending:
            parts, seen = _take(pending.popleft().result(), parts, seen, outside)
    customers, months = _as_frames(_folded(parts)) if parts else aggregate.empty_aggregates()
    window = window_of()
    valid = None
    if window is not None:
        ids = pc.unique(pa.concat_arrays(seen)) if seen else pa.array([], pa.string())
        valid = pd.Index(ids.to_numpy(zero_copy_only=False), dtype=object)
    return Combined(customers, months, outside if window is not None else {}, valid)


_THREADS = 2
_Batch = tuple[tuple[pa.Table, pa.Table] | None, pa.Array | None, dict[RuleCode, int]]


def _one_batch(
    store: PartialsStore,
    batch: str,
    window_of: Callable[[], Window | None],
    first_day: int | None,
) -> _Batch:
    """One batch's day partials in the window, folded per customer; the customers it has
    and what the window kept out."""
    days = _one_dictionary(store.table(batch, DAYS, dictionary=[ID]))
    window = window_of()
    outside = {RuleCode.NO_DECISION_DATE: 0, RuleCode.OUTSIDE_DECISION_WINDOW: 0}
    seen = None
    if window is not None:
        seen = _strings(pc.unique(days.column(ID).combine_chunks()))
        days = in_window(days, window, outside)
    if first_day is not None:
        days = days.filter(pc.greater_equal(days.column(DAY), first_day))
    return (_per_customer(days) if days.num_rows else None), seen, outside


def _take(
    done: _Batch,
    parts: list[tuple[pa.Table, pa.Table]],
    seen: list[pa.Array],
    outside: dict[RuleCode, int],
) -> tuple[list[tuple[pa.Table, pa.Table]], list[pa.Array]]:
    """Add one batch's result (in batch order), folding the parts once they pile up."""
    part, ids, kept_out = done
    for code, count in kept_out.items():
        outside[code] += count
    if ids is not None:
        seen = [*seen, ids]
    if part is not None:
        parts = [*parts, part]
    if sum(p[0].num_rows + p[1].num_rows for p in parts) > COMPACT_ROWS and len(parts) > 1:
        parts = [_folded(parts)]
    return parts, seen


def _one_dictionary(days: pa.Table) -> pa.Table:
    """``days`` with its customer ids in one dictionary-encoded chunk (Parquet row groups
    may each bring their own dictionary)."""
    column = days.column(ID)
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    column = pa.chunked_array([column.unify_dictionaries().combine_chunks()])
    return days.set_column(days.schema.get_field_index(ID), ID, column)


def in_window(days: pa.Table, window: Window, outside: dict[RuleCode, int]) -> pa.Table:
    """The day partials inside their customer's decision window; the rows of the others
    are counted as the one-file run counts them (``WINDOW_RULES``). Whole days decide it:
    windows start and end at the start of a UK day. Customer ids are looked up once per
    distinct id (``days``' ids dictionary-encoded, one dictionary)."""
    customer = days.column(ID).combine_chunks()
    ids = pa.array(window.decisions.index.to_numpy(), pa.string())
    position = pc.index_in(customer.dictionary, value_set=ids)
    indices = np.asarray(customer.indices)
    found = np.asarray(pc.is_valid(position))[indices]
    where = np.asarray(pc.fill_null(position, 0))[indices]
    decision = np.where(
        found, window.decisions.to_numpy(dtype=np.int64)[where], aggregate.NO_DECISION
    )
    inside = aggregate.in_window(
        np.asarray(days.column(DAY)) * SECONDS_PER_DAY, decision, window.lookback_seconds
    )
    n = np.asarray(days.column("n"))
    outside[RuleCode.NO_DECISION_DATE] += int(n[~found].sum())
    outside[RuleCode.OUTSIDE_DECISION_WINDOW] += int(n[found & ~inside].sum())
    return days.filter(pa.array(inside))
