"""``python -m features``: run the Part 1 job on local files (or with ``--engine spark``)."""

from __future__ import annotations

from pathlib import Path

from features.command import execute, parse_args
from features.pipeline import run_pipeline
from features.publish import LocalDirectory


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.engine == "spark":
        from features import spark  # imported only here: pyspark is an optional extra

        return spark.run_command(args)
    labels = Path(args.labels) if args.labels is not None else None
    return execute(
        args,
        LocalDirectory(Path(args.out), args.format),
        lambda quarantine, now, generated_at: run_pipeline(
            Path(args.transactions),
            labels,
            chunk_rows=args.chunk_rows,
            now=now,
            generated_at=generated_at,
            on_quarantine=quarantine,
            threads=args.threads,
        ),
    )
