"""Spark engine: the Part 1 job on Apache Spark, for inputs one machine cannot hold.

Nothing here defines a rule. Column aliases come from ``features.schema``, the row rules
from the constants of ``features.quality`` (translated to Spark expressions below), the
lexicon and text normalisation from ``features.text``, the aggregates from
``features.definitions.AGGREGATES`` and the feature formulas from ``finalise``, which runs
on the per-customer aggregate table collected to the driver (one row per customer).
Labels (small) go through the pandas labels reader, the report through ``build_report``.

Rows are read with the shared row rule (``features.spark_rows``: the per-line work and the
field split run the pandas engine's own code in pandas UDFs). Two translations need care
and are tested against the pandas engine:

* timestamps: the shared ISO 8601 and UK patterns (Java regexes read them as RE2 does),
  field ranges and the days of the month checked with integer arithmetic, instants moved
  to the UK wall clock with Spark's time-zone data (``quality.UK_ZONE``);
* text: Python's Unicode ``\\W``/``\\d`` and Java's differ, so the character class of
  ``features.text.NON_LETTERS`` is enumerated from Python itself (``non_letter_class``).

Row order ("first wins" for duplicates and reused transaction ids) is the row's line in
the file.

Run: ``python -m features.spark --transactions <path|abfss://...> --labels ... --out ...``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)
from pyspark.sql.types import StringType

from features import aggregate as pandas_aggregate
from features.definitions import AGGREGATES, ID, MONTH_AGGREGATES, finalise
from features.labels import Labels
from features.outputs import csv_rows, output_frames, to_csv_text
from features.pipeline import (
    EXAMPLES_PER_CHECK,
    QUARANTINE_COLUMNS,
    RAW_LINE,
    REASON,
    PipelineResult,
    Tally,
    example_column,
    join_labels,
    read_labels,
    withhold_out_of_range,
)
from features.quality import (
    AMOUNT_LEADING_ZEROS,
    AMOUNT_PATTERN,
    CREDIT_WORDS,
    DEBIT_WORDS,
    EARLIEST_TIMESTAMP,
    FIELD_MAX,
    FINDINGS,
    FUTURE_TOLERANCE_SECONDS,
    ISO_GROUPS,
    ISO_TIMESTAMP,
    LARGE_AMOUNT_PENCE,
    MAX_ABS_AMOUNT_PENCE,
    QUARANTINE_ORDER,
    READER_RULES,
    UK_GROUPS,
    UK_TIMESTAMP,
    UK_ZONE,
    uk_now,
)
from features.reader import escape_raw
from features.report import build_report, render_markdown, summary_line
from features.schema import TRANSACTION_ALIASES, TRANSACTION_REQUIRED, InputError, map_columns
from features.spark_rows import LINE, RAW, SPANS, Header, read_header, read_rows
from features.spark_rows import REASON as READER_REASON
from features.text import NON_LETTERS, category_pattern, load_lexicon

log = logging.getLogger("features.spark")

POS = LINE  # a row's file order is its line number
MALFORMED = "malformed_row"
CONFLICT = "conflicting_transaction_id"
# Whitespace trimmed by Arrow's utf8_trim_whitespace (the same set as Python's isspace).
WHITESPACE_CLASS = (
    r"[\t\n\x{0B}\f\r\x{1C}-\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}"
    r"\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]"
)


LOCAL_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.host": "127.0.0.1",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.csv.parser.columnPruning.enabled": "false",
}


# ---------------------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------------------


def local_session(
    master: str = "local[2]",
    driver_memory: str = "4g",
    shuffle_partitions: int = 8,
    extra: dict[str, str] | None = None,
) -> SparkSession:
    """A local-mode session on loopback, no UI. On a cluster use the cluster's session."""
    builder = SparkSession.builder.master(master).appName("features")
    conf = {
        **LOCAL_CONF,
        "spark.driver.memory": driver_memory,
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        **(extra or {}),
    }
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


# ---------------------------------------------------------------------------------------
# Rule translations (pure functions of the shared constants)
# ---------------------------------------------------------------------------------------


# Java's view of a letter (what Python's ``\w`` minus digits keeps), by Unicode category.
JAVA_LETTER = r"\p{L}\p{Nl}\p{No}"


