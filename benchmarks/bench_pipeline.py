"""The pipeline at scale: pandas CLI versus one DuckDB query, same file, same rules.

Why: issue 4 asks whether the pandas pipeline keeps up with a columnar SQL engine (target:
at most 1.5x DuckDB's wall time at 10M rows, peak memory under 1.5 GB). Each engine runs
as its own subprocess so wall time and peak memory are per run: memory is sampled over the
whole process tree (psutil) and also read from the kernel's ``wait4`` accounting of that
one child. The two feature tables are then compared customer by customer.

Run from the repo root (data go to benchmarks/data/, which git ignores):

    python -m benchmarks.bench_pipeline                       # 1M and 10M rows
    python -m benchmarks.bench_pipeline --sizes 1000000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import psutil
import pyarrow

from benchmarks.duckdb_pipeline import rows_with_reason, run_counts
from features.definitions import FEATURES, ID

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"
# rows -> customers (the sizing: 20k customers at 1M rows, 200k at 10M).
SIZES = {1_000_000: 20_000, 10_000_000: 200_000}
TARGET_RATIO = 1.5
TARGET_PEAK_BYTES = 1.5e9
SAMPLE_SECONDS = 0.02
TIMEOUT_SECONDS = 1800
MONEY = [f.name for f in FEATURES if f.kind == "money"]
RATIOS = [f.name for f in FEATURES if f.kind == "ratio"]
WHOLE = [f.name for f in FEATURES if f.kind not in ("money", "ratio")]


@dataclass
class Run:
    engine: str
    rows: int
    wall: float
    peak_tree: int  # bytes, sampled sum over the process tree
    maxrss: int  # bytes, kernel high-water mark of the child (wait4)
    load: tuple[float, float]  # 1-min load average before and after


def machine() -> list[str]:
    model = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return [
        f"machine: {os.cpu_count()} logical cores ({psutil.cpu_count(logical=False)} physical),"
        f" {psutil.virtual_memory().total / 2**30:.1f} GiB RAM, {model}",
        f"software: Python {platform.python_version()}, pandas {pd.__version__},"
        f" pyarrow {pyarrow.__version__}, numpy {np.__version__}, duckdb {duckdb.__version__},"
        f" {platform.system()} {platform.release()}",
    ]


def ensure_data(rows: int, customers: int, data_dir: Path) -> Path:
    """Generate (once) the messy synthetic batch with the team's generator."""
    out = data_dir / f"messy_{rows}_{customers}_seed1"
    summary = out / "generation.json"
    if summary.exists():
        params = json.loads(summary.read_text())["parameters"]
        if (params["rows"], params["customers"], params["messy"]) == (rows, customers, True):
            return out
    command = [
        sys.executable,
        "-m",
        "features.synthetic",
        "--rows",
        str(rows),
        "--customers",
        str(customers),
        "--seed",
        "1",
        "--out",
        str(out),
        "--messy",
    ]
    print(f"generating {rows:,} rows: {' '.join(command[1:])}", flush=True)
    subprocess.run(command, cwd=ROOT, check=True, timeout=TIMEOUT_SECONDS)
    return out


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    try:
        for p in [process, *process.children(recursive=True)]:
            total += p.memory_info().rss
    except psutil.NoSuchProcess:
        pass
    return total


def measure(engine: str, rows: int, command: list[str], log: Path) -> Run:
    """Run ``command`` to completion: wall time and peak memory of this one run."""
    load_before = os.getloadavg()[0]
    with log.open("w") as handle:
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
        process = psutil.Process(child.pid)
        peak = 0
        while True:
            peak = max(peak, _tree_rss(process))
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > TIMEOUT_SECONDS:
                child.kill()
                raise TimeoutError(f"{engine} ran over {TIMEOUT_SECONDS} s")
            time.sleep(SAMPLE_SECONDS)
        wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{engine} failed ({child.returncode}); see {log}")
    # ru_maxrss is in KiB on Linux.
    return Run(engine, rows, wall, peak, usage.ru_maxrss * 1024, (load_before, os.getloadavg()[0]))


def compare(pandas_csv: Path, duck_parquet: Path) -> tuple[bool, list[str], set[str]]:
    """Same customers, whole numbers and flags equal, money equal to the penny, ratios equal.

    Returns (equal, notes, ids of the customers that differ)."""
    left = pd.read_csv(pandas_csv, dtype={ID: str}, keep_default_na=False)
    right = pd.read_parquet(duck_parquet)
    notes = []
    if len(left) != len(right) or set(left[ID]) != set(right[ID]):
        only_p = len(set(left[ID]) - set(right[ID]))
        only_d = len(set(right[ID]) - set(left[ID]))
        notes.append(f"customers differ: {only_p} only in pandas, {only_d} only in DuckDB")
    both = left.merge(right, on=ID, suffixes=("_pandas", "_duckdb"))
    differing: set[str] = set(left[ID]) ^ set(right[ID])
    for name in [*WHOLE, *MONEY, *RATIOS]:
        a, b = both[f"{name}_pandas"].to_numpy(), both[f"{name}_duckdb"].to_numpy()
        if name in MONEY:
            a, b = np.rint(a * 100).astype(np.int64), np.rint(b * 100).astype(np.int64)
        differ = a != b
        if differ.any():
            notes.append(f"{name}: {int(differ.sum())} customers differ")
            differing |= set(both.loc[differ, ID])
    return not notes, notes, differing


