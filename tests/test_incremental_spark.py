"""The Spark engine builds from the same partials store as ``features.incremental``: the
same result as the local build (and so as one run over every batch's rows)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pyspark = pytest.importorskip("pyspark", reason="pyspark is in requirements-spark.txt")

from conftest import assert_same_run  # noqa: E402

from features import spark as engine  # noqa: E402
from features.incremental import add_batch, build_result  # noqa: E402
from features.partials_store import PartialsStore  # noqa: E402
from features.reader import LINE, open_csv  # noqa: E402
from features.synthetic import generate  # noqa: E402

pytestmark = pytest.mark.spark
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(store of a messy history cut into three batches, labels with dates, without)."""
    folder = tmp_path_factory.mktemp("history")
    generate(folder, rows=3_000, customers=40, seed=5, messy=True)
    path = folder / "transactions.csv"
    starts = np.concatenate([np.asarray(b.column(LINE)) for b in open_csv(path, "t").batches])
    lines = path.read_bytes().splitlines(keepends=True)
    cuts = [1, int(starts[len(starts) // 3]) - 1, int(starts[2 * len(starts) // 3]) - 1]
    store = PartialsStore.local(folder / "store")
    (folder / "raw").mkdir()
    for i, (a, b) in enumerate(zip(cuts, [*cuts[1:], len(lines)], strict=True)):
        (folder / "raw" / f"day-{i}.csv").write_bytes(lines[0] + b"".join(lines[a:b]))
        add_batch(store, f"day-{i}", folder / "raw" / f"day-{i}.csv", now=NOW)
    labels = folder / "labels.csv"
    plain = folder / "plain.csv"
    frame = pd.read_csv(labels, dtype=str)
    frame[["customer_id", "defaulted"]].to_csv(plain, index=False)
    return folder / "store", labels, plain


@pytest.mark.parametrize("dated", [True, False])
def test_spark_builds_what_the_local_build_gives(
    spark, stored: tuple[Path, Path, Path], dated: bool
) -> None:
    store, labels, plain = stored
    chosen = labels if dated else plain
    expected = build_result(PartialsStore.local(store), chosen, now=NOW, generated_at=NOW)
    got = engine.build_store(spark, str(store), str(chosen), now=NOW, generated_at=NOW)
    assert_same_run(got, expected)
    assert expected.report.decisions.dated is dated
    pd.testing.assert_frame_equal(got.quarantine, expected.quarantine)


def test_spark_window_days_and_the_command(
    spark, stored: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    store, _, plain = stored
    expected = build_result(PartialsStore.local(store), plain, now=NOW, window_days=60)
    got = engine.build_store(spark, str(store), str(plain), now=NOW, window_days=60)
    assert_same_run(got, expected)
    assert len(got.features) < len(build_result(PartialsStore.local(store), now=NOW).features)
    out = tmp_path / "out"
    argv = ["build-store", "--store", str(store), "--out", str(out), "--now", NOW.isoformat()]
    assert engine.main(argv) == 0
    local = build_result(PartialsStore.local(store), now=NOW)
    written = pd.read_csv(out / "features.csv", dtype={"customer_id": str})
    assert written["customer_id"].tolist() == local.features["customer_id"].tolist()
    assert engine.main(["build-store", "--store", str(tmp_path / "none")]) == 2


def test_spark_adds_batches_to_a_store_the_local_build_reads(
    spark, stored: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """``add-to-store`` writes the same store through Hadoop: batches added out of order
    there build what the local adds built."""
    store, labels, _ = stored
    local = PartialsStore.local(store)
    batches = local.batch_names()
    raw = store.parent / "raw"
    copy = tmp_path / "copy"
    for batch in reversed(batches):
        argv = ["add-to-store", "--store", str(copy), "--batch", batch,
                "--transactions", str(raw / f"{batch}.csv"), "--now", NOW.isoformat()]  # fmt: skip
        assert engine.main(argv) == 0
    assert PartialsStore.local(copy).batch_names() == batches
    got = build_result(PartialsStore.local(copy), labels, now=NOW, generated_at=NOW)
    expected = build_result(local, labels, now=NOW, generated_at=NOW)
    assert_same_run(got, expected, examples=False)
    missing = ["add-to-store", "--store", str(copy), "--batch", "x", "--transactions", "nope"]
    assert engine.main(missing) == 2


@pytest.mark.parametrize(
    "bad", [["--lookback-days", "0"], ["--window-days", "0"], ["--format", "xlsx"]]
)
def test_both_build_commands_refuse_the_same_options(bad: list[str], tmp_path: Path) -> None:
    """``build`` and Spark's ``build-store`` share one set of options and checks."""
    from features.incremental import parse_args

    common = ["--store", str(tmp_path), *bad]
    commands = (
        lambda: parse_args(["build", *common]),
        lambda: engine.main(["build-store", *common]),
    )
    for command in commands:
        with pytest.raises(SystemExit) as exited:
            command()
        assert exited.value.code == 2