def _ranges(codes: list[int]) -> str:
    spans: list[list[int]] = []
    for code in codes:
        if spans and spans[-1][1] == code - 1:
            spans[-1][1] = code
        else:
            spans.append([code, code])
    return "".join(rf"\x{{{a:X}}}" if a == b else rf"\x{{{a:X}}}-\x{{{b:X}}}" for a, b in spans)


def non_letter_class(spark: SparkSession) -> str:
    """Java regex equal to ``features.text.NON_LETTERS`` on every code point.

    Java's categories are fast but follow the JVM's Unicode version, Python's its own;
    the few code points where they disagree are found by asking this JVM once (one regex
    over a string of all code points) and listed explicitly.
    """
    cached = getattr(spark, "_features_non_letters", None)
    if cached:
        return cached
    codes = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    everything = "".join(map(chr, codes))
    pattern = spark.sparkContext._jvm.java.util.regex.Pattern.compile(f"[^{JAVA_LETTER}]")
    marked = pattern.matcher(everything).replaceAll("#")
    if len(marked) != len(codes):
        raise RuntimeError("could not compare Java and Python character classes")
    java = [m == "#" for m in marked]
    python = [bool(NON_LETTERS.fullmatch(chr(c))) for c in codes]
    kept = [c for c, j, p in zip(codes, java, python, strict=True) if j and not p]
    replaced = [c for c, j, p in zip(codes, java, python, strict=True) if p and not j]
    base = f"[^{JAVA_LETTER}]" if not kept else f"[[^{JAVA_LETTER}]&&[^{_ranges(kept)}]]"
    found = f"[{_ranges(replaced)}{base}]+" if replaced else f"{base}+"
    spark._features_non_letters = found  # type: ignore[attr-defined]
    return found


def trim(column: Column) -> Column:
    """Arrow's ``utf8_trim_whitespace`` (Spark's ``trim`` only removes ASCII spaces)."""
    return F.regexp_replace(column, f"^{WHITESPACE_CLASS}+|{WHITESPACE_CLASS}+$", "")


def blank(column: Column) -> Column:
    return F.coalesce(column == F.lit(""), F.lit(True))


def normalise(column: Column, non_letters: str) -> Column:
    """``features.text.normalise``: lowercase, non-letters to one space, stripped.
    ``non_letters`` is ``non_letter_class(spark)``."""
    lowered = F.lower(F.coalesce(column, F.lit("")))
    return F.trim(F.regexp_replace(lowered, non_letters, " "))


def days_from_civil(year: Column, month: Column, day: Column) -> Column:
    """Days since 1970-01-01 of a proleptic Gregorian date (month 13 is January of the
    next year, so month lengths come out as differences). Integer arithmetic only."""
    y = year - F.when(month <= 2, 1).otherwise(0)
    era = F.floor(y / 400)
    yoe = y - era * 400
    shifted = F.when(month > 2, month - 3).otherwise(month + 9)
    doy = F.floor((153 * shifted + 2) / 5) + day - 1
    doe = yoe * 365 + F.floor(yoe / 4) - F.floor(yoe / 100) + doy
    return (era * 146097 + doe - 719468).cast("long")


def timestamp_parts(text: Column) -> dict[str, Column]:
    """Step one of ``quality.parse_timestamp``: which shape ``text`` has (``iso``, ``uk``)
    and its parts as integers (0 where absent), zone and sign as text."""
    is_iso = F.coalesce(text.rlike(ISO_TIMESTAMP), F.lit(False))
    is_uk = ~is_iso & F.coalesce(text.rlike(UK_TIMESTAMP), F.lit(False))
    parts = {"iso": is_iso, "uk": is_uk}
    for name in ("year", "month", "day", "hour", "minute", "second"):
        iso = F.regexp_extract(text, ISO_TIMESTAMP, ISO_GROUPS.index(name) + 1)
        uk = F.regexp_extract(text, UK_TIMESTAMP, UK_GROUPS.index(name) + 1)
        picked = F.when(is_iso, iso).when(is_uk, uk)
        parts[name] = F.coalesce(F.nullif(picked, F.lit("")).try_cast("long"), F.lit(0))
    for name in ("offset_hour", "offset_minute"):
        iso = F.regexp_extract(text, ISO_TIMESTAMP, ISO_GROUPS.index(name) + 1)
        parts[name] = F.coalesce(
            F.when(is_iso, F.nullif(iso, F.lit(""))).try_cast("long"), F.lit(0)
        )
    for name in ("zone", "sign"):
        iso = F.regexp_extract(text, ISO_TIMESTAMP, ISO_GROUPS.index(name) + 1)
        parts[name] = F.coalesce(F.when(is_iso, iso), F.lit(""))
    return parts


