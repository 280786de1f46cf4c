"""The feature pipeline as one DuckDB SQL query: a reference engine for speed and for rules.

Why: to know whether the pandas pipeline is fast enough we need a strong baseline doing
the *same* work, and a second, independent implementation of every cleaning rule catches
drift in either. The SQL is built from the shared constants (lexicon, amount pattern,
timestamp patterns, time zone, limits, feature and aggregate lists, feature bounds), never
retyped, and every column is read as text, in file order, like ``features.reader``.

What a row is, is one rule for every engine (``features.records``). DuckDB's own reader
differs in places (after a stray quote it silently joins the rest of the file into one
value; it trims spaces around quotes; it drops extra empty trailing fields), so the file
is first scanned with the shared rule (``prepare``): a file with none of those cases is
read by DuckDB itself, any other through a copy of the rows the shared reader split. Only
reading is shared; every data-quality rule and feature is DuckDB's own SQL. The scan
costs about 0.2 s per million rows and is part of the timed work.

It fills the same engine contract as pandas and Spark (``run_duckdb`` returns a
``features.engine.RunResult``: one ``Tally``, the shared report), runs the shared
``require_every_rule`` guard, and differs in what it does not do: it collects no example
values and writes no quarantine rows (it counts them). With decision dates in the labels
the window rule is SQL too: a join with the table of decision dates
(``features.engine.Window.frame``, registered as ``decision_windows``).

Run: ``python -m benchmarks.duckdb_pipeline --transactions X --out DIR [--now ISO]
[--labels L --lookback-days N]`` writes ``features.parquet`` (and, with ``--counts``,
``counts.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.definitions import (
    AGGREGATES,
    DAYS_PER_MONTH,
    FEATURE_NAMES,
    FEATURES,
    FLAG_CATEGORIES,
    ID,
    MAX_DAYS,
    MAX_RENT_BURDEN,
    MAX_SPEND_TO_INCOME,
    PENCE_PER_POUND,
    SALARY_GAP_DAYS,
    SECONDS_PER_DAY,
    feature_bounds,
)
from features.engine import (
    RunResult,
    Window,
    decision_window,
    finish_run,
    lookback_or_requested,
)
from features.labels import read_labels
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
from features.reader import REJECT, open_csv
from features.reader import read_header as reader_header
from features.rules import (
    LARGE_AMOUNT_PENCE,
    MAX_ABS_AMOUNT_PENCE,
    MAX_RECORD_BYTES,
    QUARANTINE_ORDER,
    READER_RULES,
    WINDOW_RULES,
    RuleCode,
    require_every_rule,
)
from features.schema import TRANSACTION_ALIASES, TRANSACTION_REQUIRED, map_columns
from features.tally import InputShape, Tally
from features.text import CATEGORIES, category_pattern, load_lexicon

ENGINE = "duckdb"
C = RuleCode
# Decided outside the row-level CASE: by the CSV reader (DuckDB's rejects table and the
# shared scan), and by file order.
READER_REASONS = (*READER_RULES, C.INVALID_UTF8)
BY_ORDER = (C.DUPLICATE, C.CONFLICTING_TRANSACTION_ID)
USED = "used"
# The table of decision dates a decision-date run joins (Window.frame's columns).
WINDOWS = "decision_windows"
# Python's ``[\W\d_]+`` on str (what ``features.text.normalise`` removes) in RE2 terms:
# keep letters and the non-decimal numerics (Nl, No) that Python counts as word characters.
NON_LETTERS_RE2 = r"[^\p{L}\p{Nl}\p{No}]+"
_COMBINE = {"sum": "sum", "min": "min", "max": "max"}
Connection = duckdb.DuckDBPyConnection


def _arrow_whitespace() -> str:
    """The characters Arrow's ``utf8_trim_whitespace`` strips (the pipeline's trim)."""
    candidates = [chr(c) for c in range(0x3001) if chr(c).isspace()]
    candidates += ["\u180e", "\u200b", "\ufeff"]
    trimmed = pc.utf8_trim_whitespace(pa.array(["x" + c for c in candidates])).to_pylist()
    return "".join(c for c, t in zip(candidates, trimmed, strict=True) if t == "x")


WHITESPACE = _arrow_whitespace()
_WS_CLASS = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in WHITESPACE) + "]"


def lit(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _days_from_civil(year: str, month: str, day: str) -> str:
    """``features.quality.days_from_civil`` in SQL (floor division, as Python's ``//``)."""
    y = f"({year} - CASE WHEN {month} <= 2 THEN 1 ELSE 0 END)"
    era = f"CAST(floor({y} / 400.0) AS BIGINT)"
    yoe = f"({y} - {era} * 400)"
    shifted = f"(CASE WHEN {month} > 2 THEN {month} - 3 ELSE {month} + 9 END)"
    doy = f"((153 * {shifted} + 2) // 5 + {day} - 1)"
    doe = f"({yoe} * 365 + {yoe} // 4 - {yoe} // 100 + {doy})"
    return f"({era} * 146097 + {doe} - 719468)"


def _timestamp_columns(text: str) -> str:
    """Select items parsing ``text`` like ``features.quality.parse_timestamp``: the parts of
    the ISO or UK form it matches (one regex each), as integers."""
    iso = f"regexp_extract({text}, {lit(ISO_TIMESTAMP)}, [{', '.join(map(lit, ISO_GROUPS))}])"
    uk = f"regexp_extract({text}, {lit(UK_TIMESTAMP)}, [{', '.join(map(lit, UK_GROUPS))}])"
    is_iso = f"regexp_matches({text}, {lit(ISO_TIMESTAMP)})"
    is_uk = f"(NOT {is_iso} AND regexp_matches({text}, {lit(UK_TIMESTAMP)}))"
    parts = [f"{is_iso} AS ts_is_iso", f"{is_uk} AS ts_is_uk"]
    for name in ("year", "month", "day", "hour", "minute", "second"):
        parts.append(
            f"coalesce(CASE WHEN {is_iso} THEN TRY_CAST(nullif(({iso}).{name}, '') AS BIGINT) "
            f"WHEN {is_uk} THEN TRY_CAST(nullif(({uk}).{name}, '') AS BIGINT) END, 0) "
            f"AS ts_{name}"
        )
    for name in ("offset_hour", "offset_minute"):
        parts.append(
            f"coalesce(CASE WHEN {is_iso} THEN TRY_CAST(nullif(({iso}).{name}, '') AS BIGINT) "
            f"END, 0) AS ts_{name}"
        )
    parts.append(f"CASE WHEN {is_iso} THEN ({iso}).zone ELSE '' END AS ts_zone")
    parts.append(f"CASE WHEN {is_iso} THEN ({iso}).sign ELSE '' END AS ts_sign")
    return ",\n    ".join(parts)


def _timestamp_seconds() -> tuple[str, str]:
    """(the parts make a real date and time, UK wall-clock epoch seconds) over the columns
    of ``_timestamp_columns``."""
    first = _days_from_civil("ts_year", "ts_month", "1")
    following = _days_from_civil("ts_year", "ts_month + 1", "1")
    ok = [
        "(ts_is_iso OR ts_is_uk)",
        "ts_month BETWEEN 1 AND 12",
        "ts_day >= 1",
        f"ts_day <= {following} - {first}",
        *(f"ts_{name} <= {largest}" for name, largest in FIELD_MAX.items()),
    ]
    wall = f"(({first} + ts_day - 1) * 86400 + ts_hour * 3600 + ts_minute * 60 + ts_second)"
    offset = (
        "((ts_offset_hour * 3600 + ts_offset_minute * 60) "
        "* CASE WHEN ts_sign = '-' THEN -1 ELSE 1 END)"
    )
    # An instant (Z or an offset) is read on the UK wall clock: ICU's Europe/London.
    zoned = f"CAST(epoch(timezone({lit(UK_ZONE)}, to_timestamp({wall} - {offset}))) AS BIGINT)"
    seconds = f"CASE WHEN ts_zone <> '' THEN {zoned} ELSE {wall} END"
    return " AND ".join(f"({c})" for c in ok), seconds


def _trim(expr: str) -> str:
    """Arrow's trim. ``trim(x, chars)`` is slow, so it only runs where an end is blank."""
    blank_end = "^" + _WS_CLASS + "|" + _WS_CLASS + "$"
    return (
        f"CASE WHEN regexp_matches({expr}, {lit(blank_end)}) "
        f"THEN trim({expr}, {lit(WHITESPACE)}) ELSE {expr} END"
    )


def _numpy_round(expr: str, digits: int) -> str:
    """``numpy.round`` for doubles: scale, round half to even, unscale (what pandas does)."""
    scale = f"CAST({10**digits} AS DOUBLE)"
    y = f"(({expr}) * {scale})"
    half_even = f"CASE WHEN abs({y} - trunc({y})) = 0.5 THEN 2 * round({y} / 2) ELSE round({y}) END"
    return f"(({half_even}) / {scale})"


def _pounds(pence: str) -> str:
    return _numpy_round(f"CAST({pence} AS DOUBLE) / CAST({PENCE_PER_POUND} AS DOUBLE)", 2)


def read_header(path: Path) -> tuple[list[str], str]:
    """(column names, delimiter) the way ``features.reader`` finds them."""
    return reader_header(path, "transactions")


def _source_sql(path: Path, width: int, delimiter: str) -> str:
    # store_rejects, never ignore_errors: DuckDB 1.4.2 with ignore_errors returns no rows at
    # all once a line has text after a closing quote ("UNQUOTED VALUE").
    columns = ", ".join(f"{lit(f'c{i}')}: 'VARCHAR'" for i in range(width))
    errors = "store_rejects = true"
    return (
        f"read_csv({lit(str(path))}, header = true, auto_detect = false, all_varchar = true,"
        f" columns = {{{columns}}}, delim = {lit(delimiter)}, quote = '\"', escape = '\"',"
        f" allow_quoted_nulls = false, null_padding = false,"
        f" max_line_size = {MAX_RECORD_BYTES + 1}, {errors})"
    )


@dataclass
class Prepared:
    """What DuckDB reads (the file, or a copy without the lines the row rule sets aside) and
    how many lines were set aside, by reason."""

    path: Path
    set_aside: dict[RuleCode, int] = field(default_factory=dict)


@contextlib.contextmanager
def prepare(path: Path) -> Iterator[Prepared]:
    """Apply the shared row rule (module doc); a copy, if one is needed, is deleted after.

    DuckDB reads the file itself unless the scan finds something its reader treats
    differently from the rule: a stray quote or NUL (it would join or keep those lines), a
    lone CR or mixed line endings (it picks one line ending per file), rows with extra
    empty fields at the end (it drops those as trailing delimiters), or quotes next to a
    space or tab (it trims spaces around quoted fields; the rule keeps them as text). Then
    it reads a copy holding the fields of the rows the shared reader split cleanly, every
    field quoted, and the rows the reader set aside are counted from the reader.
    """
    scan = open_csv(path, "transactions").blocks.scan()  # type: ignore[union-attr]
    unusual = scan.unterminated or scan.nul or scan.lone_cr or scan.extra_empty_fields
    native = not (unusual or scan.spaced_quotes) and len(scan.endings) == 1
    if native:
        yield Prepared(path)
        return
    stream = open_csv(path, "transactions")
    set_aside = dict.fromkeys(READER_RULES, 0)
    handle, name = tempfile.mkstemp(suffix=".csv", prefix="duckdb-rows-")
    try:
        with os.fdopen(handle, "wb") as out:
            writer = csv.writer(_Text(out), delimiter=stream.delimiter, lineterminator="\n")
            writer.writerow(stream.header)
            width = len(stream.header)
            for batch in stream.batches:
                reject = batch.column(REJECT).to_numpy()
                for code, n in zip(*np.unique(reject[reject > 0], return_counts=True), strict=True):
                    set_aside[READER_RULES[int(code) - 1]] += int(n)
                split = batch.filter(pa.array(reject == 0))
                if split.num_rows:
                    out.write(_quoted_lines(split.columns[:width], stream.delimiter))
        yield Prepared(Path(name), set_aside)
    finally:
        Path(name).unlink(missing_ok=True)


def _quoted_lines(fields: list[pa.Array], delimiter: str) -> bytes:
    """Rows as CSV lines with every field quoted (exact bytes, whatever they hold)."""
    quoted = [
        pc.binary_join_element_wise(b'"', pc.replace_substring(f, b'"', b'""'), b'"', b"")
        for f in fields
    ]
    joined = pc.binary_join_element_wise(*quoted, delimiter.encode())
    lines = pc.binary_join_element_wise(joined, b"\n", b"")
    return b"".join(lines.to_pylist())


class _Text:
    """A text view of a binary file for csv.writer (the header only)."""

    def __init__(self, binary) -> None:  # type: ignore[no-untyped-def]
        self.binary = binary

    def write(self, text: str) -> None:
        self.binary.write(text.encode("utf-8"))


def checked_sql(
    path: Path, header: list[str], delimiter: str, now: datetime, dedup: bool = True
) -> str:
    """CTEs ending in ``checked``: one row per distinct raw row (``rn`` its first position in
    the file, ``copies`` how often it occurs) with its row-level ``reason`` (NULL if valid),
    parsed values and the amount in signed pence.

    ``dedup=False`` skips grouping exact copies (each row is its own group). The features
    do not need it: a copy of a valid row repeats its transaction id, so "first valid row
    per transaction id" drops it anyway; only the duplicate/conflict counts tell them apart.
    """
    positions = map_columns(
        header, TRANSACTION_ALIASES, TRANSACTION_REQUIRED, "transactions"
    ).positions
    width = len(header)
    raw_columns = [f"c{i}" for i in range(width)]

    def column(name: str) -> str:
        return f"c{positions[name]}" if name in positions else "''"

    earliest, latest = timestamp_window(now)
    checks = {
        C.MISSING_CUSTOMER_ID: "customer_id = ''",
        C.MISSING_TRANSACTION_ID: "transaction_id = ''",
        C.MISSING_AMOUNT: "amount_text = ''",
        C.INVALID_AMOUNT: "NOT amount_ok",
        # Well-formed but too many digits for DECIMAL(18,2) is out of range too.
        C.AMOUNT_OUT_OF_RANGE: "amount_pence IS NULL OR "
        f"abs(amount_pence) > {MAX_ABS_AMOUNT_PENCE}",
        C.MISSING_TIMESTAMP: "ts_text = ''",
        C.INVALID_TIMESTAMP: "ts_seconds IS NULL",
        C.TIMESTAMP_OUT_OF_RANGE: f"ts_seconds < {earliest} OR ts_seconds > {latest}",
        C.INVALID_TYPE: f"type_text <> '' AND type_text NOT IN {_in(DEBIT_WORDS + CREDIT_WORDS)}",
    }
    require_every_rule(
        ENGINE, (*checks, *_findings(), *READER_REASONS, *BY_ORDER, *_window_checks())
    )
    row_level = [c for c in QUARANTINE_ORDER if c in checks]
    reason = " ".join(f"WHEN {checks[c]} THEN {lit(c)}" for c in row_level)
    distinct = (
        f"SELECT {', '.join(raw_columns)}, min(rn) AS rn, count(*) AS copies "
        f"FROM raw GROUP BY {', '.join(raw_columns)}"
        if dedup
        else "SELECT *, 1 AS copies FROM raw"
    )
    ts_ok, ts_seconds = _timestamp_seconds()
    line_break = " OR ".join(f"regexp_matches({c}, '[\\r\\n]')" for c in raw_columns)
    zeros, keep = AMOUNT_LEADING_ZEROS
    return f"""
WITH raw AS (
  SELECT row_number() OVER () AS rn, {", ".join(f"coalesce({c}, '') AS {c}" for c in raw_columns)}
  FROM {_source_sql(path, width, delimiter)}
),
distinct_rows AS ({distinct}),
texts AS (
  SELECT *,
    {_trim(column("customer_id"))} AS customer_id,
    {_trim(column("transaction_id"))} AS transaction_id,
    {_trim(column("amount"))} AS amount_text,
    {_trim(column("timestamp"))} AS ts_text,
    {column("type")} AS type_raw,
    lower({_trim(column("type"))}) AS type_text,
    {column("description")} AS description,
    ({line_break}) AS line_break
  FROM distinct_rows
),
typed AS (
  SELECT *,
    regexp_matches(amount_text, {lit(AMOUNT_PATTERN)}) AS amount_ok,
    {_timestamp_columns("ts_text")}
  FROM texts
),
timed AS (
  SELECT *,
    -- DECIMAL(18,2) is exact and int64-backed (DECIMAL(20,2) parses ~50x slower); a
    -- well-formed amount too long for it is far beyond the range limit anyway. Leading
    -- zeros do not count (features.quality.parse_amount_pence).
    CASE WHEN amount_ok THEN CAST(try_cast(regexp_replace(
      regexp_replace(amount_text, '[£,]', '', 'g'), {lit(zeros)}, {lit(keep)}
    ) AS DECIMAL(18, 2)) * 100 AS BIGINT) END AS amount_pence,
    CASE WHEN {ts_ok} THEN {ts_seconds} END AS ts_seconds
  FROM typed
),
checked AS (
  SELECT *,
    make_timestamp(ts_seconds * 1000000) AS ts,
    CASE {reason} END AS reason,
    CASE WHEN type_text IN {_in(DEBIT_WORDS)} OR (type_text = '' AND amount_pence < 0)
      THEN -abs(amount_pence) ELSE abs(amount_pence) END AS signed_pence
  FROM timed
)"""


def _flags_sql() -> str:
    lexicon = load_lexicon()
    return ",\n    ".join(
        f"regexp_matches(description_clean, {lit(category_pattern(lexicon[c]))}) AS is_{c}"
        for c in CATEGORIES
    )


def _clean_sql(column: str) -> str:
    """``features.text.normalise`` in SQL."""
    return f"trim(regexp_replace(lower({column}), {lit(NON_LETTERS_RE2)}, ' ', 'g'))"


def _in(values: Iterable[str]) -> str:
    return "(" + ", ".join(lit(v) for v in values) + ")"


def _findings() -> dict[RuleCode, str]:
    return {
        C.TYPE_PADDED_OR_MIXED_CASE: "type_text <> '' AND type_raw <> type_text",
        C.MISSING_TYPE: "type_text = ''",
        C.SIGN_DISAGREES_WITH_TYPE: "type_text <> '' AND signed_pence <> amount_pence",
        C.MISSING_DESCRIPTION: f"{_trim('description')} = ''",
        C.QUOTED_LINE_BREAK: "line_break",
        C.NON_ISO_TIMESTAMP: "ts_is_uk",
        C.LARGE_AMOUNT: f"abs(amount_pence) >= {LARGE_AMOUNT_PENCE}",
    }


def _window_checks() -> dict[RuleCode, str]:
    """Valid rows outside their customer's decision window (``features.engine``), over a
    row LEFT JOINed with ``decision_windows`` (NULL decision_ts: no decision date)."""
    checks = {
        C.NO_DECISION_DATE: "decision_ts IS NULL",
        C.OUTSIDE_DECISION_WINDOW: "decision_ts IS NOT NULL AND "
        "(ts_seconds >= decision_ts OR ts_seconds < window_start_ts)",
    }
    if tuple(checks) != WINDOW_RULES:
        raise RuntimeError(f"window rules changed: {WINDOW_RULES}")
    return checks


def _row_columns() -> str:
    """Per used row: the columns named in ``features.definitions.AGGREGATES``."""
    salary_credit = "is_salary AND signed_pence >= 0"
    spend = "signed_pence < 0 THEN -signed_pence ELSE 0 END"
    columns = {
        "one": "1",
        "debit_pence": "CASE WHEN signed_pence < 0 THEN signed_pence ELSE 0 END",
        "credit_pence": "CASE WHEN signed_pence < 0 THEN 0 ELSE signed_pence END",
        "ts": "ts_seconds",
        "month": "year(ts) * 12 + month(ts) - 1",
        **{f"is_{c}": f"CAST(is_{c} AS BIGINT)" for c in CATEGORIES if c != "salary"},
        # Salary credits only, as in features.aggregate.derive_rows.
        "is_salary": f"CAST({salary_credit} AS BIGINT)",
        "rent_pence": f"CASE WHEN is_rent AND {spend}",
        "gambling_pence": f"CASE WHEN is_gambling AND {spend}",
        "salary_ts": f"CASE WHEN {salary_credit} THEN ts_seconds END",
    }
    needed = {column for _, _, column in AGGREGATES} | {"month"}
    missing = needed - set(columns)
    if missing:
        raise RuntimeError(f"aggregate row columns not derived here: {sorted(missing)}")
    return ",\n    ".join(f"{expr} AS {name}" for name, expr in columns.items() if name in needed)


def _feature_columns() -> dict[str, str]:
    """``features.definitions.finalise`` in SQL over the per-customer aggregates."""
    features = {
        "num_transactions": "n",
        "total_debit": _pounds("debit_pence"),
        "total_credit": _pounds("credit_pence"),
        "avg_amount": _numpy_round(
            "CAST(debit_pence + credit_pence AS DOUBLE) / CAST(n AS DOUBLE)"
            f" / CAST({PENCE_PER_POUND} AS DOUBLE)",
            2,
        ),
        "net_flow": _pounds("debit_pence + credit_pence"),
        "max_debit": _pounds("-least(min_debit_pence, 0)"),
        **{f"has_{c}": f"CAST(n_{c} > 0 AS BIGINT)" for c in FLAG_CATEGORIES},
        "rent_to_income": "CASE WHEN credit_pence > 0 THEN "
        + _numpy_round("CAST(rent_pence AS DOUBLE) / CAST(credit_pence AS DOUBLE)", 4)
        + " ELSE 0.0 END",
        "gambling_spend": _pounds("gambling_pence"),
        "fee_count": "n_fee",
        "days_since_last_salary": f"CASE WHEN last_salary_ts IS NULL THEN {MAX_DAYS} ELSE "
        f"least(greatest((as_of_ts - last_salary_ts) // {SECONDS_PER_DAY}, 0), {MAX_DAYS}) END",
        "salary_month_share": _numpy_round(
            "CAST(salary_months AS DOUBLE) / CAST(active_months AS DOUBLE)", 4
        ),
        "active_days": f"least(greatest((last_ts - first_ts) // {SECONDS_PER_DAY} + 1, 1), "
        f"{MAX_DAYS})",
        "transactions_per_month": _numpy_round(_per_month("n"), 4),
        "credit_per_month": _money_per_month("credit_pence"),
        "debit_per_month": _money_per_month("debit_pence"),
        "gambling_per_month": _money_per_month("gambling_pence"),
        "fees_per_month": _numpy_round(_per_month("n_fee"), 4),
        "spend_to_income": _capped_share("-debit_pence", MAX_SPEND_TO_INCOME, "debit_pence < 0"),
        "rent_burden": _capped_share("rent_pence", MAX_RENT_BURDEN, "rent_pence > 0"),
        "salary_stopped": f"CASE WHEN last_salary_ts IS NOT NULL AND "
        f"(as_of_ts - last_salary_ts) // {SECONDS_PER_DAY} > {SALARY_GAP_DAYS} THEN 1 ELSE 0 END",
    }
    if list(features) != list(FEATURE_NAMES):
        raise RuntimeError(f"features changed: {FEATURE_NAMES} vs {list(features)}")
    return features


def _per_month(total: str) -> str:
    """``features.definitions.per_month``: total * 30.4375 / the observed span in days
    (first transaction to as-of, whole days, at least one month), in the same order."""
    span = (
        f"greatest(CAST((as_of_ts - first_ts) // {SECONDS_PER_DAY} AS DOUBLE), {DAYS_PER_MONTH!r})"
    )
    return f"CAST({total} AS DOUBLE) * {DAYS_PER_MONTH!r} / {span}"


def _capped_share(pence: str, cap: float, without_income: str) -> str:
    """``pence`` / credits, at most ``cap``; without credits, ``cap`` where
    ``without_income`` holds, else 0 (``features.definitions.finalise``)."""
    share = f"least(CAST({pence} AS DOUBLE) / CAST(credit_pence AS DOUBLE), {cap!r})"
    return (
        f"CASE WHEN credit_pence > 0 THEN {_numpy_round(share, 4)} "
        f"WHEN {without_income} THEN {cap!r} ELSE 0.0 END"
    )


def _money_per_month(pence: str) -> str:
    return _numpy_round(f"{_per_month(pence)} / CAST({PENCE_PER_POUND} AS DOUBLE)", 2)


def features_sql(path: Path, now: datetime, *, withhold: bool = True, dated: bool = False) -> str:
    """The whole job as one query: raw CSV in, one feature row per customer out.
    ``withhold=False`` keeps the customers outside the API's bounds (``finish_run``
    withholds them, naming them in the report). ``dated``: decision-date mode, reading
    the ``decision_windows`` table registered on the connection."""
    header, delimiter = read_header(path)
    level1 = ",\n    ".join(
        f"{op}({column}) AS {name}" for name, op, column in AGGREGATES
    )  # per (customer, month)
    level2 = ",\n    ".join(
        f"CAST({_COMBINE[op]}({name}) AS BIGINT) AS {name}" for name, op, _ in AGGREGATES
    )
    features = ",\n  ".join(
        f"CAST({expr} AS {'DOUBLE' if name in _FLOAT_FEATURES else 'BIGINT'}) AS {name}"
        for name, expr in _feature_columns().items()
    )
    if dated:  # the rows in each customer's window; time counts from its decision
        window_rows = (
            f"SELECT used.* FROM used JOIN {WINDOWS} w USING ({ID}) "
            "WHERE ts_seconds < w.decision_ts AND ts_seconds >= w.window_start_ts"
        )
        as_of = (
            "SELECT customers.*, w.decision_ts AS as_of_ts "
            f"FROM customers JOIN {WINDOWS} w USING ({ID})"
        )
    else:
        window_rows = "SELECT * FROM used"
        as_of = "SELECT *, max(last_ts) OVER () AS as_of_ts FROM customers"
    return f"""{checked_sql(path, header, delimiter, now, dedup=False)},
used AS MATERIALIZED (
  -- A transaction id reused by a later valid row: the first in file order wins.
  SELECT {ID}, description, signed_pence, ts_seconds, ts
  FROM checked WHERE reason IS NULL
  QUALIFY rn = min(rn) OVER (PARTITION BY transaction_id)
),
windowed AS (
  {window_rows}
),
descriptions AS (
  -- Text work once per distinct description, as in features.text.describe_distinct.
  SELECT description, {_flags_sql()}
  FROM (SELECT description, {_clean_sql("description")} AS description_clean
        FROM (SELECT DISTINCT description FROM windowed))
),
rows AS (
  SELECT {ID},
    {_row_columns()}
  FROM windowed JOIN descriptions USING (description)
),
customer_months AS (
  SELECT {ID}, month,
    {level1},
    max(is_salary) AS salary_in_month
  FROM rows GROUP BY {ID}, month
),
customers AS (
  SELECT {ID},
    {level2},
    count(*) AS active_months,
    sum(salary_in_month) AS salary_months
  FROM customer_months GROUP BY {ID}
),
dated AS (
  {as_of}
)
SELECT * FROM (
SELECT {ID},
  {features}
FROM dated
) WHERE {_within_bounds() if withhold else "true"}
ORDER BY {ID}"""


def _within_bounds() -> str:
    """Customers whose features lie in ``features.definitions.feature_bounds`` (others are
    withheld, as ``features.pipeline.withhold_out_of_range`` does)."""
    return " AND ".join(
        f"({f.name} >= {float(low)!r} AND {f.name} <= {float(high)!r})"
        for f in FEATURES
        for low, high in [feature_bounds(f)]
    )


_FLOAT_FEATURES = {
    "spend_to_income",
    "rent_burden",
    "transactions_per_month",
    "credit_per_month",
    "debit_per_month",
    "gambling_per_month",
    "fees_per_month",
    "total_debit",
    "total_credit",
    "avg_amount",
    "net_flow",
    "max_debit",
    "rent_to_income",
    "gambling_spend",
    "salary_month_share",
}


def counts_sql(path: Path, now: datetime, *, dated: bool = False) -> str:
    """Rows per status (used / duplicate / quarantine reason) and per finding on used rows;
    ``dated``: also per window rule (``decision_windows`` registered)."""
    header, delimiter = read_header(path)
    findings = ",\n  ".join(
        f"count(*) FILTER (WHERE status = {lit(USED)} AND ({expr})) AS {code}"
        for code, expr in _findings().items()
    )
    windows = ",\n  ".join(
        f"count(*) FILTER (WHERE status = {lit(USED)} AND ({expr})) AS {code}"
        if dated
        else f"0 AS {code}"
        for code, expr in _window_checks().items()
    )
    joined = (
        f"SELECT * FROM classified LEFT JOIN {WINDOWS} w USING ({ID})"
        if dated
        else "SELECT * FROM classified"
    )
    return f"""{checked_sql(path, header, delimiter, now)},
classified AS (
  SELECT *,
    CASE
      WHEN reason IS NOT NULL THEN reason
      WHEN rn > min(CASE WHEN reason IS NULL THEN rn END) OVER (PARTITION BY transaction_id)
        THEN {lit(C.CONFLICTING_TRANSACTION_ID)}
      ELSE {lit(USED)}
    END AS status
  FROM checked
),
placed AS ({joined})
SELECT status, count(*) AS rows, sum(copies - 1) AS duplicates,
  max(CASE WHEN status = {lit(USED)} THEN ts_seconds END) AS as_of_ts,
  {findings},
  {windows}
FROM placed GROUP BY status"""


def valid_customers_sql(path: Path, now: datetime) -> str:
    """Every customer with a valid row (the engine contract's ``valid_customers``)."""
    header, delimiter = read_header(path)
    return f"""{checked_sql(path, header, delimiter, now, dedup=False)}
SELECT DISTINCT {ID} FROM checked WHERE reason IS NULL"""


def rows_with_reason(path: Path, now: datetime, reason: str) -> pd.DataFrame:
    """(customer_id, transaction_id) of the rows this engine quarantines for ``reason``
    (row-level reasons only): used to explain a difference between engines."""
    header, delimiter = read_header(path)
    with prepare(path) as source:
        sql = f"""{checked_sql(source.path, header, delimiter, now, dedup=False)}
SELECT DISTINCT {ID}, transaction_id FROM checked WHERE reason = {lit(reason)}"""
        return connect().execute(sql).df()


def connect(threads: int | None = None, memory_limit: str | None = None) -> Connection:
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = true")  # row_number() OVER () = file order
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        con.execute(f"SET memory_limit = {lit(memory_limit)}")
    return con


def register_window(con: Connection, window: Window | None) -> None:
    """Make ``decision_windows`` the run's table of decision dates (decision mode only)."""
    if window is not None:
        con.register(WINDOWS, window.frame())


def run_features(
    path: Path, now: datetime, con: Connection | None = None, window: Window | None = None
) -> pd.DataFrame:
    """Per-customer features, columns ``customer_id`` + ``FEATURE_NAMES``, sorted by id."""
    con = con or connect()
    register_window(con, window)
    with prepare(path) as source:
        return con.execute(features_sql(source.path, now, dated=window is not None)).df()


def run_tally(
    path: Path, now: datetime, con: Connection | None = None, window: Window | None = None
) -> Tally:
    """Row accounting as the engine contract's ``Tally``: rows in, used, duplicate, and the
    count per rule (malformed and non-UTF-8 rows from DuckDB's rejects table or the shared
    scan). No example values: this engine only counts."""
    con = con or connect()
    register_window(con, window)
    with prepare(path) as source:
        sql = counts_sql(source.path, now, dated=window is not None)
        frame = con.execute(sql).df().set_index("status")
        set_aside = source.set_aside
    # One rejected line can carry several errors; an encoding error decides its reason.
    rejected = con.execute(
        "SELECT bad, count(*) AS n FROM ("
        " SELECT scan_id, file_id, line, bool_or(error_type = 'INVALID ENCODING') AS bad"
        " FROM reject_errors WHERE scan_id = (SELECT max(scan_id) FROM reject_errors)"
        " GROUP BY ALL) GROUP BY bad"
    ).fetchall()
    by_status = frame["rows"].astype(int).to_dict()
    tally = Tally()
    for code in QUARANTINE_ORDER:
        tally.add(code, by_status.get(str(code), 0), [])
    for bad_utf8, n in rejected:
        tally.add(C.INVALID_UTF8 if bad_utf8 else C.MALFORMED_ROW, int(n), [])
    for code, n in set_aside.items():
        tally.add(code, n, [])
    for code in (*_findings(), *_window_checks()):
        tally.add(code, int(frame[str(code)].sum()), [])
    tally.rows_used = by_status.get(USED, 0)
    tally.rows_duplicate = int(frame["duplicates"].sum())
    tally.add(C.DUPLICATE, tally.rows_duplicate, [])
    quarantined = sum(tally.count(code) for code in QUARANTINE_ORDER)
    tally.rows_in = tally.rows_used + tally.rows_duplicate + quarantined
    as_of = frame["as_of_ts"].max()
    tally.as_of_ts = None if pd.isna(as_of) else int(as_of)
    return tally


def run_counts(path: Path, now: datetime, con: Connection | None = None) -> dict:
    """``run_tally`` as plain numbers: rows_in/used/duplicate/quarantined, the count per
    quarantine reason and per finding (what the benchmark prints next to pandas')."""
    tally = run_tally(path, now, con)
    reasons = {str(code): tally.count(code) for code in QUARANTINE_ORDER}
    return {
        "rows_in": tally.rows_in,
        "rows_used": tally.rows_used,
        "rows_duplicate": tally.rows_duplicate,
        "rows_quarantined": sum(reasons.values()),
        "reasons": reasons,
        "findings": {str(code): tally.count(code) for code in _findings()},
    }


def run_duckdb(
    path: Path,
    labels: Path | None = None,
    *,
    now: datetime,
    generated_at: datetime | None = None,
    con: Connection | None = None,
    lookback_days: int | None = None,
) -> RunResult:
    """The job on DuckDB, filling the engine contract like pandas and Spark (the report
    has counts but no example values; quarantined rows are counted, not written)."""
    started = time.monotonic()
    con = con or connect()
    lookback = lookback_or_requested(lookback_days)
    label_result = read_labels(labels, now) if labels is not None else None
    window = decision_window(label_result, lookback)
    header, delimiter = read_header(path)
    columns = map_columns(header, TRANSACTION_ALIASES, TRANSACTION_REQUIRED, "transactions")
    tally = run_tally(path, now, con, window)
    valid = None
    with prepare(path) as source:
        dated = window is not None
        features = con.execute(features_sql(source.path, now, withhold=False, dated=dated)).df()
        if dated:
            valid = pd.Index(con.execute(valid_customers_sql(source.path, now)).df()[ID])
    return finish_run(
        engine=ENGINE,
        tally=tally,
        shape=InputShape.from_header(header, delimiter, columns),
        features=features,
        labels=label_result,
        rows_quarantined=tally.rows_in - tally.rows_used - tally.rows_duplicate,
        started=started,
        generated_at=generated_at or now,
        window=window,
        valid_customers=valid,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.duckdb_pipeline",
        description="Raw transactions CSV -> per-customer features with one DuckDB query.",
    )
    parser.add_argument("--transactions", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--now", help="run instant, ISO 8601 UTC (default: now)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--counts", action="store_true", help="also write counts.json")
    parser.add_argument(
        "--labels", type=Path, default=None, help="labels; with decision dates, windows apply"
    )
    parser.add_argument("--lookback-days", type=int, default=None)
    args = parser.parse_args(argv)
    now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    args.out.mkdir(parents=True, exist_ok=True)
    con = connect(args.threads)
    started = time.perf_counter()
    target = args.out / "features.parquet"
    window = None
    if args.labels is not None:
        lookback = lookback_or_requested(args.lookback_days)
        window = decision_window(read_labels(args.labels, now), lookback)
    register_window(con, window)
    with prepare(args.transactions) as source:
        sql = features_sql(source.path, now, dated=window is not None)
        con.execute(f"COPY ({sql}) TO {lit(str(target))} (FORMAT parquet)")
    print(f"features written in {time.perf_counter() - started:.2f} s", file=sys.stderr)
    if args.counts:
        counts = run_counts(args.transactions, now, con)
        (args.out / "counts.json").write_text(json.dumps(counts, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
