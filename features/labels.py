"""Labels: one 0/1 default flag per customer, with every input row accounted for.

Rules: identical repeated labels are duplicates (one kept); a customer labelled both 0 and
1 is ambiguous, so all of its label rows are quarantined and it is treated as unlabelled;
values other than 0/1/true/false are quarantined.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.definitions import ID, TARGET

LABEL_VALUES = {"0": 0, "1": 1, "false": 0, "true": 1, "0.0": 0, "1.0": 1}
# The labels quarantine file's columns, whatever the input (as for transactions).
LABEL_COLUMNS = (ID, TARGET, "reason", "raw_line")
LABEL_REASONS = (
    "missing_customer_id",
    "invalid_label",
    "conflicting_label",
    "malformed_row",
    "unterminated_quote",
    "nul_byte",
)


@dataclass
class Labels:
    labels: pd.Series  # customer_id -> 0/1, index unique
    quarantine: pd.DataFrame  # LABEL_COLUMNS
    rows_in: int
    rows_duplicate: int
    counts: dict[str, int]  # reason -> rows


def clean_labels(
    customer: pd.Series, value: pd.Series, reader_reason: pd.Series, raw_line: pd.Series
) -> Labels:
    """Validate label rows: the raw customer id and label text of each row, the reader's
    reason for rows it could not split (else None) and each row's escaped raw text."""
    raw_customer, raw_value = customer.fillna(""), value.fillna("")
    customer = raw_customer.str.strip()
    value_text = raw_value.str.strip().str.lower()
    mapped = value_text.map(LABEL_VALUES)

    reason = reader_reason.astype(object).copy()
    readable = reason.isna()
    reason[readable & (customer == "")] = "missing_customer_id"
    reason[reason.isna() & mapped.isna()] = "invalid_label"
    valid = reason.isna()
    keyed = pd.DataFrame({ID: customer, TARGET: mapped})[valid]
    duplicate = keyed.duplicated(keep="first")
    distinct = keyed[~duplicate]
    conflicted_ids = distinct[ID][distinct[ID].duplicated(keep=False)].unique()
    conflicting = valid & customer.isin(conflicted_ids)
    reason[conflicting] = "conflicting_label"
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
            "reason": reason,
            "raw_line": raw_line,
        },
        columns=list(LABEL_COLUMNS),
    )[rejected].reset_index(drop=True)
    counts = {code: int((reason == code).sum()) for code in LABEL_REASONS}
    return Labels(
        labels=labels.sort_index(),
        quarantine=quarantine,
        rows_in=len(customer),
        rows_duplicate=int(is_duplicate.sum()),
        counts=counts,
    )
