"""Chunks classified on several threads give exactly the outputs of one thread, and the
set of seen hashes that decides copies and reused ids answers like a Python set.

``threads=1`` classifies and folds each chunk in turn on the caller's thread; more threads
classify chunks ahead on a pool and fold them in file order. Every file a run publishes
must be byte-identical either way (the report apart from its time stamp and duration), for
chunk sizes that put copies and reused transaction ids on both sides of chunk boundaries.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features import pipeline
from features.cli import main
from features.pipeline import SeenHashes, run_pipeline
from features.publish import LocalDirectory, run_and_publish
from features.synthetic import generate

NOW = datetime(2025, 7, 1, tzinfo=UTC)
# Fields of the report that say when and how long, not what.
RUN_STAMPS = ("generated_at", "elapsed_seconds")


# --- SeenHashes against a Python set ----------------------------------------------------


def expected_repeats(reference: set[int], hashes: list[int]) -> list[bool]:
    """What ``repeats`` must say: seen in earlier calls, or earlier in this batch."""
    seen, out = set(reference), []
    for value in hashes:
        out.append(value in seen)
        seen.add(value)
    return out


def check_against_set(calls: list[tuple[np.ndarray, str]]) -> SeenHashes:
    """Replay calls ("repeats", "remember" or "add") on a SeenHashes and on a set."""
    seen, reference = SeenHashes(), set()
    for hashes, how in calls:
        values = hashes.tolist()
        if how == "add":
            new = sorted(set(values) - reference)
            seen.add(np.array(new, dtype=np.uint64))
            reference.update(new)
        else:
            got = seen.repeats(hashes, remember=how == "remember")
            assert got.dtype == bool and got.tolist() == expected_repeats(reference, values)
            if how == "remember":
                reference.update(values)
        assert len(seen) == len(reference)
    assert seen.to_array().tolist() == sorted(reference)
    return seen


def test_seen_hashes_answer_like_a_set_on_random_batches(monkeypatch) -> None:
    """Repeats within a batch and across calls, extreme values, empty batches, and a set
    large enough (with small partitions) to split its partitions many times."""
    monkeypatch.setattr(SeenHashes, "PARTITION_ENTRIES", 16)
    rng = np.random.default_rng(7)
    pool = rng.integers(0, 2**64 - 1, 6_000, dtype=np.uint64, endpoint=True)
    pool[:3] = [0, 2**64 - 1, 2**63]
    calls = []
    for _ in range(120):
        size = int(rng.integers(0, 1_500))
        repeated = pool[rng.integers(0, len(pool), size)]  # repeats within and across calls
        fresh = rng.integers(0, 2**64 - 1, size // 4, dtype=np.uint64, endpoint=True)
        batch = np.concatenate([repeated, fresh])
        rng.shuffle(batch)
        calls.append((batch, str(rng.choice(["repeats", "remember", "remember", "add"]))))
    seen = check_against_set(calls)
    assert seen._bits > 4  # the partitions did split


def test_seen_hashes_keep_the_earliest_of_equal_hashes() -> None:
    seen = SeenHashes()
    batch = np.array([5, 9, 5, 5, 1, 9, 7], dtype=np.uint64)
    assert seen.repeats(batch, remember=True).tolist() == [0, 0, 1, 1, 0, 1, 0]
    assert seen.repeats(np.array([7, 8, 8], dtype=np.uint64)).tolist() == [1, 0, 1]
    assert len(seen) == 4  # the call without remember added nothing


def test_seen_hashes_export_and_import_their_sorted_contents(monkeypatch) -> None:
    monkeypatch.setattr(SeenHashes, "PARTITION_ENTRIES", 8)
    rng = np.random.default_rng(3)
    values = rng.integers(0, 2**64 - 1, 2_000, dtype=np.uint64, endpoint=True)
    seen = SeenHashes()
    seen.repeats(values, remember=True)
    exported = seen.to_array()
    assert exported.dtype == np.uint64 and np.all(exported[1:] > exported[:-1])
    restored = SeenHashes.from_array(np.concatenate([exported[::-1], exported[:10]]))
    assert len(restored) == len(np.unique(values))
    np.testing.assert_array_equal(restored.to_array(), exported)
    probe = np.concatenate([values[:50], rng.integers(0, 2**63, 50, dtype=np.uint64)])
    np.testing.assert_array_equal(restored.repeats(probe), seen.repeats(probe))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(0, 40) | st.integers(0, 2**64 - 1), max_size=60),
            st.sampled_from(["repeats", "remember", "add"]),
        ),
        max_size=12,
    )
)
def test_seen_hashes_property(calls: list[tuple[list[int], str]]) -> None:
    SeenHashes.PARTITION_ENTRIES, saved = 4, SeenHashes.PARTITION_ENTRIES
    try:
        check_against_set([(np.array(v, dtype=np.uint64), how) for v, how in calls])
    finally:
        SeenHashes.PARTITION_ENTRIES = saved


# --- parallel runs equal sequential runs -------------------------------------------------


@pytest.fixture(scope="module")
def messy_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("messy")
    generate(folder, rows=6_000, customers=150, seed=11, messy=True)
    return folder / "transactions.csv", folder / "labels.csv"


def published(out: Path, transactions: Path | io.BytesIO, labels: Path | None, **kw) -> dict:
    """Every file a run publishes: name -> bytes (the report without its run stamps)."""
    run_and_publish(
        LocalDirectory(out),
        lambda sink: run_pipeline(
            transactions, labels, now=NOW, generated_at=NOW, on_quarantine=sink, **kw
        ),
    )
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    report = json.loads(files.pop("dq_report.json"))
    for stamp in RUN_STAMPS:
        report.pop(stamp)
    files["dq_report.json"] = json.dumps(report, sort_keys=True).encode()
    files.pop("dq_report.md")  # the same report as text, with its duration
    return files


@pytest.mark.parametrize("chunk_rows", [97, 500, 1_024, 2_999, 100_000])
def test_parallel_run_publishes_the_same_bytes_as_one_thread(
    tmp_path: Path, messy_files: tuple[Path, Path], chunk_rows: int
) -> None:
    transactions, labels = messy_files
    one = published(tmp_path / "one", transactions, labels, chunk_rows=chunk_rows, threads=1)
    assert json.loads(one["dq_report.json"])["rows_duplicate"] > 0
    for threads in (2, 3):
        many = published(
            tmp_path / f"t{threads}", transactions, labels, chunk_rows=chunk_rows, threads=threads
        )
        assert many.keys() == one.keys()
        for name in one:
            assert many[name] == one[name], (threads, chunk_rows, name)


def test_copies_and_reused_ids_across_every_chunk_boundary(tmp_path: Path) -> None:
    """Each row is followed by its copy and then by a reused id: for every chunk size from
    1 to 7 some pairs straddle a boundary, and the first of each always wins."""
    rows = []
    for i in range(12):
        row = f"T{i:03d},C{i % 3},2025-02-{i + 1:02d}T10:00:00,-{i + 1}.00,debit,SHOP {i}"
        rows += [row, row, f"T{i:03d},C{i % 3},2025-02-{i + 1:02d}T11:00:00,-999.00,debit,X"]
    text = "transaction_id,customer_id,timestamp,amount,type,description\n" + "\n".join(rows)
    baseline = published(tmp_path / "base", io.BytesIO(text.encode()), None, threads=1)
    report = json.loads(baseline["dq_report.json"])
    assert (report["rows_used"], report["rows_duplicate"], report["rows_quarantined"]) == (
        12,
        12,
        12,
    )
    for chunk_rows in range(1, 8):
        for threads in (1, 2):
            got = published(
                tmp_path / f"{chunk_rows}_{threads}",
                io.BytesIO(text.encode()),
                None,
                chunk_rows=chunk_rows,
                threads=threads,
            )
            assert got == baseline, (chunk_rows, threads)


def test_an_error_while_reading_stops_the_pool_and_reaches_the_caller(monkeypatch) -> None:
    """A classification that fails ends the run with its error (no hang, no partial run)."""
    calls = 0
    real = pipeline.classify_chunk

    def failing(batch, *args):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ValueError("boom")
        return real(batch, *args)

    monkeypatch.setattr(pipeline, "classify_chunk", failing)
    text = "transaction_id,customer_id,timestamp,amount\n" + "".join(
        f"T{i},C1,2025-02-01T10:00:00,-1.00\n" for i in range(50)
    )
    with pytest.raises(ValueError, match="boom"):
        run_pipeline(io.BytesIO(text.encode()), now=NOW, chunk_rows=5, threads=2)


def test_cli_threads_option(tmp_path: Path, messy_files: tuple[Path, Path]) -> None:
    transactions, labels = messy_files
    outputs = {}
    for threads in ("1", "2"):
        out = tmp_path / threads
        argv = ["--transactions", str(transactions), "--labels", str(labels), "--out", str(out)]
        argv += ["--now", NOW.isoformat(), "--threads", threads, "--chunk-rows", "700"]
        assert main(argv) == 0
        outputs[threads] = {p.name: p.read_bytes() for p in out.glob("*.csv")}
    assert outputs["1"] == outputs["2"] and "features.csv" in outputs["1"]
    with pytest.raises(SystemExit):
        main(["--threads", "0"])


def test_classified_in_order_keeps_file_order_when_later_chunks_finish_first() -> None:
    """Chunk 0 is the slowest to classify: it must still come out first, and at most
    ``threads`` chunks are taken from the source ahead of the one handed over."""
    import threading
    import time

    taken: list[int] = []
    lock = threading.Lock()

    def source():  # type: ignore[no-untyped-def]
        for i in range(8):
            with lock:
                taken.append(i)
            yield i

    def slow_first(i):  # type: ignore[no-untyped-def]
        time.sleep(0.05 if i % 3 == 0 else 0.0)
        return i * 10

    out = []
    for value in pipeline.classified_in_order(source(), slow_first, threads=2):
        with lock:
            out.append((value, len(taken)))
    assert [v for v, _ in out] == [i * 10 for i in range(8)]
    assert all(ahead <= value // 10 + 2 for value, ahead in out)