def timestamp_seconds(part: dict[str, Column]) -> Column:
    """Step two: UK wall-clock epoch seconds from staged ``timestamp_parts``, or null when
    the parts do not make a real date and time."""
    year, month, day = part["year"], part["month"], part["day"]
    first = days_from_civil(year, month, F.lit(1))
    ok = (part["iso"] | part["uk"]) & month.between(1, 12) & (day >= 1)
    ok = ok & (day <= days_from_civil(year, month + 1, F.lit(1)) - first)
    for name, largest in FIELD_MAX.items():
        ok = ok & (part[name] <= largest)
    wall = (first + day - 1) * 86_400 + part["hour"] * 3600 + part["minute"] * 60 + part["second"]
    sign = F.when(part["sign"] == "-", -1).otherwise(1)
    offset = (part["offset_hour"] * 3600 + part["offset_minute"] * 60) * sign
    # An instant (Z or an offset) is read on the UK wall clock, as quality.uk_wall_clock.
    uk = F.from_utc_timestamp(F.timestamp_seconds(wall - offset), UK_ZONE).cast("long")
    seconds = F.when(part["zone"] != "", uk).otherwise(wall)
    return F.when(ok, seconds.cast("long"))


# ---------------------------------------------------------------------------------------
# Row rules
# ---------------------------------------------------------------------------------------


