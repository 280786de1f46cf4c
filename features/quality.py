"""Row-level data-quality rules: parse, validate and repair one chunk of raw transactions.

Every rule is listed in ``RULES`` with its code, the column it looks at and what we do,
so the report, the docs and every engine (pandas here, Spark in ``features.spark``) agree.
Quarantine rules are checked in ``QUARANTINE_ORDER``; the first that matches is the
row's reason. Findings are repaired or flagged and the row is kept.

Assumptions (documented here because the data does not say):
* amounts are GBP with at most 2 decimal places; "£" and 1,234.56 separators are accepted;
* the type column, when present and valid, decides the direction; the sign is repaired;
* DD/MM/YYYY dates are UK day-first, never US month-first;
* a missing description is an empty description (no merchant category).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class Rule:
    code: str
    column: str
    action: str
    description: str


# |amount| above this (in pence) is implausible for a consumer account: quarantined.
MAX_ABS_AMOUNT_PENCE = 100_000_000  # £1,000,000
# |amount| at or above this (in pence) is flagged as an outlier but kept.
LARGE_AMOUNT_PENCE = 1_000_000  # £10,000
# Longest digit string (sign and point included) parsed as a number; longer is out of range.
MAX_AMOUNT_CHARS = 16
EARLIEST_TIMESTAMP = datetime(1990, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE_SECONDS = 86_400

AMOUNT_PATTERN = r"^(?:[+-]?£?|£[+-])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d{1,2})?$"
ISO_FORMATS = (
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)
UK_FORMATS = ("%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y")
DEBIT_WORDS = ("debit", "dr", "d")
CREDIT_WORDS = ("credit", "cr", "c")

RULES: tuple[Rule, ...] = (
    Rule(
        "duplicate",
        "*",
        "removed (first copy kept)",
        "Row identical in every field to an earlier row.",
    ),
    Rule("malformed_row", "*", "quarantined", "Row has the wrong number of fields."),
    Rule(
        "invalid_utf8",
        "*",
        "quarantined (bytes kept, escaped, in raw_line)",
        "Row contains bytes that are not UTF-8 text.",
    ),
    Rule("missing_customer_id", "customer_id", "quarantined", "Customer id empty."),
    Rule("missing_transaction_id", "transaction_id", "quarantined", "Transaction id empty."),
    Rule("missing_amount", "amount", "quarantined", "Amount empty."),
    Rule(
        "invalid_amount",
        "amount",
        "quarantined",
        "Amount is not a plain decimal with at most 2 dp (e.g. 1e308, NaN, inf, 12.345).",
    ),
    Rule("amount_out_of_range", "amount", "quarantined", "|amount| above £1,000,000."),
    Rule("missing_timestamp", "timestamp", "quarantined", "Timestamp empty."),
    Rule(
        "invalid_timestamp",
        "timestamp",
        "quarantined",
        "Timestamp in no accepted format (ISO 8601 or DD/MM/YYYY).",
    ),
    Rule(
        "timestamp_out_of_range",
        "timestamp",
        "quarantined",
        "Timestamp before 1990-01-01 or more than a day after the run.",
    ),
    Rule("invalid_type", "type", "quarantined", "Type is not debit/credit (dr/cr/d/c)."),
    Rule(
        "conflicting_transaction_id",
        "transaction_id",
        "quarantined (first row kept)",
        "Transaction id already used by an earlier valid row with different content.",
    ),
    Rule(
        "type_padded_or_mixed_case",
        "type",
        "normalised (trimmed, lowercased)",
        "Type has surrounding spaces or capitals, e.g. ' Debit '.",
    ),
    Rule(
        "missing_type",
        "type",
        "direction inferred from the amount's sign",
        "Type empty (or no type column).",
    ),
    Rule(
        "sign_disagrees_with_type",
        "amount",
        "sign set from the type",
        "A debit with a positive amount or a credit with a negative one.",
    ),
    Rule("missing_description", "description", "kept; no merchant category", "Description empty."),
    Rule(
        "non_iso_timestamp",
        "timestamp",
        "parsed as UK day-first DD/MM/YYYY",
        "Timestamp not in ISO 8601.",
    ),
    Rule("large_amount", "amount", "kept; flagged as outlier", "|amount| of £10,000 or more."),
)
RULES_BY_CODE = {r.code: r for r in RULES}
QUARANTINE_ORDER = tuple(r.code for r in RULES if r.action.startswith("quarantined"))
# Position 0 is "no reason" (a valid row).
REASON_NAMES = np.array(["", *QUARANTINE_ORDER], dtype=object)
REASON_INDEX = {code: i for i, code in enumerate(REASON_NAMES) if code}
FINDINGS = tuple(r.code for r in RULES if r.code != "duplicate" and r.code not in QUARANTINE_ORDER)


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
    findings: dict[str, np.ndarray]  # code -> bool mask


def _blank(values: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.equal(values, ""), True))


def _to_bool(mask: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(mask, False))


def parse_amount_pence(raw: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pence, is_missing, is_invalid, is_too_long) for raw amount strings, exact to the penny.

    ``is_too_long`` marks well-formed numbers with more digits than any plausible amount
    (they would overflow the decimal type); they are out of range, not malformed.
    """
    text = pc.utf8_trim_whitespace(raw)
    missing = _blank(text)
    well_formed = _to_bool(pc.match_substring_regex(text, AMOUNT_PATTERN))
    cleaned = pc.replace_substring_regex(text, r"[£,]", "")
    too_long = well_formed & (np.asarray(pc.utf8_length(cleaned)) > MAX_AMOUNT_CHARS)
    safe = pc.if_else(pa.array(well_formed & ~too_long), cleaned, "0")
    pence = pc.cast(
        pc.multiply(pc.cast(safe, pa.decimal128(20, 2)), pa.scalar(100, pa.decimal128(3, 0))),
        pa.int64(),
    )
    return np.asarray(pence), missing, ~missing & ~well_formed, too_long


