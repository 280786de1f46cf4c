"""The Part 1 job: raw transactions (+ labels) in, features, report and quarantine out.

Reads the transactions in bounded chunks, so memory does not grow with the file:
each chunk is deduplicated against hashes of everything seen before, validated, and
reduced to partial per-customer aggregates; partials are combined exactly at the end.
With two cores the stages overlap: one thread reads, chunks are classified (every row
rule, hashes) and aggregated on a pool of two, copies and reused ids are decided on their
own thread in file order, and the caller's thread folds chunks in file order, so the
outputs are the same for any number of threads. Every input row ends in exactly one
place: used, removed as duplicate, or quarantined. A row is what ``features.records``
says it is (the reader never skips one), and a customer whose features fall outside the
range the API accepts is withheld, not published. With decision dates
(``features.engine.Window``) only the rows in each customer's window are
aggregated; the others are counted under ``WINDOW_RULES``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features import aggregate
from features.definitions import finalise
from features.engine import (
    QuarantineCollector,
    QuarantineSink,
    RunResult,
    Window,
    decision_window,
    finish_run,
    lookback_or_requested,
)
from features.hashing import hash_rows, hash_values
from features.labels import read_labels
from features.quality import REASON_INDEX, REASON_NAMES, ParsedChunk, parse_chunk
from features.reader import (
    LINE,
    RAW,
    READER_REASONS,
    REJECT,
    SPANS,
    CsvStream,
    Source,
    decode_utf8,
    escape_raw,
    open_csv,
    prefetch,
    rechunk,
)
from features.rules import (
    EXAMPLES_PER_CHECK,
    FINDINGS,
    QUARANTINE_COLUMNS,
    RAW_LINE,
    READER_RULES,
    REASON,
    WINDOW_RULES,
    RuleCode,
    example_column,
    require_every_rule,
)
from features.schema import TRANSACTION_ALIASES, TRANSACTION_REQUIRED, ColumnMap, map_columns
from features.tally import InputShape, Tally

log = logging.getLogger(__name__)

ENGINE = "pandas"
DEFAULT_CHUNK_ROWS = 250_000
# Freed memory is handed back to the system after this many rows (``release_freed_memory``).
RELEASE_EVERY_ROWS = 250_000
# Chunks whose used rows may be aggregating on the pool while the next ones are folded.
AGGREGATING_AHEAD = 2
# Chunks classified at the same time (``classified_in_order``): the cores this process may
# use, at most this many (each chunk in flight holds about 60 MB at the default size).
MAX_THREADS = 2
# Partial aggregates are folded together once this many partial rows pile up, and at least
# twice as many as the last fold left (a file with many customers cannot shrink much, so
# folds get rarer as it grows: each partial row is folded a bounded number of times).
COMPACT_PARTIAL_ROWS = 4_000_000
# Reader reason code (features.reader REJECT column) -> quarantine reason index.
_READER_REASON_INDEX = np.array([0, *(REASON_INDEX[r] for r in READER_REASONS)], dtype=np.int8)
# The rules this module decides around ``parse_chunk``: while rows are cut (the reader),
# while they are decoded, and by file order (exact copies, reused transaction ids).
_DECIDED_HERE = (
    *READER_RULES,
    RuleCode.INVALID_UTF8,
    RuleCode.DUPLICATE,
    RuleCode.CONFLICTING_TRANSACTION_ID,
    *WINDOW_RULES,  # by the decision window, in _aggregate
)


class SeenHashes:
    """Set of 64-bit hashes kept in sorted arrays (8 bytes per entry, no Python objects).

    The set is cut by the top bits of the hash into partitions (hashes are uniform, so they
    fill evenly) of about ``PARTITION_ENTRIES`` at most; their number doubles as the set
    grows. Each partition is two sorted arrays: the bulk, and the recent additions, which
    are merged into the bulk once they reach ``1 / RECENT_SHARE`` of it. A look-up sorts
    the batch once (numpy's SIMD sort) and binary-searches each partition's share of it in
    that partition only (which stays in the CPU cache); an insertion merges each share
    into the small recent array (a merge of two sorted runs, which numpy's stable sort
    detects). So a batch of ``q`` hashes costs ``O(q log q)``, plus copying the recent
    arrays (at most an eighth of the set), plus, amortised, about ``RECENT_SHARE + 1``
    copies into a bulk array per hash: never a sort of the whole set, nor a copy of all of
    it per batch. The sorted contents can be exported and restored (``to_array``,
    ``from_array``), e.g. to persist them between runs.
    """

    PARTITION_ENTRIES = 1 << 18
    RECENT_SHARE = 8

    def __init__(self) -> None:
        self._bits = 0  # partitions are keyed by the top ``_bits`` bits
        self._bulk: list[np.ndarray] = [np.empty(0, dtype=np.uint64)]
        self._recent: list[np.ndarray] = [np.empty(0, dtype=np.uint64)]
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def repeats(self, hashes: np.ndarray, remember: bool = False) -> np.ndarray:
        """True where a hash was seen before: in earlier calls or earlier in ``hashes``.
        With ``remember`` the hashes are then part of the set."""
        hashes = np.asarray(hashes, dtype=np.uint64)
        n = len(hashes)
        order = np.argsort(hashes)  # not stable: the earliest of equal hashes is found below
        ordered = hashes[order]
        first = np.empty(n, dtype=bool)
        first[:1] = True
        np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        distinct = ordered[starts]
        seen = self._contains(distinct)
        if remember:
            self._insert(distinct[~seen])
        # A row is new only if it is the earliest row with its hash and the hash is new.
        earliest = order[starts] if len(starts) == n else np.minimum.reduceat(order, starts)
        out = np.ones(n, dtype=bool)
        out[earliest[~seen]] = False
        return out

    def add(self, hashes: np.ndarray) -> None:
        """Remember hashes known to be new and distinct."""
        self._insert(np.sort(np.asarray(hashes, dtype=np.uint64)))

    def to_array(self) -> np.ndarray:
        """Every hash in the set, sorted ascending (a new uint64 array)."""
        return np.concatenate([self._merged(i) for i in range(len(self._bulk))])

    @classmethod
    def from_array(cls, hashes: np.ndarray) -> SeenHashes:
        """A set holding ``hashes`` (any order; repeats are kept once)."""
        seen = cls()
        values = np.sort(np.asarray(hashes, dtype=np.uint64))
        if len(values):
            keep = np.empty(len(values), dtype=bool)
            keep[0] = True
            np.not_equal(values[1:], values[:-1], out=keep[1:])
            seen._insert(values[keep])
        return seen

    def _cuts(self, ordered: np.ndarray) -> list[np.ndarray]:
        """Sorted values split into each partition's share."""
        if not self._bits:
            return [ordered]
        shift = np.uint64(64 - self._bits)
        bounds = np.arange(1, 1 << self._bits, dtype=np.uint64) << shift
        return np.split(ordered, np.searchsorted(ordered, bounds))

    def _contains(self, distinct: np.ndarray) -> np.ndarray:
        """Membership of sorted values."""
        found = np.zeros(len(distinct), dtype=bool)
        if not self._size:
            return found
        offset = 0
        for index, values in enumerate(self._cuts(distinct)):
            if len(values):
                hit = found[offset : offset + len(values)]
                for part in (self._bulk[index], self._recent[index]):
                    if len(part):
                        position = np.searchsorted(part, values)
                        position[position == len(part)] = 0
                        hit |= part[position] == values
            offset += len(values)
        return found

    def _insert(self, new_sorted: np.ndarray) -> None:
        """Add sorted values that are not in the set and distinct."""
        if not len(new_sorted):
            return
        for index, values in enumerate(self._cuts(new_sorted)):
            if not len(values):
                continue
            recent = np.sort(np.concatenate([self._recent[index], values]), kind="stable")
            if len(recent) * self.RECENT_SHARE >= len(self._bulk[index]):
                self._bulk[index] = np.sort(
                    np.concatenate([self._bulk[index], recent]), kind="stable"
                )
                recent = recent[:0]
            self._recent[index] = recent
        self._size += len(new_sorted)
        while self._size > self.PARTITION_ENTRIES << self._bits and self._bits < 16:
            self._split()

    def _merged(self, index: int) -> np.ndarray:
        """Partition ``index`` as one sorted array."""
        bulk, recent = self._bulk[index], self._recent[index]
        return np.sort(np.concatenate([bulk, recent]), kind="stable") if len(recent) else bulk

    def _split(self) -> None:
        """Double the partitions: each splits in two by the next bit."""
        self._bits += 1
        half = np.uint64(1 << (64 - self._bits))
        bulk = []
        for index in range(len(self._bulk)):
            part = self._merged(index)
            cut = int(np.searchsorted(part, np.uint64(2 * index + 1) * half))
            bulk += [part[:cut], part[cut:]]  # views: no copy of the whole set at once
        self._bulk = bulk
        self._recent = [np.empty(0, dtype=np.uint64) for _ in bulk]


@dataclass(frozen=True)
class ClassifiedChunk:
    """Everything one chunk's rows are on their own, before file order decides anything.

    Nothing here depends on other chunks, so chunks can be classified in any order or at
    the same time, and a store can keep a batch's facts to fold them again later
    (``features.incremental``). Arrays have one entry per row of the chunk.
    """

    lines: np.ndarray  # physical line number of each row
    raw: pa.Array  # each row's bytes as read
    canonical: dict[str, pa.Array]  # decoded text by canonical column name
    parsed: ParsedChunk
    reason: np.ndarray  # int8 quarantine reason by the row rules alone (0: passes them all)
    split: np.ndarray  # the reader cut the row into fields: only such rows can be copies
    row_hash: np.ndarray  # uint64 ``features.hashing`` hash of the row's fields
    transaction_hash: np.ndarray  # uint64 hash of the transaction id (meaningful if reason 0)


def classify_chunk(
    batch: pa.RecordBatch, columns: ColumnMap, width: int, now: datetime
) -> ClassifiedChunk:
    """Apply every row rule to one chunk from ``features.reader`` and hash what the
    order-dependent rules (duplicates, reused transaction ids) will compare."""
    fields = batch.columns[:width]
    reader_reason = _READER_REASON_INDEX[np.asarray(batch.column(REJECT))]
    split = reader_reason == 0
    text, not_utf8 = decode_utf8(fields)
    canonical = {c: text[p] for c, p in columns.positions.items()}
    parsed = parse_chunk(canonical, now, np.asarray(batch.column(SPANS)))
    reason = parsed.reason
    reason[not_utf8] = REASON_INDEX[RuleCode.INVALID_UTF8]
    reason[~split] = reader_reason[~split]
    return ClassifiedChunk(
        lines=np.asarray(batch.column(LINE)),
        raw=batch.column(RAW),
        canonical=canonical,
        parsed=parsed,
        reason=reason,
        split=split,
        row_hash=hash_rows(*fields),
        transaction_hash=hash_values(parsed.transaction_id),
    )


def release_freed_memory() -> None:
    """Hand memory freed by numpy back to the operating system.

    glibc keeps freed blocks for reuse, in one arena per thread; with chunks classified on
    several threads that kept memory grew by about 500 MB over a 10M-row file, more than
    the chunks in flight. Trimming after every ``RELEASE_EVERY_ROWS`` rows costs a little
    system time (pages are mapped again) and keeps the peak near what is really held.
    Does nothing where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (AttributeError, OSError):
        return
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)


def available_threads() -> int:
    """Threads for classifying chunks: the cores this process may run on, at most
    ``MAX_THREADS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cores))


