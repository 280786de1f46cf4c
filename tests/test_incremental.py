"""Incremental batches (``features.incremental``) equal one run over all batches' rows.

The reference is ``run_pipeline`` over the batches concatenated in name order (one header).
Batches are cut from a messy synthetic file at row starts (the reader's line numbers), so a
row with a quoted line break is never cut in two; cuts fall inside customers' histories,
and copies and reused transaction ids are planted across batches.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import accounted, assert_same_features, assert_same_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.engine import RunResult
from features.incremental import add_batch, build_result, main, remove_batch
from features.partials_store import PartialsStore, StoreError
from features.pipeline import run_pipeline
from features.reader import LINE, open_csv
from features.rules import WINDOW_RULES, RuleCode
from features.synthetic import generate

NOW = datetime(2026, 1, 1, tzinfo=UTC)
# Example values a build cannot reproduce: window rules are decided on day partials
# (features/README.md, Incremental batches).
BATCH_LOCAL_EXAMPLES = {str(c) for c in WINDOW_RULES}


@dataclass(frozen=True)
class Source:
    header: bytes
    lines: list[bytes]  # physical lines of the body, line breaks kept
    starts: list[int]  # index in ``lines`` where each row starts
    labels: bytes  # with decision dates
    labels_plain: bytes  # the same labels without the decision-date column


def _drop_dates(labels: bytes) -> bytes:
    rows = list(csv.reader(io.StringIO(labels.decode())))
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(r[:2] for r in rows)
    return out.getvalue().encode()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    folder = tmp_path_factory.mktemp("synthetic")
    generate(folder, rows=2_500, customers=40, seed=7, messy=True)
    data = (folder / "transactions.csv").read_bytes()
    lines = data.splitlines(keepends=True)
    stream = open_csv(folder / "transactions.csv", "transactions")
    starts = np.concatenate([np.asarray(b.column(LINE)) for b in stream.batches]) - 2
    labels = (folder / "labels.csv").read_bytes()
    return Source(lines[0], lines[1:], starts.tolist(), labels, _drop_dates(labels))


def _batches(src: Source, cuts: list[int]) -> list[bytes]:
    """The body cut before the rows numbered ``cuts`` (sorted, distinct, > 0)."""
    bounds = [0, *(src.starts[c] for c in cuts), len(src.lines)]
    return [b"".join(src.lines[a:b]) for a, b in itertools.pairwise(bounds)]


def _single_lines(src: Source) -> list[int]:
    """Rows that are one physical line (safe to copy on their own)."""
    ends = [*src.starts[1:], len(src.lines)]
    return [s for s, e in zip(src.starts, ends, strict=True) if e - s == 1]


def _full(src: Source, bodies: list[bytes], labels: bytes) -> RunResult:
    combined = src.header + b"".join(bodies)
    return run_pipeline(io.BytesIO(combined), io.BytesIO(labels), now=NOW, generated_at=NOW)


def _incremental(
    store: PartialsStore, src: Source, named: list[tuple[str, bytes]], labels: bytes
) -> RunResult:
    for name, body in named:
        add_batch(store, name, io.BytesIO(src.header + body), now=NOW, chunk_rows=700)
    return build_result(store, io.BytesIO(labels), now=NOW, generated_at=NOW)


def assert_same(got: RunResult, expected: RunResult, *, examples: bool = True) -> None:
    """Equal features, training set, label quarantine and report; example values too
    (``examples``) but for the rules whose examples are batch-local by design."""
    assert_same_run(got, expected, examples=False)
    assert accounted(got.report.to_dict())
    if examples:
        for mine, theirs in zip(got.report.checks, expected.report.checks, strict=True):
            if str(mine.check) not in BATCH_LOCAL_EXAMPLES:
                assert mine.examples == theirs.examples, mine.check


def _names(n: int) -> list[str]:
    return [f"2025-01-{day:02d}" for day in range(1, n + 1)]


@st.composite
def cut_plans(draw: st.DrawFn, rows: int) -> tuple[list[int], list[tuple[int, int, bool]]]:
    """Cut points, and (row, batch, reuse id) plants: a copy of a one-line row, or the row
    with another customer (same transaction id: a conflict), appended to some batch."""
    cuts = draw(st.lists(st.integers(1, rows - 1), min_size=1, max_size=4, unique=True))
    plants = draw(
        st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 4), st.booleans()), max_size=6)
    )
    return sorted(cuts), plants


def _planted(src: Source, bodies: list[bytes], plants: list[tuple[int, int, bool]]) -> list[bytes]:
    singles = _single_lines(src)
    out = list(bodies)
    for row, batch, reuse in plants:
        line = src.lines[singles[row % len(singles)]]
        if reuse:
            line = b"CUST_OTHER," + line.split(b",", 1)[-1]
        if not line.endswith((b"\n", b"\r")):
            line += b"\n"
        target = batch % len(out)
        if not out[target].endswith((b"\n", b"\r")):
            out[target] += b"\n"
        out[target] += line
    return out


SETTINGS = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(data=st.data(), dated=st.booleans())
def test_batches_added_in_order_equal_one_run(
    source: Source, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, dated: bool
) -> None:
    cuts, plants = data.draw(cut_plans(len(source.starts)))
    bodies = _planted(source, _batches(source, cuts), plants)
    labels = source.labels if dated else source.labels_plain
    store = PartialsStore.local(tmp_path_factory.mktemp("store"))
    got = _incremental(store, source, list(zip(_names(len(bodies)), bodies, strict=True)), labels)
    expected = _full(source, bodies, labels)
    assert_same(got, expected)
    assert (expected.report.decisions.dated) is dated


@SETTINGS
@given(data=st.data(), dated=st.booleans())
def test_any_add_order_and_re_adds_give_the_in_order_result(
    source: Source, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, dated: bool
) -> None:
    cuts, plants = data.draw(cut_plans(len(source.starts)))
    bodies = _planted(source, _batches(source, cuts), plants)
    named = list(zip(_names(len(bodies)), bodies, strict=True))
    order = data.draw(st.permutations(named))
    again = data.draw(st.lists(st.sampled_from(named), max_size=2))
    labels = source.labels if dated else source.labels_plain
    store = PartialsStore.local(tmp_path_factory.mktemp("store"))
    got = _incremental(store, source, [*order, *again], labels)
    # Counts and values exact; examples of re-folded batches are not kept (README).
    assert_same(got, _full(source, bodies, labels), examples=False)


def test_re_adding_a_batch_is_idempotent_and_changes_nothing_stored(
    source: Source, tmp_path: Path
) -> None:
    bodies = _batches(source, [300, 900, 1600])
    named = list(zip(_names(4), bodies, strict=True))
    store = PartialsStore.local(tmp_path)
    first = _incremental(store, source, named, source.labels)
    manifests = {b: store.manifest(b) for b in store.batch_names()}
    added = add_batch(store, named[1][0], io.BytesIO(source.header + named[1][1]), now=NOW)
    assert added.refolded == ()  # nothing after it changed
    assert {b: store.manifest(b) for b in store.batch_names()} == manifests
    again = build_result(store, io.BytesIO(source.labels), now=NOW, generated_at=NOW)
    assert_same(again, first)
    assert_same(again, _full(source, bodies, source.labels))


def test_an_early_batch_added_late_turns_later_rows_into_copies_and_conflicts(
    source: Source, tmp_path: Path
) -> None:
    """The late first batch holds a copy and a reused id of rows of the second batch: the
    second's rows lose (first wins in name order) and are re-folded without their file."""
    bodies = _batches(source, [1200])
    singles = [s for s in _single_lines(source) if s >= source.starts[1200]]
    copied, reused = source.lines[singles[5]], source.lines[singles[9]]
    early = b"CUST_OTHER," + reused.split(b",", 1)[1] + copied
    store = PartialsStore.local(tmp_path)
    _incremental(store, source, [("b", bodies[0]), ("c", bodies[1])], source.labels_plain)
    before = store.manifest("c")["tally"]
    added = add_batch(store, "a", io.BytesIO(source.header + early), now=NOW)
    assert added.refolded == ("c",)
    after = store.manifest("c")["tally"]
    assert after["rows_duplicate"] == before["rows_duplicate"] + 1
    assert after["counts"]["conflicting_transaction_id"] == (
        before["counts"].get("conflicting_transaction_id", 0) + 1
    )
    got = build_result(store, io.BytesIO(source.labels_plain), now=NOW, generated_at=NOW)
    expected = _full(source, [early, *bodies], source.labels_plain)
    assert_same(got, expected, examples=False)
    # The row that lost its id is quarantined with the text the store keeps (its customer).
    assert got.quarantine_rows == expected.quarantine_rows
    assert (got.quarantine["reason"] == "conflicting_transaction_id").sum() == (
        expected.quarantine["reason"] == "conflicting_transaction_id"
    ).sum()