def classify(rows: DataFrame, header: Header, now: datetime) -> DataFrame:
    """Every row with its reason (null when used), duplicate flag, findings and typed
    values, following ``features.quality.parse_chunk`` and the pipeline's dedup order.

    Built in stages (text, then parsed values, then checks) so each regex runs once per
    row: Spark keeps a stage's columns instead of inlining expressions used twice.
    """
    columns = map_columns(header.names, TRANSACTION_ALIASES, TRANSACTION_REQUIRED, "transactions")
    raw_names = [f"c{i}" for i in range(len(header.names))]
    canonical = {c: F.coalesce(F.col(f"c{p}"), F.lit("")) for c, p in columns.positions.items()}
    null = F.lit(None).cast("string")
    col = F.col

    # Stage 1: raw text, trimmed text.
    text = rows.select(
        *(F.coalesce(col(n), F.lit("")).alias(n) for n in raw_names),
        col(POS),
        col(READER_REASON),
        col(SPANS),
        col(RAW),
        col(READER_REASON).isNotNull().alias("unsplit"),
        trim(canonical["customer_id"]).alias(ID),
        trim(canonical["transaction_id"]).alias("txn"),
        trim(canonical["amount"]).alias("amount_text"),
        trim(canonical["timestamp"]).alias("ts_text"),
        canonical.get("type", null).alias("type_raw"),
        # Arrow lowercases U+0130 to a plain "i"; Java to "i" + U+0307.
        F.lower(F.translate(trim(canonical.get("type", null)), "\u0130", "i")).alias("type_text"),
        canonical.get("description", F.lit("")).alias("description"),
    )
    # Stage 2: which amount shape matched; the timestamp's shape and parts.
    amount_ok = F.coalesce(col("amount_text").rlike(AMOUNT_PATTERN), F.lit(False))
    parts = timestamp_parts(col("ts_text"))
    shaped = text.select(
        "*",
        amount_ok.alias("amount_ok"),
        *(value.alias(f"ts_{name}") for name, value in parts.items()),
    )
    # Stage 3: exact values. Leading zeros do not count (quality.parse_amount_pence).
    zeros, keep = AMOUNT_LEADING_ZEROS
    digits = F.regexp_replace(
        F.regexp_replace(col("amount_text"), "[£,]", ""), zeros, keep.replace("\\", "$")
    )
    decimal = F.when(col("amount_ok"), digits.try_cast("decimal(20,2)"))
    staged = {name: col(f"ts_{name}") for name in parts}
    parsed = shaped.select(
        "*",
        (decimal * 100).try_cast("long").alias("pence_raw"),
        timestamp_seconds(staged).alias("ts"),
    )
    # Stage 4: checks and findings.
    pence = F.coalesce(col("pence_raw"), F.lit(0))
    amount_missing = blank(col("amount_text"))
    amount_invalid = ~amount_missing & ~col("amount_ok")
    # A well-formed amount too long for DecimalType(20,2) (Arrow cannot cast it either).
    amount_huge = col("amount_ok") & col("pence_raw").isNull()
    ts_missing = blank(col("ts_text"))
    ts_invalid = ~ts_missing & col("ts").isNull()
    non_iso = col("ts").isNotNull() & col("ts_uk")
    earliest = int(EARLIEST_TIMESTAMP.timestamp())
    latest = uk_now(now) + FUTURE_TOLERANCE_SECONDS
    type_text = col("type_text")
    type_missing = blank(type_text)
    is_debit_word = F.coalesce(type_text.isin(*DEBIT_WORDS), F.lit(False))
    is_credit_word = F.coalesce(type_text.isin(*CREDIT_WORDS), F.lit(False))
    type_invalid = ~type_missing & ~is_debit_word & ~is_credit_word
    type_untidy = ~type_missing & F.coalesce(col("type_raw") != type_text, F.lit(False))
    checks = {
        **{code: col(READER_REASON) == code for code in READER_RULES},
        "missing_customer_id": blank(col(ID)),
        "missing_transaction_id": blank(col("txn")),
        "missing_amount": amount_missing,
        "invalid_amount": amount_invalid,
        "amount_out_of_range": ~amount_missing
        & ~amount_invalid
        & (amount_huge | (F.abs(pence) > MAX_ABS_AMOUNT_PENCE)),
        "missing_timestamp": ts_missing,
        "invalid_timestamp": ts_invalid,
        "timestamp_out_of_range": col("ts").isNotNull()
        & ((col("ts") < earliest) | (col("ts") > latest)),
        "invalid_type": type_invalid,
    }
    reason = null
    for code in reversed(QUARANTINE_ORDER):
        if code in checks:
            reason = F.when(checks[code], F.lit(code)).otherwise(reason)
    is_debit = is_debit_word | (type_missing & (pence < 0))
    signed = F.when(is_debit, -F.abs(pence)).otherwise(F.abs(pence))
    findings = {
        "type_padded_or_mixed_case": type_untidy & ~type_invalid,
        "missing_type": type_missing,
        "sign_disagrees_with_type": ~type_missing & (signed != pence),
        "missing_description": blank(trim(col("description"))),
        "quoted_line_break": col(SPANS),
        "non_iso_timestamp": non_iso,
        "large_amount": F.abs(pence) >= LARGE_AMOUNT_PENCE,
    }
    missing = set(FINDINGS) - set(findings)
    if missing:
        raise RuntimeError(f"findings without a Spark translation: {sorted(missing)}")
    typed = parsed.select(
        *raw_names,
        POS,
        RAW,
        READER_REASON,
        "unsplit",
        ID,
        "txn",
        "description",
        "ts",
        signed.cast("long").alias("amount_pence"),
        reason.alias("first_reason"),
        *(F.coalesce(v, F.lit(False)).alias(f"finding_{c}") for c, v in findings.items()),
    )
    # Identical rows share their transaction id, so one shuffle by id serves both windows.
    typed = typed.repartition("txn")
    same_row = Window.partitionBy("txn", *raw_names).orderBy(POS)
    duplicate = ~col("unsplit") & (F.row_number().over(same_row) > 1)
    typed = typed.withColumn("duplicate", duplicate)
    valid = ~col("duplicate") & col("first_reason").isNull()
    first_valid = F.min(F.when(valid, col(POS))).over(Window.partitionBy("txn"))
    conflicting = valid & (col(POS) != first_valid)
    final_reason = F.when(col("duplicate"), null).otherwise(
        F.coalesce(col("first_reason"), F.when(conflicting, F.lit(CONFLICT)))
    )
    typed = typed.withColumn(REASON, final_reason)
    typed = typed.withColumn("used", ~col("duplicate") & col(REASON).isNull())
    return typed.drop("first_reason")


# ---------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------


