"""The pipeline at scale: ``python -m features`` versus the equivalent DuckDB query.

Why: issue 14 asks for our wall time at or below the DuckDB reference's
(``benchmarks/duckdb_pipeline.py``: the same rules in one SQL query) at 1M and 10M messy
rows, with both cores busy and peak memory at 10M rows at most 1 GiB. Each engine runs as
its own subprocess on the same file in the same run, both limited to 2 threads (DuckDB
``SET threads = 2``; Arrow's pool via ``OMP_NUM_THREADS=2``; on a machine with more cores
both are pinned to the same two). Per run: wall time, rows/s, peak memory (sampled over the
process tree with psutil, and the kernel's ``wait4`` high-water mark), CPU use as user/wall
and sys/wall (``wait4``: above 1.0 means more than one core was busy). The two feature
tables, the row accounting and every per-rule count are then compared.

``--phases`` also times the phases of our engine in this process (reading on its own,
then a run with reading not overlapped; see ``phase_times``) and two kernels on data they
were made for: categorisation with 150k distinct descriptions, and row hashing with
today's ``pipeline._hash_strings`` against ``features.hashing.hash_rows``.

Run from the repo root (data go to benchmarks/data/, which git ignores):

    python -m benchmarks.bench_pipeline --sizes 1000000 10000000 --repeat 2
    python -m benchmarks.bench_pipeline --sizes 1000000 --phases
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
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
THREADS = 2
TARGET_RATIO = 1.0  # issue 14: our wall time at most DuckDB's
TARGET_PEAK_BYTES = 2**30  # issue 14: at most 1 GiB at 10M rows
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
    user: float  # CPU seconds in user mode (wait4)
    system: float  # CPU seconds in the kernel (wait4)
    load: tuple[float, float]  # 1-min load average before and after

    @property
    def peak(self) -> int:
        return max(self.peak_tree, self.maxrss)


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
        f" {psutil.virtual_memory().total / 2**30:.1f} GiB RAM, {model};"
        f" load average {os.getloadavg()[0]:.2f} at start (above ~0.3: the machine is shared)",
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
        wanted = (rows, customers, True, False)
        found = (params["rows"], params["customers"], params["messy"])
        if (*found, params.get("decision_dates", False)) == wanted:
            return out
    # Labels without decision dates: both engines then run the batch mode the issue measured
    # (one as-of date), which the DuckDB reference runs without being given the labels.
    command = [
        *(sys.executable, "-m", "features.synthetic", "--rows", str(rows)),
        *("--customers", str(customers), "--seed", "1", "--out", str(out), "--messy"),
        "--no-decision-dates",
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


def _two_cores() -> None:
    """In the child: run on the same two cores as the other engine (if there are more)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > THREADS:
        os.sched_setaffinity(0, cores[:THREADS])


