"""Cold start, latency and throughput of the scoring API against a naive baseline, over HTTP.

    python -m benchmarks.bench_api [--requests 3000] [--cold-runs 5] [--http h11|httptools]

(httptools is not in requirements; to try it without changing the environment:
``pip install --target /tmp/ht httptools`` then ``PYTHONPATH=/tmp/ht python ... --http
httptools``.)

Ours is ``python -m scoring`` (one uvicorn worker) serving the default bundle; the baseline
is the obvious design, FastAPI + ``joblib.load`` at import + ``predict_proba`` in a sync
handler (defined below), on the same model. The run:
1. cold start, new process -> first successful POST /predict, ``--cold-runs`` times each,
   alternating ours and the baseline so a change in the host's speed hits both alike;
2. with both servers up and warmed, brief-example requests over keep-alive connections at
   concurrency 1 and 8, alternating ours and the baseline in rounds (p50/p99 over all
   rounds' latencies, requests/s over their total time);
3. for ours, POST /predict/batch with 1000 customers;
4. the two ratios the service is held to, against their targets: cold start (median) at
   most 0.6x the baseline's; at concurrency 8, at least 1.5x its throughput with our p99
   at most 5 ms.
Everything runs on 127.0.0.1; the client (asyncio, raw HTTP/1.1, minimal CPU) shares the
machine with the servers, so figures include that contention.
"""

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from scoring.schema import BRIEF_EXAMPLE as BRIEF

ROOT = Path(__file__).resolve().parent.parent
TIME_LIMIT_S = 120.0  # per scenario, on top of the request-count bound
COLD_RUNS = 5
ROUNDS = 3  # load rounds per concurrency, alternating the servers
# Targets from issue 18.
COLD_RATIO_MAX = 0.6
THROUGHPUT_RATIO_MIN = 1.5
P99_MAX_MS = 5.0


# --- the naive baseline server -------------------------------------------------------
def serve_baseline(port: int, http: str) -> None:
    """FastAPI + joblib.load at import + predict_proba per request: the obvious design.

    (This module has no ``from __future__ import annotations``: FastAPI must see the local
    ``Req`` class itself, not a string, to treat it as the request body.)
    """
    import joblib
    import numpy as np
    import uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel

    model = joblib.load(ROOT / "artifacts" / "model.joblib")
    app = FastAPI()

    class Req(BaseModel):
        customer_id: str
        num_transactions: int
        total_debit: float
        total_credit: float
        avg_amount: float
        has_rent: int = 0
        has_netflix: int = 0
        has_tesco: int = 0
        has_salary: int = 0
        has_bonus: int = 0

    @app.post("/predict")
    def predict(req: Req) -> dict:
        x = np.array(
            [
                [
                    req.num_transactions,
                    req.total_debit,
                    req.total_credit,
                    req.avg_amount,
                    req.has_rent,
                    req.has_netflix,
                    req.has_tesco,
                    req.has_salary,
                    req.has_bonus,
                ]
            ]
        )
        p = float(model.predict_proba(x)[0, 1])
        return {"customer_id": req.customer_id, "probability": p, "prediction": int(p >= 0.5)}

    uvicorn.run(app, host="127.0.0.1", port=port, http=http, log_level="warning", access_log=False)


# --- a minimal HTTP/1.1 client ---------------------------------------------------------
def request_bytes(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def one_call(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
) -> int:
    writer.write(payload)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def run_load(port: int, payload: bytes, total: int, concurrency: int) -> dict:
    latencies: list[float] = []
    errors = 0
    remaining = total
    deadline = time.perf_counter() + TIME_LIMIT_S

    async def worker() -> None:
        nonlocal remaining, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while remaining > 0 and time.perf_counter() < deadline:
                remaining -= 1
                t0 = time.perf_counter()
                try:
                    status = await one_call(reader, writer, payload)
                except (OSError, asyncio.IncompleteReadError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    errors += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {
        "latencies_ms": [x * 1000 for x in latencies],
        "errors": errors,
        "elapsed_s": time.perf_counter() - start,
    }


# --- process management ----------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def try_predict(port: int, payload: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(payload)
            data = s.recv(65536)
            return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def start(cmd: list[str], port: int, payload: bytes) -> tuple[subprocess.Popen, float]:
    """Start a server; return it and the seconds until its first 200 on /predict."""
    t0 = time.perf_counter()
    extra = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), extra]))}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    while time.perf_counter() - t0 < 30:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        if try_predict(port, payload):
            return proc, time.perf_counter() - t0
        time.sleep(0.005)
    proc.kill()
    raise RuntimeError("server did not answer within 30 s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{mem_kb / 1024 / 1024:.1f} GiB"
    except OSError:
        mem = "unknown memory"
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), {mem}, "
        f"Python {platform.python_version()}"
    )