def classified_in_order(
    batches: Iterable[pa.RecordBatch],
    classify: Callable[[pa.RecordBatch], ClassifiedChunk],
    threads: int,
    pool: Executor | None = None,
) -> Iterator[ClassifiedChunk]:
    """``classify`` of each batch, yielded in the batches' order.

    With ``threads`` > 1 the batches are classified on a pool of that many threads (Arrow
    and numpy release the GIL for nearly all of it) while the caller folds the chunk before
    them. At most ``threads`` chunks are submitted and not yet handed over, so memory stays
    bounded (with the chunk being folded and the one the reader is filling, about
    ``threads + 2`` chunks are alive), and the caller sees chunks in file order.
    """
    if threads <= 1:
        for batch in batches:
            yield classify(batch)
        return
    if pool is None:
        with ThreadPoolExecutor(threads, thread_name_prefix="chunks") as own:
            yield from classified_in_order(batches, classify, threads, own)
        return
    pending: deque[Future[ClassifiedChunk]] = deque()
    try:
        for batch in batches:
            pending.append(pool.submit(classify, batch))
            del batch  # the pool holds it until classified
            if len(pending) >= threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


Decided = tuple[np.ndarray, np.ndarray]  # _TransactionJob.decide: (duplicate, reused id)


def _decided_in_order(
    batches: Iterable[pa.RecordBatch],
    classify: Callable[[pa.RecordBatch], ClassifiedChunk],
    decide: Callable[[ClassifiedChunk], Decided],
    threads: int,
    pool: Executor,
    order: Executor,
) -> Iterator[tuple[ClassifiedChunk, Decided]]:
    """(chunk, its decision) for each batch, in the batches' order.

    Chunks are classified on ``pool`` (as in ``classified_in_order``) and decided on
    ``order``, which must run one task at a time, in the order given: so decisions follow
    file order, and chunk k + 1 is decided while the caller folds chunk k.
    """

    def decided(classified: Future[ClassifiedChunk]) -> Decided:
        return decide(classified.result())

    pending: deque[tuple[Future[ClassifiedChunk], Future[Decided]]] = deque()
    try:
        for batch in batches:
            classified = pool.submit(classify, batch)
            pending.append((classified, order.submit(decided, classified)))
            del batch, classified  # the pool holds them until done
            if len(pending) >= threads:
                chunk, decision = pending.popleft()
                yield chunk.result(), decision.result()
        while pending:
            chunk, decision = pending.popleft()
            yield chunk.result(), decision.result()
    finally:
        for futures in pending:
            for future in futures:
                future.cancel()