def measure(engine: str, rows: int, command: list[str], log: Path) -> Run:
    """Run ``command`` to completion: wall time, peak memory and CPU time of this one run."""
    load_before = os.getloadavg()[0]
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    with log.open("w") as handle:
        started = time.perf_counter()
        child = subprocess.Popen(
            command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=env,
            preexec_fn=_two_cores if hasattr(os, "sched_setaffinity") else None,
        )  # fmt: skip
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
    return Run(
        engine, rows, wall, peak, usage.ru_maxrss * 1024, usage.ru_utime, usage.ru_stime,
        (load_before, os.getloadavg()[0]),
    )  # fmt: skip


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
    now = datetime.now(UTC).replace(microsecond=0)
    out_p, out_d = folder / "out_pandas", folder / "out_duckdb"
    ours = [
        *(sys.executable, "-m", "features", "--transactions", str(transactions)),
        *("--labels", str(labels), "--out", str(out_p), "--now", now.isoformat()),
    ]
    duck = [
        *(sys.executable, "-m", "benchmarks.duckdb_pipeline", "--transactions", str(transactions)),
        *("--out", str(out_d), "--now", now.isoformat(), "--threads", str(THREADS)),
    ]
    for attempt in range(repeat):
        results["pandas"].append(measure("pandas", rows, ours, folder / f"pandas_{attempt}.log"))
        results["duckdb"].append(measure("duckdb", rows, duck, folder / f"duckdb_{attempt}.log"))
    matched, notes, differing = compare(out_p / "features.csv", out_d / "features.parquet")
    if differing:
        notes.append(explain(differing, transactions, now, out_p / "quarantine.csv"))
    report = json.loads((out_p / "dq_report.json").read_text())
    counts = run_counts(transactions, now)
    return {
        "rows": rows,
        "customers": customers,
        "folder": folder,
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
    print(
        f"{'engine':8} {'wall s':>7} {'rows/s':>10} {'peak MiB':>9} {'user/wall':>9}"
        f" {'sys/wall':>8}  load before->after"
    )
    for engine, runs in result["runs"].items():
        for r in runs:
            print(
                f"{engine:8} {r.wall:7.2f} {rows / r.wall:10,.0f} {r.peak / 2**20:9,.0f}"
                f" {r.user / r.wall:9.2f} {r.system / r.wall:8.2f}"
                f"  {r.load[0]:.1f}->{r.load[1]:.1f}"
            )
    ours, duck = result["runs"]["pandas"], result["runs"]["duckdb"]
    ratio = _median(ours, "wall") / _median(duck, "wall")
    peak = max(r.peak for r in ours)
    print(
        f"ratio ours/duckdb wall (median of {len(ours)}, both on {THREADS} threads): {ratio:.2f}x"
        f" (target <= {TARGET_RATIO}x: {'met' if ratio <= TARGET_RATIO else 'MISSED'});"
        f" our peak {peak / 2**30:.2f} GiB (target <= {TARGET_PEAK_BYTES / 2**30:.0f} GiB:"
        f" {'met' if peak <= TARGET_PEAK_BYTES else 'MISSED'});"
        f" our CPU use {_median(ours, 'user') / _median(ours, 'wall'):.2f} user/wall"
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
        + "  (ours/duckdb)"
    )
    differing = {
        code: (pandas_checks.get(code), n)
        for code, n in {**counts["reasons"], **counts["findings"]}.items()
        if pandas_checks.get(code) != n
    }
    print(
        f"per-rule counts equal: {not differing}" + (f"  differ: {differing}" if differing else "")
    )


# --- phases of our engine ---------------------------------------------------------------

# (phase, module, attribute): the functions timed in ``phase_times``. An attribute a
# version does not have is skipped (for a phase listed twice, the first one found is
# timed), so the table survives refactoring and also runs on older versions.
PHASES = (
    ("classifying chunks (row rules, decoding, hashing)", "features.pipeline", "classify_chunk"),
    (
        "folding chunks (copies, reused ids, tally, aggregation)",
        "features.pipeline._TransactionJob",
        "fold",
    ),
    ("categorisation", "features.aggregate", "describe_distinct"),
    ("aggregation (incl. categorisation)", "features.aggregate", "aggregate"),
    ("timestamps", "features.quality", "parse_timestamp"),
    ("amounts", "features.quality", "parse_amount_pence"),
    ("value rules (incl. timestamps, amounts)", "features.pipeline", "parse_chunk"),
    ("hashing", "features.pipeline", "_hash_strings"),
    ("hashing", "features.pipeline", "hash_rows"),
    ("hashing", "features.pipeline", "hash_values"),
    ("duplicate look-up", "features.pipeline.SeenHashes", "repeats"),
    ("utf-8 decoding", "features.pipeline", "decode_utf8"),
    ("quarantine rows", "features.pipeline", "quarantine_frame"),
    ("csv writing", "features.outputs", "csv_bytes"),
    ("csv writing", "features.outputs", "csv_rows"),
)


Times = dict[str, list[float]]  # phase -> [wall seconds, CPU seconds of this process]


def _timed(times: Times, phase: str, function: Callable) -> Callable:
    @functools.wraps(function)
    def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            times[phase][0] += time.perf_counter() - wall
            times[phase][1] += time.process_time() - cpu

    return timed


def _resolve(path: str) -> object | None:
    """The module or class named by a dotted path, or None if it no longer exists."""
    import importlib

    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            target = getattr(target, name, None)
            if target is None:
                return None
        return target
    return None


def startup_seconds() -> list[float]:
    """[wall, CPU] seconds to import the CLI in a fresh interpreter (median of 3)."""
    code = "import time; t, c = time.perf_counter(), time.process_time(); import features.cli; "
    code += "print(time.perf_counter() - t, time.process_time() - c)"
    runs = [
        [float(x) for x in subprocess.run([sys.executable, "-c", code], cwd=ROOT,
         capture_output=True, text=True, check=True, timeout=120).stdout.split()]
        for _ in range(3)
    ]  # fmt: skip
    return [float(v) for v in np.median(np.array(runs), axis=0)]


def phase_times(transactions: Path, labels: Path) -> Times:
    """[wall, CPU] seconds per phase of one run of our engine, reading not overlapped.

    Reading is timed first on its own (cut into rows, fields split, regrouped into
    chunks). Then the run (``run_and_publish`` into a temporary directory, as the CLI
    does) on one thread, with the read-ahead thread replaced by plain iteration, so each
    phase's time is its own; the listed functions are wrapped with timers for that run
    only. CPU seconds (``time.process_time``) move less than wall seconds when other work
    shares the machine.
    """
    import tempfile

    from features import pipeline, reader
    from features.publish import LocalDirectory, run_and_publish

    times: Times = defaultdict(lambda: [0.0, 0.0])
    times["start-up (import features.cli)"] = startup_seconds()
    reading = "reading (cut rows, split fields, rechunk)"
    read_all = _timed(times, reading, lambda: [
        None for _ in reader.rechunk(
            reader.open_csv(transactions, "transactions").batches, pipeline.DEFAULT_CHUNK_ROWS
        )
    ])  # fmt: skip
    read_all()
    saved = []
    timed = set()
    for phase, owner, name in PHASES:
        target = _resolve(owner)
        function = getattr(target, name, None) if target is not None else None
        if function is None or phase in timed:
            continue
        timed.add(phase)
        saved.append((target, name, function))
        setattr(target, name, _timed(times, phase, function))
    saved.append((pipeline, "prefetch", pipeline.prefetch))
    pipeline.prefetch = lambda items, depth=2: items
    now = datetime.now(UTC)
    # One thread: chunks classified in turn, so phases do not overlap (versions without
    # the setting had only one).
    one = {"threads": 1} if "threads" in inspect.signature(pipeline.run_pipeline).parameters else {}
    try:
        with tempfile.TemporaryDirectory() as out:
            whole = _timed(times, "run and publish, reading not overlapped", run_and_publish)
            whole(
                LocalDirectory(Path(out)),
                lambda sink: pipeline.run_pipeline(
                    transactions, labels, now=now, generated_at=now, on_quarantine=sink, **one
                ),
            )
    finally:
        for target, name, function in saved:
            setattr(target, name, function)
    return dict(times)


def distinct_descriptions(count: int, rows: int, seed: int = 3) -> pyarrow.Array:
    """``rows`` bank-style descriptions with ``count`` distinct values (references, dates
    and store numbers make them distinct, as in real statements)."""
    rng = np.random.default_rng(seed)
    merchants = np.array(
        ["TESCO STORES", "SAINSBURYS S/MKTS", "NETFLIX.COM", "PAYPAL *EBAY", "AMAZON MKTPLACE",
         "SKYBET", "PADDY POWER", "COUNCIL TAX DD", "ACME LTD PAYROLL", "STANDING ORDER RENT",
         "FASTER PAYMENT TO", "CARD PAYMENT TO", "UNPAID ITEM FEE", "UBER *TRIP", "Café Nero"]
    )  # fmt: skip
    letters = np.array(list("ABCDEFGHJKLMNPQRSTUVWXYZ"))
    size = count * 2
    refs = ["".join(r) for r in letters[rng.integers(0, len(letters), (size, 5))]]
    text = [
        f"{m} {n} {r} ON {d:02d}/{mo:02d}"
        for m, n, r, d, mo in zip(
            merchants[rng.integers(0, len(merchants), size)], rng.integers(1, 9999, size), refs,
            rng.integers(1, 29, size), rng.integers(1, 13, size), strict=True,
        )
    ]  # fmt: skip
    distinct = np.array(sorted(set(text)), dtype=object)[:count]
    return pyarrow.array(distinct[rng.integers(0, len(distinct), rows)], pyarrow.string())


def kernel_times(transactions: Path) -> Times:
    """Kernels on the data they were made for ([wall, CPU] seconds, best of 3)."""
    from features import hashing, pipeline, reader
    from features.aggregate import describe_distinct

    def best(function: Callable[[], object]) -> list[float]:
        runs = []
        for _ in range(3):
            wall, cpu = time.perf_counter(), time.process_time()
            function()
            runs.append((time.perf_counter() - wall, time.process_time() - cpu))
        return [min(r[0] for r in runs), min(r[1] for r in runs)]

    descriptions = distinct_descriptions(150_000, 1_000_000)
    stream = reader.open_csv(transactions, "transactions")
    chunk = next(reader.rechunk(stream.batches, pipeline.DEFAULT_CHUNK_ROWS))
    fields = chunk.columns[: len(stream.header)]
    raw = chunk.column(reader.RAW)
    times = {"categorisation, 150k distinct descriptions in 1M rows": best(
        lambda: describe_distinct(descriptions)
    )}  # fmt: skip
    label = f"hashing {chunk.num_rows:,} rows"
    if hasattr(pipeline, "_hash_strings"):
        times[f"{label}: pipeline._hash_strings (Python hash)"] = best(
            lambda: pipeline._hash_strings(*fields, raw=raw)
        )
    times[f"{label}: features.hashing.hash_rows"] = best(lambda: hashing.hash_rows(*fields))
    return times


def _rank(phase: str, order: list[str]) -> int:
    """Start-up and reading first, then the phases in ``PHASES`` order, the total last."""
    if phase in order:
        return 2 + order.index(phase)
    return 0 if phase.startswith("start-up") else 1 if phase.startswith("reading") else 99


def print_phases(result: dict) -> None:
    folder = result["folder"]
    print(
        f"\nphases of our engine, {result['rows']:,} rows (seconds, one run, not overlapped):"
        f"\n  {'':58} {'wall':>7} {'cpu':>7}"
    )
    times = phase_times(folder / "transactions.csv", folder / "labels.csv")
    order = list(dict.fromkeys(phase for phase, _, _ in PHASES))
    for phase, (wall, cpu) in sorted(times.items(), key=lambda kv: _rank(kv[0], order)):
        print(f"  {phase:58} {wall:7.3f} {cpu:7.3f}")
    for kernel, (wall, cpu) in kernel_times(folder / "transactions.csv").items():
        print(f"  {kernel:58} {wall:7.3f} {cpu:7.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--repeat", type=int, default=1, help="runs per engine and size")
    parser.add_argument("--data", type=Path, default=DATA, help="where generated data go")
    parser.add_argument("--phases", action="store_true", help="also time our engine's phases")
    args = parser.parse_args(argv)
    for line in machine():
        print(line)
    print(
        "ours = `python -m features` (features, training set, quarantine, report);"
        " duckdb = `benchmarks.duckdb_pipeline`, one SQL query -> features.parquet"
        " (no labels, quarantine or report)"
    )
    for rows in args.sizes:
        customers = SIZES.get(rows, max(1, rows // 50))
        result = bench_size(rows, customers, args.data, args.repeat)
        print_size(result)
        if args.phases:
            print_phases(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
