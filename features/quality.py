"""Row-level data-quality rules: parse, validate and repair one chunk of raw transactions.

The rules themselves (codes, kinds, order, limits) are data in ``features.rules``; this
module parses amounts and timestamps and decides the value rules (``parse_chunk``) for
the pandas engine. Its patterns and constants are what the Spark and DuckDB engines
translate, so every engine applies the same rule.

Assumptions (documented here because the data does not say):
* amounts are GBP with at most 2 decimal places; "£" and 1,234.56 separators are accepted;
* the type column, when present and valid, decides the direction; the sign is repaired;
* DD/MM/YYYY dates are UK day-first, never US month-first;
* timestamps are read on the UK wall clock (Europe/London): one written without a zone is
  already UK local time; one with ``Z`` or an offset is converted to UK local time, so the
  same moment gets the same calendar day and month however a feed writes it. Fractions
  of a second are dropped (truncated);
* a missing description is an empty description (no merchant category).

The rules for reading rows (quoting, line breaks) are in ``features.records``; both are
stated for people in ``features/README.md``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.rules import (
    EARLIEST_TIMESTAMP,
    FUTURE_TOLERANCE_SECONDS,
    LARGE_AMOUNT_PENCE,
    MAX_ABS_AMOUNT_PENCE,
    QUARANTINE_ORDER,
    RuleCode,
)

C = RuleCode

# Longest number (sign and point included, leading zeros not counted) parsed exactly; a
# longer one is far above MAX_ABS_AMOUNT_PENCE, so it is out of range without parsing.
MAX_AMOUNT_CHARS = 16

AMOUNT_PATTERN = r"^(?:[+-]?£?|£[+-])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d{1,2})?$"
# Leading zeros of a cleaned amount ("-000012.50" -> "-12.50"), before its length is judged.
AMOUNT_LEADING_ZEROS = (r"^([+-]?)0+([0-9])", r"\1\2")

# Timestamps. The wall clock they are read on (see the module doc).
UK_ZONE = "Europe/London"
# ISO 8601: date, optional time with T or one space, optional seconds with an optional
# fraction (any number of digits up to 9), optional zone (Z, +hh, +hhmm or +hh:mm). Fields
# are zero-padded. Groups, in order: year, month, day, hour, minute, second, fraction,
# zone, sign, offset hours, offset minutes.
ISO_TIMESTAMP = (
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,9}))?)?"
    r"(Z|([+-])([0-9]{2})(?::?([0-9]{2}))?)?)?$"
)
# The common cases (ISO without fraction or zone) have fixed layouts, read byte-wise with
# numpy: Y/M/D/h/m/s are digits of that field, "T" is T or a space, others are literal.
# They accept exactly what ISO_TIMESTAMP accepts in these shapes.
PLAIN_ISO_LAYOUTS = ("YYYY-MM-DDThh:mm:ss", "YYYY-MM-DDThh:mm", "YYYY-MM-DD")
ISO_GROUPS = ("year", "month", "day", "hour", "minute", "second", "fraction", "zone")
ISO_GROUPS += ("sign", "offset_hour", "offset_minute")
# UK day-first dates (no zone: UK local time). Groups: day, month, year, hour, minute, second.
UK_TIMESTAMP = r"^([0-9]{2})/([0-9]{2})/([0-9]{4})(?: ([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?)?$"
UK_GROUPS = ("day", "month", "year", "hour", "minute", "second")
# Largest value of each field (the day is further limited by its month; no leap seconds).
FIELD_MAX = {"hour": 23, "minute": 59, "second": 59, "offset_hour": 23, "offset_minute": 59}
DEBIT_WORDS = ("debit", "dr", "d")
CREDIT_WORDS = ("credit", "cr", "c")

# Position 0 is "no reason" (a valid row); reason i is QUARANTINE_ORDER[i - 1].
REASON_NAMES = np.array(["", *(str(code) for code in QUARANTINE_ORDER)], dtype=object)
REASON_INDEX: dict[RuleCode, int] = {code: i + 1 for i, code in enumerate(QUARANTINE_ORDER)}


@dataclass
class ParsedChunk:
    """Typed columns for every row of a chunk, plus why each invalid row is invalid.

    ``reason`` is 0 for valid rows, else 1 + the rule's position in ``QUARANTINE_ORDER``
    (small integers compare far faster than strings); ``REASON_NAMES`` maps it back.
    Typed values of invalid rows are placeholders.
    """

    reason: np.ndarray  # int8 index into REASON_NAMES
    customer_id: pa.Array
    transaction_id: pa.Array
    amount_pence: np.ndarray  # int64, signed, sign repaired from type
    ts: np.ndarray  # int64 epoch seconds
    description: pa.Array
    findings: dict[RuleCode, np.ndarray]  # code -> bool mask
    checked: tuple[RuleCode, ...]  # the quarantine rules decided here


def _blank(values: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.equal(values, ""), True))


def _to_bool(mask: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(mask, False))


def parse_amount_pence(raw: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pence, is_missing, is_invalid, is_too_long) for raw amount strings, exact to the penny.

    ``is_too_long`` marks well-formed numbers with more significant characters than any
    plausible amount (they would overflow the decimal type); they are out of range, not
    malformed. Leading zeros do not count: "000000000000000012.50" is 12.50.

    The common shape (an optional sign, digits, a point and two digits: ``-85.00``) is read
    byte-wise with numpy (``_plain_amounts``); everything else by ``AMOUNT_PATTERN``.
    """
    text = pc.utf8_trim_whitespace(raw)
    n = len(text)
    pence = np.zeros(n, dtype=np.int64)
    plain = np.zeros(n, dtype=bool)
    length = np.asarray(pc.fill_null(pc.binary_length(text), 0))
    for size in np.unique(length[(length >= 4) & (length <= PLAIN_AMOUNT_MAX_CHARS)]).tolist():
        rows = np.flatnonzero(length == size)
        shaped, value = _plain_amounts(_fixed_grid(text, rows, size))
        plain[rows[shaped]] = True
        pence[rows[shaped]] = value[shaped]
    missing = np.zeros(n, dtype=bool)
    invalid = np.zeros(n, dtype=bool)
    too_long = np.zeros(n, dtype=bool)
    rest = np.flatnonzero(~plain)
    if len(rest):
        found = _amounts_by_pattern(text.take(pa.array(rest)))
        pence[rest], missing[rest], invalid[rest], too_long[rest] = found
    return pence, missing, invalid, too_long