def categorise(used: DataFrame, non_letters: str) -> DataFrame:
    """``is_<category>`` per distinct description (as ``features.text.describe`` does:
    the text work is done once per distinct value, not per row)."""
    distinct = used.select("description").distinct()
    clean = normalise(F.col("description"), non_letters)
    return distinct.select(
        "description",
        *(
            clean.rlike(category_pattern(phrases)).alias(f"is_{c}")
            for c, phrases in load_lexicon().items()
        ),
    )


def derive_rows(used: DataFrame, non_letters: str) -> DataFrame:
    """The ``ROW_COLUMNS`` of ``features.definitions`` (Spark twin of
    ``features.aggregate.derive_rows``)."""
    flagged = used.join(categorise(used, non_letters), on="description", how="left")
    amount = F.col("amount_pence")
    is_debit = amount < 0
    debit = F.when(is_debit, amount).otherwise(0)
    spend = -debit
    salary_credit = F.col("is_salary") & ~is_debit
    day = F.date_from_unix_date(F.floor(F.col("ts") / 86_400).cast("int"))
    categories = [c for c in load_lexicon() if c != "salary"]
    return flagged.select(
        F.col(ID),
        F.lit(1).cast("long").alias("one"),
        debit.cast("long").alias("debit_pence"),
        F.when(is_debit, 0).otherwise(amount).cast("long").alias("credit_pence"),
        F.col("ts"),
        (F.year(day) * 12 + F.month(day) - 1).cast("long").alias("month"),
        *(F.col(f"is_{c}").cast("long").alias(f"is_{c}") for c in categories),
        salary_credit.cast("long").alias("is_salary"),
        F.when(F.col("is_rent"), spend).otherwise(0).cast("long").alias("rent_pence"),
        F.when(F.col("is_gambling"), spend).otherwise(0).cast("long").alias("gambling_pence"),
        F.when(salary_credit, F.col("ts")).alias("salary_ts"),
    )


OPERATIONS = {"sum": F.sum, "min": F.min, "max": F.max}


