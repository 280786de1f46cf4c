"""Labels: one 0/1 default flag per customer, with every input row accounted for.

Rules: identical repeated labels are duplicates (one kept); a customer labelled both 0 and
1 is ambiguous, so all of its label rows are quarantined and it is treated as unlabelled;
values other than 0/1/true/false are quarantined.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from features.definitions import ID, TARGET
from features.schema import LABEL_ALIASES, LABEL_REQUIRED, map_columns

LABEL_VALUES = {"0": 0, "1": 1, "false": 0, "true": 1, "0.0": 0, "1.0": 1}


@dataclass
class Labels:
    labels: pd.Series  # customer_id -> 0/1, index unique
    quarantine: pd.DataFrame  # raw rows + reason
    rows_in: int
    rows_duplicate: int
    counts: dict[str, int]  # reason -> rows


def clean_labels(raw: pd.DataFrame, file_label: str) -> Labels:
    """Validate raw label rows (all columns as strings, original header)."""
    columns = map_columns(list(raw.columns), LABEL_ALIASES, LABEL_REQUIRED, file_label)
    customer = raw.iloc[:, columns.positions[ID]].fillna("").str.strip()
    value_text = raw.iloc[:, columns.positions[TARGET]].fillna("").str.strip().str.lower()
    value = value_text.map(LABEL_VALUES)

    reason = pd.Series(None, index=raw.index, dtype=object)
    reason[customer == ""] = "missing_customer_id"
    reason[reason.isna() & value.isna()] = "invalid_label"
    valid = reason.isna()
    keyed = pd.DataFrame({ID: customer, TARGET: value})[valid]
    duplicate = keyed.duplicated(keep="first")
    distinct = keyed[~duplicate]
    conflicted_ids = distinct[ID][distinct[ID].duplicated(keep=False)].unique()
    conflicting = valid & customer.isin(conflicted_ids)
    reason[conflicting] = "conflicting_label"
    is_duplicate = pd.Series(False, index=raw.index)
    is_duplicate[duplicate[duplicate].index] = True
    is_duplicate &= ~conflicting

    kept = reason.isna() & ~is_duplicate
    labels = pd.Series(
        value[kept].astype("int64").to_numpy(), index=customer[kept].to_numpy(), name=TARGET
    )
    labels.index.name = ID
    quarantine = raw[reason.notna()].assign(reason=reason[reason.notna()])
    counts = {
        code: int((reason == code).sum())
        for code in ("missing_customer_id", "invalid_label", "conflicting_label")
    }
    return Labels(
        labels=labels.sort_index(),
        quarantine=quarantine,
        rows_in=len(raw),
        rows_duplicate=int(is_duplicate.sum()),
        counts=counts,
    )