# Plain amounts up to this many characters (sign included) fit in int64 pence with room.
PLAIN_AMOUNT_MAX_CHARS = MAX_AMOUNT_CHARS


def _plain_amounts(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For values of one length as a (rows, length) byte grid: which are ``[+-]?d+.dd``
    (a subset of ``AMOUNT_PATTERN``), and their signed pence."""
    size = grid.shape[1]
    grid = np.ascontiguousarray(grid.T)  # one contiguous row per character position
    digit = grid - np.uint8(48)  # bytes below "0" wrap round to large values
    is_digit = digit <= 9
    minus = grid[0] == ord("-")
    signed = minus | (grid[0] == ord("+"))
    shaped = (signed | is_digit[0]) & (grid[size - 3] == ord("."))
    shaped &= is_digit[size - 2] & is_digit[size - 1]
    if size < 5:  # "-.50" has no digit before the point
        shaped &= ~signed
    value = np.where(is_digit[0], digit[0], 0).astype(np.int64)
    for i in range(1, size - 3):
        shaped &= is_digit[i]
        value *= 10
        value += digit[i]
    value *= 100
    value += digit[size - 2].astype(np.int64) * 10 + digit[size - 1]
    return shaped, np.where(minus, -value, value)


def _amounts_by_pattern(text: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``parse_amount_pence`` for trimmed text of any shape, by ``AMOUNT_PATTERN``."""
    missing = _blank(text)
    well_formed = _to_bool(pc.match_substring_regex(text, AMOUNT_PATTERN))
    cleaned = pc.replace_substring_regex(text, r"[£,]", "")
    long = well_formed & (np.asarray(pc.utf8_length(cleaned)) > MAX_AMOUNT_CHARS)
    if long.any():  # only a long value can be shortened by dropping its leading zeros
        mask = pa.array(long)
        short = pc.replace_substring_regex(cleaned.filter(mask), *AMOUNT_LEADING_ZEROS)
        cleaned = pc.replace_with_mask(cleaned, mask, short)
    too_long = well_formed & (np.asarray(pc.utf8_length(cleaned)) > MAX_AMOUNT_CHARS)
    safe = pc.if_else(pa.array(well_formed & ~too_long), cleaned, "0")
    pence = pc.cast(
        pc.multiply(pc.cast(safe, pa.decimal128(20, 2)), pa.scalar(100, pa.decimal128(3, 0))),
        pa.int64(),
    )
    return np.asarray(pence), missing, ~missing & ~well_formed, too_long


def _fixed_grid(text: pa.Array, rows: np.ndarray, size: int) -> np.ndarray:
    """The values at ``rows``, all ``size`` bytes long, as a (rows, size) uint8 grid."""
    picked = text if len(rows) == len(text) else text.take(pa.array(rows))
    start = np.frombuffer(picked.buffers()[1], dtype=np.int32, count=1, offset=picked.offset * 4)
    count = len(picked) * size
    grid = np.frombuffer(picked.buffers()[2], dtype=np.uint8, count=count, offset=int(start[0]))
    return grid.reshape(len(picked), size)


def days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of a proleptic Gregorian date; month 13 is January of the next
    year, so month lengths come out as differences. Integer arithmetic only."""
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    shifted = np.where(month > 2, month - 3, month + 9)
    doy = (153 * shifted + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@functools.cache
def month_starts() -> np.ndarray:
    """``days_from_civil(year, month, 1)`` for years 0-9999 (every 4-digit year a timestamp
    can hold) and months 1-13, as a (10000, 14) table; column 0 is unused."""
    year = np.arange(10_000, dtype=np.int64)[:, None]
    month = np.arange(14, dtype=np.int64)[None, :]
    table = days_from_civil(year, np.maximum(month, 1), np.ones_like(month))
    table[:, 0] = 0
    return table


@functools.cache
def uk_offsets() -> tuple[np.ndarray, np.ndarray]:
    """(instants at which the UK's UTC offset changes, the offset in seconds from then on),
    1970-2200, from the time-zone database (``UK_ZONE``). Cached: built once, in ~20 ms."""
    zone = ZoneInfo(UK_ZONE)

    def offset(t: int) -> int:
        shift = datetime.fromtimestamp(t, zone).utcoffset()
        return int(shift.total_seconds()) if shift is not None else 0

    def year_start(year: int, month: int = 1) -> int:
        return int(datetime(year, month, 1, tzinfo=UTC).timestamp())

    times, offsets = [np.iinfo(np.int64).min], [offset(year_start(1970))]
    for year in range(1970, 2201):
        for a, b in (
            (year_start(year), year_start(year, 7)),
            (year_start(year, 7), year_start(year + 1)),
        ):
            if offset(a) == offset(b):
                continue
            low, high = a, b  # offset(low) differs from offset(high): bisect to the change
            while high - low > 1:
                middle = (low + high) // 2
                if offset(middle) == offset(a):
                    low = middle
                else:
                    high = middle
            times.append(high)
            offsets.append(offset(high))
    return np.array(times, dtype=np.int64), np.array(offsets, dtype=np.int64)


def uk_wall_clock(instant: np.ndarray) -> np.ndarray:
    """UTC epoch seconds -> the same moment on the UK wall clock, as epoch-style seconds."""
    times, offsets = uk_offsets()
    return instant + offsets[np.searchsorted(times, instant, side="right") - 1]


def timestamp_window(now: datetime) -> tuple[int, int]:
    """(earliest, latest) accepted timestamp, UK wall-clock seconds, for a run at ``now``:
    the ``timestamp_out_of_range`` rule, as every engine applies it."""
    return int(EARLIEST_TIMESTAMP.timestamp()), uk_now(now) + FUTURE_TOLERANCE_SECONDS


def uk_now(now: datetime) -> int:
    """The run's instant on the UK wall clock (what timestamps are compared with)."""
    instant = now if now.tzinfo else now.replace(tzinfo=UTC)
    return int(uk_wall_clock(np.array([int(instant.timestamp())]))[0])


def named(pattern: str, names: tuple[str, ...]) -> str:
    """``pattern`` with its capture groups named (Arrow's extract_regex needs names)."""
    parts = pattern.split("(")
    out, i = [parts[0]], 0
    for part in parts[1:]:
        if part.startswith("?"):
            out.append("(" + part)
        else:
            out.append(f"(?P<{names[i]}>" + part)
            i += 1
    return "".join(out)


def _fields(text: pa.Array, pattern: str, names: tuple[str, ...]) -> tuple[np.ndarray, dict]:
    """Which values match ``pattern``, and each group as integers (0 where empty)."""
    found = pc.extract_regex(text, named(pattern, names))
    matched = np.asarray(pc.is_valid(found))
    values = {}
    for name in names:
        column = pc.struct_field(found, name)
        if name in ("zone", "sign"):
            values[name] = np.asarray(pc.fill_null(column, ""), dtype=object)
            continue
        digits = pc.if_else(pc.equal(pc.fill_null(column, ""), ""), "0", column)
        values[name] = np.asarray(pc.cast(digits, pa.int64()))
    return matched, values


_LAYOUT_FIELDS = {"Y": "year", "M": "month", "D": "day", "h": "hour", "m": "minute", "s": "second"}


def _fixed_layout(text: pa.Array, layout: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """For values all ``len(layout)`` bytes long: which have the layout, and their fields."""
    # One row per character position, so each position is a contiguous run of bytes.
    grid = np.ascontiguousarray(_fixed_grid(text, np.arange(len(text)), len(layout)).T)
    digit = grid - np.uint8(48)  # bytes below "0" wrap round to large values
    positions = [i for i, char in enumerate(layout) if char in _LAYOUT_FIELDS]
    shaped = np.all(digit[positions] <= 9, axis=0)
    values: dict[str, np.ndarray] = {
        name: np.zeros(len(text), dtype=np.int64) for name in ("hour", "minute", "second")
    }
    fields: dict[str, list[int]] = {}
    for i, char in enumerate(layout):
        if char in _LAYOUT_FIELDS:
            fields.setdefault(_LAYOUT_FIELDS[char], []).append(i)
        elif char == "T":
            shaped &= (grid[i] == ord("T")) | (grid[i] == ord(" "))
        else:
            shaped &= grid[i] == ord(char)
    for name, where in fields.items():
        value = digit[where[0]].astype(np.int32)
        for i in where[1:]:
            value *= 10
            value += digit[i]
        values[name] = value.astype(np.int64)
    return shaped, values


def _clock(values: dict) -> tuple[np.ndarray, np.ndarray]:
    """(fields make a real date and time, epoch-style seconds of the written wall clock)."""
    year, month, day = values["year"], values["month"], values["day"]
    ok = (month >= 1) & (month <= 12) & (day >= 1) & (year >= 0) & (year <= 9999)
    table = month_starts()
    row, column = np.where(ok, year, 0), np.where(ok, month, 1)
    first = table[row, column]
    ok &= day <= table[row, column + 1] - first
    for name, largest in FIELD_MAX.items():
        if name in values:
            ok &= values[name] <= largest
    seconds = (first + day - 1) * 86_400
    seconds += values["hour"] * 3600 + values["minute"] * 60 + values["second"]
    return ok, seconds


def parse_timestamp(raw: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(UK wall-clock epoch seconds, is_missing, is_invalid, is_non_iso) for raw timestamps.

    ISO 8601 is tried first; the UK day-first form only on what is left. A value is valid
    only if it has exactly an accepted shape and its fields make a real date and time.
    """
    text = pc.utf8_trim_whitespace(raw)
    missing = _blank(text)
    n = len(text)
    seconds = np.zeros(n, dtype=np.int64)
    valid = np.zeros(n, dtype=bool)
    non_iso = np.zeros(n, dtype=bool)
    # Fast path: plain ISO values (no fraction, no zone), by field position.
    plain = np.zeros(n, dtype=bool)
    length = np.asarray(pc.fill_null(pc.binary_length(text), 0))
    for layout in PLAIN_ISO_LAYOUTS:
        rows = np.flatnonzero(length == len(layout))
        if not len(rows):
            continue
        shaped, values = _fixed_layout(text.take(pa.array(rows)), layout)
        ok, wall = _clock(values)
        plain[rows[shaped]] = True
        hit = rows[shaped & ok]
        seconds[hit] = wall[shaped & ok]
        valid[hit] = True
    rest = np.flatnonzero(~missing & ~plain)
    iso = np.zeros(n, dtype=bool)
    if len(rest):
        found, values = _fields(text.take(pa.array(rest)), ISO_TIMESTAMP, ISO_GROUPS)
        ok, wall = _clock(values)
        zoned = values["zone"] != ""
        if zoned.any():
            sign = np.where(values["sign"] == "-", -1, 1)
            offset = (values["offset_hour"] * 3600 + values["offset_minute"] * 60) * sign
            wall = np.where(zoned, uk_wall_clock(wall - offset), wall)
        hit = rest[found & ok]
        seconds[hit] = wall[found & ok]
        valid[hit] = True
        iso[rest[found]] = True
    rest = np.flatnonzero(~missing & ~plain & ~iso)
    if len(rest):
        uk, values = _fields(text.take(pa.array(rest)), UK_TIMESTAMP, UK_GROUPS)
        ok, wall = _clock(values)
        hit = rest[uk & ok]
        seconds[hit] = wall[uk & ok]
        valid[hit] = True
        non_iso[hit] = True
    return seconds, missing, ~missing & ~valid, non_iso


def parse_chunk(
    columns: dict[str, pa.Array], now: datetime, line_break: np.ndarray | None = None
) -> ParsedChunk:
    """Apply every row-level rule to one chunk of raw string columns (canonical names).

    ``type`` and ``description`` may be absent; the four required columns may not.
    ``line_break`` marks rows that span several lines of the file (a quoted line break).
    """
    n = len(columns["customer_id"])
    customer_id = pc.utf8_trim_whitespace(columns["customer_id"])
    transaction_id = pc.utf8_trim_whitespace(columns["transaction_id"])
    pence, amount_missing, amount_invalid, amount_too_long = parse_amount_pence(columns["amount"])
    ts, ts_missing, ts_invalid, non_iso = parse_timestamp(columns["timestamp"])
    earliest, latest = timestamp_window(now)
    ts_ok = ~ts_missing & ~ts_invalid

    raw_type = columns.get("type", pa.nulls(n, pa.string()))
    type_text = pc.utf8_lower(pc.utf8_trim_whitespace(raw_type))
    type_missing = _blank(type_text)
    is_debit_word = _to_bool(pc.is_in(type_text, pa.array(DEBIT_WORDS)))
    is_credit_word = _to_bool(pc.is_in(type_text, pa.array(CREDIT_WORDS)))
    type_invalid = ~type_missing & ~is_debit_word & ~is_credit_word
    type_untidy = ~type_missing & _to_bool(pc.not_equal(raw_type, type_text))

    checks = {
        C.MISSING_CUSTOMER_ID: _blank(customer_id),
        C.MISSING_TRANSACTION_ID: _blank(transaction_id),
        C.MISSING_AMOUNT: amount_missing,
        C.INVALID_AMOUNT: amount_invalid,
        C.AMOUNT_OUT_OF_RANGE: ~amount_missing
        & ~amount_invalid
        & ((np.abs(pence) > MAX_ABS_AMOUNT_PENCE) | amount_too_long),
        C.MISSING_TIMESTAMP: ts_missing,
        C.INVALID_TIMESTAMP: ts_invalid,
        C.TIMESTAMP_OUT_OF_RANGE: ts_ok & ((ts < earliest) | (ts > latest)),
        C.INVALID_TYPE: type_invalid,
    }
    reason = np.zeros(n, dtype=np.int8)
    for code in QUARANTINE_ORDER:  # first match wins; the others are decided by the caller
        if code in checks:
            reason[checks[code] & (reason == 0)] = REASON_INDEX[code]

    is_debit = is_debit_word | (type_missing & (pence < 0))
    signed = np.where(is_debit, -np.abs(pence), np.abs(pence))
    description = columns.get("description", pa.nulls(n, pa.string()))
    findings = {
        C.TYPE_PADDED_OR_MIXED_CASE: type_untidy & ~type_invalid,
        C.MISSING_TYPE: type_missing,
        C.SIGN_DISAGREES_WITH_TYPE: ~type_missing & (signed != pence),
        C.MISSING_DESCRIPTION: _blank(pc.utf8_trim_whitespace(description)),
        C.QUOTED_LINE_BREAK: np.zeros(n, dtype=bool) if line_break is None else line_break,
        C.NON_ISO_TIMESTAMP: non_iso,
        C.LARGE_AMOUNT: np.abs(pence) >= LARGE_AMOUNT_PENCE,
    }
    return ParsedChunk(
        reason=reason,
        customer_id=customer_id,
        transaction_id=transaction_id,
        amount_pence=signed.astype(np.int64),
        ts=ts,
        description=pc.fill_null(description, ""),
        findings=findings,
        checked=tuple(checks),
    )
