"""Hostile requests against a real uvicorn server on 127.0.0.1, log privacy, and a short load.

Complements ``test_scoring_api.py`` (field-level rejections through the ASGI app) and
``test_scoring_live.py`` (a chunked body over the limit): here the limits are checked where
they matter, on a socket (a declared length over the cap is refused before the body is
sent; exactly the cap is accepted), along with bodies the JSON parser itself chokes on,
oversized headers, wrong methods and paths, and numbers that overflow to infinity. The
server's own output (scoring, uvicorn and root loggers at INFO) must not contain customer
ids or amounts after serving requests that carry them.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from benchmarks import load_test
from features.definitions import FEATURES, MAX_DAYS
from scoring.api import app
from scoring.schema import BRIEF_EXAMPLE, MAX_BATCH, MAX_ID_LENGTH
from scoring.settings import MAX_BODY_BYTES, PROJECT_ROOT

HOST = "127.0.0.1"
JSON = {"content-type": "application/json"}


@dataclass
class Server:
    base: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_server(log: Path, model_dir: str = "artifacts", level: str = "info") -> Server:
    """``python -m scoring`` with stdout and stderr (every logger) going to ``log``."""
    port = _free_port()
    env = {**os.environ, "MODEL_DIR": model_dir, "PYTHONUNBUFFERED": "1"}
    handle = log.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scoring",
            "--host",
            HOST,
            "--port",
            str(port),
            "--log-level",
            level,
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    handle.close()
    base = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return Server(base, port, proc, log)
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail("server did not start within 60 s")


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(timeout=15)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("live") / "server.log", level="warning")
    try:
        yield s
    finally:
        stop_server(s)


def raw_exchange(port: int, data: bytes, timeout: float = 20.0) -> bytes:
    """Send raw bytes and read until the server closes or a full response has arrived."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(data)
        received = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            received += chunk
            head, sep, body = received.partition(b"\r\n\r\n")
            if sep:
                length = [
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if length and len(body) >= length[0]:
                    break
        return received


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def documented_statuses(path: str, method: str = "post") -> set[int]:
    return {int(code) for code in app.openapi()["paths"][path][method]["responses"]}


def assert_alive(server: Server) -> None:
    assert server.proc.poll() is None
    r = httpx.post(f"{server.base}/predict", json=BRIEF_EXAMPLE, timeout=10)
    assert r.status_code == 200


# ---------------------------------------------------------------- body size on a socket


def test_a_declared_length_over_the_cap_is_refused_before_the_body_is_sent(
    server: Server,
) -> None:
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n"
    ).encode()
    response = raw_exchange(server.port, head)  # no body follows: the answer cannot wait
    assert status_of(response) == 413
    assert f"{MAX_BODY_BYTES}-byte limit".encode() in response
    assert_alive(server)


def _padded_body(size: int) -> bytes:
    """The brief's example padded with JSON whitespace to exactly ``size`` bytes."""
    body = json.dumps(BRIEF_EXAMPLE).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


def test_a_body_of_exactly_the_cap_is_accepted_and_one_byte_more_is_413(server: Server) -> None:
    with httpx.Client(base_url=server.base, timeout=30) as c:
        at_cap = c.post("/predict", content=_padded_body(MAX_BODY_BYTES), headers=JSON)
        assert at_cap.status_code == 200, at_cap.text
        assert at_cap.json()["customer_id"] == BRIEF_EXAMPLE["customer_id"]
        over = c.post("/predict", content=_padded_body(MAX_BODY_BYTES + 1), headers=JSON)
        assert over.status_code == 413
        assert "limit" in over.json()["detail"]


def _largest_item(rng: random.Random, i: int) -> dict[str, object]:
    """A valid item with every Part 1 feature, a maximal-length id and long float texts."""
    item: dict[str, object] = {"customer_id": f"{i:0{MAX_ID_LENGTH}d}"}
    for f in FEATURES:
        item[f.name] = {
            "flag": 1,
            "count": 999_999_999,
            "days": MAX_DAYS,
            "money": rng.uniform(0, 9_999_999),
            "ratio": rng.uniform(0, 1),
        }[f.kind]
    item["total_debit"] = -rng.uniform(0, 9_999_999)
    item["avg_amount"] = -rng.uniform(0, 9_999_999)
    item["net_flow"] = -rng.uniform(0, 9_999_999)
    return item


