"""Spark engine: the Part 1 job on Apache Spark, for inputs one machine cannot hold.

Nothing here defines a rule. Column aliases come from ``features.schema``, the row rules
from ``features.rules`` and the constants of ``features.quality`` (translated to Spark
expressions below; ``require_every_rule`` stops the run if a rule has no translation), the
lexicon and text normalisation from ``features.text``, the aggregates from
``features.definitions.AGGREGATES`` and the feature formulas from ``finalise``, which runs
on the per-customer aggregate table collected to the driver (one row per customer).
Labels (small) go through the shared labels reader, and the run ends as every engine's does
(``features.engine.finish_run``): one ``RunResult``, written by ``features.publish``.

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

Run: ``python -m features.spark --transactions <path|abfss://...> --labels ... --out ...``
(the same arguments as ``python -m features --engine spark``).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F  # noqa: N812 (the PySpark convention)
from pyspark.sql.types import StringType

from features import aggregate as pandas_aggregate
from features.batch_fold import DAY as STORE_DAY
from features.command import execute, parse_args, utc_instant
from features.definitions import AGGREGATES, ID, MONTH_AGGREGATES, SECONDS_PER_DAY, finalise
from features.engine import (
    QuarantineCollector,
    QuarantineSink,
    RunResult,
    decision_window,
    finish_run,
    lookback_or_requested,
)
from features.engine import Window as DecisionWindow
from features.incremental import (
    AddedBatch,
    add_batch,
    add_build_options,
    build_result,
    check_build_options,
)
from features.labels import Labels, read_labels
from features.partials_combine import Combine, Combined
from features.partials_store import BATCH_NAME as STORE_BATCH_NAME
from features.partials_store import DAYS as STORE_DAYS
from features.partials_store import MANIFEST as STORE_MANIFEST
from features.partials_store import PREFIX as STORE_PREFIX
from features.partials_store import PartialsStore, StoreError
from features.publish import CSV, OutputFile
from features.quality import (
    AMOUNT_LEADING_ZEROS,
    AMOUNT_PATTERN,
    CREDIT_WORDS,
    DEBIT_WORDS,
    FIELD_MAX,
    ISO_GROUPS,
    ISO_TIMESTAMP,
    UK_GROUPS,
    UK_TIMESTAMP,
    UK_ZONE,
    timestamp_window,
)
from features.reader import escape_raw
from features.rules import (
    EXAMPLES_PER_CHECK,
    FINDINGS,
    LARGE_AMOUNT_PENCE,
    MAX_ABS_AMOUNT_PENCE,
    QUARANTINE_COLUMNS,
    QUARANTINE_ORDER,
    RAW_LINE,
    READER_RULES,
    REASON,
    WINDOW_RULES,
    RuleCode,
    example_column,
    require_every_rule,
)
from features.schema import TRANSACTION_ALIASES, TRANSACTION_REQUIRED, InputError, map_columns
from features.spark_rows import LINE, RAW, SPANS, Header, read_header, read_rows
from features.spark_rows import REASON as READER_REASON
from features.tally import InputShape, Tally
from features.text import NON_LETTERS, category_pattern, load_lexicon

ENGINE = "spark"
POS = LINE  # a row's file order is its line number
C = RuleCode
# Decided outside ``classify``'s value checks: exact copies, and by design not at all:
# Spark decodes text as UTF-8 itself, replacing bytes that are not (features.spark_rows).
UNSUPPORTED = {C.INVALID_UTF8: "Spark reads text as UTF-8 and replaces bytes that are not"}
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
    earliest, latest = timestamp_window(now)
    type_text = col("type_text")
    type_missing = blank(type_text)
    is_debit_word = F.coalesce(type_text.isin(*DEBIT_WORDS), F.lit(False))
    is_credit_word = F.coalesce(type_text.isin(*CREDIT_WORDS), F.lit(False))
    type_invalid = ~type_missing & ~is_debit_word & ~is_credit_word
    type_untidy = ~type_missing & F.coalesce(col("type_raw") != type_text, F.lit(False))
    checks = {
        **{code: col(READER_REASON) == str(code) for code in READER_RULES},
        C.MISSING_CUSTOMER_ID: blank(col(ID)),
        C.MISSING_TRANSACTION_ID: blank(col("txn")),
        C.MISSING_AMOUNT: amount_missing,
        C.INVALID_AMOUNT: amount_invalid,
        C.AMOUNT_OUT_OF_RANGE: ~amount_missing
        & ~amount_invalid
        & (amount_huge | (F.abs(pence) > MAX_ABS_AMOUNT_PENCE)),
        C.MISSING_TIMESTAMP: ts_missing,
        C.INVALID_TIMESTAMP: ts_invalid,
        C.TIMESTAMP_OUT_OF_RANGE: col("ts").isNotNull()
        & ((col("ts") < earliest) | (col("ts") > latest)),
        C.INVALID_TYPE: type_invalid,
    }
    is_debit = is_debit_word | (type_missing & (pence < 0))
    signed = F.when(is_debit, -F.abs(pence)).otherwise(F.abs(pence))
    findings = {
        C.TYPE_PADDED_OR_MIXED_CASE: type_untidy & ~type_invalid,
        C.MISSING_TYPE: type_missing,
        C.SIGN_DISAGREES_WITH_TYPE: ~type_missing & (signed != pence),
        C.MISSING_DESCRIPTION: blank(trim(col("description"))),
        C.QUOTED_LINE_BREAK: col(SPANS),
        C.NON_ISO_TIMESTAMP: non_iso,
        C.LARGE_AMOUNT: F.abs(pence) >= LARGE_AMOUNT_PENCE,
    }
    decided_by_order = (C.DUPLICATE, C.CONFLICTING_TRANSACTION_ID)
    decided_by_window = WINDOW_RULES  # place_in_windows
    require_every_rule(
        ENGINE,
        (*checks, *findings, *decided_by_order, *decided_by_window),
        unsupported=UNSUPPORTED,
    )
    reason = null
    for code in reversed(QUARANTINE_ORDER):
        if code in checks:  # the others are decided below, by file order, or unsupported
            reason = F.when(checks[code], F.lit(str(code))).otherwise(reason)
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
    typed = typed.withColumn("is_duplicate", duplicate)
    valid = ~col("is_duplicate") & col("first_reason").isNull()
    first_valid = F.min(F.when(valid, col(POS))).over(Window.partitionBy("txn"))
    conflicting = valid & (col(POS) != first_valid)
    final_reason = F.when(col("is_duplicate"), null).otherwise(
        F.coalesce(
            col("first_reason"), F.when(conflicting, F.lit(str(C.CONFLICTING_TRANSACTION_ID)))
        )
    )
    typed = typed.withColumn(REASON, final_reason)
    typed = typed.withColumn("used", ~col("is_duplicate") & col(REASON).isNull())
    return typed.drop("first_reason")


WINDOW_RULE = "window_rule"


def place_in_windows(
    spark: SparkSession, classified: DataFrame, window: DecisionWindow | None
) -> DataFrame:
    """``classified`` with ``window_rule``: for a used row outside its customer's decision
    window, the ``WINDOW_RULES`` code saying why (``features.engine``); else null. One
    broadcast join with the (small) table of decision dates."""
    if window is None:
        return classified.withColumn(WINDOW_RULE, F.lit(None).cast("string"))
    frame = window.frame()
    decisions = spark.createDataFrame(
        frame, schema="customer_id string, decision_ts long, window_start_ts long"
    )
    joined = classified.join(F.broadcast(decisions), on=ID, how="left")
    ts = F.col("ts")
    rule = (
        F.when(~F.col("used"), F.lit(None).cast("string"))
        .when(F.col("decision_ts").isNull(), F.lit(str(C.NO_DECISION_DATE)))
        .when(
            (ts >= F.col("decision_ts")) | (ts < F.col("window_start_ts")),
            F.lit(str(C.OUTSIDE_DECISION_WINDOW)),
        )
    )
    if WINDOW_RULES != (C.NO_DECISION_DATE, C.OUTSIDE_DECISION_WINDOW):
        raise RuntimeError(f"window rules changed: {WINDOW_RULES}")
    return joined.withColumn(WINDOW_RULE, rule).drop("decision_ts", "window_start_ts")


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


def _count_expressions() -> list[Column]:
    used = F.col("used")
    return [
        F.count(F.lit(1)).alias("rows_in"),
        F.sum(used.cast("long")).alias("rows_used"),
        F.sum(F.col("is_duplicate").cast("long")).alias(str(C.DUPLICATE)),
        *(
            F.sum((F.col(REASON) == str(code)).cast("long")).alias(str(code))
            for code in QUARANTINE_ORDER
        ),
        *(F.sum((used & F.col(f"finding_{c}")).cast("long")).alias(str(c)) for c in FINDINGS),
        *(F.sum(_condition(c).cast("long")).alias(str(c)) for c in WINDOW_RULES),
        F.max(F.when(used, F.col("ts"))).alias("as_of_ts"),
    ]


def _condition(code: RuleCode) -> Column:
    if code is C.DUPLICATE:
        return F.col("is_duplicate")
    if code in QUARANTINE_ORDER:
        return F.col(REASON) == str(code)
    if code in WINDOW_RULES:
        return F.coalesce(F.col(WINDOW_RULE) == str(code), F.lit(False))
    return F.col("used") & F.col(f"finding_{code}")


def _examples(
    classified: DataFrame, codes: Iterable[RuleCode], canonical: dict[str, int]
) -> dict[RuleCode, list[str]]:
    """The first ``EXAMPLES_PER_CHECK`` values (in file order) illustrating each check:
    the same column the pandas engine shows (``features.rules.example_column``). One query:
    flagged rows only, one event per (row, check), the first few per check kept."""
    events = []
    for code in codes:
        if code in READER_RULES:  # rows the reader could not split: shown by line number
            value = F.concat(F.lit("line "), F.col(POS).cast("string"))
        else:
            column = f"c{canonical[example_column(code, canonical)]}"
            value = F.substring(F.col(column), 1, 60)
        events.append(
            F.when(_condition(code), F.struct(F.lit(str(code)).alias("code"), value.alias("v")))
        )
    if not events:
        return {}
    exploded = classified.select(
        F.col(POS), F.explode(F.filter(F.array(*events), lambda e: e.isNotNull())).alias("e")
    ).select(POS, "e.code", "e.v")
    order = F.row_number().over(Window.partitionBy("code").orderBy(POS))
    picked = exploded.withColumn("k", order).where(F.col("k") <= EXAMPLES_PER_CHECK)
    found: dict[RuleCode, list[str]] = {}
    for row in picked.orderBy("code", POS).collect():
        found.setdefault(RuleCode(row["code"]), []).append(row["v"])
    return found


def _tally(classified: DataFrame, canonical: dict[str, int]) -> Tally:
    totals = classified.agg(*_count_expressions()).first().asDict()
    tally = Tally(
        rows_in=int(totals["rows_in"]),
        rows_used=int(totals["rows_used"] or 0),
        rows_duplicate=int(totals[str(C.DUPLICATE)] or 0),
        as_of_ts=None if totals["as_of_ts"] is None else int(totals["as_of_ts"]),
    )
    codes = [C.DUPLICATE, *QUARANTINE_ORDER, *FINDINGS, *WINDOW_RULES]
    examples = _examples(classified, [c for c in codes if totals[str(c)]], canonical)
    for code in codes:
        tally.add(code, int(totals[str(code)] or 0), examples.get(code, []))
    return tally


@F.pandas_udf(StringType())  # type: ignore[call-overload]
def _escaped(raw: pd.Series) -> pd.Series:
    """``features.reader.escape_raw`` on Spark (the same function, in a pandas UDF)."""
    values = pa.array(raw.fillna(""), pa.string()).cast(pa.binary())
    return pd.Series(escape_raw(values).to_numpy(zero_copy_only=False), index=raw.index)


def _quarantine(classified: DataFrame, header: Header) -> DataFrame:
    """Rejected rows in the shape ``QUARANTINE_COLUMNS``, in file order."""
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


def local_frames(frame: DataFrame, rows_per_chunk: int = 10_000) -> Iterator[pd.DataFrame]:
    """A Spark DataFrame as pandas frames of at most ``rows_per_chunk`` rows, in order,
    streamed through the driver (never collected whole)."""
    columns = list(frame.columns)
    pending: list[Any] = []
    for row in frame.toLocalIterator():
        pending.append(tuple(row))
        if len(pending) == rows_per_chunk:
            yield pd.DataFrame(pending, columns=columns, dtype=object)
            pending = []
    if pending:
        yield pd.DataFrame(pending, columns=columns, dtype=object)


def read_labels_any(spark: SparkSession, path: str, now: datetime | None = None) -> Labels:
    """Labels through the shared reader (same rules); the bytes come via Spark, so any
    Hadoop path works (``abfss://`` included). Label files are one row per customer."""
    try:
        content = spark.read.format("binaryFile").load(path).select("content").head()
    except Exception as error:
        if "PATH_NOT_FOUND" in str(error) or "does not exist" in str(error):
            raise InputError("labels: file not found") from None
        raise
    if content is None:
        raise InputError("labels: file not found")
    return read_labels(io.BytesIO(bytes(content[0])), now)


def run_spark(
    spark: SparkSession,
    transactions: str,
    labels: str | None = None,
    *,
    now: datetime | None = None,
    generated_at: datetime | None = None,
    on_quarantine: QuarantineSink | None = None,
    multiline: bool = True,
    lookback_days: int | None = None,
) -> RunResult:
    """The Part 1 job on Spark. Raises ``InputError`` when an input cannot be used.

    Quarantined rows are handed to ``on_quarantine`` in file order, a chunk at a time
    through the driver; without a sink they are collected into the result. ``multiline`` is
    accepted for compatibility: quoted line breaks are always read (``features.records``).
    ``lookback_days`` applies when the labels carry decision dates.
    """
    started = time.monotonic()
    now = now or datetime.now(UTC)
    lookback = lookback_or_requested(lookback_days)
    label_result = read_labels_any(spark, labels, now) if labels is not None else None
    window = decision_window(label_result, lookback)
    header = read_header(spark, transactions, "transactions")
    columns = map_columns(header.names, TRANSACTION_ALIASES, TRANSACTION_REQUIRED, "transactions")
    rows, lines = read_rows(spark, transactions, header)
    classified = place_in_windows(spark, classify(rows, header, now), window).persist()
    try:
        tally = _tally(classified, columns.positions)
        in_window = F.col("used") & F.col(WINDOW_RULE).isNull()
        customers, months = aggregate(
            derive_rows(classified.where(in_window), non_letter_class(spark))
        )
        valid = None
        if window is not None:
            seen = classified.where(F.col("used")).select(ID).distinct().toPandas()
            valid = pd.Index(seen[ID].astype(str))
        collector = None if on_quarantine is not None else QuarantineCollector()
        sink = on_quarantine or collector
        assert sink is not None
        for frame in local_frames(_quarantine(classified, header)):
            sink(frame)
        return finish_run(
            engine=ENGINE,
            tally=tally,
            shape=InputShape.from_header(header.names, header.delimiter, columns),
            features=finalise(
                customers, months, window.decisions if window else tally.as_of_ts or 0
            ).reset_index(),
            labels=label_result,
            rows_quarantined=tally.rows_in - tally.rows_used - tally.rows_duplicate,
            started=started,
            generated_at=generated_at or now,
            quarantine=collector.frame() if collector is not None else None,
            window=window,
            valid_customers=valid,
        )
    finally:
        classified.unpersist()
        lines.unpersist()


# ---------------------------------------------------------------------------------------
# Writing (Hadoop FileSystem: local paths and abfss:// alike)
# ---------------------------------------------------------------------------------------


class _JavaOutput(io.RawIOBase):
    """A writable Python stream over a Hadoop output stream."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._stream.write(bytearray(chunk))
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position


class HadoopDirectory:
    """An ``OutputSink`` writing into one directory through Hadoop's FileSystem API, so
    ``abfss://`` works like a local path. Each file is written as ``.partial`` and renamed."""

    def __init__(self, spark: SparkSession, out: str, fmt: str = CSV) -> None:
        self.fmt = fmt
        self.written: list[str] = []
        jvm = spark.sparkContext._jvm
        self._path = jvm.org.apache.hadoop.fs.Path
        self.root = self._path(out)
        fs = self.root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
        # The local file system would add .crc side files; write plain files instead.
        self.fs = fs.getRawFileSystem() if fs.getScheme() == "file" else fs
        self.fs.mkdirs(self.root)
        self.out = out.rstrip("/")

    def write(self, file: OutputFile, data: bytes) -> None:
        with self.stream(file) as handle:
            handle.write(data)

    @contextmanager
    def stream(self, file: OutputFile) -> Iterator[BinaryIO]:
        name = file.name(self.fmt)
        final = self._path(self.root, name)
        partial = self._path(self.root, name + ".partial")
        stream = self.fs.create(partial, True)
        handle = io.BufferedWriter(_JavaOutput(stream), 1 << 20)
        try:
            yield handle  # type: ignore[misc]
            handle.flush()
        except BaseException:
            stream.close()
            self.fs.delete(partial, False)
            raise
        stream.close()
        if self.fs.exists(final):
            self.fs.delete(final, False)
        if not self.fs.rename(partial, final):
            raise OSError(f"could not move {partial} to {final}")
        self.written.append(f"{self.out}/{name}")


# ---------------------------------------------------------------------------------------
# The incremental store (features.incremental): Spark folds the stored day partials
# ---------------------------------------------------------------------------------------


def _file_bytes(spark: SparkSession, path: str) -> bytes:
    """One (small) file's bytes through Spark, so any Hadoop path works."""
    try:
        row = spark.read.format("binaryFile").load(path).select("content").head()
    except Exception as error:
        if "PATH_NOT_FOUND" not in str(error) and "does not exist" not in str(error):
            raise
        row = None
    if row is None:
        raise StoreError("a file is missing (a store's file, the labels or the transactions)")
    return bytes(row[0])


class HadoopBatchFiles:
    """The store's files through Hadoop's FileSystem (``abfss://`` like a local path). A
    batch is written into a staging folder and renamed into place (atomic on HDFS and on
    ADLS Gen2 with a hierarchical namespace); files are read on the driver."""

    def __init__(self, spark: SparkSession, root: str) -> None:
        self.spark = spark
        self.root = root.rstrip("/")
        jvm = spark.sparkContext._jvm
        self._path = jvm.org.apache.hadoop.fs.Path
        self.fs = self._path(self.root).getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())

    def location(self, batch: str, file: str) -> str:
        return f"{self.root}/{STORE_PREFIX}{batch}/{file}"

    def batch_names(self) -> list[str]:
        root = self._path(self.root)
        if not self.fs.exists(root):
            return []
        names = []
        for status in self.fs.listStatus(root):
            name = status.getPath().getName()
            complete = self.fs.exists(self._path(status.getPath(), STORE_MANIFEST))
            if name.startswith(STORE_PREFIX) and complete:
                names.append(name[len(STORE_PREFIX) :])
        return sorted(n for n in names if STORE_BATCH_NAME.match(n))

    def open(self, batch: str, file: str) -> BinaryIO:
        return io.BytesIO(_file_bytes(self.spark, self.location(batch, file)))

    def write_batch(self, batch: str, files: dict[str, bytes]) -> None:
        staging = self._path(f"{self.root}/.staging-{uuid.uuid4().hex}")
        self.fs.mkdirs(staging)
        for name, data in files.items():
            stream = self.fs.create(self._path(staging, name), True)
            try:
                with io.BufferedWriter(_JavaOutput(stream), 1 << 20) as handle:
                    handle.write(data)
            finally:
                stream.close()
        target = self._path(f"{self.root}/{STORE_PREFIX}{batch}")
        self.delete_batch(batch)
        if not self.fs.rename(staging, target):
            raise OSError(f"could not move a staged batch into place: {batch}")

    def delete_batch(self, batch: str) -> None:
        target = self._path(f"{self.root}/{STORE_PREFIX}{batch}")
        self.fs.delete(self._path(target, STORE_MANIFEST), False)
        self.fs.delete(target, True)


