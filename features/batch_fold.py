"""One batch of an incremental store, folded: what ``features.incremental`` keeps per batch.

A batch is classified chunk by chunk (``features.pipeline.classify_chunk``) and folded by
``BatchJob``, the pandas engine's own fold (``_TransactionJob``) started from the hash
index of the batches before it (``load_index``); it records each row's outcome. What a
later re-fold needs is kept per row (``Facts``: hashes, row-rule reason, findings, parsed
values, outcome), and ``stored_chunk`` turns those facts back into a ``ClassifiedChunk``
so a stored batch folds again without its raw file. ``day_partials`` reduces the used rows
to per-(customer, UK day) partial aggregates.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features import aggregate
from features.definitions import AGGREGATES, ID, MONTH_AGGREGATES, SECONDS_PER_DAY
from features.engine import QuarantineCollector
from features.partials_store import ROWS, PartialsStore
from features.pipeline import ClassifiedChunk, _TransactionJob
from features.quality import ParsedChunk
from features.rules import FINDINGS, RuleCode

# outcome of a row after its batch is folded: used, a copy, or its quarantine reason (> 0).
USED, COPY = 0, -1
ROW_INDEX = "_row"  # position of a quarantined row in its batch (quarantine.parquet)
DAY = "day"  # UK wall-clock days since 1970-01-01
SALARY_IN_MONTH = "salary_in_month"
_DAY_BITS = 16  # a partial's key: customer code << 16 | day (days < 65536: until 2149)
REDUCE = {"sum": np.add, "min": np.minimum, "max": np.maximum}


# Per-batch day partials are folded per customer once this many partial rows pile up.
@dataclass
class Facts:
    """Per-row facts of a batch, chunk by chunk (concatenated by ``table``)."""

    parts: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[np.ndarray] = field(default_factory=list)

    def table(self) -> pa.Table:
        def joined(name: str) -> Any:
            values = [p[name] for p in self.parts]
            if isinstance(values[0], np.ndarray):
                return np.concatenate(values)
            return pa.concat_arrays(values)

        outcome = np.concatenate(self.outcomes) if self.outcomes else np.empty(0, np.int8)
        return facts_table(
            row_hash=joined("row_hash"),
            transaction_hash=joined("transaction_hash"),
            reason=joined("reason"),
            split=joined("split"),
            findings=joined("findings"),
            customer=joined("customer"),
            description=joined("description"),
            ts=joined("ts"),
            amount=joined("amount"),
            outcome=outcome,
        )


def facts_table(**columns: Any) -> pa.Table:
    """rows.parquet: hashes, row-rule reason, findings and parsed values of every row, and
    the row's outcome. Text is dictionary-encoded (customers and descriptions repeat)."""
    out = {}
    for name, values in columns.items():
        if name in ("customer", "description"):
            values = pc.dictionary_encode(pc.fill_null(values, ""))
        out[name] = values
    return pa.table(out)


def _findings_bits(findings: dict[RuleCode, np.ndarray], n: int) -> np.ndarray:
    bits = np.zeros(n, dtype=np.uint16)
    for i, code in enumerate(FINDINGS):
        bits |= findings[code].astype(np.uint16) << i
    return bits


