"""``python -m features``: run the Part 1 job on local files."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from features.outputs import QuarantineWriter, write_outputs
from features.pipeline import DEFAULT_CHUNK_ROWS, run_pipeline
from features.report import summary_line
from features.schema import InputError

log = logging.getLogger("features")


def _utc_instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m features",
        description="Raw transaction CSVs -> per-customer features, training set and a "
        "data-quality report.",
    )
    parser.add_argument("--transactions", type=Path, default=Path("data/transactions.csv"))
    parser.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="labels CSV; without it only features.csv is written "
        "(default: data/labels.csv when --transactions is the default)",
    )
    parser.add_argument("--no-labels", action="store_true", help="ignore the default labels")
    parser.add_argument("--out", type=Path, default=Path("artifacts"))
    parser.add_argument(
        "--engine",
        choices=("pandas", "spark"),
        default="pandas",
        help="spark runs the same job with PySpark (pip install -r requirements-spark.txt)",
    )
    parser.add_argument(
        "--now",
        type=_utc_instant,
        default=None,
        help="the run's date and time (ISO 8601, UTC if no offset) for the future-timestamp "
        "rule; default: now. Set it to make reruns reproducible",
    )
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=DEFAULT_CHUNK_ROWS,
        help="rows per processing chunk (memory bound)",
    )
    args = parser.parse_args(argv)
    if (
        args.labels is None
        and not args.no_labels
        and args.transactions == Path("data/transactions.csv")
    ):
        args.labels = Path("data/labels.csv")
    if args.chunk_rows < 1:
        parser.error("--chunk-rows must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    if args.engine == "spark":
        from features import spark  # imported only here: pyspark is an optional extra

        # The raw arguments, not args: Path() would turn abfss:// into abfss:/.
        return spark.main([a for a in raw if a not in ("--engine", "spark")])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    quarantine_path = args.out / "quarantine.csv"
    partial = quarantine_path.with_name("quarantine.csv.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as handle:
            writer = QuarantineWriter(handle)
            result = run_pipeline(
                args.transactions,
                args.labels,
                chunk_rows=args.chunk_rows,
                on_quarantine=writer,
                now=args.now,
            )
            writer.finish(result.quarantine_columns)
    except InputError as error:
        partial.unlink(missing_ok=True)
        print(f"error: {error}", file=sys.stderr)
        return 2
    os.replace(partial, quarantine_path)
    written = [*write_outputs(result, args.out), quarantine_path]
    log.info("%s", summary_line(result.report))
    for path in written:
        print(path)
    return 0
