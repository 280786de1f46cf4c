"""The data-quality report: what was found, what was done, as JSON and as Markdown."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pandas as pd

from features.definitions import FEATURE_NAMES, ID, MAX_ABS_MONEY
from features.quality import LARGE_AMOUNT_PENCE, RULES, UK_ZONE
from features.schema import ColumnMap

if TYPE_CHECKING:
    from features.labels import Labels
    from features.pipeline import Tally
    from features.reader import CsvStream

# Customer-level outliers: beyond this many inter-quartile ranges outside the quartiles.
IQR_FENCE = 3.0
OUTLIER_FEATURES = (
    "num_transactions",
    "total_debit",
    "total_credit",
    "avg_amount",
    "max_debit",
    "gambling_spend",
)
LABEL_RULES = (
    ("duplicate", "removed (one kept)", "Identical label row repeated."),
    ("missing_customer_id", "quarantined", "Customer id empty."),
    ("invalid_label", "quarantined", "Label is not 0/1 (or true/false)."),
    (
        "conflicting_label",
        "quarantined; customer treated as unlabelled",
        "Same customer labelled both 0 and 1.",
    ),
    ("malformed_row", "quarantined", "Row has the wrong number of fields."),
    ("unterminated_quote", "quarantined (that line only)", "A quoted field never closes."),
    ("nul_byte", "quarantined", "Row contains a NUL byte."),
)
WITHHELD_RULE = (
    f"a feature outside the range the API accepts (e.g. |money| above {MAX_ABS_MONEY:,.0f}); "
    "the customer is left out of the features, training set and predictions"
)


def uk_time(wall_seconds: int) -> str:
    """A UK wall-clock time (epoch-style seconds) in ISO 8601 with its UTC offset."""
    wall = datetime.fromtimestamp(wall_seconds, UTC).replace(tzinfo=ZoneInfo(UK_ZONE))
    return wall.isoformat()


def customer_outliers(features: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Tukey fences at ``IQR_FENCE`` IQRs, per customer feature. Flagged, never removed.

    A feature whose quartiles coincide (e.g. mostly zero, like gambling spend) has no
    spread to measure against; it is reported as not applicable rather than calling every
    non-zero customer an outlier.
    """
    found: dict[str, dict[str, Any]] = {}
    for name in OUTLIER_FEATURES:
        values = features[name]
        if values.empty:
            continue
        q1, q3 = values.quantile([0.25, 0.75])
        if q3 == q1:
            found[name] = {
                "low": None,
                "high": None,
                "count": None,
                "note": "not applicable: inter-quartile range is 0",
            }
            continue
        low, high = q1 - IQR_FENCE * (q3 - q1), q3 + IQR_FENCE * (q3 - q1)
        outside = (values < low) | (values > high)
        found[name] = {
            "low": round(float(low), 2),
            "high": round(float(high), 2),
            "count": int(outside.sum()),
        }
    return found


def build_report(
    tally: Tally,
    columns: ColumnMap,
    stream: CsvStream,
    features: pd.DataFrame,
    labels: Labels | None,
    rows_quarantined: int,
    elapsed: float,
    withheld: list[str] | None = None,
) -> dict[str, Any]:
    checks = [
        {
            "check": r.code,
            "column": r.column,
            "count": tally.counts.get(r.code, 0),
            "action": r.action,
            "examples": tally.examples.get(r.code, []),
        }
        for r in RULES
    ]
    customers = set(features[ID])
    report: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        # The latest used transaction, on the UK wall clock timestamps are read on.
        "as_of": uk_time(tally.as_of_ts) if tally.as_of_ts is not None else None,
        "transactions_file": {
            "columns": stream.header,
            "mapped": {c: stream.header[p] for c, p in columns.positions.items()},
            "extra_columns": list(columns.extra),
            "delimiter": stream.delimiter,
        },
        "rows_in": tally.rows_in,
        "rows_used": tally.rows_used,
        "rows_duplicate": tally.rows_duplicate,
        "rows_quarantined": rows_quarantined,
        "customers": len(customers),
        "customers_withheld": {
            "count": len(withheld or []),
            "rule": WITHHELD_RULE,
            "examples": (withheld or [])[:5],
        },
        "checks": checks,
        "outliers": {
            "transactions": {
                "rule": f"|amount| >= £{LARGE_AMOUNT_PENCE // 100:,}",
                "count": tally.counts.get("large_amount", 0),
                "action": "kept; flagged",
            },
            "customers": {
                "rule": f"outside quartiles -/+ {IQR_FENCE:g} x IQR",
                "action": "kept; flagged",
                "features": customer_outliers(features),
            },
        },
        "feature_nulls": int(features[list(FEATURE_NAMES)].isna().sum().sum()),
        "elapsed_seconds": round(elapsed, 3),
    }
    if labels is not None:
        labelled = set(labels.labels.index)
        report["labels"] = {
            "rows_in": labels.rows_in,
            "rows_used": len(labels.labels),
            "rows_duplicate": labels.rows_duplicate,
            "rows_quarantined": len(labels.quarantine),
            "checks": [
                {
                    "check": code,
                    "column": "defaulted" if "label" in code else "customer_id",
                    "count": labels.rows_duplicate
                    if code == "duplicate"
                    else labels.counts.get(code, 0),
                    "action": action,
                    "examples": [],
                }
                for code, action, _ in LABEL_RULES
            ],
            "default_rate": round(float(labels.labels.mean()), 4) if len(labels.labels) else None,
        }
        report["customers_without_label"] = len(customers - labelled)
        report["labels_without_transactions"] = len(labelled - customers)
        report["training_rows"] = len(customers & labelled)
    return report


