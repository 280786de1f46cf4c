"""Incremental batches: a new day costs a day, not the whole history.

``python -m features.incremental add`` classifies one batch (``features.pipeline``'s
order-independent ``classify_chunk``), folds it against the batches before it (copies and
reused transaction ids, first wins in batch-name order) and stores what it found
(``features.partials_store``): per-(customer, UK day) partial aggregates, the per-row
facts a later re-fold needs, its quarantined rows and its tally. ``build`` combines the
stored partials into the same features, training set and report as ``python -m features``
over all batches' rows in one file, without reading a raw file again.

Order: batches are folded in name order. A batch added under a name that sorts before
stored ones is folded against the batches before it, then every later batch is re-folded
from its stored facts (its raw file is not needed); a batch whose copies and conflicts do
not change is left as it is. Adding a batch under an existing name replaces it.

Windows: partials are kept per customer and UK day, and decision dates are starts of UK
days, so ``decision - lookback <= ts < decision`` is decided exactly on whole days at
build time; ``--window-days N`` keeps the N days ending on the as-of date.
"""

from __future__ import annotations

import argparse
import io
import logging
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features import aggregate
from features.command import utc_instant
from features.definitions import AGGREGATES, ID, MONTH_AGGREGATES, SECONDS_PER_DAY, finalise
from features.engine import (
    QuarantineCollector,
    QuarantineSink,
    RunResult,
    Window,
    decision_window,
    finish_run,
    lookback_or_requested,
)
from features.labels import read_labels
from features.partials_store import DAYS, QUARANTINE, ROWS, PartialsStore, StoreError
from features.pipeline import (
    DEFAULT_CHUNK_ROWS,
    ENGINE,
    ClassifiedChunk,
    _TransactionJob,
)
from features.publish import FORMATS, LocalDirectory, run_and_publish
from features.quality import ParsedChunk
from features.reader import Source, open_csv, prefetch, rechunk
from features.report import summary_line
from features.rules import (
    DEFAULT_LOOKBACK_DAYS,
    FINDINGS,
    QUARANTINE_COLUMNS,
    READER_RULES,
    RuleCode,
)
from features.schema import InputError
from features.tally import InputShape, Tally

log = logging.getLogger(__name__)

# outcome of a row after its batch is folded: used, a copy, or its quarantine reason (> 0).
USED, COPY = 0, -1
ROW_INDEX = "_row"  # position of a quarantined row in its batch (quarantine.parquet)
DAY = "day"  # UK wall-clock days since 1970-01-01
SALARY_IN_MONTH = "salary_in_month"
_DAY_BITS = 16  # a partial's key: customer code << 16 | day (days < 65536: until 2149)
_REDUCE = {"sum": np.add, "min": np.minimum, "max": np.maximum}
# Per-batch day partials are folded per customer once this many partial rows pile up.
COMPACT_ROWS = 1_000_000


@dataclass
class _Facts:
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


class _BatchJob(_TransactionJob):
    """``features.pipeline``'s fold for one batch of a store: the same rules and counts,
    started from the hash index of the batches before it. It records each row's outcome
    and leaves aggregation to ``day_partials`` (per day, not per customer)."""

    def __init__(
        self,
        header: list[str],
        delimiter: str,
        now: datetime,
        index: tuple[np.ndarray, np.ndarray],
    ) -> None:
        self.quarantine = QuarantineCollector()
        super().__init__(header, delimiter, now, self.quarantine)
        rows, transactions = index
        self.seen_rows.add(rows)
        self.seen_transactions.add(transactions)
        self.facts = _Facts()

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