def test_the_largest_allowed_batch_fits_under_the_body_cap(server: Server) -> None:
    rng = random.Random(9)
    body = json.dumps({"items": [_largest_item(rng, i) for i in range(MAX_BATCH)]}).encode()
    assert len(body) < MAX_BODY_BYTES  # otherwise the batch limit could never be reached
    r = httpx.post(f"{server.base}/predict/batch", content=body, headers=JSON, timeout=60)
    assert r.status_code == 200, r.text[:500]
    results = r.json()["results"]
    assert len(results) == MAX_BATCH
    assert all(0.0 <= x["probability"] <= 1.0 for x in results)


# ---------------------------------------------------------------- bodies, headers, methods


@pytest.mark.parametrize(
    ("name", "body"),
    [
        pytest.param(
            "nesting",
            b'{"customer_id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            id="nesting-100k-deep",
        ),
        pytest.param(
            "integer",
            json.dumps({**BRIEF_EXAMPLE, "num_transactions": 7}).replace(": 7", ": " + "7" * 5000),
            id="5000-digit-integer",
        ),
        pytest.param(
            "utf-8",
            json.dumps(BRIEF_EXAMPLE).encode().replace(b"CUST001", b"CUST\xff01"),
            id="invalid-utf-8",
        ),
    ],
)
def test_bodies_the_json_parser_refuses_get_a_documented_4xx_naming_the_body(
    server: Server, name: str, body: bytes | str
) -> None:
    r = httpx.post(f"{server.base}/predict", content=body, headers=JSON, timeout=30)
    assert 400 <= r.status_code < 500, name
    assert r.status_code in documented_statuses("/predict"), (name, r.status_code, r.text)
    assert "body" in r.text.lower() and "json" in r.text.lower(), r.text
    assert_alive(server)


@pytest.mark.parametrize(
    ("literal", "field"),
    [("1e400", "avg_amount"), ("-1e400", "total_debit"), ("1e999999", "total_credit")],
)
def test_numbers_that_overflow_to_infinity_are_422_naming_the_field(
    server: Server, literal: str, field: str
) -> None:
    """Valid JSON number syntax that Python parses as +-inf: rejected like Infinity."""
    raw = json.dumps({**BRIEF_EXAMPLE, field: 12345.67}).replace("12345.67", literal)
    r = httpx.post(f"{server.base}/predict", content=raw, headers=JSON, timeout=10)
    assert r.status_code == 422
    assert [e["loc"][-1] for e in r.json()["detail"]] == [field]
    assert field in r.json()["detail"][0]["msg"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_nan_and_infinity_inside_a_batch_name_the_item(server: Server, literal: str) -> None:
    items = [BRIEF_EXAMPLE, {**BRIEF_EXAMPLE, "customer_id": "B2", "avg_amount": 777.77}]
    raw = json.dumps({"items": items}).replace("777.77", literal)
    r = httpx.post(f"{server.base}/predict/batch", content=raw, headers=JSON, timeout=10)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert [e["loc"] for e in detail] == [["body", "items", 1, "avg_amount"]]
    assert "items.1.avg_amount" in detail[0]["msg"]


def test_customer_id_of_exactly_the_maximum_length_is_accepted(server: Server) -> None:
    cid = "C" * MAX_ID_LENGTH
    r = httpx.post(f"{server.base}/predict", json={**BRIEF_EXAMPLE, "customer_id": cid})
    assert r.status_code == 200 and r.json()["customer_id"] == cid


def test_oversized_request_headers_are_refused_and_the_server_carries_on(server: Server) -> None:
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"X-Padding: {'a' * 200_000}\r\nContent-Length: 2\r\n\r\n{{}}"
    ).encode()
    response = raw_exchange(server.port, head)
    assert response == b"" or 400 <= status_of(response) < 500
    assert_alive(server)