def summary_line(report: dict[str, Any]) -> str:
    """One log line with the run's accounting: counts only, never customer data."""
    return (
        f"rows in {report['rows_in']}: used {report['rows_used']}, "
        f"duplicate {report['rows_duplicate']}, quarantined {report['rows_quarantined']}; "
        f"{report['customers']} customers in {report['elapsed_seconds']:.1f} s"
    )


def md_code(value: object) -> str:
    """A value from the data, shown inertly in a Markdown table cell.

    It becomes a code span (so Markdown and HTML in it are not rendered) whose backtick
    fence is longer than any run of backticks inside; line breaks and other control or
    formatting characters (bidi overrides included) are shown as escapes, and ``|`` is
    escaped so it cannot end the table cell.
    """
    text = "".join(_visible(c) for c in str(value)).replace("|", "\\|")
    if not text:
        return "(empty)"
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if text[0] in "` " or text[-1] in "` " else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _visible(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return char


def render_markdown(report: dict[str, Any]) -> str:
    """A short human-readable version of the report."""
    lines = [
        "# Data-quality report",
        "",
        f"Generated {report['generated_at']}; data as of {report['as_of']}.",
        "",
        "| rows in | used | duplicate | quarantined | customers |",
        "|---:|---:|---:|---:|---:|",
        f"| {report['rows_in']:,} | {report['rows_used']:,} | {report['rows_duplicate']:,} "
        f"| {report['rows_quarantined']:,} | {report['customers']:,} |",
        "",
        "## Transaction checks",
        "",
        "| check | column | rows | action | examples |",
        "|---|---|---:|---|---|",
    ]
    for c in report["checks"]:
        examples = ", ".join(md_code(e) for e in c["examples"][:3])
        lines.append(
            f"| {c['check']} | {c['column']} | {c['count']:,} | {c['action']} | {examples} |"
        )
    if "labels" in report:
        labels = report["labels"]
        lines += [
            "",
            "## Labels",
            "",
            f"{labels['rows_in']:,} rows in, {labels['rows_used']:,} used, "
            f"{labels['rows_duplicate']:,} duplicate, {labels['rows_quarantined']:,} "
            f"quarantined; default rate {labels['default_rate']}.",
            f"Customers without a label: {report['customers_without_label']:,}; "
            f"labels without transactions: {report['labels_without_transactions']:,}; "
            f"training rows: {report['training_rows']:,}.",
            "",
            "| check | rows | action |",
            "|---|---:|---|",
            *(f"| {c['check']} | {c['count']:,} | {c['action']} |" for c in labels["checks"]),
        ]
    withheld = report.get("customers_withheld", {}).get("count", 0)
    if withheld:
        lines += [
            "",
            f"Customers withheld: {withheld:,} ({report['customers_withheld']['rule']}).",
        ]
    outliers = report["outliers"]
    lines += [
        "",
        "## Outliers (kept, flagged)",
        "",
        f"Transactions with {outliers['transactions']['rule']}: "
        f"{outliers['transactions']['count']:,}.",
        "",
        f"Customers {outliers['customers']['rule']}:",
        "",
        "| feature | low fence | high fence | customers |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {o['low']:,} | {o['high']:,} | {o['count']:,} |"
            if o["count"] is not None
            else f"| {name} | - | - | {o['note']} |"
            for name, o in outliers["customers"]["features"].items()
        ),
        "",
    ]
    return "\n".join(lines)