def _example_values(values: pa.Array, mask: np.ndarray) -> list[str]:
    picked = values.filter(pa.array(mask)).slice(0, EXAMPLES_PER_CHECK).to_pylist()
    return [str(v)[:60] for v in picked]


class _TransactionJob:
    """State for one streaming pass over a transactions file."""

    def __init__(
        self,
        header: list[str],
        delimiter: str,
        now: datetime,
        on_quarantine: QuarantineSink,
        window: Window | None = None,
        aggregate_on: Executor | None = None,
    ) -> None:
        """``aggregate_on``: where chunks' used rows are aggregated (default: in ``fold``);
        call ``finish`` before reading ``partials`` when one is given."""
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
        self.compacted_rows = 0  # partial rows the last fold of partials left
        self.aggregate_on = aggregate_on
        self.aggregating: deque[Future[tuple[pd.DataFrame, pd.DataFrame]]] = deque()
        self.tally = Tally()
        self.checked = False
        self.window = window
        self.decision_of = (
            aggregate.DecisionLookup(window.decisions, self.customer_codes) if window else None
        )

    def process(self, batch: pa.RecordBatch) -> None:
        """Deduplicate, validate and aggregate one chunk of rows (see ``features.reader``)."""
        self.fold(classify_chunk(batch, self.columns, len(self.header), self.now))

    def decide(self, chunk: ClassifiedChunk) -> Decided:
        """(copy of an earlier row, reuses an earlier valid row's transaction id) for each
        row: what depends on the rows before this chunk. Chunks must be decided in file
        order (the first copy wins); ``fold`` calls this unless given its result."""
        n = len(chunk.reason)
        duplicate = np.zeros(n, dtype=bool)
        duplicate[chunk.split] = self.seen_rows.repeats(chunk.row_hash[chunk.split], remember=True)
        valid = (chunk.reason == 0) & ~duplicate
        reused = np.zeros(n, dtype=bool)
        reused[valid] = self.seen_transactions.repeats(chunk.transaction_hash[valid], remember=True)
        return duplicate, reused

    def fold(self, chunk: ClassifiedChunk, decided: Decided | None = None) -> None:
        """Decide what depends on the rows before this chunk (copies, reused transaction
        ids; ``decided`` if ``decide`` already ran for it), count every row once and
        aggregate the used ones. Chunks must be folded in file order: the first copy wins."""
        n = len(chunk.reason)
        self.tally.rows_in += n
        duplicate, reused = decided if decided is not None else self.decide(chunk)
        parsed, canonical = chunk.parsed, chunk.canonical
        if not self.checked:
            require_every_rule(ENGINE, (*parsed.checked, *parsed.findings, *_DECIDED_HERE))
            self.checked = True
        reason = chunk.reason.copy()
        reason[duplicate] = 0
        valid = (reason == 0) & ~duplicate
        reason[reused] = REASON_INDEX[RuleCode.CONFLICTING_TRANSACTION_ID]
        used = valid & ~reused

        self.tally.rows_duplicate += int(duplicate.sum())
        self.tally.rows_used += int(used.sum())
        self._record_quarantine(canonical, reason, duplicate, chunk.lines, chunk.raw)
        self._record_findings(parsed, canonical, used)
        if used.any():
            self._aggregate(parsed, canonical, used)

    def _record_quarantine(
        self,
        canonical: dict[str, pa.Array],
        reason: np.ndarray,
        duplicate: np.ndarray,
        lines: np.ndarray,
        raw: pa.Array,
    ) -> None:
        rejected = reason != 0
        self.tally.add(
            RuleCode.DUPLICATE,
            int(duplicate.sum()),
            _example_values(canonical["transaction_id"], duplicate),
        )
        if not rejected.any():
            return
        counts = np.bincount(reason, minlength=len(REASON_NAMES))
        for index in np.flatnonzero(counts[1:]) + 1:
            code = RuleCode(REASON_NAMES[index])
            mask = reason == index
            if code in READER_RULES:
                examples = [f"line {n}" for n in lines[mask][:EXAMPLES_PER_CHECK].tolist()]
            else:
                examples = _example_values(canonical[example_column(code, canonical)], mask)
            self.tally.add(code, int(counts[index]), examples)
        keep = pa.array(rejected)
        self.on_quarantine(quarantine_frame(canonical, keep, REASON_NAMES[reason[rejected]], raw))

    def _record_findings(
        self, parsed: ParsedChunk, canonical: dict[str, pa.Array], used: np.ndarray
    ) -> None:
        for code in FINDINGS:
            mask = parsed.findings[code] & used
            values = canonical[example_column(code, canonical)]
            self.tally.add(code, int(mask.sum()), _example_values(values, mask))

    def _aggregate(
        self, parsed: ParsedChunk, canonical: dict[str, pa.Array], used: np.ndarray
    ) -> None:
        keep = pa.array(used)
        ts = parsed.ts[used]
        latest = int(ts.max())
        self.tally.as_of_ts = max(latest, self.tally.as_of_ts or latest)
        codes = self.customer_codes.encode(parsed.customer_id.filter(keep))
        amount = parsed.amount_pence[used]
        description = parsed.description.filter(keep)
        if self.window is not None and self.decision_of is not None:
            inside = self._window(codes, ts, canonical, used)
            if not inside.all():
                codes, amount, ts = codes[inside], amount[inside], ts[inside]
                description = description.filter(pa.array(inside))
            if not len(ts):
                return
        rows = {"customer_code": codes, "amount_pence": amount, "ts": ts}
        if self.aggregate_on is None:
            self._add_partial(aggregate.aggregate(**rows, description=description))
            return
        self.aggregating.append(
            self.aggregate_on.submit(aggregate.aggregate, **rows, description=description)
        )
        # Partials are taken in chunk order; at most AGGREGATING_AHEAD wait (memory).
        while self.aggregating and (
            len(self.aggregating) > AGGREGATING_AHEAD or self.aggregating[0].done()
        ):
            self._add_partial(self.aggregating.popleft().result())

    def finish(self) -> None:
        """Wait for the aggregations still running; ``partials`` is then complete."""
        while self.aggregating:
            self._add_partial(self.aggregating.popleft().result())

    def _add_partial(self, partial: tuple[pd.DataFrame, pd.DataFrame]) -> None:
        self.partials.append(partial)
        self.partial_rows += len(partial[0]) + len(partial[1])
        limit = max(COMPACT_PARTIAL_ROWS, 2 * self.compacted_rows)
        if self.partial_rows > limit and len(self.partials) > 1:
            self.partials = [aggregate.combine(self.partials)]
            self.partial_rows = len(self.partials[0][0]) + len(self.partials[0][1])
            self.compacted_rows = self.partial_rows

    def _window(
        self,
        codes: np.ndarray,
        ts: np.ndarray,
        canonical: dict[str, pa.Array],
        used: np.ndarray,
    ) -> np.ndarray:
        """Which used rows lie in their customer's window; the others are counted."""
        assert self.window is not None and self.decision_of is not None
        decision = self.decision_of(codes)
        inside = aggregate.in_window(ts, decision, self.window.lookback_seconds)
        dated = decision != aggregate.NO_DECISION
        positions = np.flatnonzero(used)
        for code, outside in (
            (RuleCode.NO_DECISION_DATE, ~dated),
            (RuleCode.OUTSIDE_DECISION_WINDOW, dated & ~inside),
        ):
            mask = np.zeros(len(used), dtype=bool)
            mask[positions[outside]] = True
            values = canonical[example_column(code, canonical)]
            self.tally.add(code, int(outside.sum()), _example_values(values, mask))
        return inside


