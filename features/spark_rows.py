"""Reading rows on Spark with the one row rule of ``features.records``.

Spark's own CSV reader cannot apply that rule (after a stray quote it joins lines, or with
``multiLine`` off it splits legitimate quoted line breaks), so the file is read as text and
the shared code does the work, in three steps:

1. each partition splits its text into physical lines and computes the per-line facts
   (``features.records.line_facts``) in a pandas UDF;
2. the few lines that leave a quote open are gathered to the driver with the lines that
   follow them (at most ``MAX_RECORD_LINES`` each), and ``features.records.walk`` decides
   which are multi-line rows and which are stray quotes;
3. every row is parsed by Arrow's CSV parser in a pandas UDF, as ``features.reader`` does.

The result has the header's columns as text ``c0..cN-1`` plus ``_line`` (where the row
starts in the file; the header is line 1, and it is also the row's file order), ``_reason``
(the reader's reason, or null), ``_spans`` (a quoted line break) and ``_raw`` (the row's text).

Known difference from the pandas engine: Spark reads text as UTF-8 and replaces bytes that
are not UTF-8, so it cannot report ``invalid_utf8`` (those rows are judged on the
replacement characters).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)

from features.reader import header_text, parse_header, read_header_line
from features.records import LineFacts, Lines, line_facts, walk
from features.rules import MAX_RECORD_LINES, RuleCode
from features.schema import InputError

LINE, REASON, SPANS, RAW = "_line", "_reason", "_spans", "_raw"
FACTS = (
    "opens",
    "has_odd",
    "reopens",
    "closes_cleanly",
    "messy_out",
    "messy_in",
    "fields_out",
    "fields_in",
)
PHYSICAL_SCHEMA = "line long, text string, term string, size long, blank boolean, " + ", ".join(
    f"{f} {'long' if f.startswith('fields') else 'boolean'}" for f in FACTS
)


@dataclass
class Header:
    """The file's header line, as the pandas reader sees it."""

    names: list[str]
    delimiter: str


def read_header(spark: SparkSession, path: str, label: str) -> Header:
    """Header names and delimiter from the file's first bytes (any Hadoop path)."""
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    fs = hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(hadoop_path) or not fs.isFile(hadoop_path):
        raise InputError(f"{label}: file not found")
    stream = fs.open(hadoop_path)
    try:
        line, rest = read_header_line(_JavaStream(jvm, stream), label)
    finally:
        stream.close()
    names, delimiter = parse_header(header_text(line), label)
    if not rest.strip():
        raise InputError(f"{label}: has a header but no data rows")
    return Header(names, delimiter)


class _JavaStream:
    """``read(n)`` over a Hadoop input stream (enough for reading the header)."""

    def __init__(self, jvm, stream) -> None:  # type: ignore[no-untyped-def]
        self.jvm = jvm
        self.stream = stream

    def read(self, size: int = -1) -> bytes:
        # InputStream.readNBytes (Java 11+) returns a byte[], which py4j hands over as bytes.
        return bytes(self.stream.readNBytes(size if size > 0 else 1 << 20))

    def close(self) -> None:
        self.stream.close()


def _split_physical(value: str, last: bool) -> tuple[list[str], list[str]]:
    """A Spark line (text up to an LF, which is gone) as physical lines and their breaks."""
    pieces = value.split("\r")
    texts, terms = [], []
    for i, piece in enumerate(pieces):
        if i < len(pieces) - 1:
            if i == len(pieces) - 2 and pieces[-1] == "":  # the CR of a CRLF
                texts.append(piece)
                terms.append("" if last else "\r\n")
                break
            texts.append(piece)
            terms.append("\r")
        else:
            texts.append(piece)
            terms.append("" if last else "\n")
    return texts, terms