def _field_offsets(fmt: str) -> dict[str, int]:
    """Character offset of each field in a zero-padded rendering of ``fmt``."""
    offsets, position, i = {}, 0, 0
    while i < len(fmt):
        if fmt[i] == "%":
            offsets[fmt[i + 1]] = position
            position += 4 if fmt[i + 1] == "Y" else 2
            i += 2
        else:
            position += 1
            i += 1
    offsets["length"] = position
    return offsets


# A clock time whose fields are in range; strptime would roll 10:00:60 into 10:01:00.
VALID_CLOCK = r"(?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d)?$"


def _is_real_date(text: pa.Array, parsed: pa.Array, fmt: str) -> np.ndarray:
    """strptime rolls impossible values over (30 February -> 2 March, second 60 -> next
    minute) and accepts unpadded fields. A value is kept only if its text has the format's
    exact length, the parsed day and month read back as written, and any clock time is in
    range."""
    at = _field_offsets(fmt)
    exact = pc.equal(pc.utf8_length(text), at["length"])
    for field, component in (("d", pc.day), ("m", pc.month)):
        digits = pc.utf8_lpad(pc.cast(component(parsed), pa.string()), 2, "0")
        start = at[field]
        exact = pc.and_(exact, pc.equal(pc.utf8_slice_codeunits(text, start, start + 2), digits))
    if "H" in at:
        clock = pc.utf8_slice_codeunits(text, at["H"], at["length"])
        exact = pc.and_(exact, pc.match_substring_regex(clock, "^" + VALID_CLOCK))
    return np.asarray(pc.fill_null(exact, False))


