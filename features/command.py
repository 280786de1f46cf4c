"""The job's command line, shared by both engines: ``python -m features [--engine spark]``
and ``python -m features.spark`` parse the same arguments and run the same sequence.

Paths stay strings until an engine uses them, so ``abfss://`` URLs reach Spark intact.
The clock is read here, at the edge: ``generated_at`` (the report's time stamp) is now, and
so is the run's instant for the future-timestamp rule unless ``--now`` sets it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from features.engine import REQUESTED_LOOKBACK_DAYS, QuarantineSink, RunResult
from features.pipeline import DEFAULT_CHUNK_ROWS, MAX_THREADS
from features.publish import FORMATS, OutputSink, run_and_publish
from features.report import summary_line
from features.rules import DEFAULT_LOOKBACK_DAYS
from features.schema import InputError

log = logging.getLogger("features")

ENGINES = ("pandas", "spark")
DEFAULT_TRANSACTIONS, DEFAULT_LABELS = "data/transactions.csv", "data/labels.csv"
# An engine run: (quarantine sink, the run's instant, the report's time stamp) -> result.
EngineRun = Callable[[QuarantineSink, datetime, datetime], RunResult]


def utc_instant(text: str) -> datetime:
    """An ISO 8601 date and time; UTC when it has no offset."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_args(
    argv: list[str] | None, *, prog: str = "python -m features", engine: str | None = None
) -> argparse.Namespace:
    """The arguments of either entry point. ``engine`` fixes the engine (no ``--engine``)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Raw transaction CSVs -> per-customer features, training set and a "
        "data-quality report. Paths may be local (or abfss:// URLs with --engine spark).",
    )
    parser.add_argument("--transactions", default=DEFAULT_TRANSACTIONS)
    parser.add_argument(
        "--labels",
        default=None,
        help="labels CSV; without it no training set is written "
        f"(default: {DEFAULT_LABELS} when --transactions is the default)",
    )
    parser.add_argument("--no-labels", action="store_true", help="ignore the default labels")
    parser.add_argument("--out", default="artifacts")
    if engine is None:
        parser.add_argument(
            "--engine",
            choices=ENGINES,
            default="pandas",
            help="spark runs the same job with PySpark (pip install -r requirements-spark.txt)",
        )
    parser.add_argument(
        "--now",
        type=utc_instant,
        default=None,
        help="the run's date and time (ISO 8601, UTC if no offset) for the future-timestamp "
        "rule; default: now. Set it to make reruns reproducible",
    )
    parser.add_argument(
        "--lookback-days",
        type=int,
        default=DEFAULT_LOOKBACK_DAYS,
        help="with decision dates in the labels: days of history before each customer's "
        f"decision date its features use (default {DEFAULT_LOOKBACK_DAYS}); without them "
        "every transaction is used",
    )
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=DEFAULT_CHUNK_ROWS,
        help="rows per processing chunk (memory bound; Spark bounds memory by partitions)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="chunks processed at the same time (default: the cores available, at most "
        f"{MAX_THREADS}); the outputs do not depend on it",
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="csv", help="format of the tables written"
    )
    spark = parser.add_argument_group("Spark engine")
    spark.add_argument(
        "--master",
        default=None,
        help="Spark master (default: the cluster's when submitted, else local[2])",
    )
    spark.add_argument("--driver-memory", default="4g")
    spark.add_argument("--shuffle-partitions", type=int, default=8)
    spark.add_argument(
        "--multiline",
        action="store_true",
        help="accepted for compatibility: quoted line breaks are always read",
    )
    args = parser.parse_args(argv)
    if engine is not None:
        args.engine = engine
    if args.labels is None and not args.no_labels and args.transactions == DEFAULT_TRANSACTIONS:
        args.labels = DEFAULT_LABELS
    if args.chunk_rows < 1:
        parser.error("--chunk-rows must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.lookback_days < 1:
        parser.error("--lookback-days must be at least 1")
    return args


def execute(args: argparse.Namespace, sink: OutputSink, run: EngineRun) -> int:
    """Run an engine into ``sink``: 0 when published, 2 when an input cannot be used."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    generated_at = datetime.now(UTC)
    now = args.now or generated_at
    # The lookback reaches engines that were not handed one (features.engine).
    requested = REQUESTED_LOOKBACK_DAYS.set(args.lookback_days)
    try:
        result = run_and_publish(sink, lambda quarantine: run(quarantine, now, generated_at))
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        REQUESTED_LOOKBACK_DAYS.reset(requested)
    log.info("%s: %s", args.engine, summary_line(result.report))
    for path in sink.written:
        print(path)
    return 0
