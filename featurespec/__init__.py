"""The features row: every feature's name, kind, meaning and accepted range.

This is the contract between the pipeline that computes features (``features``) and the
API and training that consume them (``scoring``): both read it, neither reads the other.
How each feature is computed lives in ``features.definitions``. Pure data, no imports
beyond the standard library, so loading it costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

# Cap for day counts: one year. Also the value of days_since_last_salary with no salary.
MAX_DAYS = 365
# The range every feature value must lie in, shared with the API (``scoring.schema`` reads
# these): larger values are data errors, not customers. The pipeline withholds a customer
# whose features fall outside it (``features.definitions.out_of_bounds``), so it never
# publishes a value the API would refuse.
MAX_ABS_MONEY = 1e10
MAX_COUNT = 10**9
# One month of history, in days: a Julian year over twelve (exact in binary floating point,
# so every engine computes the same rates to the last bit). Per-month rates divide by the
# customer's observed span in these units, and never by less than one month
# (features/README.md, "Months of history").
DAYS_PER_MONTH = 30.4375
# A salary is "stopped" when the last one came more than this many whole days before the
# as-of point: a monthly pay missed, with a few days' slack for weekends and holidays.
SALARY_GAP_DAYS = 35
# Caps of the shares (spend_to_income: ten times income, or no income seen; rent_burden:
# all of it).
MAX_SPEND_TO_INCOME = 10.0
MAX_RENT_BURDEN = 1.0
# Sign rules from the team contract (total_debit <= 0, credits and debit sizes >= 0, ...)
# that a feature's kind alone does not imply.
EXTRA_BOUNDS: dict[str, dict[str, float]] = {
    "total_debit": {"le": 0},
    "total_credit": {"ge": 0},
    "max_debit": {"ge": 0},
    "gambling_spend": {"ge": 0},
    "salary_month_share": {"le": 1},
    "credit_per_month": {"ge": 0},
    "debit_per_month": {"le": 0},
    "gambling_per_month": {"ge": 0},
    "spend_to_income": {"le": MAX_SPEND_TO_INCOME},
    "rent_burden": {"le": MAX_RENT_BURDEN},
}
KIND_BOUNDS: dict[str, tuple[float, float]] = {
    "count": (0, MAX_COUNT),
    "days": (0, MAX_DAYS),
    "flag": (0, 1),
    "money": (-MAX_ABS_MONEY, MAX_ABS_MONEY),
    "ratio": (0, MAX_ABS_MONEY),
}


@dataclass(frozen=True)
class Feature:
    """One output column: its type and the words an analyst needs to trust it."""

    name: str
    kind: str  # "count", "money", "flag", "ratio", "days"
    definition: str
    why: str
    missing_rule: str = "always defined for a customer with at least one used transaction"


FLAG_CATEGORIES = ("rent", "salary", "tesco", "netflix", "transfer", "gambling", "bonus", "fee")

FEATURES: tuple[Feature, ...] = (
    Feature(
        "num_transactions",
        "count",
        "Number of used transactions.",
        "Activity level; thin files are riskier and less certain.",
    ),
    Feature("total_debit", "money", "Sum of debits in GBP (zero or negative).", "Total outgoings."),
    Feature(
        "total_credit",
        "money",
        "Sum of credits in GBP (zero or positive).",
        "Total income and inflows.",
    ),
    Feature(
        "avg_amount",
        "money",
        "Mean signed amount in GBP (credits +, debits -).",
        "Typical transaction size and direction.",
    ),
    Feature(
        "net_flow",
        "money",
        "total_credit + total_debit, in GBP.",
        "Money left over; persistent negative flow precedes arrears.",
    ),
    Feature(
        "max_debit",
        "money",
        "Largest single debit in GBP, as a positive number; 0 if none.",
        "Large one-off outgoings signal shocks or big commitments.",
    ),
    *(
        Feature(
            f"has_{c}",
            "flag",
            f"1 if any transaction falls in the '{c}' category, else 0.",
            f"Presence of {c} activity (lexicon category '{c}').",
        )
        for c in FLAG_CATEGORIES
    ),
    Feature(
        "rent_to_income",
        "ratio",
        "Rent debits (GBP, positive) divided by total_credit.",
        "Housing-cost burden, a classic affordability measure.",
        "0 when total_credit is 0 (no income seen); has_salary and total_credit tell why",
    ),
    Feature(
        "gambling_spend",
        "money",
        "Sum of gambling debits in GBP, as a positive number.",
        "Gambling spend is a recognised affordability red flag.",
    ),
    Feature(
        "fee_count",
        "count",
        "Number of bank-fee transactions (overdraft, unpaid, ...).",
        "Overdraft and unpaid-item fees show an account already under strain.",
    ),
    Feature(
        "days_since_last_salary",
        "days",
        "Whole days from the last salary credit to the as-of point (the start of the "
        "customer's decision date, or the batch's as-of), capped at 365.",
        "A stopped salary is the strongest early sign of default.",
        "365 (the cap) when no salary was seen",
    ),
    Feature(
        "salary_month_share",
        "ratio",
        "Share of the customer's active calendar months that contain a salary credit.",
        "Income regularity: steady monthly pay versus irregular income.",
        "always defined (a customer has at least one active month)",
    ),
    Feature(
        "active_days",
        "days",
        "Days from first to last transaction, plus one, capped at 365.",
        "Length of observed history; short histories make every other feature noisier.",
    ),
    # Rates per month of observed history: the totals above grow with the length of the
    # history, these do not, so a model using them scores a customer alike on two months
    # of history or six. "Months" is the span from the customer's first transaction to the
    # as-of point (the decision date, or the batch's as-of), at least one month.
    Feature(
        "transactions_per_month",
        "ratio",
        "num_transactions per month of observed history.",
        "Activity level that does not grow with the length of the history.",
    ),
    Feature(
        "credit_per_month",
        "money",
        "total_credit per month of observed history, in GBP (zero or positive).",
        "Income and inflows per month: comparable across history lengths.",
    ),
    Feature(
        "debit_per_month",
        "money",
        "total_debit per month of observed history, in GBP (zero or negative).",
        "Outgoings per month: comparable across history lengths.",
    ),
    Feature(
        "gambling_per_month",
        "money",
        "gambling_spend per month of observed history, in GBP (zero or positive).",
        "Gambling spend per month: an affordability red flag that does not grow with the "
        "length of the history.",
    ),
    Feature(
        "fees_per_month",
        "ratio",
        "fee_count per month of observed history.",
        "Bank fees per month: strain on the account, comparable across history lengths.",
    ),
    # Shares and states that do not grow with the history either.
    Feature(
        "spend_to_income",
        "ratio",
        "Debits (as a positive sum) divided by credits, capped at 10; 10 when there are "
        "debits but no credits, 0 when neither.",
        "Spending beyond income precedes arrears; on its own, spending mostly tracks income.",
        "always defined (the cap stands for 'no income seen')",
    ),
    Feature(
        "rent_burden",
        "ratio",
        "Rent debits divided by credits, capped at 1; 1 when rent was paid but no credit seen.",
        "Housing-cost burden without rent_to_income's outliers: a window that holds a rent "
        "payment but not the income it is paid from says 'all of it' and no more.",
        "0 without rent",
    ),
    Feature(
        "salary_stopped",
        "flag",
        f"1 if a salary credit was seen but none in the last {SALARY_GAP_DAYS} days before "
        "the as-of point, else 0.",
        "A salary that stops (a missed monthly pay) is the strongest early sign of default; "
        "days_since_last_salary alone cannot tell it from never having had one.",
    ),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)


def feature_bounds(feature: Feature) -> tuple[float, float]:
    """(lowest, highest) accepted value of a feature: its kind's range and any sign rule."""
    low, high = KIND_BOUNDS[feature.kind]
    extra = EXTRA_BOUNDS.get(feature.name, {})
    return max(low, extra.get("ge", low)), min(high, extra.get("le", high))


FLAG_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.kind == "flag")
TARGET = "defaulted"
ID = "customer_id"