def store_combine(spark: SparkSession, files: HadoopBatchFiles) -> Combine:
    """``features.incremental``'s day-partials fold on Spark: the day partials of every
    batch read as one DataFrame, the decision window joined (broadcast) and decided on
    whole days, then ``AGGREGATES`` per customer and salary per customer-month."""

    def combine(
        store: PartialsStore,
        batches: list[str],
        window: DecisionWindow | None,
        first_day: int | None,
    ) -> Combined:
        days = spark.read.parquet(*(files.location(b, STORE_DAYS) for b in batches))
        start = F.col(STORE_DAY) * F.lit(SECONDS_PER_DAY)
        outside: dict[RuleCode, int] = {}
        valid = None
        if window is not None:
            frame = spark.createDataFrame(window.frame())
            days = days.join(F.broadcast(frame), on=ID, how="left")
            dated = F.col("decision_ts").isNotNull()
            inside = dated & (start >= F.col("window_start_ts")) & (start < F.col("decision_ts"))
            counts = days.agg(
                F.sum(F.when(~dated, F.col("n")).otherwise(0)),
                F.sum(F.when(dated & ~inside, F.col("n")).otherwise(0)),
            ).head()
            outside = {
                RuleCode.NO_DECISION_DATE: int(counts[0] or 0),
                RuleCode.OUTSIDE_DECISION_WINDOW: int(counts[1] or 0),
            }
            seen = days.select(ID).distinct().toPandas()[ID]
            valid = pd.Index(seen.astype(str).to_numpy(), dtype=object)
            days = days.where(inside)
        if first_day is not None:
            days = days.where(F.col(STORE_DAY) >= first_day)
        date = F.date_from_unix_date(F.col(STORE_DAY).cast("int"))
        month = (F.year(date) * 12 + F.month(date) - 1).cast("long").alias("month")
        customers = days.groupBy(ID).agg(
            *(OPERATIONS[op](name).alias(name) for name, op, _ in AGGREGATES)
        )
        months = days.groupBy(ID, month).agg(
            *(F.max(name).alias(name) for name, _, _ in MONTH_AGGREGATES)
        )
        per_customer, per_month = customers.toPandas(), months.toPandas()
        if per_customer.empty:
            empty = pandas_aggregate.empty_aggregates()
            return Combined(empty[0], empty[1], outside, valid)
        per_customer = per_customer.set_index(ID).astype("int64")
        per_month = per_month.astype({"month": "int64"}).set_index([ID, "month"]).astype("int64")
        return Combined(per_customer, per_month, outside, valid)

    return combine


