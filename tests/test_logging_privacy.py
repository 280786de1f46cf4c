"""No customer ids, amounts or descriptions in logs at INFO and above: the pipeline's, and
the API server's access log (see also ``test_reliability_api.py`` for request bodies), both
through ``python -m scoring`` and through bare ``uvicorn scoring.api:app``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from conftest import HOST, ROOT, LiveServer, live_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks import load_test
from features.cli import main
from scoring.api import ACCESS_LOGGER, DropQueryString, guard_access_log
from scoring.schema import BRIEF_EXAMPLE


def test_pipeline_logs_carry_no_customer_data(
    tmp_path: Path, handover_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    transactions = handover_dir / "data" / "transactions.csv"
    caplog.set_level(logging.INFO)
    assert main(["--transactions", str(transactions), "--out", str(tmp_path), "--no-labels"]) == 0
    text = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert "rows in 10" in text  # the logs do say something useful
    raw = pd.read_csv(transactions, dtype=str)
    secrets = set(raw["customer_id"]) | set(raw["description"]) | set(raw["amount"])
    secrets |= {a.lstrip("-") for a in raw["amount"]}
    leaked = sorted(s for s in secrets if s in text)
    assert leaked == []


# ---------------------------------------------------------------- the API's access log


@pytest.fixture(scope="module")
def logged_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``python -m scoring`` at INFO with its access log on, as a developer runs it."""
    log = tmp_path_factory.mktemp("access") / "server.log"
    with live_server(log, level="info", access_log=True) as server:
        yield server


@pytest.fixture(scope="module")
def bare_uvicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``python -m uvicorn scoring.api:app`` exactly as a developer types it: uvicorn's own
    logging configuration, access log on at INFO, no ``python -m scoring`` in between."""
    log = tmp_path_factory.mktemp("bare") / "uvicorn.log"
    port = load_test.free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MODEL_DIR": "artifacts"}
    cmd = [sys.executable, "-m", "uvicorn", "scoring.api:app", "--host", HOST, "--port",
           str(port), "--log-level", "info"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = LiveServer(f"http://{HOST}:{port}", port, proc, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"uvicorn did not start: {server.output()[-2000:]}")
            try:
                if httpx.get(f"{server.base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield server
    finally:
        load_test.stop_server(proc)


QUERY_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40
)
ROUTES = st.sampled_from([("GET", "/health"), ("POST", "/predict"), ("GET", "/nowhere")])


def assert_no_query_in_access_log(
    server: LiveServer, route: tuple[str, str], params: dict[str, str]
) -> None:
    marker = f"QSECRET{uuid.uuid4().hex[:12]}"
    params = {**params, "customer_id": marker}
    method, path = route
    body = BRIEF_EXAMPLE if method == "POST" else None
    with httpx.Client(base_url=server.base, timeout=10) as client:
        r = client.request(method, path, params=params, json=body)
        # the access line for this request is written before the response completes
        time.sleep(0.05)
    query = str(r.request.url).split("?", 1)[1]
    text = server.output()
    assert f'"{method} {path} HTTP/1.1" {r.status_code}' in text  # the line is there
    assert marker not in text and query not in text
    assert "?" not in "".join(line for line in text.splitlines() if "HTTP/1.1" in line)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(route=ROUTES, params=st.dictionaries(QUERY_TEXT, QUERY_TEXT, min_size=1, max_size=3))
def test_access_log_lines_carry_no_query_strings(
    logged_server: LiveServer, route: tuple[str, str], params: dict[str, str]
) -> None:
    """Issue 16 #14: ``/predict?customer_id=...`` put the id in uvicorn's access log."""
    assert_no_query_in_access_log(logged_server, route, params)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(route=ROUTES, params=st.dictionaries(QUERY_TEXT, QUERY_TEXT, min_size=1, max_size=3))
def test_bare_uvicorn_access_log_carries_no_query_strings(
    bare_uvicorn: LiveServer, route: tuple[str, str], params: dict[str, str]
) -> None:
    """Only ``python -m scoring`` filtered query strings; ``uvicorn scoring.api:app`` logged
    them. The app itself now installs the filter."""
    assert_no_query_in_access_log(bare_uvicorn, route, params)


def test_the_access_log_guard_is_installed_once_and_keeps_the_path() -> None:
    logger = logging.getLogger(ACCESS_LOGGER)
    guard_access_log()
    guard_access_log()
    assert sum(isinstance(f, DropQueryString) for f in logger.filters) == 1
    record = logging.LogRecord(
        ACCESS_LOGGER, logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/predict%3Fx?customer_id=C1&a=%3F", "1.1", 200), None,
    )  # fmt: skip
    for f in logger.filters:
        f.filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "GET /predict%3Fx HTTP/1.1" 200'
