"""Where ``features.incremental`` keeps each batch: a directory (or blob prefix) per batch.

Layout (``FORMAT_VERSION`` 1), one folder per batch, named after the batch::

    <store>/batch=<name>/rows.parquet        one row per input row: what a re-fold needs
    <store>/batch=<name>/days.parquet        per (customer, UK day) partial aggregates
    <store>/batch=<name>/quarantine.parquet  the batch's quarantined rows, as published
    <store>/batch=<name>/batch.json          the batch's manifest (written last)

Adding or replacing a batch writes only that batch's folder, so the store is partitioned
by batch (``batch=<name>`` is the Hive-style key Spark and pyarrow datasets understand). A
folder without ``batch.json`` is an unfinished write and is ignored. The backend is a small
protocol (``BatchFiles``): a local directory here, Blob Storage in ``blobflow``.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from features.schema import InputError

FORMAT_VERSION = 1
PREFIX = "batch="
ROWS, DAYS, QUARANTINE = "rows.parquet", "days.parquet", "quarantine.parquet"
MANIFEST = "batch.json"
BATCH_FILES = (ROWS, DAYS, QUARANTINE, MANIFEST)
# Batch names sort as text ("2025-01-31" before "2025-02-01"); they become folder names.
BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class StoreError(InputError):
    """The store cannot be used as asked (bad batch name, different header, wrong format)."""


def check_batch_name(name: str) -> str:
    """``name`` if it can name a batch: letters, digits, ``.``, ``_``, ``-``; at most 100."""
    if not BATCH_NAME.match(name):
        raise StoreError(
            "a batch name is 1-100 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (dates such as 2025-01-31 sort in order)"
        )
    return name


class BatchFiles(Protocol):
    """The files of a store, batch by batch. ``write_batch`` replaces every file of one
    batch; the manifest must become visible last so readers never see half a batch."""

    def batch_names(self) -> list[str]:
        """Names of the complete batches (those with a manifest), sorted."""
        ...

    def open(self, batch: str, file: str) -> str | BinaryIO:
        """Something ``pyarrow.parquet`` or ``json`` can read one file from."""
        ...

    def write_batch(self, batch: str, files: dict[str, bytes]) -> None: ...

    def delete_batch(self, batch: str) -> None:
        """Remove a batch (its manifest first, so it is never seen half removed)."""
        ...


class LocalFiles:
    """A store in a local directory. A batch is written into a fresh folder and renamed
    into place, so a reader sees the old batch or the new one, never a mixture."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _folder(self, batch: str) -> Path:
        return self.root / f"{PREFIX}{check_batch_name(batch)}"

    def batch_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        names = [
            p.name[len(PREFIX) :]
            for p in self.root.iterdir()
            if p.name.startswith(PREFIX) and (p / MANIFEST).is_file()
        ]
        return sorted(n for n in names if BATCH_NAME.match(n))

    def open(self, batch: str, file: str) -> str:
        return str(self._folder(batch) / file)

    def write_batch(self, batch: str, files: dict[str, bytes]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        target = self._folder(batch)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            for name, data in files.items():
                (staging / name).write_bytes(data)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        old = self.root / f".replaced-{uuid.uuid4().hex}"
        if target.exists():
            os.replace(target, old)
        try:
            os.replace(staging, target)
        except BaseException:
            if old.exists():
                os.replace(old, target)
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)

    def delete_batch(self, batch: str) -> None:
        target = self._folder(batch)
        if target.exists():
            gone = self.root / f".removed-{uuid.uuid4().hex}"
            os.replace(target, gone)
            shutil.rmtree(gone, ignore_errors=True)


def table_bytes(table: pa.Table) -> bytes:
    """A Parquet file in memory: LZ4, dictionary pages for text only (hashes and numbers
    gain little from a dictionary and writing one is most of the cost), no column
    statistics (a batch's files are always read whole; they cost a fifth of the writing)."""
    text = [
        f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_dictionary(f.type)
    ]
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="lz4", use_dictionary=text, write_statistics=False)
    return buffer.getvalue()


def _encoded(table: pa.Table | bytes) -> bytes:
    return table if isinstance(table, bytes) else table_bytes(table)


class PartialsStore:
    """Reads and writes batches in the store's format over any ``BatchFiles``."""

    def __init__(self, files: BatchFiles) -> None:
        self.files = files

    @classmethod
    def local(cls, root: str | Path) -> PartialsStore:
        return cls(LocalFiles(Path(root)))

    def batch_names(self) -> list[str]:
        return self.files.batch_names()

    def remove(self, batch: str) -> None:
        self.files.delete_batch(check_batch_name(batch))

    def manifest(self, batch: str) -> dict[str, Any]:
        source = self.files.open(batch, MANIFEST)
        if isinstance(source, str):
            text = Path(source).read_text(encoding="utf-8")
        else:
            text = source.read().decode("utf-8")
        manifest = json.loads(text)
        if manifest.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"batch {batch}: store format {manifest.get('format_version')}, "
                f"this code reads {FORMAT_VERSION}"
            )
        return manifest

    def table(
        self,
        batch: str,
        file: str,
        columns: Iterable[str] | None = None,
        dictionary: Iterable[str] | None = None,
    ) -> pa.Table:
        """One file of a batch; text ``dictionary`` columns come dictionary-encoded (cheap
        to read, compare and look up when values repeat)."""
        cols = list(columns) if columns is not None else None
        # No partition discovery: the folder's "batch=" must not become a column.
        return pq.read_table(
            self.files.open(batch, file),
            columns=cols,
            partitioning=None,
            read_dictionary=list(dictionary) if dictionary is not None else None,
        )

    def write(
        self,
        batch: str,
        *,
        rows: pa.Table | bytes,
        days: pa.Table | bytes,
        quarantine: pa.Table | bytes,
        manifest: dict[str, Any],
    ) -> None:
        """Replace one batch's files (the manifest last). A table may come already encoded
        (``table_bytes``), e.g. encoded on another thread."""
        manifest = {"format_version": FORMAT_VERSION, "batch": batch, **manifest}
        # Parquet encoding releases the GIL: the files encode on two threads.
        with ThreadPoolExecutor(2, thread_name_prefix="store-write") as pool:
            encoded = dict(
                zip(
                    (ROWS, DAYS, QUARANTINE),
                    pool.map(_encoded, (rows, days, quarantine)),
                    strict=True,
                )
            )
        manifest_bytes = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
        self.files.write_batch(check_batch_name(batch), encoded | {MANIFEST: manifest_bytes})