class BatchJob(_TransactionJob):
    """``features.pipeline``'s fold for one batch of a store: the same rules and counts,
    started from the hash index of the batches before it. It records each row's outcome
    and leaves aggregation to ``day_partials`` (per day, not per customer)."""

    def __init__(
        self,
        header: list[str],
        delimiter: str,
        now: datetime,
        index: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.quarantine = QuarantineCollector()
        super().__init__(header, delimiter, now, self.quarantine)
        self.facts = Facts()
        if index is not None:
            self.remember(index)

    def remember(self, index: tuple[np.ndarray, np.ndarray]) -> None:
        """Start from the earlier batches' index (``load_index``): before the first fold."""
        if self.tally.rows_in:
            raise AssertionError("the index of earlier batches comes before the first fold")
        rows, transactions = index
        self.seen_rows.add(rows)
        self.seen_transactions.add(transactions)

    def fold(self, chunk: ClassifiedChunk) -> None:
        n = len(chunk.reason)
        self.facts.parts.append(
            {
                "row_hash": chunk.row_hash,
                "transaction_hash": chunk.transaction_hash,
                "reason": chunk.reason.copy(),
                "split": chunk.split,
                "findings": _findings_bits(chunk.parsed.findings, n),
                "customer": chunk.parsed.customer_id,
                "description": chunk.parsed.description,
                "ts": chunk.parsed.ts,
                "amount": chunk.parsed.amount_pence,
            }
        )
        self.checked_rules = tuple(str(c) for c in chunk.parsed.checked)
        super().fold(chunk)

    def _record_quarantine(
        self,
        canonical: dict[str, pa.Array],
        reason: np.ndarray,
        duplicate: np.ndarray,
        lines: np.ndarray,
        raw: pa.Array,
    ) -> None:
        outcome = reason.astype(np.int8, copy=True)
        outcome[duplicate] = COPY
        self.facts.outcomes.append(outcome)
        super()._record_quarantine(canonical, reason, duplicate, lines, raw)

    def _aggregate(self, *args: Any) -> None:
        """Nothing here: a batch is aggregated per (customer, day) from its facts."""

    def quarantine_table(self, outcome: np.ndarray) -> pd.DataFrame:
        frame = self.quarantine.frame()
        rows = np.flatnonzero(outcome > 0)
        if len(rows) != len(frame):
            raise AssertionError("quarantine rows and outcomes disagree")
        return frame.assign(**{ROW_INDEX: rows})


def load_index(store: PartialsStore, batches: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The duplicate index of ``batches``: distinct row hashes of every row the reader split
    into fields, and transaction-id hashes of every used row (8 bytes each, sorted)."""
    rows, transactions = [], []
    for batch in batches:
        table = store.table(batch, ROWS, ["row_hash", "split", "transaction_hash", "outcome"])
        split = np.asarray(table.column("split"))
        rows.append(np.asarray(table.column("row_hash"))[split])
        used = np.asarray(table.column("outcome")) == USED
        transactions.append(np.asarray(table.column("transaction_hash"))[used])
    if not rows:
        return np.empty(0, np.uint64), np.empty(0, np.uint64)
    return distinct(np.concatenate(rows)), distinct(np.concatenate(transactions))


def distinct(hashes: np.ndarray) -> np.ndarray:
    """Sorted distinct values (a sort and one comparison: numpy's hash-based ``unique`` is
    several times slower on 64-bit hashes)."""
    ordered = np.sort(hashes)
    keep = np.ones(len(ordered), dtype=bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    return ordered[keep]


def add_to_index(
    index: tuple[np.ndarray, np.ndarray], facts: pa.Table
) -> tuple[np.ndarray, np.ndarray]:
    split = np.asarray(facts.column("split"))
    used = np.asarray(facts.column("outcome")) == USED
    rows = np.concatenate([index[0], np.asarray(facts.column("row_hash"))[split]])
    txns = np.concatenate([index[1], np.asarray(facts.column("transaction_hash"))[used]])
    return distinct(rows), distinct(txns)


def day_partials(facts: pa.Table) -> pa.Table:
    """days.parquet: the ``AGGREGATES`` and ``MONTH_AGGREGATES`` of the used rows per
    customer and UK day, from ``features.aggregate``'s row columns. Each customer's days
    are together and in date order (``_per_customer`` relies on it)."""
    used = np.asarray(facts.column("outcome")) == USED
    if not used.any():
        names = [ID, DAY, *(n for n, _, _ in (*AGGREGATES, *MONTH_AGGREGATES))]
        return pa.table({c: pa.array([], pa.string() if c == ID else pa.int64()) for c in names})
    keep = pa.array(used)
    ts = np.asarray(facts.column("ts"))[used]
    day = ts // SECONDS_PER_DAY
    if day.min() < 0 or day.max() >= 1 << _DAY_BITS:
        raise AssertionError("used rows lie between 1990 and the run's date")
    # Text columns stay dictionary-encoded (facts_table): the distinct values are few, so
    # customers are coded and descriptions categorised once per distinct value.
    code, names = _customer_codes(_text(facts, "customer", keep))
    key = (code.astype(np.int64) << _DAY_BITS) | day
    description = _text(facts, "description", keep)
    specs = (*AGGREGATES, *MONTH_AGGREGATES)
    # numpy's sorts, gathers and reductions release the GIL: two threads share the work.
    with ThreadPoolExecutor(2, thread_name_prefix="day-partials") as pool:
        ordering = pool.submit(_runs, key)
        rows = aggregate.derive_rows(key, np.asarray(facts.column("amount"))[used], ts, description)
        order, starts = ordering.result()

        def reduced(spec: tuple[str, str, str]) -> np.ndarray:
            _, op, column = spec
            values = np.take(rows[column].to_numpy(), order)
            return REDUCE[op].reduceat(values, starts).astype(np.int64, copy=False)

        first = key[order[starts]]
        columns: dict[str, Any] = {
            ID: names[first >> _DAY_BITS],
            DAY: first & ((1 << _DAY_BITS) - 1),
        }
        for (name, _, _), values in zip(specs, pool.map(reduced, specs), strict=True):
            columns[name] = values
    return pa.table(columns)


def _runs(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order sorting ``key``, start of each run of equal keys in that order). Not a
    stable sort: every partial is a sum, minimum or maximum, which the order of the rows
    within a run does not change, and numpy's default sort is several times faster."""
    order = np.argsort(key)
    ordered = key[order]
    return order, np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])