def _add_to_index(
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
    codes = aggregate.CustomerCodes()
    customer = facts.column("customer").combine_chunks().filter(keep)
    code = codes.encode(pc.cast(customer, pa.string()))
    key = (code.astype(np.int64) << _DAY_BITS) | day
    description = pc.cast(facts.column("description").combine_chunks().filter(keep), pa.string())
    rows = aggregate.derive_rows(key, np.asarray(facts.column("amount"))[used], ts, description)
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    first = ordered[starts]
    columns: dict[str, Any] = {
        ID: codes.decode(first >> _DAY_BITS),
        DAY: first & ((1 << _DAY_BITS) - 1),
    }
    for name, op, column in (*AGGREGATES, *MONTH_AGGREGATES):
        values = rows[column].to_numpy()[order]
        columns[name] = _REDUCE[op].reduceat(values, starts).astype(np.int64)
    return pa.table(columns)


def _tally_dict(tally: Tally, quarantined: int, as_of_ts: int | None) -> dict[str, Any]:
    return {
        "rows_in": tally.rows_in,
        "rows_used": tally.rows_used,
        "rows_duplicate": tally.rows_duplicate,
        "rows_quarantined": quarantined,
        "as_of_ts": as_of_ts,
        "counts": {str(k): v for k, v in tally.counts.items()},
        "examples": {str(k): v for k, v in tally.examples.items()},
    }


def _as_of(days: pa.Table) -> int | None:
    return int(pc.max(days.column("last_ts")).as_py()) if days.num_rows else None


@dataclass(frozen=True)
class AddedBatch:
    """What ``add`` did: the batch's own accounting and which later batches it re-folded."""

    batch: str
    rows_in: int
    rows_used: int
    rows_duplicate: int
    rows_quarantined: int
    refolded: tuple[str, ...]

    def line(self) -> str:
        """One log line: counts and batch names only, never customer data."""
        again = f"; re-folded {', '.join(self.refolded)}" if self.refolded else ""
        return (
            f"batch {self.batch}: rows in {self.rows_in}: used {self.rows_used}, duplicate "
            f"{self.rows_duplicate}, quarantined {self.rows_quarantined}{again}"
        )


def add_batch(
    store: PartialsStore,
    batch: str,
    transactions: Source,
    *,
    now: datetime | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> AddedBatch:
    """Add (or replace) one batch, then re-fold the later batches it affects.

    ``now`` is the instant of the future-timestamp rule for this batch's rows (default the
    clock): give every batch the same one to reproduce a one-file run exactly."""
    now = now or datetime.now(UTC)
    path = Path(transactions) if isinstance(transactions, str | Path) else None
    handle = path.open("rb") if path is not None and path.is_file() else transactions
    try:
        return _add(store, batch, handle, now, chunk_rows)
    finally:
        if handle is not transactions and hasattr(handle, "close"):
            handle.close()


class _LineCounter(io.RawIOBase):
    """Passes a stream through and counts its physical lines (LF, CRLF or a lone CR ends
    one, as in ``features.records``), so a build can give reader-rule examples the line
    numbers of one file holding every batch."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.breaks = 0
        self.last = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        if n:
            pairs = data.count(b"\r\n") + (self.last == b"\r" and data[:1] == b"\n")
            self.breaks += data.count(b"\n") + data.count(b"\r") - pairs
            self.last = data[-1:]
        return n

    def lines(self) -> int:
        return self.breaks + (self.last not in (b"", b"\n", b"\r"))


def _add(
    store: PartialsStore, batch: str, transactions: Source, now: datetime, chunk_rows: int
) -> AddedBatch:
    counter = None if isinstance(transactions, str | Path) else _LineCounter(transactions)
    stream = open_csv(counter if counter is not None else transactions, "transactions")
    existing = store.batch_names()
    others = [b for b in existing if b != batch]
    if others:
        first = store.manifest(others[0])
        if first["header"] != stream.header or first["delimiter"] != stream.delimiter:
            raise StoreError(
                "transactions: the header differs from the store's batches (every batch "
                "needs the same columns, in the same order, and the same delimiter)"
            )
    index = load_index(store, [b for b in others if b < batch])
    job = _BatchJob(stream.header, stream.delimiter, now, index)
    for chunk in rechunk(prefetch(stream.batches), chunk_rows):
        job.process(chunk)
    facts = job.facts.table()
    days = day_partials(facts)
    outcome = np.asarray(facts.column("outcome"))
    quarantine = job.quarantine_table(outcome)
    tally = _tally_dict(job.tally, len(quarantine), _as_of(days))
    manifest = {
        "header": stream.header,
        "delimiter": stream.delimiter,
        "now": now.isoformat(),
        "checked": list(job.checked_rules),
        "lines": counter.lines() if counter is not None else None,
        "tally": tally,
        "folded_from_raw": tally,
    }
    store.write(
        batch,
        rows=facts,
        days=days,
        quarantine=pa.Table.from_pandas(quarantine, preserve_index=False),
        manifest=manifest,
    )
    later_batches = [b for b in others if b > batch]
    if later_batches:
        index = _add_to_index(index, facts)
    refolded = []
    for later in later_batches:
        index, changed = refold_batch(store, later, index)
        if changed:
            refolded.append(later)
    return AddedBatch(
        batch=batch,
        rows_in=tally["rows_in"],
        rows_used=tally["rows_used"],
        rows_duplicate=tally["rows_duplicate"],
        rows_quarantined=tally["rows_quarantined"],
        refolded=tuple(refolded),
    )


def remove_batch(store: PartialsStore, batch: str) -> tuple[str, ...]:
    """Remove a batch (its input was withdrawn) and re-fold the later batches it affected;
    returns the names of those whose copies or conflicts changed."""
    existing = store.batch_names()
    if batch not in existing:
        return ()
    store.remove(batch)
    index = load_index(store, [b for b in existing if b < batch])
    refolded = []
    for later in [b for b in existing if b > batch]:
        index, changed = refold_batch(store, later, index)
        if changed:
            refolded.append(later)
    return tuple(refolded)


def _placeholder(n: int) -> pa.Array:
    return pa.array(np.full(n, "", dtype=object), pa.string())


def _stored_chunk(
    facts: pa.Table, job: _BatchJob, checked: tuple[RuleCode, ...]
) -> ClassifiedChunk:
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


def refold_batch(
    store: PartialsStore, batch: str, index: tuple[np.ndarray, np.ndarray]
) -> tuple[tuple[np.ndarray, np.ndarray], bool]:
    """Fold a stored batch again after the batches before it changed; rewrite it only if
    some row's outcome changed. Returns (the index with this batch added, changed)."""
    manifest = store.manifest(batch)
    facts = store.table(batch, ROWS)
    job = _BatchJob(manifest["header"], manifest["delimiter"], datetime.now(UTC), index)
    checked = tuple(RuleCode(c) for c in manifest["checked"])
    job.fold(_stored_chunk(facts, job, checked))
    outcome = job.facts.outcomes[0]
    if np.array_equal(outcome, np.asarray(facts.column("outcome"))):
        return _add_to_index(index, facts), False
    facts = facts.set_column(facts.schema.get_field_index("outcome"), "outcome", pa.array(outcome))
    days = day_partials(facts)
    quarantine = _merge_quarantine(
        store.table(batch, QUARANTINE).to_pandas(), job.quarantine_table(outcome)
    )
    tally = _tally_dict(job.tally, len(quarantine), _as_of(days))
    tally["examples"] = _kept_examples(manifest["folded_from_raw"], tally)
    store.write(
        batch,
        rows=facts,
        days=days,
        quarantine=pa.Table.from_pandas(quarantine, preserve_index=False),
        manifest={k: v for k, v in manifest.items() if k not in ("batch", "format_version")}
        | {"tally": tally},
    )
    return _add_to_index(index, facts), True


def _merge_quarantine(stored: pd.DataFrame, refolded: pd.DataFrame) -> pd.DataFrame:
    """The re-folded quarantine, with the stored text of each row that was quarantined
    for the same reason before (the placeholders only for rows newly quarantined)."""
    before = stored.set_index(ROW_INDEX)
    after = refolded.set_index(ROW_INDEX)
    same = after.index.isin(before.index)
    same[same] = (
        before.loc[after.index[same], "reason"].to_numpy()
        == after.loc[after.index[same], "reason"].to_numpy()
    )
    merged = after.copy()
    merged.loc[same] = before.loc[after.index[same]]
    return merged.reset_index()[[*QUARANTINE_COLUMNS, ROW_INDEX]]


def _kept_examples(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[str]]:
    """Examples of a re-folded batch: the ones found in its raw file for each rule whose
    count did not change; none for the others (the store keeps no text to show)."""
    kept = {}
    for code, count in after["counts"].items():
        if before["counts"].get(code) == count:
            kept[code] = before["examples"].get(code, [])
        else:
            kept[code] = []
    return kept


def _batch_tallies(
    store: PartialsStore, batches: list[str]
) -> tuple[Tally, int, list[dict[str, Any]]]:
    tally = Tally()
    quarantined = 0
    manifests = [store.manifest(b) for b in batches]
    offset: int | None = 0  # lines of the batches before, in one file with one header
    for manifest in manifests:
        t = manifest["tally"]
        examples = dict(t["examples"])
        for code in READER_RULES:
            if offset is not None and examples.get(str(code)):
                examples[str(code)] = [_shifted(e, offset) for e in examples[str(code)]]
        lines = manifest.get("lines")
        offset = offset + lines - 1 if offset is not None and lines is not None else None
        tally.rows_in += t["rows_in"]
        tally.rows_used += t["rows_used"]
        tally.rows_duplicate += t["rows_duplicate"]
        quarantined += t["rows_quarantined"]
        for code, count in t["counts"].items():
            tally.add(RuleCode(code), count, examples.get(code, []))
        if t["as_of_ts"] is not None:
            tally.as_of_ts = max(t["as_of_ts"], tally.as_of_ts or t["as_of_ts"])
    return tally, quarantined, manifests


def _shifted(example: str, offset: int) -> str:
    """A reader-rule example (``line N`` of its batch's file) as a line of one file."""
    found = _LINE_EXAMPLE.match(example)
    return f"line {int(found.group(1)) + offset}" if found else example


_LINE_EXAMPLE = re.compile(r"^line (\d+)$")
_AGGREGATE_OPS = [(name, op) for name, op, _ in AGGREGATES]


def _grouped(table: pa.Table, keys: list[str], ops: list[tuple[str, str]]) -> pa.Table:
    """``ops`` (column, sum/min/max) per group of ``keys``, columns keeping their names.
    Partials fold by re-applying their own operation, so this both aggregates day
    partials and combines the results, exactly (integers throughout)."""
    grouped = table.group_by(keys, use_threads=True).aggregate(ops)
    columns = {k: grouped.column(k) for k in keys}
    columns |= {c: grouped.column(f"{c}_{op}") for c, op in ops}
    return pa.table(columns)


def _runs_reduced(table: pa.Table, keys: list[str], ops: list[tuple[str, str]]) -> pa.Table:
    """One row per run of equal ``keys`` (each key's rows are together in ``table``) with
    ``ops`` applied over the run: no hashing, one ``reduceat`` per column."""
    change = np.zeros(table.num_rows, dtype=bool)
    change[:1] = True
    for key in keys:
        column = table.column(key)
        change[1:] |= np.asarray(pc.not_equal(column[1:], column[:-1]))
    starts = np.flatnonzero(change)
    columns = {k: table.column(k).take(pa.array(starts)) for k in keys}
    for name, op in ops:
        columns[name] = _REDUCE[op].reduceat(np.asarray(table.column(name)), starts)
    return pa.table(columns)


def _per_customer(days: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Day partials folded to (per customer ``AGGREGATES``, per customer-month salary).
    days.parquet keeps each customer's days together and in order, so customers and their
    months are runs."""
    month = aggregate.month_index(np.asarray(days.column(DAY)) * SECONDS_PER_DAY)
    months = pa.table(
        {ID: days.column(ID), "month": month, SALARY_IN_MONTH: days.column(SALARY_IN_MONTH)}
    )
    return (
        _runs_reduced(days, [ID], _AGGREGATE_OPS),
        _runs_reduced(months, [ID, "month"], [(SALARY_IN_MONTH, "max")]),
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
    """The ``features.aggregate`` pair ``finalise`` takes."""
    customers = parts[0].to_pandas().set_index(ID)
    months = parts[1].to_pandas().set_index([ID, "month"])
    return customers, months


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
    """The local engine: one batch's day partials at a time, folded per customer."""
    parts: list[tuple[pa.Table, pa.Table]] = []
    seen: list[pa.Array] = []
    outside = {RuleCode.NO_DECISION_DATE: 0, RuleCode.OUTSIDE_DECISION_WINDOW: 0}
    for batch in batches:
        days = store.table(batch, DAYS)
        if window is not None:
            seen.append(pc.unique(days.column(ID)))
            days = _in_window(days, window, outside)
        if first_day is not None:
            days = days.filter(pc.greater_equal(days.column(DAY), first_day))
        if days.num_rows:
            parts.append(_per_customer(days))
        if sum(p[0].num_rows + p[1].num_rows for p in parts) > COMPACT_ROWS and len(parts) > 1:
            parts = [_folded(parts)]
    customers, months = _as_frames(_folded(parts)) if parts else aggregate.empty_aggregates()
    valid = None
    if window is not None:
        ids = pc.unique(pa.concat_arrays(seen)) if seen else pa.array([], pa.string())
        valid = pd.Index(ids.to_numpy(zero_copy_only=False), dtype=object)
    return Combined(customers, months, outside if window is not None else {}, valid)


def build_result(
    store: PartialsStore,
    labels: Source | None = None,
    *,
    now: datetime | None = None,
    generated_at: datetime | None = None,
    on_quarantine: QuarantineSink | None = None,
    lookback_days: int | None = None,
    window_days: int | None = None,
    combine: Combine = combine_days,
) -> RunResult:
    """Combine every stored batch into one run's result (as ``run_pipeline`` over all the
    batches' rows in one file, in batch order). Raw files are not read; memory holds one
    batch's day partials and the per-customer partials folded so far. ``combine`` is the
    engine that folds the day partials (``features.spark`` has one too)."""
    started = time.monotonic()
    now = now or datetime.now(UTC)
    batches = store.batch_names()
    if not batches:
        raise StoreError("the store holds no batches: add one first")
    tally, quarantined, manifests = _batch_tallies(store, batches)
    first = manifests[0]
    columns = _TransactionJob(first["header"], first["delimiter"], now, lambda f: None).columns
    shape = InputShape.from_header(first["header"], first["delimiter"], columns)
    label_result = read_labels(labels, now) if labels is not None else None
    window = decision_window(label_result, lookback_or_requested(lookback_days))
    if window is not None and window_days is not None:
        raise StoreError(
            "--window-days is for labels without decision dates; with decision dates the "
            "window is --lookback-days before each decision"
        )
    collector = None if on_quarantine is not None else QuarantineCollector()
    sink = on_quarantine or collector
    assert sink is not None
    for batch in batches:
        frame = store.table(batch, QUARANTINE).to_pandas()
        if len(frame):
            sink(frame[list(QUARANTINE_COLUMNS)])
    first_day = None
    if window_days is not None and tally.as_of_ts is not None:
        first_day = tally.as_of_ts // SECONDS_PER_DAY - window_days + 1
    combined = combine(store, batches, window, first_day)
    for code, count in combined.outside.items():
        tally.add(code, count, [])
    customers, months, valid = combined.customers, combined.months, combined.valid
    return finish_run(
        engine=ENGINE,
        tally=tally,
        shape=shape,
        features=finalise(
            customers, months, window.decisions if window else tally.as_of_ts or 0
        ).reset_index(),
        labels=label_result,
        rows_quarantined=quarantined,
        started=started,
        generated_at=generated_at or now,
        quarantine=collector.frame() if collector is not None else None,
        window=window,
        valid_customers=valid,
    )


def _in_window(days: pa.Table, window: Window, outside: dict[RuleCode, int]) -> pa.Table:
    """The day partials inside their customer's decision window; the rows of the others
    are counted as the one-file run counts them (``WINDOW_RULES``). Whole days decide it:
    windows start and end at the start of a UK day."""
    ids = pa.array(window.decisions.index.to_numpy(), pa.string())
    position = pc.index_in(days.column(ID), value_set=ids)
    found = np.asarray(pc.is_valid(position))
    where = np.asarray(pc.fill_null(position, 0))
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m features.incremental",
        description="Add transaction batches to a partials store; build features over all "
        "of them as one run over their rows in batch-name order would.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add or replace one batch")
    add.add_argument("--store", required=True, help="the store's directory")
    add.add_argument("--batch", required=True, help="batch name; batches fold in name order")
    add.add_argument("--transactions", required=True, help="the batch's transactions CSV")
    add.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    build = commands.add_parser("build", help="write features, training set and report")
    build.add_argument("--labels", default=None, help="labels CSV (optional)")
    build.add_argument("--out", default="artifacts")
    build.add_argument("--format", choices=FORMATS, default="csv")
    build.add_argument(
        "--lookback-days",
        type=int,
        default=DEFAULT_LOOKBACK_DAYS,
        help="with decision dates: days of history before each decision date",
    )
    build.add_argument(
        "--window-days",
        type=int,
        default=None,
        help="without decision dates: features over the N UK days ending on the as-of date",
    )
    for sub in (add, build):
        if sub is build:
            sub.add_argument("--store", required=True, help="the store's directory")
        sub.add_argument(
            "--now",
            type=utc_instant,
            default=None,
            help="the run's instant (ISO 8601, UTC without an offset); default: now",
        )
    args = parser.parse_args(argv)
    if args.command == "add" and args.chunk_rows < 1:
        parser.error("--chunk-rows must be at least 1")
    if args.command == "build":
        if args.lookback_days < 1:
            parser.error("--lookback-days must be at least 1")
        if args.window_days is not None and args.window_days < 1:
            parser.error("--window-days must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """``add``: 0 when stored; ``build``: 0 when published; 2 when an input or the store
    cannot be used."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    store = PartialsStore.local(args.store)
    try:
        if args.command == "add":
            added = add_batch(
                store,
                args.batch,
                Path(args.transactions),
                now=args.now,
                chunk_rows=args.chunk_rows,
            )
            log.info("%s", added.line())
            return 0
        generated_at = datetime.now(UTC)
        sink = LocalDirectory(Path(args.out), args.format)
        labels = Path(args.labels) if args.labels is not None else None
        result = run_and_publish(
            sink,
            lambda quarantine: build_result(
                store,
                labels,
                now=args.now or generated_at,
                generated_at=generated_at,
                on_quarantine=quarantine,
                lookback_days=args.lookback_days,
                window_days=args.window_days,
            ),
        )
    except (InputError, StoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    log.info("incremental: %s", summary_line(result.report))
    for path in sink.written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
