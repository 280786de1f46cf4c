"""Bounded load test of the scoring API: nothing fails and memory does not grow under load.

    python benchmarks/load_test.py                      # 60 s at concurrency 8, then a burst
    python benchmarks/load_test.py --duration 5 --burst-requests 800    # a short run
    MODEL_DIR=artifacts/trained python benchmarks/load_test.py

It starts its own server (``python -m scoring``) on 127.0.0.1 only, warms it up, then runs
two phases with asyncio + httpx:

1. sustained: ``--concurrency`` (8) clients for ``--duration`` seconds (60), capped at
   ``--max-requests``;
2. burst: ``--burst-factor`` (10) times as many clients at once (80), for
   ``--burst-requests`` requests in total, capped at ``--burst-seconds``.

Every response is checked (200, the customer id echoed back, a probability in [0, 1]); any
other answer or a transport error counts as an error. It reports p50/p99/max latency,
requests/s and errors per phase, and the server's RSS before (after warm-up) and after. It
exits 1 if any request failed or RSS grew by more than ``--rss-tolerance`` (10%). The
client shares the 2 cores with the server, so the figures include that contention; they are
for comparing runs on one machine, not a capacity claim.

    python benchmarks/load_test.py --hostile            # issue 16's hostile clients instead

``--hostile`` measures what hostile request bodies cost the server (loopback, bounded):

1. one body of about 1 MiB of nested arrays (``{"items": [[[...]], ...]}``): wall time
   and server CPU per request, at /predict and /predict/batch;
2. p50 of a normal /predict alone, then while ``--attackers`` (3) clients send that body
   back to back for ``--attack-seconds`` (10);
3. ``--slow-connections`` (150) connections that each declare a 1 MiB body, send all but
   its last 16 bytes and wait: the server's RSS before and at its peak, and what each
   connection was answered and when (``--slow-hold`` (15) seconds at most).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # never anything else: this is a load generator
REQUEST_TIMEOUT_S = 30.0
START_TIMEOUT_S = 60.0
WARMUP_REQUESTS = 300


@dataclass
class Phase:
    name: str
    concurrency: int
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    server_cpu_s: float = 0.0  # CPU the server process used during the phase
    client_cpu_s: float = 0.0  # CPU this load generator used (it shares the machine)

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.errors

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

        return {
            "phase": self.name,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
            "requests_per_s": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(statistics.median(lat) * 1000, 2) if lat else float("nan"),
            "p99_ms": round(pct(0.99), 2),
            "max_ms": round(lat[-1] * 1000, 2) if lat else float("nan"),
            "server_cpu_s": round(self.server_cpu_s, 2),
            "client_cpu_s": round(self.client_cpu_s, 2),
            "error_samples": self.error_samples[:5],
        }


def payload(i: int) -> dict[str, Any]:
    """A valid request that differs per call (id and amounts), like real traffic."""
    return {
        "customer_id": f"LOAD{i:08d}",
        "num_transactions": 1 + i % 200,
        "total_debit": -round(10.0 + (i % 9973) * 1.37, 2),
        "total_credit": round((i % 7919) * 2.11, 2),
        "avg_amount": round(((i % 2000) - 1000) / 7.0, 2),
        "has_rent": i % 2,
        "has_salary": (i // 2) % 2,
    }


def trained_payload(i: int) -> dict[str, Any]:
    """All Part 1 features, for bundles (artifacts/trained) that need every one."""
    from features.definitions import FEATURES

    body = payload(i)
    for f in FEATURES:
        if f.name in body:
            continue
        body[f.name] = {
            "flag": i % 2,
            "count": i % 50,
            "days": i % 365,
            "money": float(i % 500),
            "ratio": (i % 100) / 100.0,
        }[f.kind]
    return body


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_server(
    port: int,
    model_dir: str | None,
    *,
    log: Path | None = None,
    level: str = "warning",
    access_log: bool = False,
    env: dict[str, str] | None = None,
    wait_for: str = "/ready",
) -> subprocess.Popen[bytes]:
    """``python -m scoring`` on 127.0.0.1:``port``, returned once ``wait_for`` answers 200.

    Output (stdout and stderr, every logger) goes to ``log`` if given, else nowhere;
    ``env`` adds settings (e.g. ``SCORING_BODY_TIMEOUT_S``). The tests start their live
    servers through this too."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if model_dir:
        full_env["MODEL_DIR"] = model_dir
    cmd = [sys.executable, "-m", "scoring", "--host", HOST, "--port", str(port)]
    cmd += ["--log-level", level] + ([] if access_log else ["--no-access-log"])
    out = log.open("wb") if log is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            if httpx.get(f"http://{HOST}:{port}{wait_for}", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    stop_server(proc)
    raise RuntimeError(f"server not ready within {START_TIMEOUT_S:.0f} s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


def rss_bytes(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


async def _one(client: httpx.AsyncClient, body: dict[str, Any], phase: Phase) -> None:
    started = time.perf_counter()
    try:
        r = await client.post("/predict", json=body)
        elapsed = time.perf_counter() - started
        ok = r.status_code == 200
        if ok:
            data = r.json()
            p = data.get("probability")
            ok = data.get("customer_id") == body["customer_id"] and isinstance(p, float)
            ok = ok and 0.0 <= p <= 1.0
        if ok:
            phase.latencies.append(elapsed)
            return
        problem = f"HTTP {r.status_code}: {r.text[:120]}"
    except (httpx.HTTPError, ValueError) as exc:
        problem = f"{type(exc).__name__}: {exc}"[:160]
    phase.errors += 1
    phase.error_samples.append(problem)


def measured(pid: int, base: str, phase: Phase, **kwargs: Any) -> Phase:
    """Run one phase in a fresh event loop, recording server and client CPU time."""
    server0, client0 = cpu_seconds(pid), cpu_seconds(os.getpid())
    asyncio.run(run_phase(base, phase, **kwargs))
    phase.server_cpu_s = cpu_seconds(pid) - server0
    phase.client_cpu_s = cpu_seconds(os.getpid()) - client0
    return phase


async def run_phase(
    base: str,
    phase: Phase,
    *,
    make: Any,
    max_requests: int,
    seconds: float,
    first_id: int,
) -> Phase:
    """``phase.concurrency`` workers, each with its own keep-alive connection. Stops at
    whichever comes first of ``max_requests`` sent or ``seconds`` elapsed.

    One client per worker, sharing one TLS context: with a single 80-connection httpx pool,
    or a CA bundle loaded per client, the load generator rather than the server set the
    burst figures (seconds of client CPU, multi-second tails)."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    tls = ssl.create_default_context()  # unused over http, but built once, not per client
    issued = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        nonlocal issued
        async with httpx.AsyncClient(
            base_url=base, timeout=REQUEST_TIMEOUT_S, limits=limits, verify=tls
        ) as client:
            while issued < max_requests and time.perf_counter() < deadline:
                i = first_id + issued
                issued += 1
                await _one(client, make(i), phase)

    await asyncio.gather(*(worker() for _ in range(phase.concurrency)))
    phase.seconds = time.perf_counter() - started
    return phase


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), "
        f"{mem:.0f} GiB RAM, Python {platform.python_version()}, load average {load}"
    )


def run(
    *,
    duration: float = 60.0,
    concurrency: int = 8,
    burst_factor: int = 10,
    burst_requests: int = 8000,
    burst_seconds: float = 60.0,
    max_requests: int = 200_000,
    model_dir: str | None = None,
    settle_seconds: float = 1.0,
) -> dict[str, Any]:
    """Start a server, load it, stop it; the figures as a dict (also used by a test)."""
    make = trained_payload if model_dir and "trained" in model_dir else payload
    port = free_port()
    base = f"http://{HOST}:{port}"
    proc = start_server(port, model_dir)
    try:
        pid = proc.pid
        warm = measured(
            pid,
            base,
            Phase("warm-up", concurrency),
            make=make,
            max_requests=WARMUP_REQUESTS,
            seconds=30.0,
            first_id=0,
        )
        rss_before = rss_bytes(pid)
        sustained = measured(
            pid,
            base,
            Phase("sustained", concurrency),
            make=make,
            max_requests=max_requests,
            seconds=duration,
            first_id=1_000_000,
        )
        burst = measured(
            pid,
            base,
            Phase("burst", concurrency * burst_factor),
            make=make,
            max_requests=burst_requests,
            seconds=burst_seconds,
            first_id=50_000_000,
        )
        time.sleep(settle_seconds)
        rss_after = rss_bytes(proc.pid)
        alive = proc.poll() is None and httpx.get(f"{base}/health", timeout=5).status_code == 200
    finally:
        stop_server(proc)
    growth = (rss_after - rss_before) / rss_before
    return {
        "machine": machine(),
        "server": f"python -m scoring on {base} (MODEL_DIR={model_dir or 'artifacts'})",
        "phases": [p.summary() for p in (sustained, burst)],
        "warmup_errors": warm.errors,
        "errors": sustained.errors + burst.errors + warm.errors,
        "rss_before_mib": round(rss_before / 2**20, 1),
        "rss_after_mib": round(rss_after / 2**20, 1),
        "rss_growth_pct": round(growth * 100, 2),
        "alive_after": alive,
    }


# ---------------------------------------------------------------- hostile clients (issue 16)

MIB = 1 << 20
JSON_TYPE = {"content-type": "application/json"}


def nested_array_body(size: int = MIB - 64, depth: int = 10) -> bytes:
    """About ``size`` bytes of ``{"items": [[[...]], [[...]], ...]}``, ``depth`` deep."""
    unit = b"[" * depth + b"]" * depth
    count = (size - 16) // (len(unit) + 1)
    return b'{"items": [' + b",".join([unit] * count) + b"]}"


def hostile_body_cost(base: str, pid: int, body: bytes, repeats: int = 5) -> dict[str, Any]:
    """Median wall time and server CPU per request for ``body`` at each body route."""
    figures: dict[str, Any] = {"body_bytes": len(body)}
    with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S) as client:
        for path in ("/predict", "/predict/batch"):
            walls, cpus, statuses = [], [], set()
            for _ in range(repeats):
                cpu0, started = cpu_seconds(pid), time.perf_counter()
                response = client.post(path, content=body, headers=JSON_TYPE)
                walls.append(time.perf_counter() - started)
                cpus.append(cpu_seconds(pid) - cpu0)
                statuses.add(response.status_code)
            figures[path] = {
                "status": sorted(statuses),
                "wall_ms": round(statistics.median(walls) * 1000, 1),
                "server_cpu_ms": round(statistics.median(cpus) * 1000, 1),
            }
    return figures


def _predict_latencies(base: str, seconds: float, limit: int) -> list[float]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S) as client:
        while time.monotonic() < deadline and len(latencies) < limit:
            started = time.perf_counter()
            response = client.post("/predict", json=payload(len(latencies)))
            if response.status_code != 200:
                raise RuntimeError(f"normal /predict answered {response.status_code}")
            latencies.append(time.perf_counter() - started)
    return latencies


def p50_under_attack(
    base: str, body: bytes, attackers: int = 3, seconds: float = 10.0
) -> dict[str, Any]:
    """p50 of a normal /predict alone, then while ``attackers`` clients post ``body``."""
    quiet = _predict_latencies(base, min(seconds, 3.0), 300)
    stop = threading.Event()
    sent = [0] * attackers

    def attack(i: int) -> None:
        with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S) as client:
            while not stop.is_set():
                client.post("/predict", content=body, headers=JSON_TYPE)
                sent[i] += 1

    threads = [threading.Thread(target=attack, args=(i,), daemon=True) for i in range(attackers)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)  # let every attacker get going
        loud = _predict_latencies(base, seconds, 10_000)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=REQUEST_TIMEOUT_S)
    return {
        "attackers": attackers,
        "quiet_p50_ms": round(statistics.median(quiet) * 1000, 2),
        "attacked_p50_ms": round(statistics.median(loud) * 1000, 2),
        "attacked_max_ms": round(max(loud) * 1000, 1),
        "normal_requests": len(loud),
        "hostile_requests": sum(sent),
    }


@dataclass
class SlowClient:
    status: int | None = None  # the server's answer, None if it never answered
    answered_s: float | None = None
    closed_by_server: bool = False


def _slow_client(
    port: int, declared: int, withheld: int, hold_s: float, started: float
) -> SlowClient:
    """Declare ``declared`` bytes, send all but ``withheld`` of them, then only listen."""
    result = SlowClient()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode()
    with socket.create_connection((HOST, port), timeout=hold_s) as s:
        # OSError: the server answered and closed while this was still sending
        with contextlib.suppress(OSError):
            s.sendall(head + b"[" + b" " * (declared - withheld - 1))
        received = b""
        s.settimeout(max(0.1, started + hold_s - time.monotonic()))
        try:
            while chunk := s.recv(65536):
                received += chunk
                if result.status is None and b"\r\n" in received:
                    result.status = int(received.split(b" ", 2)[1])
                    result.answered_s = round(time.monotonic() - started, 2)
            result.closed_by_server = True
        except ConnectionResetError:
            result.closed_by_server = True
        except TimeoutError:
            pass
    return result


def slow_bodies(
    port: int,
    pid: int,
    connections: int = 150,
    declared: int = MIB,
    withheld: int = 16,
    hold_s: float = 15.0,
) -> dict[str, Any]:
    """``connections`` clients that never finish their body: the server's memory meanwhile
    and what each was answered (and when). Bounded by ``hold_s``; every socket is closed."""
    rss_before = rss_bytes(pid)
    peak = rss_before
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=connections) as pool:
        futures = [
            pool.submit(_slow_client, port, declared, withheld, hold_s, started)
            for _ in range(connections)
        ]
        while not all(f.done() for f in futures) and time.monotonic() - started < hold_s + 5:
            peak = max(peak, rss_bytes(pid))
            time.sleep(0.05)
        clients = [f.result() for f in futures]
    time.sleep(0.5)
    answered: dict[str, int] = {}
    for c in clients:
        answered[str(c.status)] = answered.get(str(c.status), 0) + 1
    times = [c.answered_s for c in clients if c.answered_s is not None]
    return {
        "connections": connections,
        "declared_bytes": declared,
        "withheld_bytes": withheld,
        "rss_before_mib": round(rss_before / MIB, 1),
        "rss_peak_mib": round(peak / MIB, 1),
        "rss_held_mib": round((peak - rss_before) / MIB, 1),
        "rss_after_mib": round(rss_bytes(pid) / MIB, 1),
        "answers": answered,
        "closed_by_server": sum(c.closed_by_server for c in clients),
        "last_answer_s": max(times) if times else None,
    }


def run_hostile(
    *,
    attackers: int = 3,
    attack_seconds: float = 10.0,
    slow_connections: int = 150,
    slow_hold: float = 15.0,
    model_dir: str | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Measure the three hostile scenarios, each slow-body run on a fresh server (so memory
    freed by the earlier phases cannot hide what the slow bodies hold)."""
    port = free_port()
    base = f"http://{HOST}:{port}"
    proc = start_server(port, model_dir, env=env)
    try:
        _predict_latencies(base, 5.0, WARMUP_REQUESTS)
        body = nested_array_body()
        result = {
            "machine": machine(),
            "nested_body": hostile_body_cost(base, proc.pid, body),
            "under_attack": p50_under_attack(base, body, attackers, attack_seconds),
        }
        alive = proc.poll() is None
        result["alive_after"] = alive and httpx.get(f"{base}/health", timeout=5).status_code == 200
    finally:
        stop_server(proc)
    if slow_connections:
        port = free_port()
        proc = start_server(port, model_dir, env=env)
        try:
            _predict_latencies(f"http://{HOST}:{port}", 5.0, WARMUP_REQUESTS)
            result["slow_bodies"] = slow_bodies(port, proc.pid, slow_connections, hold_s=slow_hold)
            ok = httpx.get(f"http://{HOST}:{port}/health", timeout=5).status_code == 200
            result["alive_after"] = result["alive_after"] and ok
        finally:
            stop_server(proc)
    return result


def report(result: dict[str, Any]) -> str:
    lines = [f"machine (at end): {result['machine']}", f"server:  {result['server']}"]
    header = f"{'phase':<10} {'conc':>5} {'requests':>9} {'errors':>7} {'req/s':>8} "
    header += f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'seconds':>8} {'srv cpu':>8} "
    header += f"{'cli cpu':>8}"
    lines.append(header)
    for p in result["phases"]:
        lines.append(
            f"{p['phase']:<10} {p['concurrency']:>5} {p['requests']:>9} {p['errors']:>7} "
            f"{p['requests_per_s']:>8} {p['p50_ms']:>8} {p['p99_ms']:>8} {p['max_ms']:>8} "
            f"{p['seconds']:>8} {p['server_cpu_s']:>8} {p['client_cpu_s']:>8}"
        )
        for sample in p["error_samples"]:
            lines.append(f"    error: {sample}")
    lines.append(
        f"server RSS: before {result['rss_before_mib']} MiB (after warm-up), "
        f"after {result['rss_after_mib']} MiB ({result['rss_growth_pct']:+.2f}%)"
    )
    lines.append(f"errors: {result['errors']}; server alive after: {result['alive_after']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="sustained phase, seconds")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--burst-factor", type=int, default=10)
    parser.add_argument("--burst-requests", type=int, default=8000)
    parser.add_argument("--burst-seconds", type=float, default=60.0, help="burst time cap")
    parser.add_argument("--max-requests", type=int, default=200_000, help="sustained cap")
    parser.add_argument("--rss-tolerance", type=float, default=0.10)
    parser.add_argument("--model-dir", default=None, help="MODEL_DIR for the server")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument("--hostile", action="store_true", help="issue 16's hostile clients")
    parser.add_argument("--attackers", type=int, default=3)
    parser.add_argument("--attack-seconds", type=float, default=10.0)
    parser.add_argument("--slow-connections", type=int, default=150)
    parser.add_argument("--slow-hold", type=float, default=15.0, help="seconds, at most")
    args = parser.parse_args(argv)
    if str(ROOT) not in sys.path:  # run as a script: make the project importable
        sys.path.insert(0, str(ROOT))
    bounds = {
        "--duration": (args.duration, 0.5, 600),
        "--concurrency": (args.concurrency, 1, 64),
        "--burst-factor": (args.burst_factor, 1, 20),
        "--burst-requests": (args.burst_requests, 1, 100_000),
        "--burst-seconds": (args.burst_seconds, 0.5, 600),
        "--max-requests": (args.max_requests, 1, 1_000_000),
        "--attackers": (args.attackers, 1, 16),
        "--attack-seconds": (args.attack_seconds, 0.5, 120),
        "--slow-connections": (args.slow_connections, 0, 500),
        "--slow-hold": (args.slow_hold, 1, 120),
    }
    for flag, (value, low, high) in bounds.items():
        if not low <= value <= high:
            parser.error(f"{flag} must be between {low} and {high}")
    print(f"machine: {machine()}", flush=True)
    if args.hostile:
        figures = run_hostile(
            attackers=args.attackers,
            attack_seconds=args.attack_seconds,
            slow_connections=args.slow_connections,
            slow_hold=args.slow_hold,
            model_dir=args.model_dir,
        )
        print(json.dumps(figures, indent=2))
        return 0 if figures["alive_after"] else 1
    result = run(
        duration=args.duration,
        concurrency=args.concurrency,
        burst_factor=args.burst_factor,
        burst_requests=args.burst_requests,
        burst_seconds=args.burst_seconds,
        max_requests=args.max_requests,
        model_dir=args.model_dir,
    )
    print(report(result))
    if args.json:
        print(json.dumps(result, indent=2))
    failed = result["errors"] > 0 or not result["alive_after"]
    if result["rss_growth_pct"] > args.rss_tolerance * 100:
        print(f"FAIL: RSS grew more than {args.rss_tolerance:.0%}")
        failed = True
    if result["errors"]:
        print("FAIL: some requests failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
