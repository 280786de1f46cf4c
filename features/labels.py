"""Labels: one 0/1 default flag per customer, with every input row accounted for, and
optionally the date each customer's credit decision was made.

Rules (``features.rules.LABEL_RULES``): identical repeated labels are duplicates (one
kept); a customer labelled both 0 and 1 is ambiguous, so all of its label rows are
quarantined and it is treated as unlabelled; values other than 0/1/true/false are
quarantined. Label files are small: every engine reads them with ``read_labels``.

Decision dates: when the labels file has a decision-date column (``features.schema``
aliases: ``decision_date``, ``application_date``, ...) with at least one value, the run
is in decision-date mode. Then every label row needs a real date, ``YYYY-MM-DD`` or
``DD/MM/YYYY``, from 1990-01-01 to the run's date (UK): a row without one is
``missing_decision_date``, one that is not such a date ``invalid_decision_date``, and a
customer given two different dates is ``conflicting_decision_date`` (all its rows). Each
case is quarantined and the customer treated as unlabelled: a label that cannot be placed
in time cannot be used without leaking what happened after the decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.definitions import ID, SECONDS_PER_DAY, TARGET
from features.quality import days_from_civil, uk_now
from features.reader import RAW, REJECT, Source, decode_utf8, escape_raw, read_all
from features.rules import (
    EARLIEST_TIMESTAMP,
    LABEL_QUARANTINE_COLUMNS,
    LABEL_RULES,
    RAW_LINE,
    READER_RULES,
    REASON,
    RuleCode,
    require_every_rule,
)
from features.schema import (
    DECISION_DATE,
    LABEL_ALIASES,
    LABEL_REQUIRED,
    InputError,
    map_columns,
)

LABEL_VALUES = {"0": 0, "1": 1, "false": 0, "true": 1, "0.0": 0, "1.0": 1}
# The labels quarantine file's columns, whatever the input (as for transactions). A
# decision date is not a column of its own: raw_line holds the whole row.
LABEL_COLUMNS = LABEL_QUARANTINE_COLUMNS
C = RuleCode
# What clean_labels decides; the reader decides READER_RULES.
_DECIDED_HERE = (
    C.DUPLICATE,
    C.MISSING_CUSTOMER_ID,
    C.INVALID_LABEL,
    C.MISSING_DECISION_DATE,
    C.INVALID_DECISION_DATE,
    C.CONFLICTING_LABEL,
    C.CONFLICTING_DECISION_DATE,
)
# The accepted forms of a decision date (features.rules.DECISION_DATE_FORMS), ASCII digits.
ISO_DATE = r"^(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})$"
UK_DATE = r"^(?P<day>[0-9]{2})/(?P<month>[0-9]{2})/(?P<year>[0-9]{4})$"
EARLIEST_DAY = int(EARLIEST_TIMESTAMP.timestamp()) // SECONDS_PER_DAY


@dataclass
class Labels:
    labels: pd.Series  # customer_id -> 0/1, index unique
    quarantine: pd.DataFrame  # LABEL_COLUMNS
    rows_in: int
    rows_duplicate: int
    counts: dict[RuleCode, int]  # rows per label rule (duplicates included)
    # customer_id -> the start of its decision date, UK wall-clock epoch seconds (the
    # same index as ``labels``); None when the labels carry no decision dates.
    decision_dates: pd.Series | None = None


def decision_days(text: pd.Series, now: datetime | None = None) -> pd.Series:
    """Days since 1970-01-01 of each decision date (float, NaN where the text is not a real
    date in an accepted form, or lies outside 1990-01-01 .. the run's date on the UK
    wall clock; no upper limit without ``now``). The forms are matched by Arrow (RE2),
    which holds the GIL far less than pandas' per-string regex while a build combines."""
    values = pa.array(text.to_numpy(dtype=object), pa.string(), from_pandas=True)
    forms = [pc.extract_regex(values, form) for form in (ISO_DATE, UK_DATE)]

    def field(name: str) -> pa.Array:
        return pc.coalesce(*(pc.struct_field(form, name) for form in forms))

    shaped = np.asarray(pc.is_valid(field("year")), dtype=bool)

    def number(name: str, default: int) -> np.ndarray:
        digits = pc.fill_null(field(name), str(default))
        return np.asarray(pc.cast(digits, pa.int64()))

    y, m, d = number("year", 1970), number("month", 1), number("day", 1)
    real = shaped & (m >= 1) & (m <= 12) & (d >= 1)
    first = days_from_civil(y, np.clip(m, 1, 12), np.ones_like(d))
    length = days_from_civil(y, np.clip(m, 1, 12) + 1, np.ones_like(d)) - first
    real &= d <= length
    days = first + d - 1
    real &= days >= EARLIEST_DAY
    if now is not None:
        real &= days <= uk_now(now) // SECONDS_PER_DAY
    return pd.Series(np.where(real, days, np.nan), index=text.index)