def _customer_codes(customer: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(code of each row, id of each code), codes in order of first appearance (the order
    ``aggregate.CustomerCodes`` gives, so days.parquet lists customers as it always did)."""
    if not pa.types.is_dictionary(customer.type):
        codes = aggregate.CustomerCodes()
        code = codes.encode(customer)
        return code, codes.ids().to_numpy()
    indices = np.asarray(customer.indices)
    first = np.full(len(customer.dictionary), len(indices), dtype=np.int64)
    np.minimum.at(first, indices, np.arange(len(indices)))
    appearing = np.argsort(first)[: int((first < len(indices)).sum())]
    rank = np.zeros(len(customer.dictionary), dtype=np.int64)
    rank[appearing] = np.arange(len(appearing))
    names = customer.dictionary.to_numpy(zero_copy_only=False)[appearing]
    return rank[indices], names


def _text(facts: pa.Table, name: str, keep: pa.Array) -> pa.Array:
    """A text column of the used rows, as a string array or its dictionary encoding."""
    values = facts.column(name).combine_chunks().filter(keep)
    if pa.types.is_dictionary(values.type) or pa.types.is_string(values.type):
        return values
    return pc.cast(values, pa.string())


def _placeholder(n: int) -> pa.Array:
    return pa.array(np.full(n, "", dtype=object), pa.string())


def stored_chunk(facts: pa.Table, job: BatchJob, checked: tuple[RuleCode, ...]) -> ClassifiedChunk:
    """A batch's stored facts as a ``ClassifiedChunk`` the fold accepts. Text the store does
    not keep (ids but the customer's, descriptions as written, raw lines) is empty."""
    n = facts.num_rows
    customer = pc.cast(facts.column("customer").combine_chunks(), pa.string())
    bits = np.asarray(facts.column("findings"))
    canonical = {name: _placeholder(n) for name in job.columns.positions}
    canonical[ID] = customer
    parsed = ParsedChunk(
        reason=np.asarray(facts.column("reason")).copy(),
        customer_id=customer,
        transaction_id=_placeholder(n),
        amount_pence=np.asarray(facts.column("amount")),
        ts=np.asarray(facts.column("ts")),
        description=pc.cast(facts.column("description").combine_chunks(), pa.string()),
        findings={code: (bits >> i) & 1 == 1 for i, code in enumerate(FINDINGS)},
        checked=checked,
    )
    return ClassifiedChunk(
        lines=np.zeros(n, dtype=np.int64),
        raw=pa.array([b""] * n, pa.binary()),
        canonical=canonical,
        parsed=parsed,
        reason=parsed.reason,
        split=np.asarray(facts.column("split")),
        row_hash=np.asarray(facts.column("row_hash")),
        transaction_hash=np.asarray(facts.column("transaction_hash")),
    )
