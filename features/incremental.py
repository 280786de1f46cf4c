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

Modules: ``batch_fold`` (one batch folded, its facts and day partials),
``partials_combine`` (the day partials combined per customer), ``partials_store`` (the
store's files); this one adds, removes and builds, and is the command line.

Windows: partials are kept per customer and UK day, and decision dates are starts of UK
days, so ``decision - lookback <= ts < decision`` is decided exactly on whole days at
build time; ``--window-days N`` keeps the N days ending on the as-of date.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.batch_fold import (
    ROW_INDEX,
    BatchJob,
    add_to_index,
    day_partials,
    load_index,
    stored_chunk,
)
from features.command import utc_instant
from features.definitions import SECONDS_PER_DAY, finalise
from features.engine import (
    QuarantineCollector,
    QuarantineSink,
    RunResult,
    Window,
    decision_window,
    finish_run,
    lookback_or_requested,
)
from features.labels import Labels, read_labels
from features.partials_combine import Combine, combine_days, combine_days_later
from features.partials_store import (
    QUARANTINE,
    ROWS,
    PartialsStore,
    StoreError,
    check_batch_name,
    table_bytes,
)
from features.pipeline import (
    DEFAULT_CHUNK_ROWS,
    ENGINE,
    _TransactionJob,
    available_threads,
    classified_in_order,
    classify_chunk,
)
from features.publish import FORMATS, LocalDirectory, run_and_publish
from features.reader import Source, open_csv, prefetch, rechunk
from features.report import summary_line
from features.rules import DEFAULT_LOOKBACK_DAYS, QUARANTINE_COLUMNS, READER_RULES, RuleCode
from features.schema import InputError
from features.tally import InputShape, Tally

log = logging.getLogger(__name__)


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
    check_batch_name(batch)  # before any work
    now = now or datetime.now(UTC)
    path = Path(transactions) if isinstance(transactions, str | Path) else None
    handle = path.open("rb") if path is not None and path.is_file() else transactions
    try:
        return _add(store, batch, handle, now, chunk_rows)
    finally:
        if handle is not transactions and hasattr(handle, "close"):
            handle.close()


def _add(
    store: PartialsStore, batch: str, transactions: Source, now: datetime, chunk_rows: int
) -> AddedBatch:
    stream = open_csv(transactions, "transactions")
    existing = store.batch_names()
    others = [b for b in existing if b != batch]
    if others:
        first = store.manifest(others[0])
        if first["header"] != stream.header or first["delimiter"] != stream.delimiter:
            raise StoreError(
                "transactions: the header differs from the store's batches (every batch "
                "needs the same columns, in the same order, and the same delimiter)"
            )
    job = BatchJob(stream.header, stream.delimiter, now)

    def load_and_remember() -> tuple[np.ndarray, np.ndarray]:
        loaded = load_index(store, [b for b in others if b < batch])
        job.remember(loaded)
        return loaded

    with ThreadPoolExecutor(1, thread_name_prefix="incremental-add") as side:
        # The earlier batches' index loads into the job while the first chunks are read
        # and classified; it must be there before the first fold.
        loading = side.submit(load_and_remember)
        width = len(stream.header)
        chunks = rechunk(prefetch(stream.batches), chunk_rows)
        # Chunks classified on the pipeline's pool, folded here in file order (first copy
        # wins).
        classify = lambda chunk: classify_chunk(chunk, job.columns, width, now)  # noqa: E731
        for classified in classified_in_order(chunks, classify, available_threads()):
            loading.result()
            job.fold(classified)
        index = loading.result()
        facts = job.facts.table()
        # Parquet encoding releases the GIL: the facts encode while the day partials run.
        rows_file = side.submit(table_bytes, facts)
        days = day_partials(facts)
        outcome = np.asarray(facts.column("outcome"))
        quarantine = job.quarantine_table(outcome)
        rows_bytes = rows_file.result()
    tally = _tally_dict(job.tally, len(quarantine), _as_of(days))
    manifest = {
        "header": stream.header,
        "delimiter": stream.delimiter,
        "now": now.isoformat(),
        "checked": list(job.checked_rules),
        "lines": stream.blocks.lines_read if stream.blocks is not None else None,
        "tally": tally,
        "folded_from_raw": tally,
    }
    store.write(
        batch,
        rows=rows_bytes,
        days=days,
        quarantine=pa.Table.from_pandas(quarantine, preserve_index=False),
        manifest=manifest,
    )
    later_batches = [b for b in others if b > batch]
    if later_batches:
        index = add_to_index(index, facts)
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


def refold_batch(
    store: PartialsStore, batch: str, index: tuple[np.ndarray, np.ndarray]
) -> tuple[tuple[np.ndarray, np.ndarray], bool]:
    """Fold a stored batch again after the batches before it changed; rewrite it only if
    some row's outcome changed. Returns (the index with this batch added, changed)."""
    manifest = store.manifest(batch)
    facts = store.table(batch, ROWS)
    job = BatchJob(manifest["header"], manifest["delimiter"], datetime.now(UTC), index)
    checked = tuple(RuleCode(c) for c in manifest["checked"])
    job.fold(stored_chunk(facts, job, checked))
    outcome = job.facts.outcomes[0]
    if np.array_equal(outcome, np.asarray(facts.column("outcome"))):
        return add_to_index(index, facts), False
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
    return add_to_index(index, facts), True


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


def _publish_quarantine(store: PartialsStore, batches: list[str], sink: QuarantineSink) -> None:
    """Every batch's quarantined rows, in batch order, as the one-file run streams them.
    A sink that takes Arrow tables (the output files' writers) gets them as stored: no
    Python string per cell, so this holds the GIL little while the build combines."""
    append_table = getattr(sink, "append_table", None)
    for batch in batches:
        table = store.table(batch, QUARANTINE).select(list(QUARANTINE_COLUMNS))
        if not table.num_rows:
            continue
        if append_table is not None:
            append_table(table)
        else:
            sink(table.to_pandas())


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
    collector = None if on_quarantine is not None else QuarantineCollector()
    sink = on_quarantine or collector
    assert sink is not None
    first_day = None
    if window_days is not None and tally.as_of_ts is not None:
        first_day = tally.as_of_ts // SECONDS_PER_DAY - window_days + 1

    def labels_and_window() -> tuple[Labels | None, Window | None]:
        label_result = read_labels(labels, now) if labels is not None else None
        window = decision_window(label_result, lookback_or_requested(lookback_days))
        if window is not None and window_days is not None:
            raise StoreError(
                "--window-days is for labels without decision dates; with decision dates the "
                "window is --lookback-days before each decision"
            )
        return label_result, window

    with ThreadPoolExecutor(2, thread_name_prefix="incremental-build") as side:
        # The stored quarantine is published (mostly Arrow compute, which releases the GIL)
        # and the labels are read while the day partials are read and combined; on an error
        # the caller discards what was published (``run_and_publish``).
        publishing = side.submit(_publish_quarantine, store, batches, sink)
        reading = side.submit(labels_and_window)
        if combine is combine_days:  # the local engine reads before the window is known
            combined = combine_days_later(store, batches, lambda: reading.result()[1], first_day)
        else:
            combined = combine(store, batches, reading.result()[1], first_day)
        label_result, window = reading.result()
        publishing.result()
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


def _add_now(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--now",
        type=utc_instant,
        default=None,
        help="the run's instant (ISO 8601, UTC without an offset); default: now",
    )


def add_build_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``build``; ``python -m features.spark build-store`` takes the same."""
    parser.add_argument("--store", required=True, help="the store's directory")
    parser.add_argument("--labels", default=None, help="labels CSV (optional)")
    parser.add_argument("--out", default="artifacts")
    parser.add_argument("--format", choices=FORMATS, default="csv")
    _add_now(parser)
    parser.add_argument(
        "--lookback-days",
        type=int,
        default=DEFAULT_LOOKBACK_DAYS,
        help="with decision dates: days of history before each decision date",
    )
    parser.add_argument(
        "--window-days",
        type=int,
        default=None,
        help="without decision dates: features over the N UK days ending on the as-of date",
    )


def check_build_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse (exit 2, one line) the values ``add_build_options`` cannot use."""
    if args.lookback_days < 1:
        parser.error("--lookback-days must be at least 1")
    if args.window_days is not None and args.window_days < 1:
        parser.error("--window-days must be at least 1")


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
    _add_now(add)
    build = commands.add_parser("build", help="write features, training set and report")
    add_build_options(build)
    args = parser.parse_args(argv)
    if args.command == "add" and args.chunk_rows < 1:
        parser.error("--chunk-rows must be at least 1")
    if args.command == "build":
        check_build_options(parser, args)
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
