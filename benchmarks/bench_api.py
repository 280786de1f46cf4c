"""Latency/throughput of the scoring API against a naive baseline, over real HTTP.

    python benchmarks/bench_api.py [--requests 3000] [--http h11|httptools]

(httptools is not in requirements; to try it without changing the environment:
``pip install --target /tmp/ht httptools`` then ``PYTHONPATH=/tmp/ht python ... --http
httptools``.)

For each server (ours: ``python -m scoring``; baseline: FastAPI + ``joblib.load`` +
``predict_proba`` in a sync handler, defined below) the run:
1. measures cold start: new process -> first successful POST /predict;
2. warms up, then sends a bounded number of brief-example requests over keep-alive
   connections at concurrency 1 and 8, reporting p50/p99 latency, requests/s and errors;
3. for ours, also times POST /predict/batch with 1000 customers.
Everything runs on 127.0.0.1; the client (asyncio, raw HTTP/1.1, minimal CPU) shares the
machine with the server, so figures include that contention.
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
COLD_RUNS = 3


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
    elapsed = time.perf_counter() - start
    ms = sorted(x * 1000 for x in latencies)
    return {
        "requests": len(ms),
        "errors": errors,
        "concurrency": concurrency,
        "p50_ms": statistics.median(ms),
        "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
        "max_ms": ms[-1],
        "rps": len(ms) / elapsed,
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


def bench_server(label: str, cmd: list[str], port: int, n: int, batch: bool) -> list[str]:
    payload = request_bytes("/predict", json.dumps(BRIEF).encode())
    colds = []
    for _ in range(COLD_RUNS - 1):  # extra cold starts, for a median rather than one draw
        proc, cold = start(cmd, port, payload)
        stop(proc)
        colds.append(cold)
    proc, cold = start(cmd, port, payload)
    colds.append(cold)
    lines = [
        f"{label:9s} cold start (spawn -> first 200 /predict), {COLD_RUNS} runs: "
        f"median {statistics.median(colds):.2f} s, max {max(colds):.2f} s"
    ]
    try:
        asyncio.run(run_load(port, payload, min(300, n), 2))  # warm-up, not reported
        for conc in (1, 8):
            r = asyncio.run(run_load(port, payload, n, conc))
            lines.append(
                f"{label:9s} c={conc}: {r['requests']} req, p50 {r['p50_ms']:.2f} ms, "
                f"p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.1f} ms, {r['rps']:.0f} req/s, "
                f"errors {r['errors']}"
            )
        if batch:
            items = [{**BRIEF, "customer_id": f"C{i:04d}"} for i in range(1000)]
            body = json.dumps({"items": items}).encode()
            r = asyncio.run(run_load(port, request_bytes("/predict/batch", body), 50, 1))
            lines.append(
                f"{label:9s} batch of 1000, c=1: p50 {r['p50_ms']:.1f} ms, "
                f"p99 {r['p99_ms']:.1f} ms, {r['rps'] * 1000:.0f} customers/s, "
                f"errors {r['errors']}"
            )
    finally:
        stop(proc)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="per scenario (bounded)")
    parser.add_argument("--http", default="h11", help="uvicorn HTTP implementation")
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline, args.http)
        return
    n = max(100, min(args.requests, 20_000))
    print(f"machine: {machine()}; load average before: {load_average()}")
    print(
        f"uvicorn --http {args.http}, asyncio loop; {n} requests per scenario; "
        "client and server on the same host"
    )
    p1, p2 = free_port(), free_port()
    ours = [
        sys.executable,
        "-m",
        "scoring",
        "--port",
        str(p1),
        "--http",
        args.http,
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    base = [sys.executable, __file__, "--serve-baseline", str(p2), "--http", args.http]
    for line in bench_server("scoring", ours, p1, n, batch=True):
        print(line, flush=True)
    for line in bench_server("baseline", base, p2, n, batch=False):
        print(line, flush=True)
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
