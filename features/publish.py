"""What a run publishes and where: one table of output files, one sink interface, ``publish``.

Every way of running the job writes the same set of files under the same names: the CLI
into a local directory (``LocalDirectory``), the Spark engine through Hadoop's file
system, the blob flow into ``curated/<batch>/`` and ``quarantine/<batch>/`` (its sink is
in ``blobflow``). A sink gets whole files (``write``) and streamed ones (``stream``, for
the quarantine, which is written while the run reads); both become visible only when
complete, and a stream abandoned by an error is discarded.

``run_and_publish`` is the one sequence they all follow: the quarantine is streamed to the
sink while the engine runs, then ``publish`` writes the rest.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

import pandas as pd

from features.engine import QuarantineSink, RunResult
from features.outputs import CsvTableWriter, csv_bytes
from features.report import Report, render_markdown
from features.rules import QUARANTINE_COLUMNS

if TYPE_CHECKING:
    import pyarrow as pa

CSV, PARQUET = "csv", "parquet"
FORMATS = (CSV, PARQUET)
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "json": "application/json",
    "md": "text/markdown; charset=utf-8",
}


class Area(StrEnum):
    """Which kind of output a file is (the blob flow keeps each in its own container)."""

    CURATED = "curated"  # features, training set, report
    QUARANTINE = "quarantine"  # rejected rows


@dataclass(frozen=True)
class OutputFile:
    """One entry of the output table. A table (no ``extension``) is written in the run's
    format; the report has a fixed one."""

    stem: str
    area: Area
    extension: str | None = None

    def name(self, fmt: str = CSV) -> str:
        return f"{self.stem}.{self.extension or fmt}"

    def content_type(self, fmt: str = CSV) -> str:
        return CONTENT_TYPES[self.extension or fmt]


FEATURES = OutputFile("features", Area.CURATED)
TRAINING_SET = OutputFile("training_set", Area.CURATED)
REPORT_JSON = OutputFile("dq_report", Area.CURATED, "json")
REPORT_MARKDOWN = OutputFile("dq_report", Area.CURATED, "md")
QUARANTINE = OutputFile("quarantine", Area.QUARANTINE)
LABELS_QUARANTINE = OutputFile("labels_quarantine", Area.QUARANTINE)
# Every file a run may publish. features.csv, both reports and quarantine.csv always;
# training_set.csv and labels_quarantine.csv when labels were given.
OUTPUT_FILES = (FEATURES, TRAINING_SET, REPORT_JSON, REPORT_MARKDOWN, QUARANTINE, LABELS_QUARANTINE)
WITH_LABELS_ONLY = (TRAINING_SET, LABELS_QUARANTINE)


class OutputSink(Protocol):
    """Where a run's files go. ``fmt`` is the format tables are written in; ``written``
    lists where each published file went, in order."""

    fmt: str
    written: list[str]

    def write(self, file: OutputFile, data: bytes) -> None:
        """Publish a whole file (replacing any earlier one)."""
        ...

    def stream(self, file: OutputFile) -> AbstractContextManager[BinaryIO]:
        """A binary handle; the file is published when the block ends without an error
        and discarded otherwise."""
        ...


def table_bytes(frame: pd.DataFrame, fmt: str) -> bytes:
    """A table in an output format: safe CSV (``features.outputs``) or Parquet."""
    if fmt == CSV:
        return csv_bytes(frame)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def report_json(report: Report) -> bytes:
    return (json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n").encode("utf-8")


class TableWriter(Protocol):
    """Appends frames to an open file (a ``QuarantineSink``); ``close`` finishes the file.
    ``append_table`` takes rows already in Arrow (a store's quarantine, for instance)."""

    def __call__(self, frame: pd.DataFrame) -> None: ...

    def append_table(self, table: pa.Table) -> None: ...

    def close(self) -> None: ...


class ParquetTableWriter:
    """A ``QuarantineSink`` appending frames of text columns to a Parquet stream."""

    def __init__(self, handle: BinaryIO, columns: tuple[str, ...]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._columns = list(columns)
        self._schema = pa.schema([(c, pa.string()) for c in columns])
        self._writer = pq.ParquetWriter(handle, self._schema)

    def __call__(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa

        if list(frame.columns) != self._columns:
            raise ValueError("rows must have the file's columns")
        table = pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False)
        self._writer.write_table(table)

    def append_table(self, table: pa.Table) -> None:
        """Rows given as an Arrow table of the file's text columns."""
        if table.column_names != self._columns:
            raise ValueError("rows must have the file's columns")
        self._writer.write_table(table.cast(self._schema))

    def close(self) -> None:
        self._writer.close()


def table_writer(handle: BinaryIO, columns: tuple[str, ...], fmt: str) -> TableWriter:
    """A writer that appends frames to ``handle`` in ``fmt`` (call ``close`` at the end)."""
    if fmt == CSV:
        return CsvTableWriter(handle, columns)
    return ParquetTableWriter(handle, columns)


def publish(result: RunResult, sink: OutputSink) -> list[OutputFile]:
    """Write every output of ``result`` but the quarantine (streamed during the run).
    Returns the files written, in order."""
    tables: list[tuple[OutputFile, pd.DataFrame]] = [(FEATURES, result.features)]
    if result.training_set is not None:
        tables.append((TRAINING_SET, result.training_set))
    if result.label_quarantine is not None:
        tables.append((LABELS_QUARANTINE, result.label_quarantine))
    # Rendering is mostly Arrow compute, which releases the GIL: the tables render on two
    # threads, and are written in order.
    with ThreadPoolExecutor(2, thread_name_prefix="publish") as pool:
        rendered = [pool.submit(table_bytes, frame, sink.fmt) for _, frame in tables]
        for (file, _), data in zip(tables, rendered, strict=True):
            sink.write(file, data.result())
    sink.write(REPORT_JSON, report_json(result.report))
    sink.write(REPORT_MARKDOWN, render_markdown(result.report).encode("utf-8"))
    return [file for file, _ in tables] + [REPORT_JSON, REPORT_MARKDOWN]


def run_and_publish(sink: OutputSink, run: Callable[[QuarantineSink], RunResult]) -> RunResult:
    """Run an engine with its quarantine streamed into ``sink``, then publish the rest.

    ``run`` is the engine call, given the quarantine sink to feed. If it raises (bad
    input), the quarantine stream is discarded and nothing is published.
    """
    with sink.stream(QUARANTINE) as handle:
        writer = table_writer(handle, QUARANTINE_COLUMNS, sink.fmt)
        result = run(writer)
        writer.close()
    publish(result, sink)
    return result


class LocalDirectory:
    """An ``OutputSink`` writing into a directory: each file is written as ``.partial``
    and renamed, so a reader never sees half a file."""

    def __init__(self, directory: Path, fmt: str = CSV) -> None:
        self.directory = directory
        self.fmt = fmt
        self.written: list[str] = []

    def _path(self, file: OutputFile) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        return self.directory / file.name(self.fmt)

    def write(self, file: OutputFile, data: bytes) -> None:
        with self.stream(file) as handle:
            handle.write(data)

    @contextmanager
    def stream(self, file: OutputFile) -> Iterator[BinaryIO]:
        path = self._path(file)
        partial = path.with_name(path.name + ".partial")
        try:
            with partial.open("wb") as handle:
                yield handle
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, path)
        self.written.append(str(path))