def physical_lines(
    text: DataFrame, delimiter: str, offsets: dict[int, int], last_line: int
) -> DataFrame:
    """One row per physical line with its number and ``LineFacts`` columns (step 1)."""
    code = ord(delimiter)

    def per_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        number: int | None = None
        for batch in batches:
            if batch.empty:
                continue
            if number is None:
                number = offsets[int(batch["pid"].iloc[0])]
            values = pa.array(batch["value"], pa.string())
            last = batch["index"].to_numpy() == last_line
            if pc.any(pc.match_substring(values, "\r")).as_py():
                texts: list[str] = []
                terms: list[str] = []
                # Only here (CR inside a Spark line: CRLF or old Mac files) row by row.
                for value, is_last in zip(values.to_pylist(), last, strict=True):
                    t, e = _split_physical(value, bool(is_last))
                    texts.extend(t)
                    terms.extend(e)
                values = pa.array(texts, pa.string())
                term = pa.array(terms, pa.string())
            else:
                term = pa.array(np.where(last, "", "\n"), pa.string())
            sizes = np.asarray(pc.binary_length(values), dtype=np.int64)
            # Each line followed by an LF, so quote runs never join across lines.
            joined = pc.binary_join_element_wise(values, "\n", "")
            buf = np.frombuffer(
                joined.buffers()[2], dtype=np.uint8, count=int(sizes.sum()) + len(sizes)
            )
            ends = np.cumsum(sizes + 1) - 1
            lines = Lines(ends - sizes, ends, ends + 1)
            facts = line_facts(buf, lines, code)
            out = pd.DataFrame(
                {
                    "line": np.arange(number, number + len(values), dtype=np.int64),
                    "text": values.to_numpy(zero_copy_only=False),
                    "term": term.to_numpy(zero_copy_only=False),
                    "size": sizes + np.asarray(pc.binary_length(term), dtype=np.int64),
                    "blank": sizes == 0,
                }
            )
            for name in FACTS:
                out[name] = getattr(facts, name)
            number += len(values)
            yield out

    return text.mapInPandas(per_partition, PHYSICAL_SCHEMA)


def read_lines(spark: SparkSession, path: str, delimiter: str) -> DataFrame:
    """The file as numbered physical lines with their facts (cached; unpersist after)."""
    text = spark.read.option("lineSep", "\n").text(path)
    if len(text.inputFiles()) != 1:
        raise InputError("transactions: give one CSV file (file order decides 'first wins')")
    with_pid = text.select(
        "value",
        F.spark_partition_id().alias("pid"),
        F.monotonically_increasing_id().alias("mid"),
    )
    # Physical lines per partition: one per Spark line plus one per lone CR inside it.
    lone_cr = F.length("value") - F.length(F.regexp_replace("value", "\r(?!$)", ""))
    counts = with_pid.groupBy("pid").agg(
        F.count(F.lit(1)).alias("n"), F.sum(lone_cr).alias("extra")
    )
    offsets, total, spark_lines, first_line = {}, 1, 0, {}
    for row in counts.orderBy("pid").collect():
        offsets[row["pid"]] = total
        first_line[row["pid"]] = spark_lines
        total += int(row["n"]) + int(row["extra"] or 0)
        spark_lines += int(row["n"])
    # Index of each Spark line in the file (to know which one is last).
    starts = F.create_map(*[x for p, s in first_line.items() for x in (F.lit(p), F.lit(s))])
    indexed = with_pid.select(
        "value",
        "pid",
        (starts[F.col("pid")] + F.col("mid") - F.col("pid").cast("long") * (1 << 33)).alias(
            "index"
        ),
    )
    return physical_lines(indexed, delimiter, offsets, spark_lines - 1).persist()


@dataclass
class Decisions:
    """The walk's result: multi-line rows and stray-quote lines, with their text."""

    rows: pd.DataFrame  # line, raw, spans, messy (multi-line rows and broken lines)
    covered: list[int]  # every line that belongs to one of those rows


def decide(spark: SparkSession, lines: DataFrame, width: int) -> Decisions:
    """Step 2: gather the lines near each open quote and walk them on the driver."""
    openers = [r["line"] for r in lines.where(F.col("opens") & (F.col("line") > 1)).collect()]
    empty = pd.DataFrame({"line": [], "raw": [], "spans": [], "messy": [], "broken": []})
    if not openers:
        return Decisions(empty, [])
    starts = spark.createDataFrame(pd.DataFrame({"o": openers}))
    window = (
        lines.join(
            F.broadcast(starts),
            (F.col("line") >= F.col("o")) & (F.col("line") < F.col("o") + MAX_RECORD_LINES),
        )
        .drop("o")
        .dropDuplicates(["line"])
        .orderBy("line")
        .toPandas()
    )
    window = window[window["line"] > 1].reset_index(drop=True)
    facts = LineFacts(
        number=window["line"].to_numpy(),
        size=window["size"].to_numpy(),
        **{name: window[name].to_numpy() for name in FACTS},
    )
    found = walk(facts, width, final=True)
    rows, covered = [], []
    for first, last, messy in zip(found.first, found.last, found.messy, strict=True):
        part = window.iloc[first : last + 1]
        raw = "".join(part["text"] + part["term"])[: -len(part["term"].iloc[-1]) or None]
        rows.append((int(part["line"].iloc[0]), raw, True, messy, False))
        covered.extend(int(n) for n in part["line"])
    for position in found.broken:
        line = int(window["line"].iloc[position])
        rows.append((line, window["text"].iloc[position], False, False, True))
        covered.append(line)
    frame = pd.DataFrame(rows, columns=["line", "raw", "spans", "messy", "broken"])
    return Decisions(frame, covered)