def test_a_non_numeric_content_length_is_a_documented_4xx(server: Server) -> None:
    body = json.dumps(BRIEF_EXAMPLE).encode()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    ok = raw_exchange(server.port, head + body)
    assert status_of(ok) == 200  # the raw client itself is right
    bad = raw_exchange(server.port, head.replace(f": {len(body)}".encode(), b": 12x") + body)
    assert 400 <= status_of(bad) < 500
    assert_alive(server)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("PUT", "/health", 405),
        ("POST", "/ready", 405),
        ("PATCH", "/predict", 405),
        ("POST", "/no-such-route", 404),
        ("PUT", "/api/model", 405),
    ],
)
def test_wrong_methods_and_unknown_paths_say_so_whatever_the_body(
    server: Server, method: str, path: str, expected: int
) -> None:
    """A 415 about Content-Type here would name the wrong problem."""
    r = httpx.request(method, f"{server.base}{path}", content=b"hello", timeout=10)
    assert r.status_code == expected, r.text


# ---------------------------------------------------------------- log privacy


CUSTOMER_IDS = ["PRIVCUST7731", "PRIVCUST8842", "PRIVCUST9953"]
AMOUNTS = [-98765.43, 24681.35, 1357.91, -4321.87, 8642.19]


def test_server_logs_carry_no_customer_ids_or_amounts(tmp_path: Path) -> None:
    server = start_server(tmp_path / "server.log", level="info")
    try:
        with httpx.Client(base_url=server.base, timeout=30) as c:
            single = {
                **BRIEF_EXAMPLE,
                "customer_id": CUSTOMER_IDS[0],
                "total_debit": AMOUNTS[0],
                "total_credit": AMOUNTS[1],
                "avg_amount": AMOUNTS[2],
            }
            assert c.post("/predict", json=single).status_code == 200
            batch = [
                {**single, "customer_id": CUSTOMER_IDS[1], "total_debit": AMOUNTS[3]},
                {**single, "customer_id": CUSTOMER_IDS[2], "total_credit": AMOUNTS[4]},
            ]
            assert c.post("/api/predict/batch", json={"items": batch}).status_code == 200
            # Rejections: the values are in the request, not in the log.
            assert c.post("/predict", json={**single, "has_rent": 7}).status_code == 422
            negative_credit = {**single, "total_credit": -AMOUNTS[1]}
            assert c.post("/predict", json=negative_credit).status_code == 422
            raw = json.dumps(single).replace(str(AMOUNTS[2]), "NaN")
            assert c.post("/predict", content=raw, headers=JSON).status_code == 422
            broken = json.dumps(single)[:-5].encode()
            assert c.post("/predict", content=broken, headers=JSON).status_code == 422
            plain = c.post("/predict", content=json.dumps(single), headers={"content-type": "x/y"})
            assert plain.status_code == 415
            assert c.get("/model").status_code == 200
    finally:
        stop_server(server)
    text = server.output()
    # The capture works: the model load line and uvicorn's access lines are there.
    assert "model loaded" in text and '"POST /predict HTTP/1.1" 200' in text
    assert '"POST /predict HTTP/1.1" 422' in text
    secrets = set(CUSTOMER_IDS)
    for amount in AMOUNTS:
        secrets |= {repr(amount), repr(abs(amount)), f"{abs(amount):.2f}"}
    leaked = sorted(s for s in secrets if s in text)
    assert leaked == []


# ---------------------------------------------------------------- a short load


def test_a_short_load_has_no_errors_and_no_memory_growth() -> None:
    """Correctness under concurrency (every answer right, RSS stable), not speed."""
    result = load_test.run(duration=5.0, concurrency=8, burst_requests=400, burst_seconds=60)
    assert result["errors"] == 0, result["phases"]
    assert result["alive_after"]
    assert [p["requests"] for p in result["phases"]][1] == 400
    assert result["phases"][0]["requests"] > 0
    assert abs(result["rss_growth_pct"]) <= 10.0, result
