"""The API over real HTTP: ``python -m scoring`` as a subprocess on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from conftest import LiveServer, start_live_server, stop_live_server

from scoring.schema import BRIEF_EXAMPLE
from scoring.settings import MAX_BODY_BYTES


def _serve(tmp: pytest.TempPathFactory, model_dir: str) -> Iterator[LiveServer]:
    server = start_live_server(tmp.mktemp("live") / "server.log", model_dir)
    try:
        yield server
    finally:
        stop_live_server(server)
    # the startup banner tells people how to call it
    assert "curl -s -X POST" in server.output() and "/predict" in server.output()


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    for server in _serve(tmp_path_factory, "artifacts"):
        yield server.base


@pytest.fixture(scope="module")
def trained_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    for server in _serve(tmp_path_factory, "artifacts/trained"):
        yield server.base


def test_brief_example_over_real_http(default_server: str) -> None:
    with httpx.Client(base_url=default_server, timeout=10) as c:
        r = c.post("/predict", json=BRIEF_EXAMPLE)
        assert r.status_code == 200
        body = r.json()
        assert body["customer_id"] == "CUST001"
        assert 0.0 <= body["probability"] <= 1.0 and body["prediction"] in (0, 1)
        assert c.get("/ready").json()["placeholder"] is True
        # /api/... is the Functions host's prefix; plain uvicorn serves each route once
        assert c.post("/api/predict", json=BRIEF_EXAMPLE).status_code == 404


def test_rejections_over_real_http(default_server: str) -> None:
    with httpx.Client(base_url=default_server, timeout=10) as c:
        r = c.post(
            "/predict", content=json.dumps(BRIEF_EXAMPLE), headers={"content-type": "text/plain"}
        )
        assert r.status_code == 415
        r = c.post("/predict", json={**BRIEF_EXAMPLE, "has_rent": 3})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "has_rent"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while received
            for _ in range(MAX_BODY_BYTES // 65536 + 2):
                yield b" " * 65536

        r = c.post("/predict", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_trained_bundle_selected_by_model_dir(trained_server: str) -> None:
    with httpx.Client(base_url=trained_server, timeout=10) as c:
        meta = c.get("/model").json()
        assert meta["placeholder"] is False and meta["model_version"].startswith("part1-")
        assert c.post("/predict", json=BRIEF_EXAMPLE).status_code == 422