def quarantine_frame(
    canonical: dict[str, pa.Array], keep: pa.Array, reasons: np.ndarray, raw: pa.Array
) -> pd.DataFrame:
    """The rejected rows of a chunk in the shape ``QUARANTINE_COLUMNS``."""
    frame = {}
    count = int(pc.sum(keep).as_py() or 0)
    for name in TRANSACTION_ALIASES:
        values = canonical.get(name)
        frame[name] = (
            values.filter(keep).to_numpy(zero_copy_only=False)
            if values is not None
            else np.full(count, "", dtype=object)
        )
    frame[REASON] = reasons
    frame[RAW_LINE] = escape_raw(raw.filter(keep)).to_numpy(zero_copy_only=False)
    return pd.DataFrame(frame, columns=list(QUARANTINE_COLUMNS))


def _read_and_fold(
    stream: CsvStream,
    job: _TransactionJob,
    chunk_rows: int,
    threads: int,
    pool: Executor | None,
    started: float,
    progress_seconds: float,
) -> None:
    """Every chunk of the file classified (on ``pool`` if given), decided and folded in
    file order."""
    width = len(stream.header)
    now = job.now

    def classify(batch: pa.RecordBatch) -> ClassifiedChunk:
        return classify_chunk(batch, job.columns, width, now)

    # Rows are cut and regrouped into chunks on the reading thread, one chunk ahead.
    batches = prefetch(rechunk(stream.batches, chunk_rows), depth=1)
    with contextlib.ExitStack() as stack:
        chunks: Iterator[tuple[ClassifiedChunk, Decided | None]]
        if pool is None:
            chunks = ((chunk, None) for chunk in classified_in_order(batches, classify, 1))
        else:  # copies and reused ids decided on their own thread, one chunk ahead
            order = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="order"))
            chunks = _decided_in_order(batches, classify, job.decide, threads, pool, order)
        _fold_all(job, chunks, started, progress_seconds)


