"""The decision audit trail: one record per decision, appended to a store nobody edits.

A lender must be able to show, for any complaint, which model decided what and why. The
diagnostic logs deliberately hold no customer data, so decisions go here instead, to a
store with its own access control: locally newline-delimited JSON under ``DECISION_LOG_DIR``
(directory 0700, files 0600), in Azure append blobs in an immutable container
(``scoring.audit_blob``). One record per decision, with exactly these fields and nothing
the request and response did not carry::

    request_id, decided_at, customer_id, model_version, model_sha256, inputs,
    probability, threshold, prediction, reasons

(``inputs``: the request's fields as sent, without ``customer_id``.)

How writes stay off the hot path without losing a decision:

* The handler puts the request's decisions on a bounded queue and awaits an
  acknowledgement; a background thread takes everything queued, writes it with one append
  per date partition (group commit) and acknowledges. The event loop never blocks on I/O,
  and concurrent requests share a write.
* A decision is released (the response sent) only after its record is written. If the
  process dies first, the client gets no answer and no decision was released; if it dies
  after the write but before the response, the record exists for a decision the client
  never saw (as with any response lost in transit). No released decision is unrecorded.
* A full queue refuses the request at once with 503 (``DecisionLogBusyError``), and a
  failed write refuses it with 503 (``DecisionLogUnavailableError``): a decision is never
  released unrecorded, and a caller is never left waiting on an unbounded queue.
* Records are whole lines. A crash in the middle of a write can leave a torn last line
  (Linux may cut a large write short when the process is killed); each local file is
  flock-ed by its writer, and a writer starting on the directory cuts every unlocked file
  back to its last complete line (records that were never acknowledged, so never
  released). Append blocks in Azure are atomic, so there is nothing to repair there.

Files: ``<dir>/date=YYYY-MM-DD/decisions-<pid>-<random>.jsonl``, one per process and day,
partitioned by the UTC date of ``decided_at``.

    python -m scoring.audit DIR            # files, records, torn lines (nothing changed)
    python -m scoring.audit DIR --repair   # cut torn last lines of files no writer holds
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import fcntl
import json
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("scoring.audit")

RECORD_FIELDS = (
    "request_id",
    "decided_at",
    "customer_id",
    "model_version",
    "model_sha256",
    "inputs",
    "probability",
    "threshold",
    "prediction",
    "reasons",
)
DEFAULT_MAX_PENDING = 256  # requests waiting for the writer before new ones get 503
MAX_GROUP_DECISIONS = 20_000  # decisions per group commit
DIR_MODE = 0o700
FILE_MODE = 0o600


class DecisionLogError(RuntimeError):
    """The decision could not be recorded, so it is not released (503); safe to show."""


class DecisionLogBusyError(DecisionLogError):
    """The writer's queue is full."""


class DecisionLogUnavailableError(DecisionLogError):
    """The store refused or failed the write."""


class DecisionSink(Protocol):
    """Where record lines go. ``append`` writes whole lines for one date partition, or raises."""

    def describe(self) -> str: ...

    def recover(self) -> None: ...

    def append(self, partition: str, data: bytes) -> None: ...

    def close(self) -> None: ...


@dataclass
class PendingDecisions:
    """One request's decisions, waiting for the writer: built on the event loop from what
    the request and the response already hold; serialised in the writer thread."""

    decided_at: datetime
    model_version: str
    model_sha256: str
    requests: Sequence[dict[str, Any]]  # request fields per decision (customer_id included)
    results: Sequence[dict[str, Any]]  # response items, in the same order
    done: concurrent.futures.Future[None] = field(default_factory=concurrent.futures.Future)

    @property
    def partition(self) -> str:
        return self.decided_at.strftime("%Y-%m-%d")

    def lines(self) -> bytes:
        decided = self.decided_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        out = []
        for request, result in zip(self.requests, self.results, strict=True):
            record = {
                "request_id": result["request_id"],
                "decided_at": decided,
                "customer_id": result["customer_id"],
                "model_version": self.model_version,
                "model_sha256": self.model_sha256,
                "inputs": {
                    k: v for k, v in request.items() if v is not None and k != "customer_id"
                },
                "probability": result["probability"],
                "threshold": result["threshold"],
                "prediction": result["prediction"],
                "reasons": result["reasons"],
            }
            out.append(json.dumps(record, separators=(",", ":"), allow_nan=False))
        return ("\n".join(out) + "\n").encode("utf-8")


_STOP = object()


