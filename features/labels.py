"""Labels: one 0/1 default flag per customer, with every input row accounted for.

Rules (``features.rules.LABEL_RULES``): identical repeated labels are duplicates (one
kept); a customer labelled both 0 and 1 is ambiguous, so all of its label rows are
quarantined and it is treated as unlabelled; values other than 0/1/true/false are
quarantined. Label files are small: every engine reads them with ``read_labels``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.definitions import ID, TARGET
from features.reader import RAW, REJECT, Source, decode_utf8, escape_raw, read_all
from features.rules import (
    LABEL_QUARANTINE_COLUMNS,
    LABEL_RULES,
    RAW_LINE,
    READER_RULES,
    REASON,
    RuleCode,
    require_every_rule,
)
from features.schema import LABEL_ALIASES, LABEL_REQUIRED, InputError, map_columns

LABEL_VALUES = {"0": 0, "1": 1, "false": 0, "true": 1, "0.0": 0, "1.0": 1}
# The labels quarantine file's columns, whatever the input (as for transactions).
LABEL_COLUMNS = LABEL_QUARANTINE_COLUMNS
C = RuleCode
# What clean_labels decides; the reader decides READER_RULES.
_DECIDED_HERE = (C.DUPLICATE, C.MISSING_CUSTOMER_ID, C.INVALID_LABEL, C.CONFLICTING_LABEL)


@dataclass
class Labels:
    labels: pd.Series  # customer_id -> 0/1, index unique
    quarantine: pd.DataFrame  # LABEL_COLUMNS
    rows_in: int
    rows_duplicate: int
    counts: dict[RuleCode, int]  # rows per label rule (duplicates included)


def clean_labels(
    customer: pd.Series, value: pd.Series, reader_reason: pd.Series, raw_line: pd.Series
) -> Labels:
    """Validate label rows: the raw customer id and label text of each row, the reader's
    reason for rows it could not split (else None) and each row's escaped raw text."""
    require_every_rule("labels", (*_DECIDED_HERE, *READER_RULES), rules=LABEL_RULES)
    raw_customer, raw_value = customer.fillna(""), value.fillna("")
    customer = raw_customer.str.strip()
    value_text = raw_value.str.strip().str.lower()
    mapped = value_text.map(LABEL_VALUES)

    reason = reader_reason.astype(object).copy()
    readable = reason.isna()
    reason[readable & (customer == "")] = str(C.MISSING_CUSTOMER_ID)
    reason[reason.isna() & mapped.isna()] = str(C.INVALID_LABEL)
    valid = reason.isna()
    keyed = pd.DataFrame({ID: customer, TARGET: mapped})[valid]
    duplicate = keyed.duplicated(keep="first")
    distinct = keyed[~duplicate]
    conflicted_ids = distinct[ID][distinct[ID].duplicated(keep=False)].unique()
    conflicting = valid & customer.isin(conflicted_ids)
    reason[conflicting] = str(C.CONFLICTING_LABEL)
    is_duplicate = pd.Series(False, index=customer.index)
    is_duplicate[duplicate[duplicate].index] = True
    is_duplicate &= ~conflicting

    kept = reason.isna() & ~is_duplicate
    labels = pd.Series(
        mapped[kept].astype("int64").to_numpy(), index=customer[kept].to_numpy(), name=TARGET
    )
    labels.index.name = ID
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
        labels=labels.sort_index(),
        quarantine=quarantine,
        rows_in=len(customer),
        rows_duplicate=duplicates,
        counts=counts,
    )


def read_labels(source: Source) -> Labels:
    """Load and validate a labels file (small: read whole)."""
    stream, table = read_all(source, "labels")
    columns = map_columns(stream.header, LABEL_ALIASES, LABEL_REQUIRED, "labels")
    fields = [table.column(i).combine_chunks() for i in range(len(stream.header))]
    text, not_utf8 = decode_utf8(fields)
    if not_utf8.any():
        raise InputError("labels: not valid UTF-8 text")
    reject = np.asarray(table.column(REJECT).combine_chunks())
    reader_reasons = np.array([None, *(str(c) for c in READER_RULES)], dtype=object)
    return clean_labels(
        customer=pd.Series(text[columns.positions[ID]].to_numpy(zero_copy_only=False)),
        value=pd.Series(text[columns.positions[TARGET]].to_numpy(zero_copy_only=False)),
        reader_reason=pd.Series(reader_reasons[reject]),
        raw_line=pd.Series(
            escape_raw(table.column(RAW).combine_chunks()).to_numpy(zero_copy_only=False)
        ),
    )
