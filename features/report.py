"""The data-quality report: what was found and what was done, as a typed ``Report``.

Every engine fills the same ``Tally`` and ``InputShape`` (``features.tally``) and
``build_report`` turns them into a ``Report``; ``Report.to_dict`` is ``dq_report.json`` and
``render_markdown`` is ``dq_report.md``. The report never reads the clock: the caller
passes ``generated_at`` (the CLI: now; the blob flow: the inputs' upload time).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from features.definitions import FEATURE_NAMES, ID, MAX_ABS_MONEY, SECONDS_PER_DAY
from features.quality import UK_ZONE
from features.rules import LABEL_RULES, LARGE_AMOUNT_PENCE, RULES, Rule, RuleCode
from features.tally import InputShape, Tally

if TYPE_CHECKING:
    import pandas as pd

    from features.labels import Labels

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
WITHHELD_RULE = (
    f"a feature outside the range the API accepts (e.g. |money| above {MAX_ABS_MONEY:,.0f}); "
    "the customer is left out of the features, training set and predictions"
)
WITHHELD_EXAMPLES = 5
BATCH_MODE, DECISION_MODE = "batch_as_of", "decision_dates"
BATCH_RULE = (
    "no decision dates: every valid transaction is used, and time features and per-month "
    "rates count from as_of (the latest valid transaction of the batch)"
)
DECISION_RULE = (
    "each labelled customer's features use only its valid transactions strictly before its "
    "decision date and at most lookback_days before it; time features and per-month rates "
    "count from the start of the decision date. Customers without a decision date get no "
    "features (their rows: no_decision_date); rows outside a window: outside_decision_window"
)


@dataclass(frozen=True)
class Decisions:
    """Which mode ran: one batch-wide as-of, or per-customer decision dates and a lookback."""

    mode: str
    rule: str
    lookback_days: int | None = None
    customers_with_decision_date: int | None = None
    first_decision_date: str | None = None
    last_decision_date: str | None = None
    customers_without_decision_date: int | None = None
    customers_without_window_transactions: int | None = None

    @property
    def dated(self) -> bool:
        return self.mode == DECISION_MODE

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.mode,
            "rule": self.rule,
            "lookback_days": self.lookback_days,
        }
        if self.dated:
            out |= {
                "customers_with_decision_date": self.customers_with_decision_date,
                "decision_dates": {
                    "first": self.first_decision_date,
                    "last": self.last_decision_date,
                },
                "customers_without_decision_date": self.customers_without_decision_date,
                "customers_without_window_transactions": (
                    self.customers_without_window_transactions
                ),
            }
        return out


def iso_dates(wall_seconds: pd.Series) -> pd.Series:
    """UK wall-clock seconds at the start of a day -> the date, ``YYYY-MM-DD``."""
    import numpy as np
    import pandas as pd

    days = (wall_seconds.to_numpy(dtype=np.int64) // SECONDS_PER_DAY).astype("datetime64[D]")
    return pd.Series(days.astype(str), index=wall_seconds.index, dtype=object)


@dataclass(frozen=True)
class CheckCount:
    """How often one rule fired, with its first example values."""

    rule: Rule
    count: int
    examples: tuple[str, ...] = ()

    @property
    def check(self) -> RuleCode:
        return self.rule.code

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": str(self.rule.code),
            "kind": str(self.rule.kind),
            "column": self.rule.column,
            "count": self.count,
            "action": self.rule.action,
            "examples": list(self.examples),
        }


@dataclass(frozen=True)
class Fences:
    """Tukey fences of one customer feature and how many customers lie outside them."""

    low: float | None
    high: float | None
    count: int | None
    note: str | None = None  # why there are no fences

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"low": self.low, "high": self.high, "count": self.count}
        if self.note is not None:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class LabelReport:
    rows_in: int
    rows_used: int
    rows_duplicate: int
    rows_quarantined: int
    checks: tuple[CheckCount, ...]
    default_rate: float | None
    customers_without_label: int
    labels_without_transactions: int
    training_rows: int


@dataclass(frozen=True)
class Report:
    """One run's data-quality report (the same for every engine but ``engine``)."""

    generated_at: str
    engine: str
    as_of: str | None  # the latest used transaction, on the UK wall clock
    transactions_file: InputShape
    rows_in: int
    rows_used: int
    rows_duplicate: int
    rows_quarantined: int
    customers: int
    customers_withheld: int
    withheld_examples: tuple[str, ...]
    checks: tuple[CheckCount, ...]
    customer_outliers: dict[str, Fences]
    feature_nulls: int
    elapsed_seconds: float
    labels: LabelReport | None = None
    decisions: Decisions = Decisions(BATCH_MODE, BATCH_RULE)

    def count(self, code: RuleCode) -> int:
        """How many rows ``code`` matched (0 for a rule that is not a transaction rule)."""
        return next((c.count for c in self.checks if c.rule.code == code), 0)

    def examples(self, code: RuleCode) -> tuple[str, ...]:
        return next((c.examples for c in self.checks if c.rule.code == code), ())

    def to_dict(self) -> dict[str, Any]:
        """The report as ``dq_report.json`` holds it."""
        shape = self.transactions_file
        out: dict[str, Any] = {
            "generated_at": self.generated_at,
            "engine": self.engine,
            "as_of": self.as_of,
            "decisions": self.decisions.to_dict(),
            "transactions_file": {
                "columns": list(shape.columns),
                "mapped": dict(shape.mapped),
                "extra_columns": list(shape.extra_columns),
                "delimiter": shape.delimiter,
            },
            "rows_in": self.rows_in,
            "rows_used": self.rows_used,
            "rows_duplicate": self.rows_duplicate,
            "rows_quarantined": self.rows_quarantined,
            "customers": self.customers,
            "customers_withheld": {
                "count": self.customers_withheld,
                "rule": WITHHELD_RULE,
                "examples": list(self.withheld_examples),
            },
            "checks": [c.to_dict() for c in self.checks],
            "outliers": {
                "transactions": {
                    "rule": f"|amount| >= £{LARGE_AMOUNT_PENCE // 100:,}",
                    "count": self.count(RuleCode.LARGE_AMOUNT),
                    "action": "kept; flagged",
                },
                "customers": {
                    "rule": f"outside quartiles -/+ {IQR_FENCE:g} x IQR",
                    "action": "kept; flagged",
                    "features": {k: v.to_dict() for k, v in self.customer_outliers.items()},
                },
            },
            "feature_nulls": self.feature_nulls,
            "elapsed_seconds": self.elapsed_seconds,
        }
        if self.labels is not None:
            labels = self.labels
            out["labels"] = {
                "rows_in": labels.rows_in,
                "rows_used": labels.rows_used,
                "rows_duplicate": labels.rows_duplicate,
                "rows_quarantined": labels.rows_quarantined,
                "checks": [c.to_dict() for c in labels.checks],
                "default_rate": labels.default_rate,
            }
            out["customers_without_label"] = labels.customers_without_label
            out["labels_without_transactions"] = labels.labels_without_transactions
            out["training_rows"] = labels.training_rows
        return out