def _fold_all(
    job: _TransactionJob,
    chunks: Iterator[tuple[ClassifiedChunk, Decided | None]],
    started: float,
    progress_seconds: float,
) -> None:
    """Fold chunks in order, handing freed memory back and logging progress on the way."""
    released, last_log = 0, time.monotonic()
    for chunk, decided in chunks:
        job.fold(chunk, decided)
        del chunk, decided
        if job.tally.rows_in - released >= RELEASE_EVERY_ROWS:
            release_freed_memory()
            released = job.tally.rows_in
        if time.monotonic() - last_log >= progress_seconds:
            last_log = time.monotonic()
            rate = job.tally.rows_in / max(last_log - started, 1e-9)
            log.info("transactions: %d rows read (%.0f rows/s)", job.tally.rows_in, rate)


def run_pipeline(
    transactions: Source,
    labels: Source | None = None,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    now: datetime | None = None,
    generated_at: datetime | None = None,
    on_quarantine: QuarantineSink | None = None,
    progress_seconds: float = 5.0,
    lookback_days: int | None = None,
    threads: int | None = None,
) -> RunResult:
    """Run the whole job. Raises ``InputError`` when an input cannot be used at all.

    ``now`` is the run's instant for the future-timestamp rule (default: the clock);
    ``generated_at`` the report's time stamp (default: ``now``). Quarantined rows are
    handed to ``on_quarantine`` chunk by chunk (so they can be streamed to a file);
    without a sink they are collected into the result. ``lookback_days`` applies when the
    labels carry decision dates (default: ``features.engine.lookback_or_requested``).
    ``threads``: chunks classified at the same time (default ``available_threads()``);
    the outputs are the same for any number.
    """
    now = now or datetime.now(UTC)
    collector = None if on_quarantine is not None else QuarantineCollector()
    sink = on_quarantine or collector
    assert sink is not None
    quarantined = 0

    def counting_sink(frame: pd.DataFrame) -> None:
        nonlocal quarantined
        quarantined += len(frame)
        sink(frame)

    started = time.monotonic()
    lookback = lookback_or_requested(lookback_days)
    label_result = read_labels(labels, now) if labels is not None else None
    release_freed_memory()  # what reading the labels used and no longer holds
    window = decision_window(label_result, lookback)
    stream = open_csv(transactions, "transactions")
    threads = threads or available_threads()
    with contextlib.ExitStack() as stack:
        pool = None
        if threads > 1:
            pool = stack.enter_context(ThreadPoolExecutor(threads, thread_name_prefix="chunks"))
        job = _TransactionJob(
            stream.header, stream.delimiter, now, counting_sink, window, aggregate_on=pool
        )
        _read_and_fold(stream, job, chunk_rows, threads, pool, started, progress_seconds)
        job.finish()
    job.seen_rows = job.seen_transactions = SeenHashes()  # not needed any more
    release_freed_memory()
    customers, months = aggregate.combine(job.partials)
    if job.partials:
        customers, months = aggregate.with_customer_ids((customers, months), job.customer_codes)
    return finish_run(
        engine=ENGINE,
        tally=job.tally,
        shape=InputShape.from_header(stream.header, stream.delimiter, job.columns),
        features=finalise(
            customers, months, window.decisions if window else job.tally.as_of_ts or 0
        ).reset_index(),
        labels=label_result,
        rows_quarantined=quarantined,
        started=started,
        generated_at=generated_at or now,
        quarantine=collector.frame() if collector is not None else None,
        window=window,
        valid_customers=job.customer_codes.ids() if window else None,
    )
