"""Exploratory plots of a training set and its data-quality report (three PNGs).

Why: the brief asks for a look at the data before trusting a model. The plots answer
three questions: do defaulters look different on the key features, does each merchant
flag move the default rate, and what did the quality checks find and do.

Uses matplotlib's object API (``Figure``) with the Agg canvas: no display, no global
pyplot state, safe in servers and tests. Works from 5 customers to millions (histograms
of a fixed number of bins).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    MaxNLocator,
    PercentFormatter,
)

from features.definitions import FEATURES, FLAG_FEATURES, ID, TARGET
from features.rules import LABEL_RULES, RULES_BY_CODE, Rule, RuleCode, RuleKind

DISTRIBUTION_PLOT = "feature_distributions.png"
FLAG_PLOT = "default_rate_by_flag.png"
QUALITY_PLOT = "data_quality.png"

# (feature, x scale, axis label). "symlog" is used for money: it shows zero and negatives
# and compresses the long right tail; linear for bounded days and shares.
DISTRIBUTIONS: tuple[tuple[str, str, str], ...] = (
    ("credit_per_month", "symlog", "credits per month of history (£, symlog scale)"),
    ("net_flow", "symlog", "net flow = credits + debits (£, symlog scale)"),
    ("max_debit", "symlog", "largest single debit (£, symlog scale)"),
    ("rent_to_income", "linear", "rent / total credit (ratio, 99th percentile cap)"),
    ("days_since_last_salary", "linear", "days since last salary (days; 365 = none)"),
    ("salary_month_share", "linear", "share of active months with a salary (0-1)"),
    ("gambling_per_month", "symlog", "gambling spend per month (£, symlog scale)"),
    ("fees_per_month", "linear", "bank-fee transactions per month"),
)
BINS = 30
# Money axis: linear between -£LINTHRESH and £LINTHRESH, logarithmic beyond.
LINTHRESH = 10.0
GROUP_STYLE = {
    0: {"label": "did not default", "color": "#1f77b4"},
    1: {"label": "defaulted", "color": "#d62728"},
}
ACTION_COLOURS = {
    RuleKind.QUARANTINED: "#d62728",
    RuleKind.REMOVED: "#7f7f7f",
    RuleKind.KEPT: "#ff7f0e",
    RuleKind.OUTSIDE_WINDOW: "#9467bd",
}
DPI = 110


class EdaError(ValueError):
    """The inputs cannot be plotted; the message says which file and what is missing."""


def _pounds(value: float, _position: int | None = None) -> str:
    if value == 0:
        return "£0"
    magnitude = abs(value)
    text = f"£{magnitude / 1000:g}k" if magnitude >= 1000 else f"£{magnitude:g}"
    return ("-" if value < 0 else "") + text


def _symlog_edges(values: np.ndarray) -> np.ndarray:
    """Bin edges evenly spaced on the symlog axis, so bars look even on the plot."""

    def forward(x: np.ndarray) -> np.ndarray:
        return np.sign(x) * np.log10(1 + np.abs(x) / LINTHRESH)

    def inverse(y: np.ndarray) -> np.ndarray:
        return np.sign(y) * LINTHRESH * (10 ** np.abs(y) - 1)

    low, high = forward(np.array([values.min(), values.max()]))
    if low == high:
        low, high = low - 0.5, high + 0.5
    return inverse(np.linspace(low, high, BINS + 1))


def _symlog_ticks(low: float, high: float) -> list[float]:
    """0 and signed powers of ten inside [low, high]; every other decade when crowded."""
    decades = [10.0**k for k in range(1, 10)]
    ticks = sorted([0.0, *decades, *(-d for d in decades)])
    inside = [t for t in ticks if low <= t <= high]
    if len(inside) > 7:
        inside = [t for t in inside if t == 0 or round(np.log10(abs(t))) % 2 == 0]
    return inside


def _wants_symlog(values: np.ndarray) -> bool:
    """Symlog only pays off for skewed data spanning decades; small sets read better linear."""
    magnitude = np.abs(values[values != 0])
    if len(values) < 20 or len(magnitude) == 0:
        return False
    return bool(np.log10((magnitude.max() + 1) / (np.quantile(magnitude, 0.05) + 1)) >= 1.5)


def _linear_edges(values: np.ndarray, integer: bool) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if integer and high - low + 1 <= BINS:
        return np.arange(low - 0.5, high + 1.5)
    if low == high:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, BINS + 1)


def check_training_set(frame: pd.DataFrame, label: str) -> None:
    """Refuse a training set without the columns the plots need, naming them."""
    needed = [ID, *(f for f, _, _ in DISTRIBUTIONS), *FLAG_FEATURES, TARGET]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise EdaError(f"{label}: missing column(s): {', '.join(missing)}")
    if frame.empty:
        raise EdaError(f"{label}: has no rows")
    bad = sorted(set(frame[TARGET].dropna().unique()) - {0, 1})
    if bad or frame[TARGET].isna().any():
        raise EdaError(f"{label}: column '{TARGET}' must hold only 0 and 1")


def plot_distributions(frame: pd.DataFrame) -> Figure:
    """Histograms of key features, defaulters vs the rest, each as a share of its group."""
    kinds = {f.name: f.kind for f in FEATURES}
    fig = Figure(figsize=(15, 7.5), dpi=DPI, layout="constrained")
    axes = fig.subplots(2, 4).ravel()
    groups = {g: frame[frame[TARGET] == g] for g in (0, 1)}
    for ax, (name, scale, xlabel) in zip(axes, DISTRIBUTIONS, strict=True):
        values = frame[name].to_numpy(dtype=float)
        if name == "rent_to_income":  # a few near-zero incomes give huge ratios
            cap = float(np.quantile(values, 0.99)) if len(values) > 100 else values.max()
            values = np.minimum(values, cap)
        integer = kinds[name] in ("count", "days")
        money = kinds[name] == "money"
        symlog = scale == "symlog" and _wants_symlog(values)
        edges = _symlog_edges(values) if symlog else _linear_edges(values, integer)
        for group, subset in groups.items():
            if subset.empty:
                continue
            data = np.clip(subset[name].to_numpy(dtype=float), edges[0], edges[-1])
            style = GROUP_STYLE[group]
            ax.hist(
                data,
                bins=edges,
                weights=np.full(len(data), 1 / len(data)),
                histtype="stepfilled",
                alpha=0.35,
                color=style["color"],
                edgecolor=style["color"],
                linewidth=1.2,
                label=f"{style['label']} (n={len(subset):,})",
            )
        if symlog:
            ax.set_xscale("symlog", linthresh=LINTHRESH)
            ax.xaxis.set_major_locator(FixedLocator(_symlog_ticks(edges[0], edges[-1])))
        elif integer or money:
            ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        if money:
            ax.xaxis.set_major_formatter(FuncFormatter(_pounds))
        if values.min() == values.max():
            shown = _pounds(values[0]) if money else f"{values[0]:g}"
            ax.text(
                0.5,
                0.5,
                f"every customer: {shown}",
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=10,
                bbox={"facecolor": "white", "edgecolor": "#999999"},
            )
        ax.set_title(name, fontsize=11)
        ax.set_xlabel(
            xlabel
            if symlog or scale != "symlog"
            else xlabel.replace("symlog scale", "linear scale"),
            fontsize=9,
        )
        ax.set_ylabel("share of group's customers", fontsize=9)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper right", ncols=2, fontsize=10)
    fig.suptitle(
        f"Feature distributions by default status ({len(frame):,} customers, "
        f"default rate {frame[TARGET].mean():.1%})",
        fontsize=13,
        x=0.01,
        ha="left",
    )
    return fig


def flag_default_rates(frame: pd.DataFrame) -> pd.DataFrame:
    """Per flag and value (0/1): customers and default rate (NaN where no customers)."""
    rows = []
    for flag in FLAG_FEATURES:
        for value in (0, 1):
            subset = frame[frame[flag] == value]
            rate = float(subset[TARGET].mean()) if len(subset) else float("nan")
            rows.append({"flag": flag, "value": value, "customers": len(subset), "rate": rate})
    return pd.DataFrame(rows)


def plot_flag_rates(frame: pd.DataFrame) -> Figure:
    """Default rate with the flag off vs on, with the customer count on each bar."""
    rates = flag_default_rates(frame)
    fig = Figure(figsize=(13, 6), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(FLAG_FEATURES))
    width = 0.38
    colours = {0: "#9ecae1", 1: "#08519c"}
    top = np.nanmax(rates["rate"].to_numpy()) if rates["rate"].notna().any() else 0.0
    for value, offset in ((0, -width / 2), (1, width / 2)):
        part = rates[rates["value"] == value]
        heights = part["rate"].fillna(0).to_numpy()
        bars = ax.bar(
            x + offset,
            heights,
            width,
            color=colours[value],
            label=f"flag = {value} ({'absent' if value == 0 else 'present'})",
        )
        for bar, n, rate in zip(bars, part["customers"], part["rate"], strict=True):
            text = "n=0" if n == 0 else f"{rate:.0%}\nn={n:,}"
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8,
            )
    overall = float(frame[TARGET].mean())
    ax.axhline(
        overall,
        color="#d62728",
        linestyle="--",
        linewidth=1,
        label=f"overall default rate ({overall:.1%})",
    )
    ax.set_xticks(x, FLAG_FEATURES, fontsize=10)
    ax.set_xlabel("0/1 flag (merchant categories from descriptions; salary_stopped)")
    ax.set_ylabel("default rate (% of customers)")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_ylim(0, max(top, overall) * 1.3 + 0.02)
    ax.legend(loc="upper left", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(
        f"Default rate by flag ({len(frame):,} labelled customers)",
        fontsize=13,
    )
    return fig


def _kind(check: dict[str, Any], rules: dict[RuleCode, Rule]) -> RuleKind:
    """What the check did to its rows: the report's ``kind`` (``features.rules.RuleKind``),
    or, in a report written before it had one, the kind of the rule with that code."""
    if check.get("kind") in ACTION_COLOURS:
        return RuleKind(check["kind"])
    rule = rules.get(check["check"])
    return rule.kind if rule is not None else RuleKind.KEPT


LABEL_RULES_BY_CODE = {r.code: r for r in LABEL_RULES}


def quality_checks(report: dict[str, Any]) -> pd.DataFrame:
    """Transaction and label checks as one table: label, count, action group."""
    rows = [
        {"check": c["check"], "count": int(c["count"]), "group": _kind(c, RULES_BY_CODE)}
        for c in report["checks"]
    ]
    for c in report.get("labels", {}).get("checks", []):
        rows.append(
            {
                "check": f"labels: {c['check']}",
                "count": int(c["count"]),
                "group": _kind(c, LABEL_RULES_BY_CODE),
            }
        )
    return pd.DataFrame(rows, columns=["check", "count", "group"])


def check_report(report: Any, label: str) -> None:
    needed = ("checks", "rows_in", "rows_used", "rows_duplicate", "rows_quarantined")
    if not isinstance(report, dict):
        raise EdaError(f"{label}: expected a JSON object")
    missing = [k for k in needed if k not in report]
    if missing:
        raise EdaError(f"{label}: missing key(s): {', '.join(missing)}")
    for c in report["checks"]:
        if not {"check", "count", "action"} <= set(c):
            raise EdaError(f"{label}: each check needs 'check', 'count' and 'action'")


def plot_quality(report: dict[str, Any]) -> Figure:
    """Where the rows went (used/duplicate/quarantined) and how often each check fired."""
    checks = quality_checks(report)
    fig = Figure(figsize=(13, 8), dpi=DPI, layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1, 2.6])
    outside = int(checks.loc[checks["group"] == RuleKind.OUTSIDE_WINDOW, "count"].sum())
    fates = (
        ("used (in features)", int(report["rows_used"]) - outside, "#2ca02c"),
        ("outside (window)", outside, ACTION_COLOURS[RuleKind.OUTSIDE_WINDOW]),
        ("duplicate (removed)", report["rows_duplicate"], ACTION_COLOURS[RuleKind.REMOVED]),
        ("quarantined", report["rows_quarantined"], ACTION_COLOURS[RuleKind.QUARANTINED]),
    )
    total = max(int(report["rows_in"]), 1)
    x = np.arange(len(fates))
    heights = [int(count) for _, count, _ in fates]
    left.bar(x, heights, color=[c for _, _, c in fates], width=0.65)
    for xx, count in zip(x, heights, strict=True):
        left.annotate(
            f"{count:,}\n{count / total:.2%}",
            (xx, count),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    left.set_xticks(x, [name.replace(" (", "\n(") for name, _, _ in fates], fontsize=9)
    top = max(max(heights), 1)
    if top >= 100:
        left.set_yscale("symlog", linthresh=1)
        left.set_ylim(0, top * 10)
    else:
        left.set_ylim(0, top * 1.3 + 1)
        left.yaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_ylabel("transaction rows" + (" (symlog scale)" if top >= 100 else ""))
    left.set_title(f"Where the {report['rows_in']:,} input rows went", fontsize=11)
    left.grid(axis="y", alpha=0.3)

    y = np.arange(len(checks))[::-1]
    colours = [ACTION_COLOURS[g] for g in checks["group"]]
    counts = checks["count"].to_numpy()
    right.barh(y, np.where(counts > 0, counts, 0), color=colours, height=0.7)
    right.set_yticks(y, checks["check"], fontsize=9)
    peak = max(int(counts.max()) if len(counts) else 0, 1)
    if peak >= 100:
        right.set_xscale("symlog", linthresh=1)
        right.set_xlim(0, peak * 8)
    else:
        right.set_xlim(0, peak * 1.25 + 1)
        right.xaxis.set_major_locator(MaxNLocator(integer=True))
    for yy, count in zip(y, counts, strict=True):
        right.annotate(
            f"{count:,}",
            (max(count, 0), yy),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            color="black" if count else "#999999",
        )
    right.set_xlabel("rows flagged (count" + (", symlog scale)" if peak >= 100 else ")"))
    right.set_title("Checks: rows each rule caught (0 = checked, nothing found)", fontsize=11)
    right.grid(axis="x", alpha=0.3)
    handles = [
        Patch(color=c, label=f"{g}")
        for g, c in (
            ("quarantined (row rejected)", ACTION_COLOURS[RuleKind.QUARANTINED]),
            ("removed (duplicate)", ACTION_COLOURS[RuleKind.REMOVED]),
            ("kept (repaired or flagged)", ACTION_COLOURS[RuleKind.KEPT]),
            ("valid, outside its decision window", ACTION_COLOURS[RuleKind.OUTSIDE_WINDOW]),
        )
    ]
    right.legend(handles=handles, loc="lower right", fontsize=9)
    fig.suptitle("Data-quality summary (dq_report.json)", fontsize=13, x=0.01, ha="left")
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.png")
    fig.savefig(partial, format="png")
    partial.replace(path)
    return path


def run_eda(training_set: Path, report: Path, out_dir: Path) -> list[Path]:
    """Write the three plots; return their paths. Raises ``EdaError`` on unusable input."""
    if not training_set.is_file():
        raise EdaError(f"training set: file not found: {training_set}")
    if not report.is_file():
        raise EdaError(f"data-quality report: file not found: {report}")
    frame = pd.read_csv(training_set, dtype={ID: str})
    check_training_set(frame, f"training set {training_set.name}")
    try:
        dq = json.loads(report.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise EdaError(f"data-quality report {report.name}: not valid JSON ({error})") from None
    check_report(dq, f"data-quality report {report.name}")
    figures: Iterable[tuple[Figure, str]] = (
        (plot_distributions(frame), DISTRIBUTION_PLOT),
        (plot_flag_rates(frame), FLAG_PLOT),
        (plot_quality(dq), QUALITY_PLOT),
    )
    return [_save(fig, out_dir / name) for fig, name in figures]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m features.eda",
        description="Plots of the training set and the data-quality report (PNG).",
    )
    parser.add_argument("--training-set", type=Path, default=Path("artifacts/training_set.csv"))
    parser.add_argument("--report", type=Path, default=Path("artifacts/dq_report.json"))
    parser.add_argument("--out", type=Path, default=Path("artifacts/eda"))
    args = parser.parse_args(argv)
    try:
        paths = run_eda(args.training_set, args.report, args.out)
    except EdaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