def uk_time(wall_seconds: int) -> str:
    """A UK wall-clock time (epoch-style seconds) in ISO 8601 with its UTC offset."""
    wall = datetime.fromtimestamp(wall_seconds, UTC).replace(tzinfo=ZoneInfo(UK_ZONE))
    return wall.isoformat()


def customer_outliers(features: pd.DataFrame) -> dict[str, Fences]:
    """Tukey fences at ``IQR_FENCE`` IQRs, per customer feature. Flagged, never removed.

    A feature whose quartiles coincide (e.g. mostly zero, like gambling spend) has no
    spread to measure against; it is reported as not applicable rather than calling every
    non-zero customer an outlier.
    """
    found: dict[str, Fences] = {}
    for name in OUTLIER_FEATURES:
        values = features[name]
        if values.empty:
            continue
        q1, q3 = values.quantile([0.25, 0.75])
        if q3 == q1:
            found[name] = Fences(None, None, None, "not applicable: inter-quartile range is 0")
            continue
        low, high = q1 - IQR_FENCE * (q3 - q1), q3 + IQR_FENCE * (q3 - q1)
        outside = (values < low) | (values > high)
        found[name] = Fences(round(float(low), 2), round(float(high), 2), int(outside.sum()))
    return found


def build_report(
    tally: Tally,
    shape: InputShape,
    features: pd.DataFrame,
    labels: Labels | None,
    *,
    rows_quarantined: int,
    withheld: list[str],
    generated_at: datetime,
    elapsed: float,
    engine: str,
    decision_dates: pd.Series | None = None,
    lookback_days: int | None = None,
    featured: pd.Index | None = None,
    valid_customers: pd.Index | None = None,
) -> Report:
    """The report of one run from what its engine counted. With decision dates
    (``decision_dates``: customer_id -> start of its decision date), ``featured`` is every
    customer with features before withholding and ``valid_customers`` every customer with a
    valid row."""
    import pandas as pd

    customers = set(features[ID])
    decisions = Decisions(BATCH_MODE, BATCH_RULE)
    seen = dated = None
    if decision_dates is not None:
        dated = pd.Index(decision_dates.index)
        seen = pd.Index(valid_customers if valid_customers is not None else [])
        dates = iso_dates(decision_dates)
        decisions = Decisions(
            DECISION_MODE,
            DECISION_RULE,
            lookback_days=lookback_days,
            customers_with_decision_date=len(dated),
            first_decision_date=str(dates.min()) if len(dates) else None,
            last_decision_date=str(dates.max()) if len(dates) else None,
            customers_without_decision_date=len(seen.difference(dated)),
            customers_without_window_transactions=len(
                seen.intersection(dated).difference(pd.Index(featured))
            ),
        )
    label_report = None
    if labels is not None:
        labelled = set(labels.labels.index)
        if seen is not None:  # customers that had rows, whether or not a window kept any
            without_label = len(seen.difference(dated))
            without_transactions = len(dated.difference(seen))
        else:
            without_label = len(customers - labelled)
            without_transactions = len(labelled - customers)
        label_report = LabelReport(
            rows_in=labels.rows_in,
            rows_used=len(labels.labels),
            rows_duplicate=labels.rows_duplicate,
            rows_quarantined=len(labels.quarantine),
            checks=tuple(CheckCount(r, labels.counts.get(r.code, 0)) for r in LABEL_RULES),
            default_rate=round(float(labels.labels.mean()), 4) if len(labels.labels) else None,
            customers_without_label=without_label,
            labels_without_transactions=without_transactions,
            training_rows=len(customers & labelled),
        )
    return Report(
        generated_at=generated_at.isoformat(timespec="seconds"),
        engine=engine,
        as_of=uk_time(tally.as_of_ts) if tally.as_of_ts is not None else None,
        transactions_file=shape,
        rows_in=tally.rows_in,
        rows_used=tally.rows_used,
        rows_duplicate=tally.rows_duplicate,
        rows_quarantined=rows_quarantined,
        customers=len(customers),
        customers_withheld=len(withheld),
        withheld_examples=tuple(withheld[:WITHHELD_EXAMPLES]),
        checks=tuple(
            CheckCount(r, tally.count(r.code), tuple(tally.examples.get(r.code, ()))) for r in RULES
        ),
        customer_outliers=customer_outliers(features),
        feature_nulls=int(features[list(FEATURE_NAMES)].isna().sum().sum()),
        elapsed_seconds=round(elapsed, 3),
        labels=label_report,
        decisions=decisions,
    )


def summary_line(report: Report) -> str:
    """One log line with the run's accounting: counts only, never customer data."""
    return (
        f"rows in {report.rows_in}: used {report.rows_used}, "
        f"duplicate {report.rows_duplicate}, quarantined {report.rows_quarantined}; "
        f"{report.customers} customers in {report.elapsed_seconds:.1f} s"
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


def _mode_line(decisions: dict[str, Any]) -> str:
    if decisions["mode"] != DECISION_MODE:
        return f"Mode: batch-wide as-of date ({decisions['rule']})."
    dates = decisions["decision_dates"]
    return (
        f"Mode: decision dates, lookback {decisions['lookback_days']} days; "
        f"{decisions['customers_with_decision_date']:,} customers with a decision date "
        f"({dates['first']} to {dates['last']}); without a decision date: "
        f"{decisions['customers_without_decision_date']:,}; with a decision date but no "
        f"transaction in the window: {decisions['customers_without_window_transactions']:,}."
    )


def render_markdown(report: Report) -> str:
    """A short human-readable version of the report (``dq_report.md``)."""
    return _markdown(report.to_dict())


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Data-quality report",
        "",
        f"Generated {report['generated_at']}; data as of {report['as_of']}.",
        "",
        _mode_line(report["decisions"]),
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