def build_store(
    spark: SparkSession,
    store: str,
    labels: str | None = None,
    *,
    now: datetime | None = None,
    generated_at: datetime | None = None,
    on_quarantine: QuarantineSink | None = None,
    lookback_days: int | None = None,
    window_days: int | None = None,
) -> RunResult:
    """``python -m features.incremental build`` with Spark folding the day partials: the
    same result as the local build (and as one run over every batch's rows)."""
    files = HadoopBatchFiles(spark, store)
    label_bytes = io.BytesIO(_file_bytes(spark, labels)) if labels is not None else None
    return build_result(
        PartialsStore(files),
        label_bytes,
        now=now,
        generated_at=generated_at,
        on_quarantine=on_quarantine,
        lookback_days=lookback_days,
        window_days=window_days,
        combine=store_combine(spark, files),
    )


# ---------------------------------------------------------------------------------------
# Entry point: python -m features.spark (also a Databricks/Synapse Python job)
# ---------------------------------------------------------------------------------------


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


def hadoop_path(path: str) -> str:
    """A local path made absolute (Spark resolves relative ones against the JVM's working
    directory, not this process's); a URL (``abfss://...``) unchanged."""
    return path if "://" in path else str(Path(path).resolve())


def run_command(args: argparse.Namespace) -> int:
    """``python -m features --engine spark`` and ``python -m features.spark``."""
    spark = _session(args)
    labels = hadoop_path(args.labels) if args.labels is not None else None
    return execute(
        args,
        HadoopDirectory(spark, hadoop_path(args.out), args.format),
        lambda quarantine, now, generated_at: run_spark(
            spark,
            hadoop_path(args.transactions),
            labels,
            now=now,
            generated_at=generated_at,
            on_quarantine=quarantine,
            lookback_days=args.lookback_days,
        ),
    )