class DecisionLog:
    """A background writer in front of a ``DecisionSink`` (see the module docstring)."""

    def __init__(self, sink: DecisionSink, *, max_pending: int = DEFAULT_MAX_PENDING):
        self.sink = sink
        self.max_pending = max_pending
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self.written = 0  # decisions acknowledged
        self.groups = 0  # group commits
        self.failures = 0  # decisions refused because a write failed

    def describe(self) -> dict[str, Any]:
        return {"enabled": True, "store": self.sink.describe(), "max_pending": self.max_pending}

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                if self._closed:
                    raise DecisionLogUnavailableError("decision log is closed")
                thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
                thread.start()
                self._thread = thread

    def submit(self, pending: PendingDecisions) -> concurrent.futures.Future[None]:
        """Queue decisions for writing; the future completes once they are written.
        Raises ``DecisionLogBusyError`` at once if the queue is full."""
        if self._closed:
            raise DecisionLogUnavailableError("the decision log is closed; nothing was decided")
        self._ensure_started()
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            raise DecisionLogBusyError(
                "the decision log is busy; nothing was decided or recorded, retry shortly"
            ) from None
        return pending.done

    async def record(self, pending: PendingDecisions) -> None:
        """Submit and wait (without blocking the event loop) until written."""
        await asyncio.wrap_future(self.submit(pending))

    def _run(self) -> None:
        try:
            self.sink.recover()
        except Exception:  # a repair failure must not stop new records being written
            log.exception("decision log recovery failed")
        while True:
            first = self._queue.get()
            if first is _STOP:
                break
            group, count, stop = [first], len(first.results), False
            while count < MAX_GROUP_DECISIONS:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                group.append(item)
                count += len(item.results)
            self._write(group)
            if stop:
                break
        self.sink.close()

    def _write(self, group: list[PendingDecisions]) -> None:
        by_partition: dict[str, list[PendingDecisions]] = {}
        for item in group:
            by_partition.setdefault(item.partition, []).append(item)
        for partition, items in by_partition.items():
            try:
                data = b"".join(item.lines() for item in items)
                self.sink.append(partition, data)
            except Exception as exc:
                what = exc.strerror if isinstance(exc, OSError) and exc.strerror else ""
                log.error(
                    "decision log write failed (%s%s); %d decisions refused",
                    type(exc).__name__,
                    f": {what}" if what else "",
                    sum(len(i.results) for i in items),
                )
                error = DecisionLogUnavailableError(
                    f"the decision could not be recorded ({type(exc).__name__}); "
                    "it was not released, retry shortly"
                )
                for item in items:
                    self.failures += len(item.results)
                    item.done.set_exception(error)
                continue
            self.groups += 1
            for item in items:
                self.written += len(item.results)
                item.done.set_result(None)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread and close the sink (once)."""
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is None:
            self.sink.close()
            return
        self._queue.put(_STOP)
        thread.join(timeout)


# ---------------------------------------------------------------- local files


def _tail_repair(fd: int) -> int:
    """Cut a file back to its last complete line; returns the bytes removed."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return 0
    end = size
    while end > 0:
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            keep = start + cut + 1
            os.ftruncate(fd, keep)
            return size - keep
        end = start
    os.ftruncate(fd, 0)
    return size


def repair_directory(directory: Path) -> dict[str, int]:
    """Cut every decision file no live writer holds back to its last complete line.
    Returns ``{relative file name: bytes removed}`` for the files that needed it."""
    repaired: dict[str, int] = {}
    for path in sorted(directory.glob("date=*/decisions-*.jsonl")):
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer owns it
            removed = _tail_repair(fd)
            if removed:
                os.fsync(fd)
                repaired[str(path.relative_to(directory))] = removed
        finally:
            os.close(fd)
    return repaired


class LocalDirSink:
    """NDJSON files under a directory, one per process and date; see the module docstring."""

    def __init__(self, directory: Path, *, fsync: bool = True):
        self.directory = directory
        self.fsync = fsync
        self._token = os.urandom(4).hex()
        self._files: dict[str, int] = {}

    def describe(self) -> str:
        return "local directory (DECISION_LOG_DIR)" + (", fsync per write" if self.fsync else "")

    def recover(self) -> None:
        _make_private_dir(self.directory)
        for name, removed in repair_directory(self.directory).items():
            log.warning("decision log: cut %d bytes of a torn last line from %s", removed, name)

    def _file(self, partition: str) -> int:
        fd = self._files.get(partition)
        if fd is not None:
            return fd
        for old in list(self._files):  # a new day: yesterday's file is finished
            os.close(self._files.pop(old))
        folder = self.directory / f"date={partition}"
        _make_private_dir(folder)
        path = folder / f"decisions-{os.getpid()}-{self._token}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        fcntl.flock(fd, fcntl.LOCK_EX)  # ours until the process ends (a repair may hold it briefly)
        self._files[partition] = fd
        return fd

    def append(self, partition: str, data: bytes) -> None:
        fd = self._file(partition)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if self.fsync:
            os.fsync(fd)

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()


def _make_private_dir(path: Path) -> None:
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        os.chmod(path, DIR_MODE)


def read_records(directory: Path) -> list[dict[str, Any]]:
    """Every record under a local decision log directory (for audits and tests)."""
    records = []
    for path in sorted(directory.glob("date=*/decisions-*.jsonl")):
        with path.open(encoding="utf-8") as fh:
            records.extend(json.loads(line) for line in fh if line.strip())
    return records


def new_request_ids(n: int) -> list[str]:
    """``n`` unique ids (128 random bits each, as 32 hex digits), from one system call."""
    token = os.urandom(16 * n).hex()
    return [token[i : i + 32] for i in range(0, 32 * n, 32)]


def now() -> datetime:
    return datetime.now(UTC)


def local_decision_log(
    directory: Path | None, *, fsync: bool = True, max_pending: int = DEFAULT_MAX_PENDING
) -> DecisionLog | None:
    """A decision log writing under ``directory``; None when no directory is configured."""
    if directory is None:
        return None
    return DecisionLog(LocalDirSink(directory, fsync=fsync), max_pending=max_pending)


DecisionLogFactory = Callable[[], DecisionLog | None]


def inspect_directory(directory: Path) -> dict[str, Any]:
    """Files, whole records and torn lines (a last line without its newline) under a local
    decision log; reads only."""
    files = sorted(directory.glob("date=*/decisions-*.jsonl"))
    records = torn = 0
    for path in files:
        data = path.read_bytes()
        records += data.count(b"\n")
        torn += bool(data) and not data.endswith(b"\n")
    return {"files": len(files), "records": records, "torn": torn}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Inspect or repair a local decision log.")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--repair", action="store_true", help="cut torn last lines")
    args = parser.parse_args(argv)
    if not args.directory.is_dir():
        print(f"error: {args.directory} is not a directory", file=sys.stderr)
        return 2
    if args.repair:
        for name, removed in repair_directory(args.directory).items():
            print(f"cut {removed} bytes from {name}")
    print(json.dumps(inspect_directory(args.directory)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
