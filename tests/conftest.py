"""Shared fixtures and helpers: the handover files, a real Azurite blob service on
loopback, and the scoring API (an app per bundle, the function app's HTTP handler, and
``python -m scoring`` live on a free loopback port).

Azurite is the npm package installed by ``npm ci``. If one already listens on the
default port (e.g. started by ``.ci/run`` or by a developer), it is reused; otherwise the
fixture starts one for the test session and stops it afterwards.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
import psutil
import pytest
from fastapi import FastAPI

from benchmarks import load_test
from blobflow.naming import CURATED, QUARANTINE
from blobflow.store import DEV_ACCOUNT_KEY, BlobStore, connect
from features.definitions import EXTRA_BOUNDS, FEATURES, MAX_DAYS
from scoring.api import create_app
from scoring.bundle import BundleSource, LocalDirSource
from scoring.holder import ModelHolder
from scoring.schema import BRIEF_EXAMPLE, MAX_BATCH, MAX_ID_LENGTH
from scoring.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
HANDOVER = ROOT.parent / "shared" / "handover"
AZURITE_HOST = "127.0.0.1"
# Another port lets two checkouts run their suites side by side (AZURITE_BLOB_PORT=10010).
AZURITE_BLOB_PORT = int(os.environ.get("AZURITE_BLOB_PORT") or 10000)
# Azurite's development account as a full connection string, which every client accepts
# (the azure SDK itself does not expand the "UseDevelopmentStorage=true" shorthand; our
# connect() does, tested on its own).
AZURITE_CONNECTION = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    f"AccountKey={DEV_ACCOUNT_KEY};"
    f"BlobEndpoint=http://{AZURITE_HOST}:{AZURITE_BLOB_PORT}/devstoreaccount1;"
)


@pytest.fixture(scope="session")
def handover_dir() -> Path:
    """The data-science team's files as delivered (read-only). Falls back to our copies."""
    if (HANDOVER / "data" / "transactions.csv").is_file():
        return HANDOVER
    return ROOT  # data/ and artifacts/ hold byte-identical copies


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One local Spark session for every Spark test module (each start costs seconds)."""
    pytest.importorskip("pyspark", reason="pyspark is in requirements-spark.txt")
    from features import spark as engine

    session = engine.local_session(shuffle_partitions=2, driver_memory="1g")
    yield session
    session.stop()


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Connection string of a running Azurite blob service."""
    if _listening(AZURITE_HOST, AZURITE_BLOB_PORT):
        yield AZURITE_CONNECTION
        return
    binary = ROOT / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        pytest.fail("Azurite is not installed: run `npm ci` in the repo root")
    workdir = tmp_path_factory.mktemp("azurite")
    process = subprocess.Popen(
        [
            str(binary),
            "--blobHost",
            AZURITE_HOST,
            "--blobPort",
            str(AZURITE_BLOB_PORT),
            "--location",
            str(workdir),
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--loose",
            "--silent",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not _listening(AZURITE_HOST, AZURITE_BLOB_PORT):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"Azurite did not start on {AZURITE_HOST}:{AZURITE_BLOB_PORT}")
        time.sleep(0.1)
    try:
        yield AZURITE_CONNECTION
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def azurite_env(azurite: str) -> Iterator[str]:
    """``AzureWebJobsStorage`` pointing at Azurite for a test module (what the function app
    and the upload CLI read)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AzureWebJobsStorage", azurite)
        yield azurite


@pytest.fixture(scope="module")
def store(azurite_env: str) -> BlobStore:
    """The batch flow's store on Azurite, every container created."""
    s = BlobStore(connect())
    s.ensure_containers()
    return s


def batch_blobs(batch: str, *, labelled: bool, predictions: bool = True) -> set[str]:
    """Every blob a processed batch has: the files ``python -m features`` writes, under the
    same names, plus predictions, ``_SUCCESS`` and the old quarantine names (one release)."""
    curated = {"features.csv", "dq_report.json", "dq_report.md", "_SUCCESS"}
    rejected = {"quarantine.csv", "rejected_rows.csv"}
    if labelled:
        curated.add("training_set.csv")
        rejected |= {"labels_quarantine.csv", "rejected_labels.csv"}
    if predictions:
        curated.add("predictions.csv")
    return {f"{CURATED}/{batch}/{n}" for n in curated} | {
        f"{QUARANTINE}/{batch}/{n}" for n in rejected
    }


def blob_outputs(store: BlobStore, batch: str) -> dict[str, bytes]:
    """Every blob under curated/<batch>/ and quarantine/<batch>/ with its bytes."""
    found = {}
    for container in (CURATED, QUARANTINE):
        client = store.service.get_container_client(container)
        for blob in client.list_blobs(name_starts_with=f"{batch}/"):
            found[f"{container}/{blob.name}"] = client.download_blob(blob.name).readall()
    return found


# ---------------------------------------------------------------- run reports


def accounted(report: dict[str, Any]) -> bool:
    """Every input row is used, a duplicate or quarantined (a ``dq_report.json`` dict)."""
    return report["rows_in"] == (
        report["rows_used"] + report["rows_duplicate"] + report["rows_quarantined"]
    )


def check_count(report: dict[str, Any], code: str) -> int:
    """How many rows one transaction rule matched, from a ``dq_report.json`` dict."""
    return next(c["count"] for c in report["checks"] if c["check"] == code)


COUNT_KINDS, FLOAT_KINDS = ("count", "flag", "days"), ("money", "ratio")


def assert_same_features(got: Any, expected: Any, *, rtol: float = 0.0) -> None:
    """Same customers in the same order; counts, flags and days exactly (with their
    dtypes); money and ratios within ``rtol`` (0: exactly)."""
    import pandas as pd

    counts = [f.name for f in FEATURES if f.kind in COUNT_KINDS]
    floats = [f.name for f in FEATURES if f.kind in FLOAT_KINDS]
    assert list(got.columns) == list(expected.columns)
    assert got["customer_id"].tolist() == expected["customer_id"].tolist()
    pd.testing.assert_frame_equal(got[counts], expected[counts], check_dtype=True)
    pd.testing.assert_frame_equal(
        got[floats], expected[floats], check_exact=rtol == 0, rtol=rtol or 1e-5, atol=0
    )


def assert_same_run(got: Any, expected: Any, *, rtol: float = 0.0, examples: bool = True) -> None:
    """Two engines' ``RunResult`` for the same input agree: features, training set, label
    quarantine, and the whole report but its engine, time stamp and timing (example values
    too unless ``examples`` is False: the DuckDB reference keeps none)."""
    assert_same_features(got.features, expected.features, rtol=rtol)
    if expected.training_set is None:
        assert got.training_set is None
    else:
        assert_same_features(got.training_set, expected.training_set, rtol=rtol)
        assert got.training_set["defaulted"].tolist() == expected.training_set["defaulted"].tolist()
        assert got.label_quarantine.equals(expected.label_quarantine)

    def comparable(report: Any) -> dict[str, Any]:
        out = report.to_dict()
        for key in ("engine", "generated_at", "elapsed_seconds"):
            out.pop(key)
        if not examples:
            out["checks"] = [{k: v for k, v in c.items() if k != "examples"} for c in out["checks"]]
        return out

    assert comparable(got.report) == comparable(expected.report)
    assert got.quarantine_rows == expected.quarantine_rows


# ---------------------------------------------------------------- the scoring API

HOST = "127.0.0.1"
JSON_HEADERS = {"content-type": "application/json"}


@contextmanager
def serving(
    app: FastAPI, source: Callable[[], BundleSource], *, retry_after: float = 5.0
) -> Iterator[ModelHolder]:
    """Serve ``app`` from a fresh holder on ``source`` until the block ends.

    The holder is what the app's ``model_holder`` dependency returns (``app.state.holder``),
    so HTTP routes and anything else reading it (the function app's batch predictions) use
    the new one; the old holder is put back afterwards.
    """
    holder = ModelHolder(source, retry_after=retry_after)
    previous = app.state.holder
    app.state.holder = holder
    try:
        yield holder
    finally:
        app.state.holder = previous


@pytest.fixture
def function_holder() -> Iterator[Callable[..., ModelHolder]]:
    """``function_holder(source, retry_after=...)`` serves the function app (HTTP and batch
    predictions) from a fresh holder on ``source`` until the test ends."""
    import function_app

    with ExitStack() as stack:

        def serve(source: Callable[[], BundleSource], *, retry_after: float = 5.0) -> ModelHolder:
            return stack.enter_context(
                serving(function_app.http_app, source, retry_after=retry_after)
            )

        yield serve


def bundle_app(directory: Path, *, retry_after: float = 5.0, root_path: str = "") -> FastAPI:
    """A scoring app of its own serving the bundle in ``directory``."""
    holder = ModelHolder(lambda: LocalDirSource(directory), retry_after=retry_after)
    return create_app(Settings(model_dir=directory), holder=holder, root_path=root_path)


@functools.cache
def function_handlers() -> dict[str, Any]:
    """The function app's functions by name, indexed once per process as the worker does
    (``get_functions`` refuses to index the same names twice)."""
    import function_app

    function_app.app.functions_bindings = {}
    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def call_function(
    method: str,
    path: str,
    body: object | None = None,
    *,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> func.HttpResponse:
    """Invoke the indexed HTTP function the way the Python worker does: a
    ``func.HttpRequest`` for ``http://localhost:7071<path>`` in, a ``func.HttpResponse`` out.
    ``body`` is sent as JSON; ``content`` as raw bytes with ``headers`` as given."""
    import function_app

    if content is None:
        content = b"" if body is None else json.dumps(body).encode()
        if headers is None and body is not None:
            headers = dict(JSON_HEADERS)
    handler = function_handlers()[function_app.HTTP_FUNCTION].get_user_function()
    request = func.HttpRequest(
        method=method, url=f"http://localhost:7071{path}", headers=headers or {}, body=content
    )
    return asyncio.run(handler(request, None))


@dataclass
class LiveServer:
    """``python -m scoring`` on a free loopback port; everything it prints goes to ``log``."""

    base: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def rss(self) -> int:
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)


def start_live_server(
    log: Path,
    model_dir: str = "artifacts",
    *,
    level: str = "warning",
    access_log: bool = False,
    env: dict[str, str] | None = None,
) -> LiveServer:
    port = load_test.free_port()
    try:
        proc = load_test.start_server(
            port,
            model_dir,
            log=log,
            level=level,
            access_log=access_log,
            env=env,
            wait_for="/health",
        )
    except RuntimeError as exc:
        pytest.fail(f"{exc}: {log.read_text(errors='replace')[-2000:]}")
    return LiveServer(f"http://{HOST}:{port}", port, proc, log)


def stop_live_server(server: LiveServer) -> None:
    load_test.stop_server(server.proc)


@contextmanager
def live_server(log: Path, model_dir: str = "artifacts", **options: Any) -> Iterator[LiveServer]:
    server = start_live_server(log, model_dir, **options)
    try:
        yield server
    finally:
        stop_live_server(server)


def raw_exchange(port: int, data: bytes, timeout: float = 20.0) -> bytes:
    """Send raw bytes and read until the server closes or a full response has arrived."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(data)
        return read_response(s)


def read_response(s: socket.socket) -> bytes:
    """Bytes from ``s`` until it closes, times out, or a whole response has arrived."""
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


# Features the API accepts only at or below zero (signed sums of debits: total_debit, ...).
NEGATIVE_FEATURES = tuple(name for name, bound in EXTRA_BOUNDS.items() if bound.get("le") == 0)


def largest_batch(seed: int = 9) -> bytes:
    """The largest valid /predict/batch body: MAX_BATCH items, each with every Part 1 feature
    at its longest (maximal-length id, long float texts)."""
    rng = random.Random(seed)
    items = []
    for i in range(MAX_BATCH):
        item: dict[str, object] = {"customer_id": f"{i:0{MAX_ID_LENGTH}d}"}
        for f in FEATURES:
            item[f.name] = {
                "flag": 1,
                "count": 999_999_999,
                "days": MAX_DAYS,
                "money": rng.uniform(0, 9_999_999),
                "ratio": rng.uniform(0, 1),
            }[f.kind]
        for name in ("avg_amount", "net_flow", *NEGATIVE_FEATURES):  # may be negative
            item[name] = -rng.uniform(0, 9_999_999)
        items.append(item)
    return json.dumps({"items": items}).encode()


# The brief's example, completed with the numeric features the trained model also needs.
FULL_EXAMPLE: dict[str, Any] = {
    **BRIEF_EXAMPLE,
    "net_flow": 2249.5,
    "max_debit": 650.0,
    "rent_to_income": 0.19,
    "gambling_spend": 0.0,
    "fee_count": 0,
    "days_since_last_salary": 3,
    "salary_month_share": 1.0,
    "active_days": 90,
    # Per-month rates and shares over the same 90 days (2.96 months).
    "transactions_per_month": 5.07,
    "credit_per_month": 1183.6,
    "debit_per_month": -422.87,
    "gambling_per_month": 0.0,
    "fees_per_month": 0.0,
    "spend_to_income": 0.3573,
    "rent_burden": 0.19,
    "salary_stopped": 0,
}


def padded_body(size: int, value: dict[str, Any] | None = None) -> bytes:
    """``value`` (the brief's example) as JSON, padded with whitespace to ``size`` bytes."""
    body = json.dumps(BRIEF_EXAMPLE if value is None else value).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"