ROW_SCHEMA = "line long, raw string, spans boolean, messy boolean, broken boolean"


def read_rows(spark: SparkSession, path: str, header: Header) -> tuple[DataFrame, DataFrame]:
    """(rows with fields, the cached physical lines to unpersist once the rows are used)."""
    width = len(header.names)
    lines = read_lines(spark, path, header.delimiter)
    decided = decide(spark, lines, width)
    single = lines.where((F.col("line") > 1) & ~F.col("blank"))
    if decided.covered:
        covered = spark.createDataFrame(pd.DataFrame({"line": decided.covered}))
        single = single.join(F.broadcast(covered), "line", "left_anti")
    rows = single.select(
        "line",
        F.col("text").alias("raw"),
        F.lit(False).alias("spans"),
        F.col("messy_out").alias("messy"),
        F.lit(False).alias("broken"),
    )
    if not decided.rows.empty:
        rows = rows.unionByName(spark.createDataFrame(decided.rows, ROW_SCHEMA))
    return parse_rows(rows, header), lines


def parse_rows(rows: DataFrame, header: Header) -> DataFrame:
    """Step 3: split each row's fields with Arrow, as ``features.reader`` does."""
    width = len(header.names)
    names = [f"c{i}" for i in range(width)]
    schema = ", ".join([*(f"{n} string" for n in names), f"{LINE} long", f"{REASON} string"])
    schema += f", {SPANS} boolean, {RAW} string"

    def per_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if batch.empty:
                continue
            raw = pa.array(batch["raw"], pa.string())
            reason = np.full(len(batch), None, dtype=object)
            decided = np.zeros(len(batch), dtype=bool)
            for mask, code in (
                (batch["broken"].to_numpy(dtype=bool), str(RuleCode.UNTERMINATED_QUOTE)),
                (batch["messy"].to_numpy(dtype=bool), str(RuleCode.MALFORMED_ROW)),
                (np.asarray(pc.match_substring(raw, "\x00")), str(RuleCode.NUL_BYTE)),
            ):
                reason[mask & ~decided] = code
                decided |= mask
            fields = {n: np.full(len(batch), "", dtype=object) for n in names}
            todo = np.flatnonzero(~decided)
            if len(todo):
                parsed, bad = _parse(raw.take(pa.array(todo)), header)
                reason[todo[bad]] = str(RuleCode.MALFORMED_ROW)
                good = todo[~bad]
                for i, n in enumerate(names):
                    fields[n][good] = parsed.column(i).to_numpy(zero_copy_only=False)
            out = pd.DataFrame(fields)
            out[LINE] = batch["line"].to_numpy()
            out[REASON] = reason
            out[SPANS] = batch["spans"].to_numpy(dtype=bool)
            out[RAW] = batch["raw"].to_numpy()
            yield out

    return rows.mapInPandas(per_partition, schema)


def _parse(raws: pa.Array, header: Header) -> tuple[pa.Table, np.ndarray]:
    """Arrow's parse of whole rows (one row each); which have the wrong number of fields."""
    names = [f"c{i}" for i in range(len(header.names))]
    joined = pc.binary_join_element_wise(raws, "\n", "")
    size = int(np.asarray(pc.binary_length(joined)).sum())
    body = joined.buffers()[2][:size]
    bad = np.zeros(len(raws), dtype=bool)

    def invalid(row: pacsv.InvalidRow) -> str:
        bad[row.number - 1] = True
        return "skip"

    table = pacsv.read_csv(
        pa.py_buffer(body),
        read_options=pacsv.ReadOptions(
            column_names=names, use_threads=False, block_size=len(body) + 1
        ),
        parse_options=pacsv.ParseOptions(
            delimiter=header.delimiter, newlines_in_values=True, invalid_row_handler=invalid
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    if table.num_rows != int((~bad).sum()):
        raise RuntimeError("rows counted and rows parsed differ")
    return table, bad
