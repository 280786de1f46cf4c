"""No customer ids, amounts or descriptions in logs at INFO and above: the pipeline's, and
the API server's access log (see also ``test_reliability_api.py`` for request bodies)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from conftest import LiveServer, live_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.cli import main
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


QUERY_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=st.sampled_from([("GET", "/health"), ("POST", "/predict"), ("GET", "/nowhere")]),
    params=st.dictionaries(QUERY_TEXT, QUERY_TEXT, min_size=1, max_size=3),
)
def test_access_log_lines_carry_no_query_strings(
    logged_server: LiveServer, route: tuple[str, str], params: dict[str, str]
) -> None:
    """Issue 16 #14: ``/predict?customer_id=...`` put the id in uvicorn's access log."""
    marker = f"QSECRET{uuid.uuid4().hex[:12]}"
    params = {**params, "customer_id": marker}
    method, path = route
    body = BRIEF_EXAMPLE if method == "POST" else None
    with httpx.Client(base_url=logged_server.base, timeout=10) as client:
        r = client.request(method, path, params=params, json=body)
        # the access line for this request is written before the response completes
        time.sleep(0.05)
    query = str(r.request.url).split("?", 1)[1]
    text = logged_server.output()
    assert f'"{method} {path} HTTP/1.1" {r.status_code}' in text  # the line is there
    assert marker not in text and query not in text
    assert "?" not in "".join(line for line in text.splitlines() if "HTTP/1.1" in line)