def summarise(runs: list[dict]) -> dict:
    """Pool rounds: p50/p99 over every latency, requests/s over the summed elapsed time."""
    ms = sorted(x for r in runs for x in r["latencies_ms"])
    return {
        "requests": len(ms),
        "errors": sum(r["errors"] for r in runs),
        "p50_ms": statistics.median(ms),
        "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
        "max_ms": ms[-1],
        "rps": len(ms) / sum(r["elapsed_s"] for r in runs),
    }


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="per round (bounded)")
    parser.add_argument("--cold-runs", type=int, default=COLD_RUNS, help="cold starts per server")
    parser.add_argument("--http", default="h11", help="uvicorn HTTP implementation")
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline, args.http)
        return
    n = max(100, min(args.requests, 20_000))
    cold_runs = max(1, min(args.cold_runs, 20))
    print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}; machine: {machine()}")
    print(f"load average before: {load_average()} (figures from a shared machine are noisy)")
    print(
        f"uvicorn --http {args.http}, one worker, asyncio loop; {n} requests per round, "
        f"{ROUNDS} rounds per scenario; client and servers on the same host"
    )
    p1, p2 = free_port(), free_port()
    servers = {
        "scoring": [
            *(sys.executable, "-m", "scoring", "--port", str(p1), "--http", args.http),
            *("--log-level", "warning", "--no-access-log"),
        ],
        "baseline": [sys.executable, __file__, "--serve-baseline", str(p2), "--http", args.http],
    }
    ports = {"scoring": p1, "baseline": p2}
    payload = request_bytes("/predict", json.dumps(BRIEF).encode())

    colds: dict[str, list[float]] = {name: [] for name in servers}
    procs: dict[str, subprocess.Popen] = {}
    try:
        for i in range(cold_runs):
            for name, cmd in servers.items():
                proc, seconds = start(cmd, ports[name], payload)
                colds[name].append(seconds)
                if i == cold_runs - 1:
                    procs[name] = proc  # the last cold start stays up for the load phase
                else:
                    stop(proc)
        cold = {name: statistics.median(v) for name, v in colds.items()}
        for name, values in colds.items():
            print(
                f"{name:9s} cold start (spawn -> first 200 /predict), {cold_runs} runs: "
                f"median {cold[name]:.2f} s, min {min(values):.2f} s, max {max(values):.2f} s"
            )
        for name in servers:
            asyncio.run(run_load(ports[name], payload, min(300, n), 2))  # warm-up
        results: dict[tuple[str, int], dict] = {}
        for conc in (1, 8):
            rounds: dict[str, list[dict]] = {name: [] for name in servers}
            for _ in range(ROUNDS):
                for name in servers:
                    rounds[name].append(asyncio.run(run_load(ports[name], payload, n, conc)))
            for name in servers:
                r = results[name, conc] = summarise(rounds[name])
                print(
                    f"{name:9s} c={conc}: {r['requests']} req, p50 {r['p50_ms']:.2f} ms, "
                    f"p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.1f} ms, "
                    f"{r['rps']:.0f} req/s, errors {r['errors']}"
                )
        items = [{**BRIEF, "customer_id": f"C{i:04d}"} for i in range(1000)]
        body = json.dumps({"items": items}).encode()
        b = asyncio.run(run_load(p1, request_bytes("/predict/batch", body), 50, 1))
        b = summarise([b])
        print(
            f"scoring   batch of 1000, c=1: p50 {b['p50_ms']:.1f} ms, p99 {b['p99_ms']:.1f} ms, "
            f"{b['rps'] * 1000:.0f} customers/s, errors {b['errors']}"
        )
    finally:
        for proc in procs.values():
            stop(proc)
    cold_ratio = cold["scoring"] / cold["baseline"]
    ours, base = results["scoring", 8], results["baseline", 8]
    rps_ratio = ours["rps"] / base["rps"]
    print(
        f"RATIO cold start: {cold_ratio:.2f}x the baseline's "
        f"({cold['scoring']:.2f} s vs {cold['baseline']:.2f} s; target <= {COLD_RATIO_MAX}x: "
        f"{verdict(cold_ratio <= COLD_RATIO_MAX)})"
    )
    print(
        f"RATIO throughput at c=8: {rps_ratio:.2f}x the baseline's "
        f"({ours['rps']:.0f} vs {base['rps']:.0f} req/s; target >= {THROUGHPUT_RATIO_MIN}x: "
        f"{verdict(rps_ratio >= THROUGHPUT_RATIO_MIN)}), our p99 {ours['p99_ms']:.2f} ms "
        f"(target <= {P99_MAX_MS} ms: {verdict(ours['p99_ms'] <= P99_MAX_MS)})"
    )
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