def add_to_store(
    spark: SparkSession, store: str, batch: str, transactions: str, *, now: datetime | None = None
) -> AddedBatch:
    """``python -m features.incremental add`` against a store at any Hadoop path: the
    batch's bytes come through Spark and the fold runs on the driver (the pandas engine's
    fold: a batch is a day, which one machine holds), files written through Hadoop."""
    try:
        data = _file_bytes(spark, transactions)
    except StoreError:
        raise InputError("transactions: file not found") from None
    files = HadoopBatchFiles(spark, store)
    return add_batch(PartialsStore(files), batch, io.BytesIO(data), now=now)


def store_command(argv: list[str]) -> int:
    """``python -m features.spark build-store``: ``python -m features.incremental build``
    with Spark folding the day partials (paths may be ``abfss://`` URLs)."""
    parser = argparse.ArgumentParser(prog="python -m features.spark build-store")
    add_build_options(parser)
    parser.add_argument("--master", default=None)
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    args = parser.parse_args(argv)
    check_build_options(parser, args)
    args.engine = ENGINE
    spark = _session(args)
    labels = hadoop_path(args.labels) if args.labels is not None else None
    return execute(
        args,
        HadoopDirectory(spark, hadoop_path(args.out), args.format),
        lambda quarantine, now, generated_at: build_store(
            spark,
            hadoop_path(args.store),
            labels,
            now=now,
            generated_at=generated_at,
            on_quarantine=quarantine,
            lookback_days=args.lookback_days,
            window_days=args.window_days,
        ),
    )


def add_command(argv: list[str]) -> int:
    """``python -m features.spark add-to-store --store ... --batch ... --transactions ...``"""
    parser = argparse.ArgumentParser(prog="python -m features.spark add-to-store")
    parser.add_argument("--store", required=True)
    parser.add_argument("--batch", required=True)
    parser.add_argument("--transactions", required=True)
    parser.add_argument("--now", type=utc_instant, default=None)
    parser.add_argument("--master", default=None)
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    args = parser.parse_args(argv)
    spark = _session(args)
    try:
        added = add_to_store(
            spark,
            hadoop_path(args.store),
            args.batch,
            hadoop_path(args.transactions),
            now=args.now,
        )
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(added.line())
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["build-store"]:
        return store_command(argv[1:])
    if argv[:1] == ["add-to-store"]:
        return add_command(argv[1:])
    return run_command(parse_args(argv, prog="python -m features.spark", engine=ENGINE))


if __name__ == "__main__":
    raise SystemExit(main())