def parse_timestamp(raw: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(epoch seconds, is_missing, is_invalid, is_non_iso) for raw timestamp strings.

    Formats are tried in order, ISO first; each later format only sees the rows that the
    earlier ones could not parse, so a clean ISO column costs one pass. Fields must be
    zero-padded (2025-02-01, not 2025-2-1) and the date must exist.
    """
    text = pc.replace_substring_regex(pc.utf8_trim_whitespace(raw), r"Z$", "")
    missing = _blank(text)
    seconds = np.zeros(len(text), dtype=np.int64)
    parsed = np.zeros(len(text), dtype=bool)
    non_iso = np.zeros(len(text), dtype=bool)
    remaining = np.flatnonzero(~missing)
    for fmt in ISO_FORMATS + UK_FORMATS:
        if not len(remaining):
            break
        candidates = text.take(remaining)
        attempt = pc.strptime(candidates, format=fmt, unit="s", error_is_null=True)
        ok = np.asarray(pc.is_valid(attempt))
        ok[ok] = _is_real_date(candidates.filter(ok), attempt.filter(ok), fmt)
        hit = remaining[ok]
        seconds[hit] = np.asarray(pc.cast(attempt.filter(ok), pa.int64()))
        parsed[hit] = True
        non_iso[hit] = fmt in UK_FORMATS
        remaining = remaining[~ok]
    return seconds, missing, ~missing & ~parsed, non_iso


def parse_chunk(columns: dict[str, pa.Array], now: datetime) -> ParsedChunk:
    """Apply every row-level rule to one chunk of raw string columns (canonical names).

    ``type`` and ``description`` may be absent; the four required columns may not.
    """
    n = len(columns["customer_id"])
    customer_id = pc.utf8_trim_whitespace(columns["customer_id"])
    transaction_id = pc.utf8_trim_whitespace(columns["transaction_id"])
    pence, amount_missing, amount_invalid, amount_too_long = parse_amount_pence(columns["amount"])
    ts, ts_missing, ts_invalid, non_iso = parse_timestamp(columns["timestamp"])
    earliest = int(EARLIEST_TIMESTAMP.timestamp())
    latest = int(now.timestamp()) + FUTURE_TOLERANCE_SECONDS
    ts_ok = ~ts_missing & ~ts_invalid

    raw_type = columns.get("type", pa.nulls(n, pa.string()))
    type_text = pc.utf8_lower(pc.utf8_trim_whitespace(raw_type))
    type_missing = _blank(type_text)
    is_debit_word = _to_bool(pc.is_in(type_text, pa.array(DEBIT_WORDS)))
    is_credit_word = _to_bool(pc.is_in(type_text, pa.array(CREDIT_WORDS)))
    type_invalid = ~type_missing & ~is_debit_word & ~is_credit_word
    type_untidy = ~type_missing & _to_bool(pc.not_equal(raw_type, type_text))

    checks = {
        "missing_customer_id": _blank(customer_id),
        "missing_transaction_id": _blank(transaction_id),
        "missing_amount": amount_missing,
        "invalid_amount": amount_invalid,
        "amount_out_of_range": ~amount_missing
        & ~amount_invalid
        & ((np.abs(pence) > MAX_ABS_AMOUNT_PENCE) | amount_too_long),
        "missing_timestamp": ts_missing,
        "invalid_timestamp": ts_invalid,
        "timestamp_out_of_range": ts_ok & ((ts < earliest) | (ts > latest)),
        "invalid_type": type_invalid,
    }
    reason = np.zeros(n, dtype=np.int8)
    for code in QUARANTINE_ORDER:
        mask = checks.get(code)
        if mask is not None:
            reason[mask & (reason == 0)] = REASON_INDEX[code]

    is_debit = is_debit_word | (type_missing & (pence < 0))
    signed = np.where(is_debit, -np.abs(pence), np.abs(pence))
    description = columns.get("description", pa.nulls(n, pa.string()))
    findings = {
        "type_padded_or_mixed_case": type_untidy & ~type_invalid,
        "missing_type": type_missing,
        "sign_disagrees_with_type": ~type_missing & (signed != pence),
        "missing_description": _blank(pc.utf8_trim_whitespace(description)),
        "non_iso_timestamp": non_iso,
        "large_amount": np.abs(pence) >= LARGE_AMOUNT_PENCE,
    }
    return ParsedChunk(
        reason=reason,
        customer_id=customer_id,
        transaction_id=transaction_id,
        amount_pence=signed.astype(np.int64),
        ts=ts,
        description=pc.fill_null(description, ""),
        findings=findings,
    )
