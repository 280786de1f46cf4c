"""Incremental batches: a full run over the whole history versus "add the last batch, build".

Why: issue 15 asks that adding the last of 4 daily batches of a 2M-row history and building
cost at most 0.6x a full run, and that the gap widen with 8 and 16 batches. The history is a
messy synthetic file (``features.synthetic``, in time order) cut at row starts into equal
parts, each a span of dates; every part but the last is added first (not timed), then one
child process adds the last and builds, and another runs ``python -m features``'s job on the
whole file. Each child times its work only (both pay the same imports, not counted) and
reports its peak memory (``ru_maxrss``). Both use the same labels (decision dates unless
``--plain-labels``) and the same ``now``, and the two ``features.csv`` are compared.

Run from the repo root (data go to benchmarks/data/, which git ignores):

    python -m benchmarks.bench_incremental --rows 2000000 --batches 4 8 16
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "incremental"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
TARGET_RATIO = 0.6  # issue 15, at 4 batches
TIMEOUT_SECONDS = 1800


def _peak_bytes() -> int:
    """This process's peak resident memory (``VmHWM``: since its exec, unlike ``ru_maxrss``,
    which keeps the high-water mark of the parent it was forked from)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_full(transactions: Path, labels: Path, out: Path) -> dict:
    from features.pipeline import run_pipeline
    from features.publish import LocalDirectory, run_and_publish

    started = time.perf_counter()
    run_and_publish(
        LocalDirectory(out),
        lambda q: run_pipeline(transactions, labels, now=NOW, generated_at=NOW, on_quarantine=q),
    )
    return {"seconds": time.perf_counter() - started, "peak_bytes": _peak_bytes()}


def child_incremental(store_dir: Path, batch: str, transactions: Path, labels: Path, out: Path):
    from features.incremental import add_batch, build_result
    from features.partials_store import PartialsStore
    from features.publish import LocalDirectory, run_and_publish

    store = PartialsStore.local(store_dir)
    started = time.perf_counter()
    add_batch(store, batch, transactions, now=NOW)
    added = time.perf_counter()
    run_and_publish(
        LocalDirectory(out),
        lambda q: build_result(store, labels, now=NOW, generated_at=NOW, on_quarantine=q),
    )
    done = time.perf_counter()
    return {
        "seconds": done - started,
        "add_seconds": added - started,
        "build_seconds": done - added,
        "peak_bytes": _peak_bytes(),
    }


def _child(*args: str) -> dict:
    command = [sys.executable, "-m", "benchmarks.bench_incremental", "--child", *args]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def cut(transactions: Path, parts: int, folder: Path) -> list[Path]:
    """The file cut at row starts into ``parts`` files of about equal rows, each with the
    header (a row with a quoted line break is never split)."""
    from features.reader import LINE, open_csv

    stream = open_csv(transactions, "transactions")
    starts = np.concatenate([np.asarray(b.column(LINE)) for b in stream.batches]) - 2
    lines = transactions.read_bytes().splitlines(keepends=True)
    header, body = lines[0], lines[1:]
    bounds = [0, *(int(starts[len(starts) * i // parts]) for i in range(1, parts)), len(body)]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        path = folder / f"day-{i + 1:02d}.csv"
        path.write_bytes(header + b"".join(body[a:b]))
        paths.append(path)
    return paths


def index_bytes(store_dir: Path, batches: list[str]) -> tuple[int, int]:
    """(bytes of the duplicate index the last add loads, rows it covers)."""
    from features.batch_fold import load_index
    from features.partials_store import PartialsStore

    store = PartialsStore.local(store_dir)
    rows, transactions = load_index(store, batches)
    covered = sum(store.manifest(b)["tally"]["rows_in"] for b in batches)
    return rows.nbytes + transactions.nbytes, covered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--customers", type=int, default=None, help="default rows / 50")
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--plain-labels", action="store_true", help="labels without dates")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        paths = [Path(p) for p in rest]
        if kind == "full":
            result = child_full(*paths)
        else:
            result = child_incremental(paths[0], rest[1], *paths[2:])
        print(json.dumps(result))
        return 0

    from features.incremental import add_batch
    from features.partials_store import PartialsStore
    from features.synthetic import generate

    customers = args.customers or max(1, args.rows // 50)
    source = DATA / f"history-{args.rows}"
    if not (source / "transactions.csv").is_file():
        generate(source, args.rows, customers, seed=15, messy=True)
    transactions, labels = source / "transactions.csv", source / "labels.csv"
    if args.plain_labels:  # the same labels without their decision dates
        plain = source / "labels_plain.csv"
        pd.read_csv(labels, dtype=str)[["customer_id", "defaulted"]].to_csv(plain, index=False)
        labels = plain
    mode = "plain" if args.plain_labels else "decision dates"
    print(
        f"{args.rows:,} messy rows, {customers:,} customers, labels: {mode}; "
        f"load average {os.getloadavg()[0]:.2f} at start (above ~0.3: the machine is shared)"
    )
    full = min(
        (_child("full", str(transactions), str(labels), str(DATA / "out-full"))
         for _ in range(args.repeat)),
        key=lambda r: r["seconds"],
    )  # fmt: skip
    print(f"full run (best of {args.repeat}): {full['seconds']:.2f} s, "
          f"peak {full['peak_bytes'] / 2**20:.0f} MiB")  # fmt: skip
    print("| batches | rows per batch | add last + build (s) | add | build | ratio | peak MiB "
          "| duplicate index | index bytes per row | features equal |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    worst = 0.0
    for parts in args.batches:
        work = DATA / f"cut-{parts}"
        shutil.rmtree(work, ignore_errors=True)
        files = cut(transactions, parts, work / "batches")
        store = PartialsStore.local(work / "store")
        for path in files[:-1]:
            add_batch(store, path.stem, path, now=NOW)
        size, covered = index_bytes(work / "store", [p.stem for p in files[:-1]])
        runs = []
        for _ in range(args.repeat):  # each from the store of the first parts-1 batches
            shutil.rmtree(work / "run", ignore_errors=True)
            shutil.copytree(work / "store", work / "run")
            runs.append(_child("incremental", str(work / "run"), files[-1].stem,
                               str(files[-1]), str(labels), str(work / "out")))  # fmt: skip
        inc = min(runs, key=lambda r: r["seconds"])
        same = (work / "out" / "features.csv").read_bytes() == (
            DATA / "out-full" / "features.csv"
        ).read_bytes()
        ratio = inc["seconds"] / full["seconds"]
        worst = max(worst, ratio) if parts == 4 else worst
        print(
            f"| {parts} | {args.rows // parts:,} | {inc['seconds']:.2f} | "
            f"{inc['add_seconds']:.2f} | {inc['build_seconds']:.2f} | {ratio:.2f}x | "
            f"{inc['peak_bytes'] / 2**20:.0f} | {size / 2**20:.1f} MiB | "
            f"{size / max(covered, 1):.1f} | {'yes' if same else 'NO'} |"
        )
    if 4 in args.batches:
        verdict = "meets" if worst <= TARGET_RATIO else "misses"
        print(f"at 4 batches: {worst:.2f}x, {verdict} the {TARGET_RATIO}x target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
