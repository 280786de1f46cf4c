"""Canonical column names and the aliases real uploads use for them.

Headers are matched case- and whitespace-insensitively ("Txn Type", " txn_type " and
"TXN_TYPE" are the same). A file we cannot map is refused, naming the missing columns.
Error messages name columns only in our own words (canonical names, recognised aliases,
positions): a file without a header row has customer data in its first line, and error
lines end up in logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class InputError(ValueError):
    """An input file cannot be used at all. The message is one line for the user."""


TRANSACTION_ALIASES: dict[str, tuple[str, ...]] = {
    "transaction_id": ("transaction_id", "txn_id", "transaction_ref"),
    "customer_id": ("customer_id", "cust_id", "customer", "client_id"),
    "timestamp": (
        "timestamp",
        "txn_timestamp",
        "transaction_timestamp",
        "date",
        "txn_date",
        "transaction_date",
        "datetime",
    ),
    "amount": ("amount", "txn_amount", "transaction_amount", "value", "amount_gbp"),
    "type": ("type", "txn_type", "transaction_type", "direction", "dr_cr"),
    "description": ("description", "desc", "narrative", "merchant", "details"),
}
TRANSACTION_REQUIRED = ("transaction_id", "customer_id", "timestamp", "amount")

LABEL_ALIASES: dict[str, tuple[str, ...]] = {
    "customer_id": TRANSACTION_ALIASES["customer_id"],
    "defaulted": (
        "defaulted",
        "defaulted_within_90d",
        "default",
        "default_90d",
        "target",
        "label",
        "is_default",
    ),
    # Optional: the date the credit decision was made. When labels carry it, each
    # customer's features use only transactions before it (features/README.md).
    "decision_date": (
        "decision_date",
        "application_date",
        "date_of_decision",
        "date_of_application",
        "decided_on",
        "applied_on",
    ),
}
LABEL_REQUIRED = ("customer_id", "defaulted")
DECISION_DATE = "decision_date"


def header_key(name: str) -> str:
    """Comparable form of a header: lowercase, inner whitespace/hyphens as underscores."""
    return re.sub(r"[\s\-]+", "_", name.strip().lstrip("\ufeff").strip().lower())


@dataclass(frozen=True)
class ColumnMap:
    """Which input column (by position) holds each canonical column."""

    positions: dict[str, int]
    extra: tuple[str, ...]  # input columns we do not use, reported but kept in quarantine


def map_columns(
    header: list[str],
    aliases: dict[str, tuple[str, ...]],
    required: tuple[str, ...],
    file_label: str,
) -> ColumnMap:
    """Map an input header onto canonical names, or raise ``InputError`` saying why."""
    lookup = {header_key(a): canonical for canonical, names in aliases.items() for a in names}
    positions: dict[str, int] = {}
    extra = []
    for position, name in enumerate(header):
        canonical = lookup.get(header_key(name))
        if canonical is None:
            extra.append(name)
            continue
        if canonical in positions:
            first = positions[canonical]
            raise InputError(
                f"{file_label}: columns {first + 1} ('{header_key(header[first])}') and "
                f"{position + 1} ('{header_key(name)}') both mean '{canonical}'; keep one of them"
            )
        positions[canonical] = position
    missing = [c for c in required if c not in positions]
    if missing:
        known = ", ".join(sorted(positions, key=positions.__getitem__)) or "none"
        raise InputError(
            f"{file_label}: missing required column(s): {', '.join(missing)} (the first line "
            f"has {len(header)} column(s); recognised: {known}). Is the header row missing?"
        )
    return ColumnMap(positions=positions, extra=tuple(extra))
