"""The Part 1 job: raw transactions (+ labels) in, features, report and quarantine out.

Reads the transactions in bounded chunks, so memory does not grow with the file:
each chunk is deduplicated against hashes of everything seen before, validated, and
reduced to partial per-customer aggregates; partials are combined exactly at the end.
Every input row ends in exactly one place: used, removed as duplicate, or quarantined.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features import aggregate
from features.definitions import FEATURE_NAMES, ID, TARGET, finalise
from features.labels import Labels, clean_labels
from features.quality import (
    FINDINGS,
    REASON_INDEX,
    REASON_NAMES,
    RULES_BY_CODE,
    ParsedChunk,
    parse_chunk,
)
from features.reader import Source, decode_utf8, escaped_line, open_csv, prefetch, rechunk
from features.report import build_report
from features.schema import TRANSACTION_ALIASES, TRANSACTION_REQUIRED, InputError, map_columns

log = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 500_000
# Partial aggregates are folded together once this many partial rows pile up.
COMPACT_PARTIAL_ROWS = 2_000_000
EXAMPLES_PER_CHECK = 5
RAW_LINE = "raw_line"
REASON = "reason"

QuarantineSink = Callable[[pd.DataFrame], None]


class SeenHashes:
    """Set of 64-bit hashes kept as one sorted array (8 bytes per entry, no objects).

    Look-ups sort the queries first so the binary searches walk the array in order, and
    merging a sorted batch in is linear (numpy's stable sort detects the two runs).
    """

    def __init__(self) -> None:
        self._sorted = np.empty(0, dtype=np.uint64)

    def repeats(self, hashes: np.ndarray, remember: bool = False) -> np.ndarray:
        """True where a hash was seen before: in earlier calls or earlier in ``hashes``."""
        order = np.argsort(hashes, kind="stable")
        ordered = hashes[order]
        repeat = np.zeros(len(ordered), dtype=bool)
        repeat[1:] = ordered[1:] == ordered[:-1]
        if len(self._sorted):
            position = np.searchsorted(self._sorted, ordered)
            position[position == len(self._sorted)] = 0
            repeat |= self._sorted[position] == ordered
        if remember:
            self._merge(ordered[~repeat])
        out = np.empty(len(hashes), dtype=bool)
        out[order] = repeat
        return out

    def add(self, hashes: np.ndarray) -> None:
        """Remember hashes known to be new and distinct."""
        self._merge(np.sort(hashes))

    def _merge(self, new_sorted: np.ndarray) -> None:
        self._sorted = np.sort(np.concatenate([self._sorted, new_sorted]), kind="stable")


def _hash_strings(*columns: pa.Array) -> np.ndarray:
    """64-bit hash per row of the given string columns, consistent within one process.

    Python's own bytes hash (SipHash) on the joined raw bytes is the cheapest exact-enough
    key we have: a false match needs a 64-bit collision (about 3 in a million at 10M rows).
    """
    as_binary = [pc.cast(c, pa.binary()) for c in columns]
    joined = pc.binary_join_element_wise(*as_binary, pa.scalar(b"\x1f", pa.binary()))
    as_bytes = joined.to_numpy(zero_copy_only=False)
    return np.fromiter(map(hash, as_bytes), dtype=np.int64, count=len(as_bytes)).view(np.uint64)


@dataclass
class Tally:
    """Counts and examples collected while streaming."""

    rows_in: int = 0
    rows_used: int = 0
    rows_duplicate: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    as_of_ts: int | None = None

    def add(self, code: str, count: int, examples: list[str]) -> None:
        self.counts[code] = self.counts.get(code, 0) + count
        kept = self.examples.setdefault(code, [])
        kept.extend(examples[: EXAMPLES_PER_CHECK - len(kept)])


@dataclass
class PipelineResult:
    features: pd.DataFrame  # one row per customer, customer_id first
    training_set: pd.DataFrame | None  # labelled customers, defaulted last
    report: dict
    quarantine_rows: int
    quarantine: pd.DataFrame | None  # only when no quarantine sink was given
    label_quarantine: pd.DataFrame | None = None  # rejected label rows, when labels given

    @property
    def quarantine_columns(self) -> list[str]:
        """Header of the quarantine file: the input's columns, then reason and raw line."""
        return [*self.report["transactions_file"]["columns"], REASON, RAW_LINE]


def _example_values(values: pa.Array, mask: np.ndarray) -> list[str]:
    picked = values.filter(pa.array(mask)).slice(0, EXAMPLES_PER_CHECK).to_pylist()
    return [str(v)[:60] for v in picked]


class _TransactionJob:
    """State for one streaming pass over a transactions file."""

    def __init__(
        self, header: list[str], delimiter: str, now: datetime, on_quarantine: QuarantineSink
    ) -> None:
        self.columns = map_columns(
            header, TRANSACTION_ALIASES, TRANSACTION_REQUIRED, "transactions"
        )
        self.header = header
        self.delimiter = delimiter
        self.now = now
        self.on_quarantine = on_quarantine
        self.seen_rows = SeenHashes()
        self.seen_transactions = SeenHashes()
        self.customer_codes = aggregate.CustomerCodes()
        self.partials: list[tuple[pd.DataFrame, pd.DataFrame]] = []
        self.partial_rows = 0
        self.tally = Tally()

    def process(self, batch: pa.RecordBatch) -> None:
        """Deduplicate, validate and aggregate one chunk of raw (binary) rows."""
        n = batch.num_rows
        self.tally.rows_in += n
        duplicate = self.seen_rows.repeats(_hash_strings(*batch.columns), remember=True)
        text, not_utf8 = decode_utf8(batch)
        canonical = {c: text[p] for c, p in self.columns.positions.items()}

        parsed = parse_chunk(canonical, self.now)
        reason = parsed.reason
        reason[not_utf8] = REASON_INDEX["invalid_utf8"]
        reason[duplicate] = 0
        valid = reason == 0
        valid &= ~duplicate
        txn_hash = _hash_strings(parsed.transaction_id.filter(pa.array(valid)))
        reused = np.zeros(n, dtype=bool)
        reused[valid] = self.seen_transactions.repeats(txn_hash)
        reason[reused] = REASON_INDEX["conflicting_transaction_id"]
        used = valid & ~reused
        self.seen_transactions.add(txn_hash[~reused[valid]])

        self.tally.rows_duplicate += int(duplicate.sum())
        self.tally.rows_used += int(used.sum())
        self._record_quarantine(batch, text, canonical, reason, duplicate)
        self._record_findings(parsed, canonical, used)
        if used.any():
            self._aggregate(parsed, used)

    def _record_quarantine(
        self,
        batch: pa.RecordBatch,
        text: list[pa.Array],
        canonical: dict[str, pa.Array],
        reason: np.ndarray,
        duplicate: np.ndarray,
    ) -> None:
        rejected = reason != 0
        self.tally.add(
            "duplicate",
            int(duplicate.sum()),
            _example_values(canonical["transaction_id"], duplicate),
        )
        if not rejected.any():
            return
        counts = np.bincount(reason, minlength=len(REASON_NAMES))
        for index in np.flatnonzero(counts[1:]) + 1:
            code = REASON_NAMES[index]
            mask = reason == index
            self.tally.add(
                code, int(counts[index]), _example_values(example_column(code, canonical), mask)
            )
        keep = pa.array(rejected)
        frame = pd.DataFrame(
            {i: values.filter(keep).to_numpy(zero_copy_only=False) for i, values in enumerate(text)}
        )
        frame.columns = self.header  # positional: duplicated header names survive
        frame[REASON] = REASON_NAMES[reason[rejected]]
        # Rows that are not UTF-8 keep their exact bytes, backslash-escaped, in raw_line.
        not_text = REASON_INDEX["invalid_utf8"]
        frame[RAW_LINE] = [
            escaped_line(batch, i, self.delimiter) if index == not_text else ""
            for i, index in zip(np.flatnonzero(rejected), reason[rejected], strict=True)
        ]
        self.on_quarantine(frame)

    def _record_findings(
        self, parsed: ParsedChunk, canonical: dict[str, pa.Array], used: np.ndarray
    ) -> None:
        for code in FINDINGS:
            mask = parsed.findings[code] & used
            self.tally.add(
                code, int(mask.sum()), _example_values(example_column(code, canonical), mask)
            )

    def _aggregate(self, parsed: ParsedChunk, used: np.ndarray) -> None:
        keep = pa.array(used)
        ts = parsed.ts[used]
        latest = int(ts.max())
        self.tally.as_of_ts = max(latest, self.tally.as_of_ts or latest)
        partial = aggregate.aggregate(
            customer_code=self.customer_codes.encode(parsed.customer_id.filter(keep)),
            amount_pence=parsed.amount_pence[used],
            ts=ts,
            description=parsed.description.filter(keep),
        )
        self.partials.append(partial)
        self.partial_rows += len(partial[0]) + len(partial[1])
        if self.partial_rows > COMPACT_PARTIAL_ROWS and len(self.partials) > 1:
            self.partials = [aggregate.combine(self.partials)]
            self.partial_rows = len(self.partials[0][0]) + len(self.partials[0][1])

    def record_malformed(self, lines: list[str]) -> None:
        if not lines:
            return
        self.tally.rows_in += len(lines)
        self.tally.add("malformed_row", len(lines), [line[:60] for line in lines])
        frame = pd.DataFrame({name: [""] * len(lines) for name in self.header})
        frame[REASON] = "malformed_row"
        frame[RAW_LINE] = lines
        self.on_quarantine(frame)


def example_column(code: str, canonical: dict[str, pa.Array]) -> pa.Array:
    """Which values illustrate a rule in the report: the offending column's, or the
    transaction id where that column is empty or absent."""
    column = RULES_BY_CODE[code].column
    if code.startswith("missing_") or column not in canonical:
        column = "customer_id" if code == "missing_transaction_id" else "transaction_id"
    return canonical[column]


def read_labels(source: Source) -> Labels:
    """Load and validate a labels file (small: read whole)."""
    stream = open_csv(source, "labels")
    batches = list(stream.batches)
    if any(decode_utf8(b)[1].any() for b in batches):
        raise InputError("labels: not valid UTF-8 text")
    raw = (
        pa.Table.from_batches(batches)
        .cast(pa.schema([(f"c{i}", pa.string()) for i in range(len(stream.header))]))
        .to_pandas()
    )
    raw.columns = stream.header
    labels = clean_labels(raw, "labels")
    if stream.malformed:
        extra = pd.DataFrame({name: [""] * len(stream.malformed) for name in stream.header})
        extra["reason"] = "malformed_row"
        extra[RAW_LINE] = stream.malformed
        labels.quarantine = pd.concat([labels.quarantine, extra], ignore_index=True)
        labels.counts["malformed_row"] = len(stream.malformed)
        labels.rows_in += len(stream.malformed)
    return labels


def run_pipeline(
    transactions: Source,
    labels: Source | None = None,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    now: datetime | None = None,
    on_quarantine: QuarantineSink | None = None,
    progress_seconds: float = 5.0,
) -> PipelineResult:
    """Run the whole job. Raises ``InputError`` when an input cannot be used at all.

    Quarantined rows are handed to ``on_quarantine`` chunk by chunk (so they can be
    streamed to a file); without a sink they are collected into the report's result.
    """
    now = now or datetime.now(UTC)
    collected: list[pd.DataFrame] = []
    sink = on_quarantine or collected.append
    quarantined = 0

    def counting_sink(frame: pd.DataFrame) -> None:
        nonlocal quarantined
        quarantined += len(frame)
        sink(frame)

    label_result = read_labels(labels) if labels is not None else None
    stream = open_csv(transactions, "transactions")
    job = _TransactionJob(stream.header, stream.delimiter, now, counting_sink)
    started = last_log = time.monotonic()
    for batch in rechunk(prefetch(stream.batches), chunk_rows):
        job.process(batch)
        if time.monotonic() - last_log >= progress_seconds:
            last_log = time.monotonic()
            rate = job.tally.rows_in / max(last_log - started, 1e-9)
            log.info("transactions: %d rows read (%.0f rows/s)", job.tally.rows_in, rate)
    job.record_malformed(stream.malformed)
    customers, months = aggregate.combine(job.partials)
    if job.partials:
        customers, months = aggregate.with_customer_ids((customers, months), job.customer_codes)
    features = finalise(customers, months, job.tally.as_of_ts or 0).reset_index()
    training_set = None
    if label_result is not None:
        training_set = join_labels(features, label_result.labels)
    report = build_report(
        job.tally,
        job.columns,
        stream,
        features,
        label_result,
        quarantined,
        elapsed=time.monotonic() - started,
    )
    quarantine = None
    if on_quarantine is None:
        columns = [*stream.header, REASON, RAW_LINE]
        quarantine = (
            pd.concat(collected, ignore_index=True) if collected else pd.DataFrame(columns=columns)
        )
    return PipelineResult(
        features=features,
        training_set=training_set,
        report=report,
        quarantine_rows=quarantined,
        quarantine=quarantine,
        label_quarantine=label_result.quarantine if label_result is not None else None,
    )


def join_labels(features: pd.DataFrame, labels: pd.Series) -> pd.DataFrame:
    joined = features.merge(labels.rename(TARGET).reset_index(), on=ID, how="inner")
    return joined[[ID, *FEATURE_NAMES, TARGET]]