def test_replacing_a_batch_gives_the_result_of_the_new_content(
    source: Source, tmp_path: Path
) -> None:
    bodies = _batches(source, [800, 1700])
    names = _names(3)
    store = PartialsStore.local(tmp_path)
    # The first version of the middle batch copies the last batch's rows: they are copies.
    first = [(names[0], bodies[0]), (names[1], bodies[2]), (names[2], bodies[2])]
    _incremental(store, source, first, source.labels)
    assert store.manifest(names[2])["tally"]["rows_used"] == 0
    added = add_batch(store, names[1], io.BytesIO(source.header + bodies[1]), now=NOW)
    assert added.refolded == (names[2],)
    got = build_result(store, io.BytesIO(source.labels), now=NOW, generated_at=NOW)
    assert_same(got, _full(source, bodies, source.labels), examples=False)


def test_cli_add_and_build_write_what_python_m_features_writes(
    source: Source, tmp_path: Path
) -> None:
    from features.cli import main as full_main

    bodies = _batches(source, [1000])
    combined = tmp_path / "all.csv"
    combined.write_bytes(source.header + b"".join(bodies))
    labels = tmp_path / "labels.csv"
    labels.write_bytes(source.labels)
    now = ["--now", NOW.isoformat()]
    for name, body in zip(("day1", "day2"), bodies, strict=True):
        path = tmp_path / f"{name}.csv"
        path.write_bytes(source.header + body)
        assert main(["add", "--store", str(tmp_path / "s"), "--batch", name,
                     "--transactions", str(path), *now]) == 0  # fmt: skip
    assert main(["build", "--store", str(tmp_path / "s"), "--labels", str(labels),
                 "--out", str(tmp_path / "inc"), *now]) == 0  # fmt: skip
    assert full_main(["--transactions", str(combined), "--labels", str(labels),
                      "--out", str(tmp_path / "full"), *now]) == 0  # fmt: skip
    for name in ("features.csv", "training_set.csv", "quarantine.csv", "labels_quarantine.csv"):
        assert (tmp_path / "inc" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()
    inc, full = (json.loads((tmp_path / d / "dq_report.json").read_text()) for d in ("inc", "full"))
    for key in ("rows_in", "rows_used", "rows_duplicate", "rows_quarantined", "as_of"):
        assert inc[key] == full[key]
    assert [c["count"] for c in inc["checks"]] == [c["count"] for c in full["checks"]]


def test_bad_names_other_headers_and_empty_stores_are_refused(
    source: Source, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = PartialsStore.local(tmp_path)
    body = _batches(source, [100])[0]
    with pytest.raises(StoreError, match="batch name"):
        add_batch(store, "../escape", io.BytesIO(source.header + body), now=NOW)
    with pytest.raises(StoreError, match="no batches"):
        build_result(store, now=NOW)
    add_batch(store, "a", io.BytesIO(source.header + body), now=NOW)
    other = source.header.replace(b"amount", b"value")
    with pytest.raises(StoreError, match="header differs"):
        add_batch(store, "b", io.BytesIO(other + body), now=NOW)
    assert store.batch_names() == ["a"]
    assert main(["build", "--store", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "no batches" in capsys.readouterr().err


@pytest.mark.parametrize("days", [1, 30, 5000])
def test_window_days_equal_a_run_over_the_rows_of_those_days(tmp_path: Path, days: int) -> None:
    """``--window-days N``: features over the N UK days ending on the as-of date, as one
    run over just those rows gives them (clean data: ISO timestamps, no copies)."""
    generate(tmp_path / "g", rows=3_000, customers=30, seed=3, decision_dates=False)
    lines = (tmp_path / "g" / "transactions.csv").read_bytes().splitlines(keepends=True)
    header, body = lines[0], lines[1:]
    dates = [line.rsplit(b",", 1)[1][:10].decode() for line in body]
    last = np.datetime64(max(dates))
    first = str(last - np.timedelta64(days - 1, "D"))
    kept = [line for line, d in zip(body, dates, strict=True) if d >= first]
    labels = (tmp_path / "g" / "labels.csv").read_bytes()
    store = PartialsStore.local(tmp_path / "s")
    middle = len(body) // 2
    for name, part in (("a", body[:middle]), ("b", body[middle:])):
        add_batch(store, name, io.BytesIO(header + b"".join(part)), now=NOW)
    got = build_result(store, io.BytesIO(labels), now=NOW, generated_at=NOW, window_days=days)
    expected = run_pipeline(
        io.BytesIO(header + b"".join(kept)), io.BytesIO(labels), now=NOW, generated_at=NOW
    )
    assert 0 < len(kept) < len(body) if days < 5000 else len(kept) == len(body)
    assert_same_features(got.features, expected.features)
    assert_same_features(got.training_set, expected.training_set)
    assert got.report.as_of == expected.report.as_of
    assert got.report.rows_used == len(body)  # every row is still accounted for
    dated = b"customer_id,defaulted,decision_date\nCUST_000001,0,2024-06-01\n"
    with pytest.raises(StoreError, match="window-days"):
        build_result(store, io.BytesIO(dated), now=NOW, window_days=7)


def test_removing_a_batch_gives_the_run_without_it(source: Source, tmp_path: Path) -> None:
    """A withdrawn batch leaves the store; the copies of its rows in later batches count
    as used again (re-folded without their files)."""
    bodies = _batches(source, [700, 1500])
    copies = b"".join(source.lines[s] for s in _single_lines(source)[:5])
    named = [("a", bodies[0]), ("b", bodies[1]), ("c", bodies[2] + copies)]
    store = PartialsStore.local(tmp_path)
    _incremental(store, source, named, source.labels)
    assert store.batch_names() == ["a", "b", "c"]
    assert "c" in remove_batch(store, "a")
    assert store.batch_names() == ["b", "c"] and remove_batch(store, "a") == ()
    got = build_result(store, io.BytesIO(source.labels), now=NOW, generated_at=NOW)
    assert_same(got, _full(source, [bodies[1], bodies[2] + copies], source.labels), examples=False)


def test_reader_rule_examples_name_lines_of_one_file(tmp_path: Path) -> None:
    """Line numbers of cut rows count the lines of the batches before (blank lines, CRLF,
    lone CR and quoted line breaks included), as in one file holding them all."""
    header = b"customer_id,transaction_id,amount,type,description,timestamp\n"
    first = (
        b"C1,T1,-1.00,debit,TESCO,2025-01-02T10:00:00\r\n"
        b"\n"
        b'C1,T2,-2.00,debit,"TWO\nLINES",2025-01-02T11:00:00\r'
        b"C2,T3,5.00,credit,PAY,2025-01-03T09:00:00\n"
    )
    second = (
        b"C2,T4,-1.00,debit,SHOP,2025-01-04T10:00:00,EXTRA\n"
        b'C3,T5,-1.00,debit,"OPEN,2025-01-04T10:00:00\n'
        b"C3,T6,-1.00,debit,SHOP,2025-01-05T10:00:00\n"
    )
    store = PartialsStore.local(tmp_path)
    for name, body in (("a", first), ("b", second)):
        add_batch(store, name, io.BytesIO(header + body), now=NOW)
    got = build_result(store, now=NOW, generated_at=NOW)
    expected = run_pipeline(io.BytesIO(header + first + second), now=NOW, generated_at=NOW)
    assert_same_run(got, expected)
    assert got.report.examples(RuleCode.MALFORMED_ROW) == ("line 7",)


def test_day_partials_are_the_same_from_dictionary_or_plain_text(
    source: Source, tmp_path: Path
) -> None:
    """``day_partials`` codes customers and descriptions from the stored dictionaries; a
    facts table with plain text columns (the fallback) gives the same file, row for row."""
    import pyarrow as pa

    from features.batch_fold import day_partials
    from features.partials_store import DAYS, ROWS

    store = PartialsStore.local(tmp_path)
    add_batch(store, "a", io.BytesIO(source.header + b"".join(source.lines)), now=NOW)
    facts = store.table("a", ROWS)
    assert pa.types.is_dictionary(facts.schema.field("customer").type)
    plain = facts
    for name in ("customer", "description"):
        index = plain.schema.get_field_index(name)
        plain = plain.set_column(index, name, plain.column(name).cast(pa.string()))
    stored = store.table("a", DAYS)
    assert stored.num_rows > 0
    assert day_partials(facts).equals(stored)
    assert day_partials(plain).equals(stored)


def test_a_bad_labels_file_fails_the_build_and_publishes_nothing(
    source: Source, tmp_path: Path
) -> None:
    """The labels are read while the quarantine is published: a labels error still fails
    the build as an input error, and the command leaves no output behind."""
    store_dir, out = tmp_path / "store", tmp_path / "out"
    batch = tmp_path / "a.csv"
    batch.write_bytes(source.header + b"".join(source.lines))
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"not,a,labels,file\n1,2,3,4\n")
    assert main(["add", "--store", str(store_dir), "--batch", "a", "--transactions", str(batch),
                 "--now", "2026-01-01T00:00:00"]) == 0  # fmt: skip
    code = main(["build", "--store", str(store_dir), "--labels", str(labels), "--out", str(out),
                 "--now", "2026-01-01T00:00:00"])  # fmt: skip
    assert code == 2
    assert not out.exists() or not any(p.suffix == ".csv" for p in out.iterdir())
