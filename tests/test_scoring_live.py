"""The API over real HTTP: ``python -m scoring`` as a subprocess on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from scoring.schema import BRIEF_EXAMPLE
from scoring.settings import MAX_BODY_BYTES, PROJECT_ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(model_dir: str) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "MODEL_DIR": model_dir}
    proc = subprocess.Popen(
        [sys.executable, "-m", "scoring", "--port", str(port), "--log-level", "warning"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            pytest.fail("server did not start within 30 s")
        yield base
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        # the startup banner tells people how to call it
        assert "curl -s -X POST" in out and "/predict" in out


@pytest.fixture(scope="module")
def default_server() -> Iterator[str]:
    yield from _serve("artifacts")


@pytest.fixture(scope="module")
def trained_server() -> Iterator[str]:
    yield from _serve("artifacts/trained")


def test_brief_example_over_real_http(default_server: str) -> None:
    with httpx.Client(base_url=default_server, timeout=10) as c:
        r = c.post("/predict", json=BRIEF_EXAMPLE)
        assert r.status_code == 200
        body = r.json()
        assert body["customer_id"] == "CUST001"
        assert 0.0 <= body["probability"] <= 1.0 and body["prediction"] in (0, 1)
        assert c.get("/ready").json()["placeholder"] is True
        assert c.post("/api/predict", json=BRIEF_EXAMPLE).json() == body


def test_rejections_over_real_http(default_server: str) -> None:
    with httpx.Client(base_url=default_server, timeout=10) as c:
        r = c.post(
            "/predict", content=json.dumps(BRIEF_EXAMPLE), headers={"content-type": "text/plain"}
        )
        assert r.status_code == 415
        r = c.post("/predict", json={**BRIEF_EXAMPLE, "has_rent": 3})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "has_rent"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while buffered
            for _ in range(MAX_BODY_BYTES // 65536 + 2):
                yield b" " * 65536

        r = c.post("/predict", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_trained_bundle_selected_by_model_dir(trained_server: str) -> None:
    with httpx.Client(base_url=trained_server, timeout=10) as c:
        meta = c.get("/model").json()
        assert meta["placeholder"] is False and meta["model_version"].startswith("part1-")
        assert c.post("/predict", json=BRIEF_EXAMPLE).status_code == 422
