"""The decision audit trail (issue 19 #5): one record per decision, nothing beyond what the
request and the response carried, written before the decision is released, no torn records
after a killed process, 503 (never a silent drop) when the log is full or failing, and the
append-blob store on a real Azurite."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import NEGATIVE_FEATURES, live_server, start_live_server, stop_live_server
from fastapi import FastAPI
from fastapi.testclient import TestClient

from blobflow.audit import AppendBlobSink, _chunks, decision_log_from_settings
from features.definitions import FEATURES
from scoring.api import create_app
from scoring.audit import (
    RECORD_FIELDS,
    DecisionLog,
    DecisionLogBusyError,
    LocalDirSink,
    PendingDecisions,
    inspect_directory,
    local_decision_log,
    read_records,
    repair_directory,
)
from scoring.bundle import LocalDirSource, load_bundle
from scoring.holder import ModelHolder
from scoring.schema import BRIEF_EXAMPLE
from scoring.settings import PROJECT_ROOT, Settings

ARTIFACTS = PROJECT_ROOT / "artifacts"
TRAINED = ARTIFACTS / "trained"
KINDS = {f.name: f.kind for f in FEATURES}


def app_with_log(bundle: Path, log: DecisionLog | None) -> FastAPI:
    holder = ModelHolder(lambda: LocalDirSource(bundle))
    return create_app(Settings(model_dir=bundle), holder=holder, decision_log=log)


def trained_item(i: int, rng: np.random.Generator) -> dict[str, Any]:
    """A request with every Part 1 feature, plausible values, varied per customer."""
    item: dict[str, Any] = {"customer_id": f"C{i:05d}"}
    for name, kind in KINDS.items():
        item[name] = {
            "flag": int(rng.integers(0, 2)),
            "count": int(rng.integers(1, 200)),
            "days": int(rng.integers(0, 365)),
            "money": round(float(rng.gamma(2.0, 800.0)), 2),
            "ratio": round(float(rng.uniform(0, 1)), 4),
        }[kind]
    for name in NEGATIVE_FEATURES:  # signed sums of debits: zero or negative
        item[name] = -item[name]
    for name in ("avg_amount", "net_flow"):
        item[name] = item[name] - 900.0
    return item


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "decisions"


@pytest.mark.parametrize("bundle", [TRAINED, ARTIFACTS], ids=["trained", "handover"])
def test_one_record_per_decision_holding_only_request_and_response_fields(
    log_dir: Path, bundle: Path
) -> None:
    log = local_decision_log(log_dir)
    assert log is not None
    rng = np.random.default_rng(5)
    make = (
        (lambda i: trained_item(i, rng))
        if bundle == TRAINED
        else (lambda i: {**BRIEF_EXAMPLE, "customer_id": f"C{i:05d}"})
    )
    sent: list[dict[str, Any]] = []
    answered: list[dict[str, Any]] = []
    with TestClient(app_with_log(bundle, log)) as client:
        for i in range(3):
            item = make(i)
            r = client.post("/predict", json=item)
            assert r.status_code == 200, r.text
            sent.append(item)
            answered.append(r.json())
        items = [make(i) for i in range(3, 53)]
        r = client.post("/predict/batch", json={"items": items})
        assert r.status_code == 200, r.text
        sent += items
        answered += r.json()["results"]
        # Refused requests decide nothing and record nothing.
        assert client.post("/predict", json={**make(99), "customer_id": ""}).status_code == 422
        bad = {"items": [make(100), {**make(101), "has_rent": 3}]}
        assert client.post("/predict/batch", json=bad).status_code == 422
        meta = client.get("/model").json()
        assert meta["decision_log"]["enabled"] is True
        assert "local directory" in meta["decision_log"]["store"]
    log.close()
    records = read_records(log_dir)
    assert len(records) == len(answered) == 53
    by_id = {r["request_id"]: r for r in records}
    assert len(by_id) == 53  # exactly one record per decision
    model = load_bundle(LocalDirSource(bundle))
    for item, response in zip(sent, answered, strict=True):
        record = by_id[response["request_id"]]
        assert tuple(record) == RECORD_FIELDS  # these fields and nothing else
        assert record["customer_id"] == item["customer_id"] == response["customer_id"]
        assert record["inputs"] == {k: v for k, v in item.items() if k != "customer_id"}
        for key in ("probability", "threshold", "prediction", "reasons", "model_version"):
            assert record[key] == response[key], key
        assert record["model_sha256"] == model.manifest.sha256 == meta["manifest"]["sha256"]
        decided = datetime.fromisoformat(record["decided_at"].replace("Z", "+00:00"))
        assert decided.utcoffset() is not None and decided.utcoffset().total_seconds() == 0
    # Replaying the recorded inputs through the recorded model gives the recorded answer.
    columns = [spec.accepts[0] for spec in model.manifest.inputs]
    defaults = {s.accepts[0]: s.default for s in model.manifest.inputs}
    for record in records[:10]:
        row = [record["inputs"].get(c, defaults[c]) for c in columns]
        p = model.scorer.probabilities(np.array([row], dtype=float))[0]
        assert p == pytest.approx(record["probability"], rel=1e-12, abs=1e-300)
    # Access-controlled: only the service's user can read or list it.
    (day,) = log_dir.iterdir()
    assert day.name == f"date={records[0]['decided_at'][:10]}"
    assert stat.S_IMODE(log_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(day.stat().st_mode) == 0o700
    for path in day.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_environment_switches_the_local_log_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DECISION_LOG_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("MODEL_DIR", str(ARTIFACTS))
    app = create_app()
    with TestClient(app) as client:
        rid = client.post("/predict", json=BRIEF_EXAMPLE).json()["request_id"]
    assert [r["request_id"] for r in read_records(tmp_path / "d")] == [rid]
    monkeypatch.delenv("DECISION_LOG_DIR")
    assert create_app().state.decision_log is None


class GatedSink(LocalDirSink):
    """The real local sink, made to wait for ``gate`` before each write (to fill the queue)."""

    def __init__(self, directory: Path):
        super().__init__(directory, fsync=False)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def append(self, partition: str, data: bytes) -> None:
        self.entered.set()
        assert self.gate.wait(30)
        super().append(partition, data)


def test_a_full_queue_refuses_with_503_and_never_drops_a_released_decision(
    log_dir: Path,
) -> None:
    sink = GatedSink(log_dir)
    log = DecisionLog(sink, max_pending=2)
    app = app_with_log(ARTIFACTS, log)

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.get("/ready")

            async def one(i: int) -> httpx.Response:
                return await client.post("/predict", json={**BRIEF_EXAMPLE, "customer_id": f"Q{i}"})

            first = asyncio.create_task(one(0))  # the writer takes it and waits at the gate
            while not sink.entered.is_set():
                await asyncio.sleep(0.01)
            queued = [asyncio.create_task(one(i)) for i in (1, 2)]  # fill the queue
            await asyncio.sleep(0.2)
            refused = await one(3)  # queue full: refused at once, not after the gate opens
            assert not sink.gate.is_set()
            sink.gate.set()
            return [await first, *[await q for q in queued], refused]

    responses = asyncio.run(scenario())
    log.close()
    assert [r.status_code for r in responses] == [200, 200, 200, 503]
    refused = responses[3]
    assert refused.headers["retry-after"] == "1" and "busy" in refused.json()["detail"]
    assert "Q3" not in refused.text
    ids = sorted(r["request_id"] for r in read_records(log_dir))
    assert ids == sorted(r.json()["request_id"] for r in responses[:3])


def test_a_failing_store_refuses_with_503_and_releases_nothing(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the log directory should be")
    log = local_decision_log(blocked)
    with TestClient(app_with_log(ARTIFACTS, log)) as client:
        r = client.post("/predict", json=BRIEF_EXAMPLE)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "not released" in r.json()["detail"] and "CUST001" not in r.text
        assert "request_id" not in r.json() and "probability" not in r.json()
        assert client.get("/health").status_code == 200
    assert log is not None and log.failures == 1 and log.written == 0


def test_the_queue_bound_holds_without_a_server(log_dir: Path) -> None:
    sink = GatedSink(log_dir)
    log = DecisionLog(sink, max_pending=1)
    pending = [
        PendingDecisions(
            decided_at=datetime.fromisoformat("2026-01-02T03:04:05+00:00"),
            model_version="m@1",
            model_sha256="0" * 64,
            requests=[{"customer_id": f"C{i}", "fee_count": i}],
            results=[
                {
                    "request_id": f"{i:032x}",
                    "customer_id": f"C{i}",
                    "probability": 0.5,
                    "threshold": 0.5,
                    "prediction": 1,
                    "reasons": None,
                }
            ],
        )
        for i in range(3)
    ]
    futures = [log.submit(pending[0])]
    assert sink.entered.wait(10)
    futures.append(log.submit(pending[1]))
    with pytest.raises(DecisionLogBusyError):
        log.submit(pending[2])
    sink.gate.set()
    concurrent.futures.wait(futures, timeout=10)
    log.close()
    records = read_records(log_dir)
    assert [r["customer_id"] for r in records] == ["C0", "C1"]
    assert records[1]["inputs"] == {"fee_count": 1}
    assert (log_dir / "date=2026-01-02").is_dir()


# ---------------------------------------------------------------- crashes


def test_a_torn_last_line_is_cut_only_in_files_no_writer_holds(tmp_path: Path) -> None:
    day = tmp_path / "date=2026-01-01"
    day.mkdir(parents=True)
    whole = b'{"request_id":"a"}\n{"request_id":"b"}\n'
    dead = day / "decisions-1-dead.jsonl"
    dead.write_bytes(whole + b'{"request_id":"c","inp')
    live_sink = LocalDirSink(tmp_path, fsync=False)
    live_sink.append("2026-01-01", b'{"request_id":"d"}\n')
    (live,) = [p for p in day.iterdir() if p != dead]
    with open(live, "ab") as fh:  # a torn line in a file its (live) writer still holds
        fh.write(b'{"request_id":"e"')
    assert inspect_directory(tmp_path) == {"files": 2, "records": 3, "torn": 2}
    assert repair_directory(tmp_path) == {f"date=2026-01-01/{dead.name}": 22}
    assert dead.read_bytes() == whole
    assert live.read_bytes().endswith(b'"e"')  # untouched while its writer lives
    live_sink.close()
    assert repair_directory(tmp_path) == {f"date=2026-01-01/{live.name}": 17}
    assert inspect_directory(tmp_path) == {"files": 2, "records": 3, "torn": 0}


def test_a_killed_server_leaves_no_partial_record_and_every_answer_recorded(
    tmp_path: Path,
) -> None:
    """A real ``python -m scoring`` is SIGKILLed while several clients send full batches.
    Every decision a client received is in the log exactly once, and after a restart on the
    same directory there is no torn record."""
    log_dir = tmp_path / "decisions"
    env = {"DECISION_LOG_DIR": str(log_dir), "DECISION_LOG_FSYNC": "0"}
    server = start_live_server(tmp_path / "server.log", "artifacts/trained", env=env)
    rng = np.random.default_rng(3)
    body = json.dumps({"items": [trained_item(i, rng) for i in range(1000)]}).encode()
    received: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=server.base, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post(
                        "/predict/batch",
                        content=body,
                        headers={"content-type": "application/json"},
                    )
                except httpx.TransportError:
                    return
                if r.status_code == 200:
                    with lock:
                        received.extend(x["request_id"] for x in r.json()["results"])

    threads = [threading.Thread(target=client) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(received) < 5000 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.proc.kill()  # SIGKILL, mid-traffic: no shutdown hook runs
        server.proc.wait(timeout=10)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        if server.proc.poll() is None:
            stop_live_server(server)
    assert len(received) >= 5000
    before = inspect_directory(log_dir)
    # Restart on the same directory: the new writer repairs what the dead one left.
    with live_server(tmp_path / "again.log", "artifacts/trained", env=env) as again:
        r = httpx.post(f"{again.base}/predict", json=trained_item(0, rng), timeout=30)
        assert r.status_code == 200
    after = inspect_directory(log_dir)
    assert after["torn"] == 0
    assert after["records"] == before["records"] + 1
    records = read_records(log_dir)  # every line parses
    ids = [rec["request_id"] for rec in records]
    assert len(ids) == len(set(ids))  # exactly once
    assert set(received) <= set(ids)  # nothing a client was told is missing
    assert all(tuple(rec) == RECORD_FIELDS for rec in records)


WRITER = """
import sys
from pathlib import Path
from scoring.audit import LocalDirSink
sink = LocalDirSink(Path(sys.argv[1]), fsync=False)
sink.recover()
line = b'{"request_id":"%032x","decided_at":"2026-01-01T00:00:00.000Z"}\\n'
data = b"".join(line % i for i in range(1_500_000))
print(len(data), flush=True)
sink.append("2026-01-01", data)  # one group commit: one write system call
print("done", flush=True)
"""


def test_a_process_killed_inside_a_group_write_leaves_a_torn_line_that_is_cut(
    tmp_path: Path,
) -> None:
    """Deterministic version of the crash: a writer process is SIGKILLed while its single
    write() of a large group is in progress (Linux then cuts the write short, mid-record).
    ``python -m scoring.audit --repair`` (what a new writer does on start) leaves only whole
    records, in order."""
    import subprocess
    import sys

    torn_seen = False
    for attempt in range(3):
        log_dir = tmp_path / f"d{attempt}"
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(log_dir)],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        total = int(proc.stdout.readline())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            files = list(log_dir.glob("date=*/*.jsonl"))
            if files and files[0].stat().st_size > 0:
                break
        proc.kill()
        proc.wait(timeout=10)
        (path,) = log_dir.glob("date=*/*.jsonl")
        state = inspect_directory(log_dir)
        if path.stat().st_size == total:
            continue  # the write finished before the kill landed: try again
        torn_seen = torn_seen or state["torn"] == 1
        done = subprocess.run(
            [sys.executable, "-m", "scoring.audit", str(log_dir), "--repair"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        after = json.loads(done.stdout.strip().splitlines()[-1])
        assert after == {"files": 1, "records": state["records"], "torn": 0}
        records = read_records(log_dir)
        assert [int(r["request_id"], 16) for r in records] == list(range(len(records)))
        if torn_seen:
            break
    assert torn_seen, "no attempt was killed inside the write"


# ---------------------------------------------------------------- Azure: append blobs


def test_chunks_cut_only_after_whole_lines() -> None:
    data = b"".join(f'{{"n":{i}}}\n'.encode() for i in range(1000))
    pieces = _chunks(data, 100)
    assert b"".join(pieces) == data
    assert all(len(p) <= 100 and p.endswith(b"\n") for p in pieces)
    assert _chunks(b"x" * 150 + b"\n", 100) == [b"x" * 150 + b"\n"]


@pytest.fixture
def blob_service(azurite: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from azure.storage.blob import BlobServiceClient

    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    service = BlobServiceClient.from_connection_string(azurite)
    name = f"decisions{os.getpid()}{int(time.time() * 1000) % 100000}"
    service.create_container(name)
    try:
        yield service, name
    finally:
        service.delete_container(name)


@pytest.mark.azurite
def test_decisions_are_appended_to_append_blobs_in_the_container(blob_service: Any) -> None:
    service, name = blob_service
    log = decision_log_from_settings(Settings.from_env({"DECISION_LOG_CONTAINER": name}))
    assert log is not None and isinstance(log.sink, AppendBlobSink)
    rng = np.random.default_rng(1)
    with TestClient(app_with_log(TRAINED, log)) as client:
        ids = [client.post("/predict", json=trained_item(0, rng)).json()["request_id"]]
        items = [trained_item(i, rng) for i in range(1, 301)]
        r = client.post("/predict/batch", json={"items": items})
        ids += [x["request_id"] for x in r.json()["results"]]
        assert "blob container" in client.get("/model").json()["decision_log"]["store"]
    log.close()
    container = service.get_container_client(name)
    blobs = list(container.list_blobs())
    assert len(blobs) == 1 and blobs[0].name.startswith("date=")
    props = container.get_blob_client(blobs[0].name).get_blob_properties()
    assert props.blob_type == "AppendBlob"
    assert props.append_blob_committed_block_count == 2  # one append per group commit
    lines = container.download_blob(blobs[0].name).readall().decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert [rec["request_id"] for rec in records] == ids
    assert all(tuple(rec) == RECORD_FIELDS for rec in records)


@pytest.mark.azurite
def test_a_missing_container_is_a_503_not_a_new_unprotected_container(
    azurite: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.storage.blob import BlobServiceClient

    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    name = "no-such-decisions"
    log = decision_log_from_settings(Settings.from_env({"DECISION_LOG_CONTAINER": name}))
    with TestClient(app_with_log(ARTIFACTS, log)) as client:
        r = client.post("/predict", json=BRIEF_EXAMPLE)
        assert r.status_code == 503 and "not released" in r.json()["detail"]
    assert log is not None
    log.close()
    service = BlobServiceClient.from_connection_string(azurite)
    assert name not in [c.name for c in service.list_containers()]


def test_the_function_app_records_decisions_when_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """function_app builds its HTTP app with ``decision_log_from_settings()``: local directory,
    container, or off."""
    import function_app

    assert function_app.http_app.state.decision_log is None  # not configured in the tests
    local = decision_log_from_settings(Settings.from_env({"DECISION_LOG_DIR": str(tmp_path)}))
    assert local is not None and isinstance(local.sink, LocalDirSink)
    blob = decision_log_from_settings(Settings.from_env({"DECISION_LOG_CONTAINER": "decisions"}))
    assert blob is not None and blob.describe()["store"].startswith("blob container decisions")
    source = Path(function_app.__file__).read_text()
    assert "decision_log=decision_log_from_settings()" in source


def test_a_closed_log_refuses_instead_of_hanging(log_dir: Path) -> None:
    log = local_decision_log(log_dir)
    assert log is not None
    app = app_with_log(ARTIFACTS, log)
    with TestClient(app) as client:
        assert client.post("/predict", json=BRIEF_EXAMPLE).status_code == 200
    log.close()  # the app's shutdown closed it already: closing again is harmless
    with TestClient(app) as client:
        r = client.post("/predict", json=BRIEF_EXAMPLE)
        assert r.status_code == 503 and "closed" in r.json()["detail"]
    assert len(read_records(log_dir)) == 1
