"""The data-quality rules as typed data: every rule's code, kind, column, action and meaning.

One table for transaction rows (``RULES``) and one for label rows (``LABEL_RULES``), so the
report, the docs and every engine (pandas, Spark, the DuckDB reference) read the same
rules. A rule's ``kind`` says what happens to a row it matches: quarantined, removed (a
duplicate) or kept (a finding: repaired or flagged). Quarantine rules are checked in table
order; the first that matches is the row's reason.

Each engine states which rules it implements and calls ``require_every_rule`` before it
reads a row, so a rule added here without an implementation stops every engine with an
error naming it, instead of being skipped silently. The numbers the rules are stated in
(limits, the quarantine file's columns) live here too; how the values are parsed is
``features.quality``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from features.definitions import ID, TARGET
from features.schema import DECISION_DATE, TRANSACTION_ALIASES


class RuleCode(StrEnum):
    """Every reason or finding the report can name (transactions and labels)."""

    DUPLICATE = "duplicate"
    MALFORMED_ROW = "malformed_row"
    UNTERMINATED_QUOTE = "unterminated_quote"
    NUL_BYTE = "nul_byte"
    INVALID_UTF8 = "invalid_utf8"
    MISSING_CUSTOMER_ID = "missing_customer_id"
    MISSING_TRANSACTION_ID = "missing_transaction_id"
    MISSING_AMOUNT = "missing_amount"
    INVALID_AMOUNT = "invalid_amount"
    AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
    MISSING_TIMESTAMP = "missing_timestamp"
    INVALID_TIMESTAMP = "invalid_timestamp"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    INVALID_TYPE = "invalid_type"
    CONFLICTING_TRANSACTION_ID = "conflicting_transaction_id"
    TYPE_PADDED_OR_MIXED_CASE = "type_padded_or_mixed_case"
    MISSING_TYPE = "missing_type"
    SIGN_DISAGREES_WITH_TYPE = "sign_disagrees_with_type"
    MISSING_DESCRIPTION = "missing_description"
    QUOTED_LINE_BREAK = "quoted_line_break"
    NON_ISO_TIMESTAMP = "non_iso_timestamp"
    LARGE_AMOUNT = "large_amount"
    NO_DECISION_DATE = "no_decision_date"
    OUTSIDE_DECISION_WINDOW = "outside_decision_window"
    INVALID_LABEL = "invalid_label"
    CONFLICTING_LABEL = "conflicting_label"
    MISSING_DECISION_DATE = "missing_decision_date"
    INVALID_DECISION_DATE = "invalid_decision_date"
    CONFLICTING_DECISION_DATE = "conflicting_decision_date"


class RuleKind(StrEnum):
    """What happens to a row a rule matches."""

    QUARANTINED = "quarantined"  # set aside with the rule's code as its reason
    REMOVED = "removed"  # an exact duplicate: one copy kept, the others dropped
    KEPT = "kept"  # a finding: the row is used, repaired or flagged
    # A valid row (counted in rows_used) that lies outside its customer's decision window,
    # so it enters no feature. Only with decision dates (features/README.md).
    OUTSIDE_WINDOW = "outside_window"


@dataclass(frozen=True)
class Rule:
    code: RuleCode
    kind: RuleKind
    column: str
    action: str
    description: str


# |amount| above this (in pence) is implausible for a consumer account: quarantined.
MAX_ABS_AMOUNT_PENCE = 100_000_000  # £1,000,000
# |amount| at or above this (in pence) is flagged as an outlier but kept.
LARGE_AMOUNT_PENCE = 1_000_000  # £10,000
EARLIEST_TIMESTAMP = datetime(1990, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE_SECONDS = 86_400
# Reading rules (features.records): the longest row, in lines and bytes, a quoted field may
# stretch over; a quote left open longer than this is a stray quote, not a multi-line value.
MAX_RECORD_LINES = 16
MAX_RECORD_BYTES = 4 << 20
# Most columns a header may have (a guard against a binary or absurd first line).
MAX_COLUMNS = 1000
# How many example values the report keeps per rule.
EXAMPLES_PER_CHECK = 5
# Days of history before a customer's decision date its features use (with decision dates).
DEFAULT_LOOKBACK_DAYS = 180
# Accepted forms of a decision date: ISO 8601 or UK day-first, a date without a time.
DECISION_DATE_FORMS = ("YYYY-MM-DD", "DD/MM/YYYY")

Q, R, K, W = RuleKind.QUARANTINED, RuleKind.REMOVED, RuleKind.KEPT, RuleKind.OUTSIDE_WINDOW
C = RuleCode

RULES: tuple[Rule, ...] = (
    Rule(
        C.DUPLICATE,
        R,
        "*",
        "removed (first copy kept)",
        "Row identical in every field to an earlier row.",
    ),
    Rule(
        C.MALFORMED_ROW,
        Q,
        "*",
        "quarantined",
        "Row has the wrong number of fields, or text between a closing quote and the next "
        'delimiter (e.g. "a"b).',
    ),
    Rule(
        C.UNTERMINATED_QUOTE,
        Q,
        "*",
        "quarantined (that line only; reading resumes at the next line)",
        f"A quote opens a field that does not close cleanly within {MAX_RECORD_LINES} lines "
        "(features/README.md, rows and quoting).",
    ),
    Rule(C.NUL_BYTE, Q, "*", "quarantined", "Row contains a NUL byte (not text)."),
    Rule(
        C.INVALID_UTF8,
        Q,
        "*",
        "quarantined (bytes kept, escaped, in raw_line)",
        "Row contains bytes that are not UTF-8 text.",
    ),
    Rule(C.MISSING_CUSTOMER_ID, Q, "customer_id", "quarantined", "Customer id empty."),
    Rule(C.MISSING_TRANSACTION_ID, Q, "transaction_id", "quarantined", "Transaction id empty."),
    Rule(C.MISSING_AMOUNT, Q, "amount", "quarantined", "Amount empty."),
    Rule(
        C.INVALID_AMOUNT,
        Q,
        "amount",
        "quarantined",
        "Amount is not a plain decimal with at most 2 dp (e.g. 1e308, NaN, inf, 12.345).",
    ),
    Rule(
        C.AMOUNT_OUT_OF_RANGE,
        Q,
        "amount",
        "quarantined",
        f"|amount| above £{MAX_ABS_AMOUNT_PENCE // 100:,}.",
    ),
    Rule(C.MISSING_TIMESTAMP, Q, "timestamp", "quarantined", "Timestamp empty."),
    Rule(
        C.INVALID_TIMESTAMP,
        Q,
        "timestamp",
        "quarantined",
        "Timestamp in no accepted format (ISO 8601, with or without a zone, or DD/MM/YYYY) "
        "or not a real date and time.",
    ),
    Rule(
        C.TIMESTAMP_OUT_OF_RANGE,
        Q,
        "timestamp",
        "quarantined",
        f"Timestamp before {EARLIEST_TIMESTAMP:%Y-%m-%d} or more than a day after the run "
        "(UK time).",
    ),
    Rule(C.INVALID_TYPE, Q, "type", "quarantined", "Type is not debit/credit (dr/cr/d/c)."),
    Rule(
        C.CONFLICTING_TRANSACTION_ID,
        Q,
        "transaction_id",
        "quarantined (first row kept)",
        "Transaction id already used by an earlier valid row with different content.",
    ),
    Rule(
        C.TYPE_PADDED_OR_MIXED_CASE,
        K,
        "type",
        "normalised (trimmed, lowercased)",
        "Type has surrounding spaces or capitals, e.g. ' Debit '.",
    ),
    Rule(
        C.MISSING_TYPE,
        K,
        "type",
        "direction inferred from the amount's sign",
        "Type empty (or no type column).",
    ),
    Rule(
        C.SIGN_DISAGREES_WITH_TYPE,
        K,
        "amount",
        "sign set from the type",
        "A debit with a positive amount or a credit with a negative one.",
    ),
    Rule(
        C.MISSING_DESCRIPTION,
        K,
        "description",
        "kept; no merchant category",
        "Description empty.",
    ),
    Rule(
        C.QUOTED_LINE_BREAK,
        K,
        "*",
        "kept",
        "A quoted field holds a line break, so the row spans several lines of the file.",
    ),
    Rule(
        C.NON_ISO_TIMESTAMP,
        K,
        "timestamp",
        "parsed as UK day-first DD/MM/YYYY",
        "Timestamp not in ISO 8601.",
    ),
    Rule(
        C.LARGE_AMOUNT,
        K,
        "amount",
        "kept; flagged as outlier",
        f"|amount| of £{LARGE_AMOUNT_PENCE // 100:,} or more.",
    ),
    Rule(
        C.NO_DECISION_DATE,
        W,
        "customer_id",
        "kept out of the features",
        "Labels carry decision dates but none for this row's customer (unlabelled, or its "
        "label row was quarantined), so the row has no decision window.",
    ),
    Rule(
        C.OUTSIDE_DECISION_WINDOW,
        W,
        "timestamp",
        "kept out of the features",
        "On or after the customer's decision date, or more than the lookback before it.",
    ),
)
RULES_BY_CODE: dict[RuleCode, Rule] = {r.code: r for r in RULES}
QUARANTINE_ORDER: tuple[RuleCode, ...] = tuple(r.code for r in RULES if r.kind is Q)
FINDINGS: tuple[RuleCode, ...] = tuple(r.code for r in RULES if r.kind is K)
# Valid rows kept out of the features by the decision window, in table order.
WINDOW_RULES: tuple[RuleCode, ...] = tuple(r.code for r in RULES if r.kind is W)
# Reasons decided while cutting the file into rows (features.records / features.reader),
# in the order of the reader's reason numbers.
READER_RULES: tuple[RuleCode, ...] = (C.UNTERMINATED_QUOTE, C.MALFORMED_ROW, C.NUL_BYTE)

LABEL_RULES: tuple[Rule, ...] = (
    Rule(C.DUPLICATE, R, ID, "removed (one kept)", "Identical label row repeated."),
    Rule(C.MISSING_CUSTOMER_ID, Q, ID, "quarantined", "Customer id empty."),
    Rule(C.INVALID_LABEL, Q, TARGET, "quarantined", "Label is not 0/1 (or true/false)."),
    Rule(
        C.MISSING_DECISION_DATE,
        Q,
        DECISION_DATE,
        "quarantined; customer treated as unlabelled",
        "Decision date empty while other label rows have one.",
    ),
    Rule(
        C.INVALID_DECISION_DATE,
        Q,
        DECISION_DATE,
        "quarantined; customer treated as unlabelled",
        f"Decision date not a real date in an accepted form ({', '.join(DECISION_DATE_FORMS)}), "
        f"or before {EARLIEST_TIMESTAMP:%Y-%m-%d} or after the run's date (UK).",
    ),
    Rule(
        C.CONFLICTING_LABEL,
        Q,
        TARGET,
        "quarantined; customer treated as unlabelled",
        "Same customer labelled both 0 and 1.",
    ),
    Rule(
        C.CONFLICTING_DECISION_DATE,
        Q,
        DECISION_DATE,
        "quarantined; customer treated as unlabelled",
        "Same customer given two different decision dates.",
    ),
    Rule(C.MALFORMED_ROW, Q, ID, "quarantined", "Row has the wrong number of fields."),
    Rule(
        C.UNTERMINATED_QUOTE,
        Q,
        ID,
        "quarantined (that line only)",
        "A quoted field never closes.",
    ),
    Rule(C.NUL_BYTE, Q, ID, "quarantined", "Row contains a NUL byte."),
)
LABEL_QUARANTINE_ORDER: tuple[RuleCode, ...] = tuple(r.code for r in LABEL_RULES if r.kind is Q)

# The quarantine files' columns, whatever the input: the input's value for each canonical
# column (empty when the input has no such column or the row could not be split), why the
# row was rejected, and the row exactly as it was in the file (``features.reader.escape_raw``).
REASON, RAW_LINE = "reason", "raw_line"
QUARANTINE_COLUMNS = (*TRANSACTION_ALIASES, REASON, RAW_LINE)
LABEL_QUARANTINE_COLUMNS = (ID, TARGET, REASON, RAW_LINE)


class UnimplementedRuleError(RuntimeError):
    """An engine lacks a rule of the table (a programming error, never bad data)."""


def require_every_rule(
    engine: str,
    implemented: Iterable[RuleCode],
    *,
    unsupported: Mapping[RuleCode, str] | None = None,
    rules: Iterable[Rule] | None = None,
) -> None:
    """Raise ``UnimplementedRuleError`` unless ``engine`` implements every rule.

    ``implemented`` is every code the engine decides; ``unsupported`` the codes it cannot
    decide by design, each with the reason (stated in the docs, never silent). ``rules``
    defaults to the transaction table as it is when called.
    """
    table = tuple(RULES if rules is None else rules)
    wanted = {r.code for r in table}
    done = set(implemented)
    excused = dict(unsupported or {})
    missing = sorted(wanted - done - set(excused))
    unknown = sorted((done | set(excused)) - wanted)
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"no implementation of {', '.join(map(str, missing))}")
        if unknown:
            parts.append(f"implements codes that are not rules: {', '.join(map(str, unknown))}")
        raise UnimplementedRuleError(f"{engine} engine: {'; '.join(parts)}")


# Rules that fire on an empty value: the offending column has nothing to show.
_EMPTY_VALUE_RULES = frozenset(
    (
        C.MISSING_CUSTOMER_ID,
        C.MISSING_AMOUNT,
        C.MISSING_TIMESTAMP,
        C.MISSING_TYPE,
        C.MISSING_DESCRIPTION,
    )
)


def example_column(code: RuleCode, available: Iterable[str]) -> str:
    """Which column's values illustrate a rule in the report: the offending column's, or
    the transaction id where that column is empty or absent (the customer id for a
    missing transaction id)."""
    if code is C.MISSING_TRANSACTION_ID:
        return "customer_id"
    column = RULES_BY_CODE[code].column
    if code in _EMPTY_VALUE_RULES or column not in set(available):
        return "transaction_id"
    return column