def clean_labels(
    customer: pd.Series,
    value: pd.Series,
    reader_reason: pd.Series,
    raw_line: pd.Series,
    decision_date: pd.Series | None = None,
    now: datetime | None = None,
) -> Labels:
    """Validate label rows: the raw customer id and label text of each row, the reader's
    reason for rows it could not split (else None) and each row's escaped raw text; with
    ``decision_date`` (each row's text; the file had the column), decision dates checked
    against ``now`` (the run's instant)."""
    require_every_rule("labels", (*_DECIDED_HERE, *READER_RULES), rules=LABEL_RULES)
    raw_customer, raw_value = customer.fillna(""), value.fillna("")
    customer = raw_customer.str.strip()
    value_text = raw_value.str.strip().str.lower()
    mapped = value_text.map(LABEL_VALUES)

    reason = reader_reason.astype(object).copy()
    readable = reason.isna()
    dated = False
    day = pd.Series(0.0, index=customer.index)
    if decision_date is not None:
        date_text = decision_date.fillna("").str.strip()
        dated = bool((readable & (date_text != "")).any())  # an all-empty column: no dates
        if dated:
            day = decision_days(date_text, now)
    reason[readable & (customer == "")] = str(C.MISSING_CUSTOMER_ID)
    reason[reason.isna() & mapped.isna()] = str(C.INVALID_LABEL)
    if dated:
        reason[reason.isna() & (date_text == "")] = str(C.MISSING_DECISION_DATE)
        reason[reason.isna() & day.isna()] = str(C.INVALID_DECISION_DATE)
    valid = reason.isna()
    keyed = pd.DataFrame({ID: customer, TARGET: mapped, DECISION_DATE: day})[valid]
    duplicate = keyed.duplicated(keep="first")
    distinct = keyed[~duplicate]
    per_customer = distinct.groupby(ID, sort=False).nunique()
    label_conflicts = per_customer.index[per_customer[TARGET] > 1]
    date_conflicts = per_customer.index[
        (per_customer[DECISION_DATE] > 1) & (per_customer[TARGET] == 1)
    ]
    conflicting = valid & customer.isin(label_conflicts)
    reason[conflicting] = str(C.CONFLICTING_LABEL)
    conflicting_date = valid & customer.isin(date_conflicts)
    reason[conflicting_date] = str(C.CONFLICTING_DECISION_DATE)
    is_duplicate = pd.Series(False, index=customer.index)
    is_duplicate[duplicate[duplicate].index] = True
    is_duplicate &= ~conflicting & ~conflicting_date

    kept = reason.isna() & ~is_duplicate
    ids = customer[kept].to_numpy()
    order = pd.Index(ids).argsort()  # labels and decision dates sorted by id: one sort
    index = pd.Index(ids[order], name=ID)
    labels = pd.Series(mapped[kept].astype("int64").to_numpy()[order], index=index, name=TARGET)
    decisions = None
    if dated:
        seconds = day[kept].to_numpy(dtype=np.int64)[order] * SECONDS_PER_DAY
        decisions = pd.Series(seconds, index=index, name=DECISION_DATE)
    rejected = reason.notna()
    quarantine = pd.DataFrame(
        {
            ID: np.where(readable, raw_customer.to_numpy(dtype=object), ""),
            TARGET: np.where(readable, raw_value.to_numpy(dtype=object), ""),
            REASON: reason,
            RAW_LINE: raw_line,
        },
        columns=list(LABEL_COLUMNS),
    )[rejected].reset_index(drop=True)
    duplicates = int(is_duplicate.sum())
    counts = {r.code: int((reason == str(r.code)).sum()) for r in LABEL_RULES}
    counts[C.DUPLICATE] = duplicates
    return Labels(
        labels=labels,
        quarantine=quarantine,
        rows_in=len(customer),
        rows_duplicate=duplicates,
        counts=counts,
        decision_dates=decisions,
    )


def read_labels(source: Source, now: datetime | None = None) -> Labels:
    """Load and validate a labels file (small: read whole). ``now`` is the run's instant:
    a decision date after its UK date is invalid."""
    stream, table = read_all(source, "labels")
    columns = map_columns(stream.header, LABEL_ALIASES, LABEL_REQUIRED, "labels")
    fields = [table.column(i).combine_chunks() for i in range(len(stream.header))]
    text, not_utf8 = decode_utf8(fields)
    if not_utf8.any():
        raise InputError("labels: not valid UTF-8 text")
    reject = np.asarray(table.column(REJECT).combine_chunks())
    reader_reasons = np.array([None, *(str(c) for c in READER_RULES)], dtype=object)

    def column(name: str) -> pd.Series:
        return pd.Series(text[columns.positions[name]].to_numpy(zero_copy_only=False))

    return clean_labels(
        customer=column(ID),
        value=column(TARGET),
        reader_reason=pd.Series(reader_reasons[reject]),
        raw_line=pd.Series(
            escape_raw(table.column(RAW).combine_chunks()).to_numpy(zero_copy_only=False)
        ),
        decision_date=column(DECISION_DATE) if DECISION_DATE in columns.positions else None,
        now=now,
    )