def aggregate(rows: DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``AGGREGATES`` per customer and ``MONTH_AGGREGATES`` per customer-month, collected
    to pandas in the shape ``features.aggregate.combine`` returns.

    One pass over the rows: everything per (customer, month), then the per-customer
    table by re-applying each decomposable operation, as the pandas engine combines
    its chunk partials.
    """
    both = AGGREGATES + MONTH_AGGREGATES
    per_month = rows.groupBy(ID, "month").agg(
        *(OPERATIONS[op](column).alias(name) for name, op, column in both)
    )
    table = per_month.toPandas()
    if table.empty:
        return pandas_aggregate.empty_aggregates()
    combine = {name: op for name, op, _ in AGGREGATES}  # sum of sums, min of mins, ...
    customers = table.groupby(ID, sort=False).agg(combine)
    for name, _, _ in AGGREGATES:
        dtype = "Int64" if name == "last_salary_ts" else "int64"
        customers[name] = customers[name].astype(dtype)
    months = table[[ID, "month", *(name for name, _, _ in MONTH_AGGREGATES)]].astype(
        {"month": "int64", **{name: "int64" for name, _, _ in MONTH_AGGREGATES}}
    )
    return customers, months.set_index([ID, "month"])


# ---------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------


@dataclass
class SparkResult:
    """Like ``PipelineResult``; the quarantine stays a Spark DataFrame (it can be big)."""

    features: pd.DataFrame
    training_set: pd.DataFrame | None
    report: dict
    quarantine_rows: int
    quarantine: DataFrame
    header: Header
    cached: DataFrame
    label_quarantine: pd.DataFrame | None = None
    lines: DataFrame | None = None  # the cached physical lines (features.spark_rows)

    def release(self) -> None:
        """Drop the cached rows once the outputs are written."""
        self.cached.unpersist()
        if self.lines is not None:
            self.lines.unpersist()


def _count_expressions() -> list[Column]:
    used = F.col("used")
    return [
        F.count(F.lit(1)).alias("rows_in"),
        F.sum(used.cast("long")).alias("rows_used"),
        F.sum(F.col("duplicate").cast("long")).alias("duplicate"),
        *(F.sum((F.col(REASON) == code).cast("long")).alias(code) for code in QUARANTINE_ORDER),
        *(F.sum((used & F.col(f"finding_{c}")).cast("long")).alias(c) for c in FINDINGS),
        F.max(F.when(used, F.col("ts"))).alias("as_of_ts"),
    ]


def _condition(code: str) -> Column:
    if code == "duplicate":
        return F.col("duplicate")
    if code in QUARANTINE_ORDER:
        return F.col(REASON) == code
    return F.col("used") & F.col(f"finding_{code}")


def _examples(
    classified: DataFrame, codes: Iterable[str], canonical: dict[str, int]
) -> dict[str, list[str]]:
    """The first ``EXAMPLES_PER_CHECK`` values (in file order) illustrating each check:
    the same column the pandas engine shows (``features.pipeline.example_column``). One query:
    flagged rows only, one event per (row, check), the first few per check kept."""
    names = {c: f"c{p}" for c, p in canonical.items()}
    events = []
    for code in codes:
        if code in READER_RULES:  # rows the reader could not split: shown by line number
            value = F.concat(F.lit("line "), F.col(POS).cast("string"))
        else:
            value = F.substring(F.col(example_column(code, names)), 1, 60)
        events.append(
            F.when(_condition(code), F.struct(F.lit(code).alias("code"), value.alias("v")))
        )
    if not events:
        return {}
    exploded = classified.select(
        F.col(POS), F.explode(F.filter(F.array(*events), lambda e: e.isNotNull())).alias("e")
    ).select(POS, "e.code", "e.v")
    order = F.row_number().over(Window.partitionBy("code").orderBy(POS))
    picked = exploded.withColumn("k", order).where(F.col("k") <= EXAMPLES_PER_CHECK)
    found: dict[str, list[str]] = {}
    for row in picked.orderBy("code", POS).collect():
        found.setdefault(row["code"], []).append(row["v"])
    return found


def _tally(classified: DataFrame, canonical: dict[str, int]) -> Tally:
    totals = classified.agg(*_count_expressions()).first().asDict()
    tally = Tally(
        rows_in=int(totals["rows_in"]),
        rows_used=int(totals["rows_used"] or 0),
        rows_duplicate=int(totals["duplicate"] or 0),
        as_of_ts=None if totals["as_of_ts"] is None else int(totals["as_of_ts"]),
    )
    codes = ["duplicate", *QUARANTINE_ORDER, *FINDINGS]
    examples = _examples(classified, [c for c in codes if totals[c]], canonical)
    for code in codes:
        tally.add(code, int(totals[code] or 0), examples.get(code, []))
    return tally


@F.pandas_udf(StringType())  # type: ignore[call-overload]
def _escaped(raw: pd.Series) -> pd.Series:
    """``features.reader.escape_raw`` on Spark (the same function, in a pandas UDF)."""
    values = pa.array(raw.fillna(""), pa.string()).cast(pa.binary())
    return pd.Series(escape_raw(values).to_numpy(zero_copy_only=False), index=raw.index)


def _quarantine(classified: DataFrame, header: Header) -> DataFrame:
    """Rejected rows in the pandas engine's shape (``QUARANTINE_COLUMNS``), file order."""
    positions = map_columns(
        header.names, TRANSACTION_ALIASES, TRANSACTION_REQUIRED, "transactions"
    ).positions
    fields = [
        (F.col(f"c{positions[name]}") if name in positions else F.lit("")).alias(name)
        for name in TRANSACTION_ALIASES
    ]
    return (
        classified.where(F.col(REASON).isNotNull())
        .select(*fields, F.col(REASON), _escaped(F.col(RAW)).alias(RAW_LINE), F.col(POS))
        .repartition(1)
        .sortWithinPartitions(POS)
        .drop(POS)
        .toDF(*QUARANTINE_COLUMNS)
    )


def read_labels_any(spark: SparkSession, path: str) -> Labels:
    """Labels through the pandas reader (same rules); the bytes come via Spark, so any
    Hadoop path works (``abfss://`` included). Label files are one row per customer."""
    try:
        content = spark.read.format("binaryFile").load(path).select("content").head()
    except Exception as error:
        if "PATH_NOT_FOUND" in str(error) or "does not exist" in str(error):
            raise InputError("labels: file not found") from None
        raise
    if content is None:
        raise InputError("labels: file not found")
    return read_labels(io.BytesIO(bytes(content[0])))


def run_spark(
    spark: SparkSession,
    transactions: str,
    labels: str | None = None,
    *,
    now: datetime | None = None,
    multiline: bool = True,
) -> SparkResult:
    """The Part 1 job on Spark. Raises ``InputError`` when an input cannot be used.

    ``multiline`` is accepted for compatibility: quoted line breaks are always read (the
    row rule of ``features.records``).
    """
    started = time.monotonic()
    now = now or datetime.now(UTC)
    label_result = read_labels_any(spark, labels) if labels is not None else None
    header = read_header(spark, transactions, "transactions")
    columns = map_columns(header.names, TRANSACTION_ALIASES, TRANSACTION_REQUIRED, "transactions")
    rows, lines = read_rows(spark, transactions, header)
    classified = classify(rows, header, now).persist()
    try:
        tally = _tally(classified, columns.positions)
        customers, months = aggregate(
            derive_rows(classified.where(F.col("used")), non_letter_class(spark))
        )
        quarantine = _quarantine(classified, header)
        quarantined = tally.rows_in - tally.rows_used - tally.rows_duplicate
        features, withheld = withhold_out_of_range(
            finalise(customers, months, tally.as_of_ts or 0).reset_index()
        )
        training_set = None
        if label_result is not None:
            training_set = join_labels(features, label_result.labels)
        stream = _StreamInfo(header=header.names, delimiter=header.delimiter)
        report = build_report(
            tally,
            columns,
            stream,  # type: ignore[arg-type]
            features,
            label_result,
            quarantined,
            elapsed=time.monotonic() - started,
            withheld=withheld,
        )
        report["engine"] = "spark"
    except BaseException:
        classified.unpersist()
        lines.unpersist()
        raise
    return SparkResult(
        features,
        training_set,
        report,
        quarantined,
        quarantine,
        header,
        classified,
        label_result.quarantine if label_result is not None else None,
        lines,
    )


@dataclass
class _StreamInfo:
    """What ``build_report`` reads of a ``CsvStream``."""

    header: list[str]
    delimiter: str


# ---------------------------------------------------------------------------------------
# Writing (Hadoop FileSystem: local paths and abfss:// alike)
# ---------------------------------------------------------------------------------------


class Store:
    """Writes whole files into one output directory through Hadoop's FileSystem API."""

    def __init__(self, spark: SparkSession, out: str) -> None:
        self.spark = spark
        jvm = spark.sparkContext._jvm
        self._path = jvm.org.apache.hadoop.fs.Path
        self.root = self._path(out)
        fs = self.root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
        # The local file system would add .crc side files; write plain files instead.
        self.fs = fs.getRawFileSystem() if fs.getScheme() == "file" else fs
        self.fs.mkdirs(self.root)
        self.out = out.rstrip("/")

    def write_bytes(self, name: str, data: bytes) -> str:
        """Write to ``name.partial``, then rename: readers never see half a file."""
        final = self._path(self.root, name)
        partial = self._path(self.root, name + ".partial")
        stream = self.fs.create(partial, True)
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()
        self._replace(partial, final)
        return f"{self.out}/{name}"

    def write_chunks(self, name: str, chunks: Iterable[bytes]) -> str:
        """Write ``name`` from a stream of byte chunks (``.partial``, then renamed)."""
        final = self._path(self.root, name)
        partial = self._path(self.root, name + ".partial")
        stream = self.fs.create(partial, True)
        try:
            for chunk in chunks:
                stream.write(bytearray(chunk))
        finally:
            stream.close()
        self._replace(partial, final)
        return f"{self.out}/{name}"

    def write_csv(self, name: str, frame: DataFrame, rows_per_chunk: int = 10_000) -> str:
        """A Spark DataFrame as one CSV written by ``features.outputs.csv_rows`` (the writer
        every engine uses), streamed through the driver one chunk of rows at a time."""
        columns = list(frame.columns)

        def chunks() -> Iterator[bytes]:
            yield csv_rows(pd.DataFrame(columns=columns)).encode("utf-8")
            pending: list[Any] = []
            for row in frame.toLocalIterator():
                pending.append(tuple(row))
                if len(pending) == rows_per_chunk:
                    yield csv_rows(pd.DataFrame(pending, columns=columns), header=False).encode()
                    pending = []
            if pending:
                yield csv_rows(pd.DataFrame(pending, columns=columns), header=False).encode()

        return self.write_chunks(name, chunks())

    def write_frame(self, name: str, frame: DataFrame, fmt: str) -> str:
        """One file named ``name``: CSV through ``write_csv``, Parquet by Spark (a single
        partition, then renamed)."""
        if fmt == "csv":
            return self.write_csv(name, frame)
        staging = f"{self.out}/_{name}.staging"
        frame.write.mode("overwrite").parquet(staging)
        parts = [
            s.getPath()
            for s in self.fs.listStatus(self._path(staging))
            if s.getPath().getName().startswith("part-")
        ]
        if len(parts) != 1:
            raise RuntimeError(f"expected one part file in {staging}, found {len(parts)}")
        self._replace(parts[0], self._path(self.root, name))
        self.fs.delete(self._path(staging), True)
        return f"{self.out}/{name}"

    def _replace(self, source: Any, target: Any) -> None:
        if self.fs.exists(target):
            self.fs.delete(target, False)
        if not self.fs.rename(source, target):
            raise OSError(f"could not move {source} to {target}")


def _frame_bytes(frame: pd.DataFrame, fmt: str) -> bytes:
    if fmt == "csv":
        return to_csv_text(frame).encode("utf-8")
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def write_outputs(spark: SparkSession, result: SparkResult, out: str, fmt: str) -> list[str]:
    """The pandas CLI's outputs (same names and content), as CSV or Parquet."""
    store = Store(spark, out)
    # An empty quarantine still gets its header (CSV) or schema (Parquet).
    written = [store.write_frame(f"quarantine.{fmt}", result.quarantine, fmt)]
    for name, frame in output_frames(result).items():  # type: ignore[arg-type]
        written.append(store.write_bytes(f"{name}.{fmt}", _frame_bytes(frame, fmt)))
    report = json.dumps(result.report, indent=2, ensure_ascii=False) + "\n"
    written.append(store.write_bytes("dq_report.json", report.encode("utf-8")))
    written.append(store.write_bytes("dq_report.md", render_markdown(result.report).encode()))
    return written


def as_pipeline_result(result: SparkResult) -> PipelineResult:
    """The Spark result in the pandas engine's shape (quarantine collected: small data)."""
    return PipelineResult(
        features=result.features,
        training_set=result.training_set,
        report=result.report,
        quarantine_rows=result.quarantine_rows,
        quarantine=result.quarantine.toPandas(),
        label_quarantine=result.label_quarantine,
    )


# ---------------------------------------------------------------------------------------
# Entry point: python -m features.spark (also a Databricks/Synapse Python job)
# ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m features.spark",
        description="The features job on Apache Spark: same inputs, rules and outputs as "
        "`python -m features`; paths may be local or abfss:// URLs.",
    )
    parser.add_argument("--transactions", default="data/transactions.csv")
    parser.add_argument("--labels", default=None, help="labels CSV (optional)")
    parser.add_argument("--no-labels", action="store_true", help="ignore the default labels")
    parser.add_argument("--out", default="artifacts")
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=None,
        help="accepted for compatibility; Spark bounds memory by partitions instead",
    )
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv")
    parser.add_argument(
        "--master",
        default=None,
        help="Spark master (default: the cluster's when submitted, else local[2])",
    )
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    parser.add_argument(
        "--multiline",
        action="store_true",
        help="accepted for compatibility: quoted line breaks are always read",
    )
    args = parser.parse_args(argv)
    if args.labels is None and not args.no_labels and args.transactions == "data/transactions.csv":
        args.labels = "data/labels.csv"
    return args


def _session(args: argparse.Namespace) -> SparkSession:
    """The cluster's session when run as a Databricks/Synapse job or under spark-submit
    (and no ``--master`` is given); otherwise a local session."""
    on_cluster = (
        SparkSession.getActiveSession() is not None
        or "DATABRICKS_RUNTIME_VERSION" in os.environ
        or "PYSPARK_GATEWAY_PORT" in os.environ
    )
    if args.master is None and on_cluster:
        return SparkSession.builder.getOrCreate()
    return local_session(args.master or "local[2]", args.driver_memory, args.shuffle_partitions)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    spark = _session(args)
    try:
        result = run_spark(spark, args.transactions, args.labels)
        written = write_outputs(spark, result, args.out, args.format)
        result.release()
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    log.info("spark: %s", summary_line(result.report))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