def explain(differing: set[str], transactions: Path, now: datetime, quarantine: Path) -> str:
    """Are the differing customers exactly those with a row DuckDB calls invalid_timestamp
    (an impossible calendar date, e.g. 2025-02-30) that pandas accepted?"""
    duck = rows_with_reason(transactions, now, "invalid_timestamp")
    header = pd.read_csv(quarantine, nrows=0).columns
    txn_column = next(c for c in header if c.strip().lower() in ("transaction_id", "txn_id"))
    rejected = pd.read_csv(
        quarantine, dtype=str, keep_default_na=False, usecols=[txn_column, "reason"]
    )
    pandas_ids = set(
        rejected.loc[rejected["reason"] == "invalid_timestamp", txn_column].str.strip()
    )
    accepted_by_pandas = duck[~duck["transaction_id"].isin(pandas_ids)]
    suspects = set(accepted_by_pandas[ID])
    unexplained = differing - suspects
    return (
        f"{len(accepted_by_pandas)} rows DuckDB rejects as invalid_timestamp are used by pandas"
        f" (customers: {len(suspects)}); differing customers not explained by them:"
        f" {len(unexplained)}"
    )


def bench_size(rows: int, customers: int, data_dir: Path, repeat: int) -> dict:
    folder = ensure_data(rows, customers, data_dir)
    transactions, labels = folder / "transactions.csv", folder / "labels.csv"
    results: dict[str, list[Run]] = {"pandas": [], "duckdb": []}
    now = datetime.now(UTC)
    for attempt in range(repeat):
        out_p, out_d = folder / "out_pandas", folder / "out_duckdb"
        results["pandas"].append(
            measure(
                "pandas",
                rows,
                [
                    sys.executable,
                    "-m",
                    "features",
                    "--transactions",
                    str(transactions),
                    "--labels",
                    str(labels),
                    "--out",
                    str(out_p),
                ],
                folder / f"pandas_{attempt}.log",
            )
        )
        results["duckdb"].append(
            measure(
                "duckdb",
                rows,
                [
                    sys.executable,
                    "-m",
                    "benchmarks.duckdb_pipeline",
                    "--transactions",
                    str(transactions),
                    "--out",
                    str(out_d),
                    "--now",
                    now.isoformat(),
                ],
                folder / f"duckdb_{attempt}.log",
            )
        )
    matched, notes, differing = compare(out_p / "features.csv", out_d / "features.parquet")
    if differing:
        notes.append(explain(differing, transactions, now, out_p / "quarantine.csv"))
    report = json.loads((out_p / "dq_report.json").read_text())
    counts = run_counts(transactions, now)
    return {
        "rows": rows,
        "customers": customers,
        "runs": results,
        "matched": matched,
        "notes": notes,
        "report": report,
        "counts": counts,
    }


def _median(runs: list[Run], attribute: str) -> float:
    return float(np.median([getattr(r, attribute) for r in runs]))


def print_size(result: dict) -> None:
    rows = result["rows"]
    print(f"\n== {rows:,} rows, {result['customers']:,} customers (messy, seed 1) ==")
    header = f"{'engine':8} {'wall s':>8} {'rows/s':>11} {'peak RSS tree':>14} {'maxrss':>9} load"
    print(header)
    for engine, runs in result["runs"].items():
        for r in runs:
            print(
                f"{engine:8} {r.wall:8.2f} {rows / r.wall:11,.0f} {r.peak_tree / 2**20:11,.0f} MiB"
                f" {r.maxrss / 2**20:5,.0f} MiB {r.load[0]:.1f}->{r.load[1]:.1f}"
            )
    pandas_wall = _median(result["runs"]["pandas"], "wall")
    duck_wall = _median(result["runs"]["duckdb"], "wall")
    ratio = pandas_wall / duck_wall
    peak = max(max(r.peak_tree, r.maxrss) for r in result["runs"]["pandas"])
    print(
        f"ratio pandas/duckdb wall (median of {len(result['runs']['pandas'])}): {ratio:.2f}x"
        f" (target <= {TARGET_RATIO}x: {'met' if ratio <= TARGET_RATIO else 'MISSED'});"
        f" pandas peak {peak / 2**30:.2f} GiB"
        f" (target < {TARGET_PEAK_BYTES / 1e9:.1f} GB: "
        f"{'met' if peak < TARGET_PEAK_BYTES else 'MISSED'})"
    )
    print(f"features equal (customers, counts, flags, pence, ratios): {result['matched']}")
    for note in result["notes"]:
        print(f"  - {note}")
    report, counts = result["report"], result["counts"]
    pandas_checks = {c["check"]: c["count"] for c in report["checks"]}
    keys = ("rows_in", "rows_used", "rows_duplicate", "rows_quarantined")
    print(
        "row accounting   "
        + "  ".join(f"{k}={report[k]:,}/{counts[k]:,}" for k in keys)
        + "  (pandas/duckdb)"
    )
    differing = {
        code: (pandas_checks.get(code), n)
        for code, n in {**counts["reasons"], **counts["findings"]}.items()
        if pandas_checks.get(code) != n
    }
    print(
        f"per-rule counts equal: {not differing}" + (f"  differ: {differing}" if differing else "")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--repeat", type=int, default=1, help="runs per engine and size")
    parser.add_argument("--data", type=Path, default=DATA, help="where generated data go")
    args = parser.parse_args(argv)
    for line in machine():
        print(line)
    print(
        "pandas = `python -m features` (features, training set, quarantine, report);"
        " duckdb = one SQL query -> features.parquet (no labels, quarantine or report)"
    )
    for rows in args.sizes:
        customers = SIZES.get(rows, max(1, rows // 50))
        print_size(bench_size(rows, customers, args.data, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
