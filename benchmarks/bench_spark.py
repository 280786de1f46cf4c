"""Spark local mode vs the pandas engine on the same synthetic batch, in the same run.

Each engine runs as its own process (``python -m features`` and ``python -m
features.spark``); we sample the resident memory of the whole process tree (for Spark:
the Python driver plus its JVM) and report wall time, rows/s and peak RSS, then check
that both wrote the same training set.

    python benchmarks/bench_spark.py                 # 10M rows, 200k customers
    python benchmarks/bench_spark.py --rows 1000000 --customers 20000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SECONDS = 0.2
TIMEOUT_SECONDS = 3600


def machine() -> str:
    cpu = platform.processor() or "cpu"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    import pyspark

    return (
        f"{psutil.cpu_count(logical=True)} cores ({cpu}), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, pandas {pd.__version__}, "
        f"pyspark {pyspark.__version__}, {java.splitlines()[0] if java else 'java ?'}"
    )


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a child may exit between the calls
            total += p.memory_info().rss
    return total


def run(command: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes of the process tree); fails loudly on error."""
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watched = psutil.Process(child.pid)
    peak = 0
    deadline = started + TIMEOUT_SECONDS
    while child.poll() is None and time.perf_counter() < deadline:
        peak = max(peak, tree_rss(watched))
        time.sleep(SAMPLE_SECONDS)
    if child.poll() is None:
        child.kill()
        raise SystemExit(f"timed out after {TIMEOUT_SECONDS} s: {' '.join(command)}")
    wall = time.perf_counter() - started
    stderr = child.stderr.read().decode(errors="replace") if child.stderr else ""
    if child.returncode != 0:
        raise SystemExit(f"failed ({child.returncode}): {' '.join(command)}\n{stderr[-3000:]}")
    return wall, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--data", type=Path, default=Path("/tmp/bench_spark_data"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_spark_out"))
    parser.add_argument("--driver-memory", default="4g")
    args = parser.parse_args()

    transactions = args.data / "transactions.csv"
    summary = args.data / "generation.json"
    wanted = f'"rows": {args.rows},'
    if not (summary.is_file() and wanted in summary.read_text()):
        print(f"generating {args.rows:,} messy rows for {args.customers:,} customers ...")
        generator = [sys.executable, "-m", "features.synthetic", "--messy", "--out", str(args.data)]
        sizes = ["--rows", str(args.rows), "--customers", str(args.customers)]
        subprocess.run([*generator, *sizes], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    size = transactions.stat().st_size
    shutil.rmtree(args.out, ignore_errors=True)
    common = ["--transactions", str(transactions), "--labels", str(args.data / "labels.csv")]
    engines = {
        "pandas": [sys.executable, "-m", "features", *common, "--out", str(args.out / "pandas")],
        "spark local[2]": [
            sys.executable, "-m", "features.spark", *common, "--out", str(args.out / "spark"),
            "--master", "local[2]", "--driver-memory", args.driver_memory,
            "--shuffle-partitions", "8",
        ],
    }  # fmt: skip
    print(f"machine: {machine()}")
    print(f"input: {args.rows:,} rows, {size / 2**20:,.0f} MiB CSV, {args.customers:,} customers")
    print(f"{'engine':<16}{'wall s':>9}{'rows/s':>12}{'peak RSS MiB':>15}")
    for name, command in engines.items():
        wall, peak = run(command)
        print(f"{name:<16}{wall:>9.1f}{args.rows / wall:>12,.0f}{peak / 2**20:>15,.0f}")
    pandas_set = pd.read_csv(args.out / "pandas" / "training_set.csv")
    spark_set = pd.read_csv(args.out / "spark" / "training_set.csv")
    pd.testing.assert_frame_equal(spark_set, pandas_set, check_exact=False, rtol=1e-9)
    same_quarantine = (args.out / "pandas" / "quarantine.csv").read_bytes() == (
        args.out / "spark" / "quarantine.csv"
    ).read_bytes()
    print(
        f"outputs: training sets equal ({len(spark_set):,} rows); "
        f"quarantine.csv byte-identical: {same_quarantine}"
    )
    return 0 if same_quarantine else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
