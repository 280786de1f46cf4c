"""Which way each feature points, and the words a customer reads when it counts against them.

One table, keyed by feature name, for every feature in ``features.definitions.FEATURES``:

* ``risk_direction``: +1 when a higher value means a riskier customer, -1 when a lower one
  does. Training limits each coefficient to this sign (``scoring.constrained``), so a
  customer can never be told that spending *less* or being paid *every* month counted
  against them.
* ``family``: the reason family the feature belongs to. Reasons are given per family
  (income, spending, ...), in the family's plain-English text, never per raw column.
* ``use``: False for features that must not be model inputs, with ``why``.

A feature that is added to ``FEATURES`` without an entry here stops training with a message
naming it (``check_table``), so nobody has to remember to come here: the table is the one
place a direction is declared. Serving reads directions and families from the bundle's
manifest (written from this table at training time), so an old bundle keeps its own words.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Direction = Literal[-1, 1]

# Reason families, in the order they are listed in documentation. Texts are what a customer
# reads in an adverse-action notice: short, factual, no jargon, nothing about the model.
FAMILIES: dict[str, str] = {
    "income": "Income paid into your account was low, irregular or had stopped.",
    "spending": "Money going out of your account was high compared with money coming in.",
    "housing": "Rent took a large share of your income.",
    "gambling": "Your account showed payments to gambling companies.",
    "fees": "Your account was charged fees, such as overdraft or unpaid-item fees.",
    "account_history": "Your account history with us was short or had few transactions.",
}


@dataclass(frozen=True)
class FeatureRisk:
    """How one feature may enter a credit model."""

    family: str | None
    risk_direction: Direction | None
    use: bool = True
    why: str = ""  # why a feature is excluded (use=False), or what its direction means


def excluded(why: str) -> FeatureRisk:
    """An entry for a feature that must not be a model input."""
    return FeatureRisk(None, None, use=False, why=why)


def grows_with_history(rate: str) -> str:
    """Why a total stays out of models: it grows with the length of the history."""
    return (
        "a total over the history, so it grows with its length: a model using it scores "
        f"the same customer differently on two months and on six; the model uses {rate}"
    )


RISK_TABLE: dict[str, FeatureRisk] = {
    "num_transactions": excluded(grows_with_history("transactions_per_month")),
    "total_debit": excluded(grows_with_history("spend_to_income")),
    "total_credit": excluded(grows_with_history("credit_per_month")),
    "avg_amount": FeatureRisk(
        "spending", -1, why="signed mean: lower means outgoings outweigh income"
    ),
    "net_flow": excluded(grows_with_history("spend_to_income")),
    "max_debit": FeatureRisk("spending", 1, why="a larger single outgoing"),
    "has_rent": FeatureRisk(
        "housing", 1, why="rent is a fixed commitment; the burden is rent_to_income"
    ),
    "has_salary": FeatureRisk("income", -1, why="no salary seen"),
    "has_tesco": excluded(
        "a brand flag: where someone shops is not a credit reason, and it can stand in for "
        "where they live"
    ),
    "has_netflix": excluded("a brand flag: one subscription service is not a credit reason"),
    "has_transfer": excluded(
        "transfers in and out are flagged alike, so the flag has no risk direction"
    ),
    "has_gambling": FeatureRisk("gambling", 1, why="any gambling payment"),
    "has_bonus": FeatureRisk("income", -1, why="no bonus seen"),
    "has_fee": FeatureRisk("fees", 1, why="any bank fee"),
    "rent_to_income": FeatureRisk("housing", 1, why="a larger share of income goes on rent"),
    "gambling_spend": excluded(grows_with_history("gambling_per_month")),
    "fee_count": excluded(grows_with_history("fees_per_month")),
    "days_since_last_salary": FeatureRisk("income", 1, why="longer since the last salary"),
    "salary_month_share": FeatureRisk("income", -1, why="salary in fewer of the active months"),
    "active_days": excluded(
        "the length of the history itself: a model using it scores the same customer "
        "differently on two months of history and on six"
    ),
    # Per-month rates (featurespec): the same risk as the totals above, but they do not grow
    # with the length of the history, so a customer scores alike on two months or six.
    "transactions_per_month": FeatureRisk(
        "account_history", -1, why="fewer transactions a month: a thinner, less certain history"
    ),
    "credit_per_month": FeatureRisk("income", -1, why="less money coming in each month"),
    "debit_per_month": excluded(
        "outgoings on their own mostly track income (more money in, more money out); the "
        "spending risk is spending against income, spend_to_income"
    ),
    "gambling_per_month": FeatureRisk("gambling", 1, why="more spent on gambling each month"),
    "fees_per_month": FeatureRisk("fees", 1, why="more bank fees each month"),
    "spend_to_income": FeatureRisk(
        "spending", 1, why="more money going out for each pound coming in"
    ),
    "rent_burden": FeatureRisk("housing", 1, why="a larger share of income goes on rent"),
    "salary_stopped": FeatureRisk(
        "income", 1, why="a salary was paid but not in the last month before the decision"
    ),
}


class RiskTableError(ValueError):
    """A feature has no (or an invalid) entry in ``RISK_TABLE``; the message names it."""


def check_table(
    features: Iterable[str], table: dict[str, FeatureRisk] | None = None
) -> dict[str, FeatureRisk]:
    """Every feature's entry, in the given order; refuses missing or invalid entries."""
    table = RISK_TABLE if table is None else table
    features = list(features)
    missing = [f for f in features if f not in table]
    if missing:
        raise RiskTableError(
            f"features without a risk direction and reason family: {missing}. Add each to "
            "scoring/reasons.py RISK_TABLE (risk_direction +1 if higher is riskier, -1 if "
            "lower is; a family from FAMILIES; use=False with why to keep it out of models)"
        )
    for name in features:
        entry = table[name]
        if not entry.use:
            if not entry.why:
                raise RiskTableError(f"{name}: an excluded feature must say why")
            continue
        if entry.family not in FAMILIES:
            raise RiskTableError(f"{name}: unknown reason family {entry.family!r}")
        if entry.risk_direction not in (-1, 1):
            raise RiskTableError(f"{name}: risk_direction must be +1 or -1")
    return {name: table[name] for name in features}


def model_inputs(features: Iterable[str]) -> list[str]:
    """The features a model may use, in the given order (excluded ones left out)."""
    table = check_table(features)
    return [name for name, entry in table.items() if entry.use]
