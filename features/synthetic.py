"""Synthetic bank transactions whose default probability is known, for training and tests.

Why: the handover set has 10 rows. To train, to test the pipeline at scale and to judge a
model we need realistic data of any size *and* the truth behind it. Each customer gets a
latent risk; risk drives behaviours the features can see (gambling, bank fees, a salary
that stops, rent share of income, spending beyond income) and a known default
probability. ``truth.csv`` holds that probability, so a model's AUC can be compared with
the best achievable one (the oracle AUC).

Decision dates: every customer applied for credit on a day between October 2024 and March
2025 (``labels.csv`` has ``decision_date``; six monthly cohorts for out-of-time
validation) after a history of a few weeks to over a year (thin, medium and long, in a
mix that is a parameter). Its extract runs on to the end of its 90-day outcome window, as a
real extract would: what happens after the decision (a salary that stops, arrears fees)
follows from the outcome and is in the file, so a pipeline that reads past the decision
date learns the outcome. The default probability depends on behaviour before the decision
only, and the history's length carries no signal, so a model that does well here scores
customers alike whatever the length of their history.

With ``messy=True`` every data-quality problem of the team contract is injected at
0.05-1% rates. Each damaged row breaks exactly one rule, and the first rule that matches
in the contract's order is the injected one, so ``injected.json`` is an exact answer key
for the pipeline's report.

Everything is vectorised and written in fixed-size blocks of customers, so 10M rows take
seconds and little memory; the output depends only on the arguments (same seed, same bytes).
"""

from __future__ import annotations

import argparse
import calendar
import datetime
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.rules import RuleCode

C = RuleCode
# The calendar the data lives in, fixed (never "today": output must not drift). Day 0 is
# CALENDAR_START; every timestamp falls on or before END_TS.
CALENDAR_START = datetime.date(2023, 7, 1)
START_TS = calendar.timegm(CALENDAR_START.timetuple())
END_TS = calendar.timegm((2025, 6, 30, 23, 59, 59))
SECONDS_PER_DAY = 86_400
DAYS = (END_TS + 1 - START_TS) // SECONDS_PER_DAY
# First day of every calendar month from CALENDAR_START to one month past END_TS, as day
# offsets, and each month's number (1-12).
_MONTHS = np.arange(
    np.datetime64(CALENDAR_START, "M"), np.datetime64("2025-08", "M"), dtype="datetime64[M]"
)
MONTH_START_DAY = (_MONTHS.astype("datetime64[D]") - np.datetime64(CALENDAR_START, "D")).astype(
    np.int64
)
CALENDAR_MONTH = _MONTHS.astype(np.int64) % 12 + 1
MONTH_ABBR = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
BONUS_CALENDAR_MONTH = 12  # December: year-end bonuses
# Credit decisions (application dates) fall on days from DECISION_FIRST to DECISION_LAST:
# six calendar-month cohorts, each followed by its 90-day outcome window before END_TS.
DECISION_FIRST = datetime.date(2024, 10, 1)
DECISION_LAST = datetime.date(2025, 3, 31)
# Each applicant's extract runs to the end of its outcome window: the transactions after
# the decision are in the file, as in a real extract, and must not reach the features.
OUTCOME_DAYS = 90
# History before the decision, in days (low inclusive, high exclusive), by kind; the mix is
# a parameter. Thin files have a few weeks, long ones more than the default lookback.
HISTORY_DAYS = {"thin": (14, 61), "medium": (61, 183), "long": (183, 401)}
DEFAULT_HISTORY_MIX = (0.15, 0.45, 0.4)
TARGET_DEFAULT_RATE = 0.12
# Customers per generation block. Fixed, so output bytes never depend on the machine.
BLOCK_CUSTOMERS = 20_000
# Clean amounts stay below £10,000 so `large_amount` appears only where injected.
MAX_CLEAN_PENCE = 999_999

LAYOUTS: dict[str, tuple[tuple[str, ...], tuple[str, str, str]]] = {
    "brief": (
        ("customer_id", "transaction_id", "amount", "type", "description", "timestamp"),
        ("customer_id", "defaulted", "decision_date"),
    ),
    "handover": (
        ("transaction_id", "customer_id", "txn_timestamp", "amount", "txn_type", "description"),
        ("customer_id", "defaulted_within_90d", "application_date"),
    ),
}
# Output header name -> canonical field.
FIELD_OF = {
    "txn_timestamp": "timestamp",
    "txn_type": "type",
    "defaulted_within_90d": "defaulted",
    "application_date": "decision_date",
}

# Injection rates (share of a block's rows), in the contract's first-match order.
TRANSACTION_RATES: dict[RuleCode, float] = {
    C.DUPLICATE: 0.005,
    C.MALFORMED_ROW: 0.001,
    C.MISSING_CUSTOMER_ID: 0.002,
    C.MISSING_TRANSACTION_ID: 0.002,
    C.MISSING_AMOUNT: 0.002,
    C.INVALID_AMOUNT: 0.003,
    C.AMOUNT_OUT_OF_RANGE: 0.001,
    C.MISSING_TIMESTAMP: 0.002,
    C.INVALID_TIMESTAMP: 0.002,
    C.TIMESTAMP_OUT_OF_RANGE: 0.001,
    C.INVALID_TYPE: 0.002,
    C.CONFLICTING_TRANSACTION_ID: 0.002,
    C.TYPE_PADDED_OR_MIXED_CASE: 0.005,
    C.MISSING_TYPE: 0.003,
    C.SIGN_DISAGREES_WITH_TYPE: 0.004,
    C.MISSING_DESCRIPTION: 0.005,
    C.NON_ISO_TIMESTAMP: 0.005,
    C.LARGE_AMOUNT: 0.002,
}
# Accepted-as-valid spellings (no rule fires): "£45.99", "1,234.56", "dr"/"cr".
VARIANT_RATE = 0.003
LABEL_RATES: dict[str, float] = {  # rule codes where a rule is injected
    "customers_dropped": 0.005,
    C.INVALID_LABEL: 0.003,
    "conflicting_customers": 0.002,
    "duplicate_label": 0.003,
    "labels_without_transactions": 0.003,
}
# With decision dates: label rows whose date is empty, not a date, or contradicted.
DATE_RATES: dict[str, float] = {
    C.MISSING_DECISION_DATE: 0.002,
    C.INVALID_DECISION_DATE: 0.002,
    "conflicting_date_customers": 0.002,
}
# Accepted-as-valid date spelling in messy labels (no rule fires): UK day-first.
UK_DATE_RATE = 0.01
INVALID_DATES = (
    "2025-02-30",
    "31/04/2025",
    "2025/01/15",
    "15-01-2025",
    "2025-1-5",
    "yesterday",
    "1985-06-01",
    "2099-01-01",
)
INVALID_AMOUNTS = ("1e308", "NaN", "inf", "-inf", "12.3.4", "abc", "1.2e3", "--5.00")
INVALID_TIMESTAMPS = (
    "2025-02-30T10:00:00",
    "2025-13-01T09:00:00",
    "32/01/2025",
    "not a date",
    "2025-06-31T25:61:00",
)
OUT_OF_RANGE_YEARS = ("1969", "1985", "2099")
INVALID_TYPES = ("transfer", "refund", "x", "debitt", "pending", "unknown")
INVALID_LABELS = ("2", "-1", "yes", "Y", "unknown", "0.5", "defaulted")

# ---------------------------------------------------------------------------------------
# Description vocabulary: every description any row can have, grouped by kind.
# ---------------------------------------------------------------------------------------

# fmt: off
CITIES = (
    "LONDON", "LEEDS", "MANCHESTER", "BRISTOL", "LIVERPOOL", "GLASGOW", "CARDIFF", "YORK",
    "BIRMINGHAM", "NOTTINGHAM", "SHEFFIELD", "NEWCASTLE", "BRIGHTON", "EDINBURGH", "LEICESTER",
)
NAMES = (
    "J SMITH", "A PATEL", "M JONES", "K LEE", "D WILSON", "S KHAN", "R TAYLOR", "L BROWN",
    "E DAVIES", "C EVANS", "P WRIGHT", "H ALI", "T WALKER", "N HUGHES", "O GREEN",
)
# Employers: "{mon}" is the pay month. "SAL" alone is not in the lexicon (a realistic miss).
EMPLOYERS = (
    ("ACME LTD PAYROLL {mon}", 3.0), ("NHS PAYROLL", 2.0), ("GLOBEX PLC SALARY", 1.5),
    ("INITECH LTD WAGES {mon}", 1.0), ("HOOLI UK PAYROLL", 1.0), ("TESCO PLC PAYROLL", 1.0),
    ("BGC SALARY STARK INDUSTRIES", 1.0), ("LEEDS CITY COUNCIL SALARY", 1.0),
    ("AMAZON UK SERVICES SALARY {mon}", 1.0), ("BGC WAYNE ENT LTD SAL", 0.3),
)
RENT_STYLES = (
    ("RENT {mon}", 3.0), ("STANDING ORDER RENT", 2.0), ("HAMPTONS LETTINGS", 1.0),
    ("FOXTONS RENTAL {mon}", 1.0), ("SO J BROWN LANDLORD", 1.0), ("RENT PAYMENT FLAT 2", 1.0),
)
# (description, monthly price in pence, popularity). PARENTPAY and BETTER GYM are traps.
SUBSCRIPTIONS = (
    ("NETFLIX.COM", 1099, 4.0), ("SPOTIFY UK", 1199, 3.0), ("DISNEY PLUS", 799, 1.5),
    ("AMAZON PRIME*2K4LA", 899, 3.0), ("SKY DIGITAL", 3500, 1.5), ("VODAFONE LTD", 2500, 2.0),
    ("EE LIMITED", 3000, 2.0), ("BRITISH GAS", 8500, 2.0), ("OCTOPUS ENERGY", 9000, 2.0),
    ("COUNCIL TAX DD", 14500, 2.5), ("TV LICENCE MBP", 1450, 1.5), ("PUREGYM", 2499, 1.0),
    ("BETTER GYM", 3200, 0.7), ("PARENTPAY", 4500, 0.8), ("THAMES WATER", 3800, 1.0),
)
GROCERS = (
    ("TESCO", ("TESCO STORES {n} {city}", "TESCO EXPRESS {n} {city}", "TESCO PFS {n}",
               "TESCO.COM")),
    ("SAINSBURYS", ("SAINSBURYS S/MKT", "SAINSBURY'S {n} {city}", "JS ONLINE GROCERY")),
    ("ASDA", ("ASDA SUPERSTORE {n}", "ASDA STORES {city}")),
    ("LIDL", ("LIDL GB {city}",)),
    ("ALDI", ("ALDI {n} {city}",)),
    ("MORRISONS", ("WM MORRISON {n}", "MORRISONS {city}")),
    ("COOP", ("CO-OP GROUP {n}", "COOP FOOD {city}")),
    ("MANDS", ("M&S SIMPLY FOOD {n}", "MARKS&SPENCER {city}")),
)
GROCER_WEIGHTS = np.array([3.0, 2.0, 1.5, 1.2, 1.2, 1.0, 0.8, 0.6])
GROCER_VARIANTS = 64
OTHER_KIND_TEMPLATES: dict[str, tuple[str, ...]] = {
    "transport": (
        "TFL TRAVEL CH", "TFL.GOV.UK/CP", "TRAINLINE.COM", "UBER *TRIP {code}",
        "SHELL {n} {city}", "BP {n}", "ESSO {city}", "NATIONAL RAIL", "FIRST BUS",
    ),
    "shopping": (
        "PRET A MANGER {city}", "GREGGS {n}", "COSTA COFFEE {n}", "STARBUCKS {city}",
        "AMAZON.CO.UK*{code}", "AMZNMKTPLACE", "PAYPAL *EBAY", "ARGOS {n}", "BOOTS {n} {city}",
        "JUST EAT", "DELIVEROO", "MCDONALDS {n}", "PRIMARK {city}", "NEXT RETAIL",
        "WETHERSPOON {n}", "CINEWORLD {city}", "PAYPAL *STEAM, 35314369001",
    ),
    "transfer_out": (
        "FASTER PAYMENT TO {name}", "FPS TO {name}", "TFR TO SAVINGS {n}",
        "TRANSFER TO {name}", "MOBILE PYMT TO {name}",
    ),
    "card_repayment": (
        "BARCLAYCARD PAYMENT", "AMEX PAYMENT RECEIVED", "MBNA CREDIT CARD", "HSBC CREDIT CARD",
        "CAPITAL ONE DD",
    ),
    "cash": ("LINK ATM {n} {city}", "CASH WITHDRAWAL {city}", "NOTEMACHINE {n}"),
    "transfer_in": (
        "TRANSFER FROM {name}", "FASTER PAYMENT FROM {name}", "BANK GIRO CREDIT REF {n}",
        "FPS CREDIT {name}", "REFUND AMAZON.CO.UK",
    ),
    "gig": (
        "UBER BV PAYOUT", "DELIVEROO RIDER", "UPWORK PAYOUT", "ETSY PAYOUT", "AIRBNB PAYOUT",
        "STRIPE PAYMENTS UK", "DWP UC", "HMRC TAX CREDITS", "JUST EAT COURIER",
    ),
    # POKERSTARS and BETFRED are real gambling the lexicon misses (whole-word matching).
    "gambling": (
        "PADDY POWER", "BET365", "WILLIAM HILL {n}", "SKYBET", "LADBROKES", "CORAL RACING",
        "BETFAIR", "NATIONAL LOTTERY", "POKERSTARS", "888 CASINO", "GROSVENOR CASINO {city}",
        "BETFRED {n}",
    ),
    "gambling_win": (
        "PADDY POWER WINNINGS", "BETFAIR PAYOUT", "BET365 WITHDRAWAL", "SKYBET WINNINGS",
    ),
    "fee": (
        "OVERDRAFT FEE", "UNPAID ITEM CHARGE", "RETURNED DD FEE", "LATE PAYMENT FEE",
        "OVERDRAFT INTEREST", "UNARRANGED OVERDRAFT",
    ),
    "bonus": ("BONUS PAYMENT", "ANNUAL BONUS", "PERFORMANCE BONUS"),
    # Lexicon traps: contain "rent", "bet", "current account" but are none of those.
    "trap_debit": ("RENTOKIL INITIAL", "WWW.ALPHABET.CO.UK", "TORRENTIAL CAFE {city}"),
    "trap_credit": ("CURRENT ACCOUNT INTEREST", "CASHBACK CURRENT ACCOUNT"),
}
# fmt: on
OTHER_VARIANTS = 24  # filled-in variants per template
FEE_PENCE = np.array([500, 600, 1200, 1500, 2500, 3500])

# Row kinds. Structured kinds are monthly or one-off; random kinds fill the rest.
# fmt: off
KINDS = (
    "salary", "rent", "subscription", "bonus", "grocery", "transport", "shopping",
    "transfer_out", "card_repayment", "cash", "transfer_in", "gig", "gambling", "gambling_win",
    "fee", "trap_debit", "trap_credit",
)
# fmt: on
K = {name: i for i, name in enumerate(KINDS)}
CREDIT_KINDS = np.isin(
    np.arange(len(KINDS)),
    [K[k] for k in ("salary", "bonus", "transfer_in", "gig", "gambling_win", "trap_credit")],
)
RANDOM_KINDS = KINDS[4:]
# Shares of the rows left after the behaviour-driven kinds.
EVERYDAY = {
    "grocery": 0.34,
    "transport": 0.18,
    "shopping": 0.30,
    "transfer_out": 0.06,
    "card_repayment": 0.04,
    "cash": 0.03,
    "transfer_in": 0.05,
}
# Card-sized spending: (median pence, log-sd) of a lognormal.
TYPICAL_PENCE = {
    "grocery": (2800, 0.8),
    "transport": (900, 0.9),
    "shopping": (1800, 1.0),
    "trap_debit": (3000, 0.5),
}
# Lump spending absorbs the rest of the customer's habitual outgoings (relative weights).
LUMP_SCALE = {"transfer_out": 1.0, "card_repayment": 1.5, "cash": 0.15}


@dataclass(frozen=True)
class Vocabulary:
    """All descriptions, CSV-quoted, with where each kind's block starts and its size."""

    quoted: pa.Array
    raw: list[str]
    offset: np.ndarray  # per kind
    size: np.ndarray  # per kind


def _fill(template: str, rng: np.random.Generator) -> str:
    code = "".join(rng.choice(list("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"), 5))
    return template.format(
        n=f"{rng.integers(1, 9999):04d}" if rng.random() < 0.7 else str(rng.integers(10, 999)),
        city=CITIES[rng.integers(len(CITIES))],
        name=NAMES[rng.integers(len(NAMES))],
        code=code,
        mon="{mon}",
    )


def build_vocabulary() -> Vocabulary:
    """Descriptions per kind (fixed: they do not depend on the seed)."""
    rng = np.random.default_rng(20250630)
    blocks: dict[str, list[str]] = {}
    blocks["salary"] = [t.format(mon=m) for t, _ in EMPLOYERS for m in MONTH_ABBR]
    blocks["rent"] = [t.format(mon=m) for t, _ in RENT_STYLES for m in MONTH_ABBR]
    blocks["subscription"] = [name for name, _, _ in SUBSCRIPTIONS]
    blocks["bonus"] = list(OTHER_KIND_TEMPLATES["bonus"])
    blocks["grocery"] = [
        _fill(templates[i % len(templates)], rng)
        for _, templates in GROCERS
        for i in range(GROCER_VARIANTS)
    ]
    for kind in RANDOM_KINDS[1:]:
        templates = OTHER_KIND_TEMPLATES[kind]
        blocks[kind] = [
            _fill(templates[i % len(templates)], rng)
            for i in range(OTHER_VARIANTS * len(templates))
        ]
    raw = [text for kind in KINDS for text in blocks[kind]]
    sizes = np.array([len(blocks[kind]) for kind in KINDS])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    quoted = pa.array(['"' + t.replace('"', '""') + '"' for t in raw])
    return Vocabulary(quoted=quoted, raw=raw, offset=offsets, size=sizes)


# ---------------------------------------------------------------------------------------
# Customers: latent risk -> behaviours -> true default probability.
# ---------------------------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _weighted_choice(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    return rng.choice(len(weights), size=n, p=np.asarray(weights) / np.sum(weights))


def _first_month(day: np.ndarray, day_of_month: np.ndarray) -> np.ndarray:
    """Index of the first calendar month whose given day falls on or after ``day``."""
    month = np.searchsorted(MONTH_START_DAY, day, side="right") - 1
    before = MONTH_START_DAY[month] + day_of_month - 1 < day
    return month + before


def _day_of(date: datetime.date) -> int:
    return (date - CALENDAR_START).days


def customer_profiles(
    n: int,
    rng: np.random.Generator,
    default_rate: float = TARGET_DEFAULT_RATE,
    history_mix: tuple[float, float, float] = DEFAULT_HISTORY_MIX,
) -> pd.DataFrame:
    """Per-customer behaviour parameters, decision date and history, and the true default
    probability. The probability depends on behaviour before the decision only; the length
    of the history is drawn independently of risk, so it carries no signal of its own."""
    z = rng.standard_normal(n)
    p = pd.DataFrame({"z": z})
    p["salaried"] = rng.random(n) < _sigmoid(1.6 - 0.9 * z)
    income = np.exp(rng.normal(np.log(2300), 0.35, n) - 0.15 * z)
    p["income_pence"] = np.round(np.clip(income, 800, 8500) * 100).astype(np.int64)
    first, last = _day_of(DECISION_FIRST), _day_of(DECISION_LAST)
    p["decision_day"] = rng.integers(first, last + 1, n)
    kind = _weighted_choice(rng, np.asarray(history_mix, dtype=float), n)
    bounds = np.array(list(HISTORY_DAYS.values()))
    p["history_days"] = rng.integers(bounds[kind, 0], bounds[kind, 1])
    p["open_day"] = p["decision_day"] - p["history_days"]
    p["end_day"] = p["decision_day"] + OUTCOME_DAYS
    p["months_active"] = (p["end_day"] - p["open_day"]) / 30.4375
    stopped = p["salaried"] & (rng.random(n) < _sigmoid(-2.4 + 1.0 * z))
    p["salary_stopped"] = stopped
    # A stopped salary stops before the decision (the applicant's behaviour, seen by the
    # lender); the last payday falls 10-150 days before it.
    p["stop_day"] = np.where(stopped, p["decision_day"] - rng.integers(10, 151, n), p["end_day"])
    p["payday"] = rng.integers(24, 29, n)
    p["employer"] = _weighted_choice(rng, np.array([w for _, w in EMPLOYERS]), n)
    p["renter"] = rng.random(n) < 0.6
    share = np.clip(0.27 + 0.08 * z + rng.normal(0, 0.06, n), 0.10, 0.75)
    p["rent_share"] = np.where(p["renter"], share, 0.0)
    p["rent_day"] = rng.integers(1, 6, n)
    p["rent_style"] = _weighted_choice(rng, np.array([w for _, w in RENT_STYLES]), n)
    p["n_subs"] = rng.choice(4, size=n, p=[0.1, 0.3, 0.35, 0.25])
    # Distinct services per customer: Gumbel top-3 on log popularity.
    popularity = np.log([w for _, _, w in SUBSCRIPTIONS])
    keys = popularity[None, :] + rng.gumbel(size=(n, len(SUBSCRIPTIONS)))
    top = np.argsort(-keys, axis=1)[:, :3]
    for k in range(3):
        p[f"sub{k}"] = top[:, k]
        p[f"sub{k}_day"] = rng.integers(1, 29, n)
    gambler = rng.random(n) < _sigmoid(-1.7 + 1.0 * z)
    p["gambler"] = gambler
    p["gamble_per_month"] = np.where(gambler, np.exp(rng.normal(np.log(4) + 0.4 * z, 0.5)), 0)
    share = np.clip(np.exp(rng.normal(np.log(0.03) + 0.5 * z, 0.6)), 0.002, 0.5)
    p["gamble_share"] = np.where(gambler, share, 0.0)
    p["fees_per_month"] = np.exp(-1.5 + 1.1 * z + rng.normal(0, 0.4, n))
    p["spend_ratio"] = np.clip(0.9 + 0.1 * z + rng.normal(0, 0.08, n), 0.55, 1.5)
    p["bonus"] = p["salaried"] & (rng.random(n) < 0.24 * _sigmoid(-z))
    p["grocer"] = _weighted_choice(rng, GROCER_WEIGHTS, n)
    p["activity"] = np.exp(rng.normal(0, 0.5, n))

    eta = (
        0.5 * z
        + 1.6 * stopped
        + 0.8 * ~p["salaried"]
        + 4.0 * np.clip(p["rent_share"] - 0.15, 0, None)
        + 0.5 * gambler
        + 0.6 * gambler * (np.log(share) - np.log(0.03))
        + 0.5 * (np.log(p["fees_per_month"]) + 1.5)
        + 3.0 * (p["spend_ratio"] - 0.9)
        - 0.4 * p["bonus"]
    ).to_numpy(dtype=float)
    p["true_probability"] = _sigmoid(eta + _intercept_for_rate(eta, default_rate))
    p["defaulted"] = rng.random(n) < p["true_probability"]
    # What follows a default (never a cause of it): a salary that stops in the outcome
    # window, and arrears fees. A pipeline that read past the decision date would see it.
    after = p["defaulted"] & p["salaried"] & ~stopped & (rng.random(n) < 0.6)
    p["stop_day"] = np.where(after, p["decision_day"] + rng.integers(0, 61, n), p["stop_day"])
    p["arrears_fees"] = rng.poisson(np.where(p["defaulted"], 3.0, 0.3))
    return p


def _intercept_for_rate(eta: np.ndarray, rate: float) -> float:
    """Intercept making the mean default probability equal ``rate`` (bisection)."""
    low, high = -20.0, 20.0
    for _ in range(60):
        mid = (low + high) / 2
        if _sigmoid(eta + mid).mean() < rate:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _monthly_span(
    first_day: np.ndarray, stop_day: np.ndarray, day_of_month: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(first month, number of months) whose given day falls in [first_day, stop_day)."""
    first = _first_month(first_day, day_of_month)
    stop = _first_month(np.maximum(stop_day, first_day), day_of_month)
    return first, np.maximum(stop - first, 0)


def bonus_days(p: pd.DataFrame) -> list[np.ndarray]:
    """Per bonus month in the calendar: each customer's bonus day, or -1 if it gets none."""
    out = []
    payday = p["payday"].to_numpy()
    start, stop = p["open_day"].to_numpy(), p["stop_day"].to_numpy()
    for month in np.flatnonzero(CALENDAR_MONTH == BONUS_CALENDAR_MONTH):
        day = MONTH_START_DAY[month] + payday - 1
        paid = p["bonus"].to_numpy() & (start <= day) & (day < stop)
        out.append(np.where(paid, day, -1))
    return out


def structured_counts(p: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per customer: first month and number of monthly rows of each structured kind, and
    the number of bonus and post-decision arrears-fee rows."""
    out: dict[str, np.ndarray] = {}
    start, end = p["open_day"].to_numpy(), p["end_day"].to_numpy()
    stop = np.minimum(p["stop_day"].to_numpy(), end)
    first, count = _monthly_span(start, stop, p["payday"].to_numpy())
    out["salary_first"], out["salary_n"] = first, count * p["salaried"].to_numpy()
    first, count = _monthly_span(start, end, p["rent_day"].to_numpy())
    out["rent_first"], out["rent_n"] = first, count * p["renter"].to_numpy()
    for k in range(3):
        first, count = _monthly_span(start, end, p[f"sub{k}_day"].to_numpy())
        out[f"sub{k}_first"] = first
        out[f"sub{k}_n"] = count * (p["n_subs"].to_numpy() > k)
    out["bonus_n"] = sum((d >= 0).astype(np.int64) for d in bonus_days(p))
    out["fee_n"] = p["arrears_fees"].to_numpy()
    out = {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}
    kinds = ("salary", "rent", "sub0", "sub1", "sub2", "bonus", "fee")
    out["total"] = sum(out[f"{k}_n"] for k in kinds)
    return out


def rows_per_customer(
    p: pd.DataFrame, structured_total: np.ndarray, rows: int, rng: np.random.Generator
) -> np.ndarray:
    """Rows per customer summing to ``rows``: all structured rows plus at least one more
    when there is room, else a thinner history (structured rows are then truncated). The
    rest goes by activity times the days the customer's extract spans."""
    n = len(p)
    weights = (p["activity"] * (p["end_day"] - p["open_day"])).to_numpy(dtype=float)
    weights /= weights.sum()
    spare = rows - int(structured_total.sum()) - n
    if spare >= 0:
        return structured_total + 1 + rng.multinomial(spare, weights)
    return 1 + rng.multinomial(rows - n, weights)


# ---------------------------------------------------------------------------------------
# One block of customers -> its rows (numeric arrays), sorted by time.
# ---------------------------------------------------------------------------------------


@dataclass
class Rows:
    """A block's transactions as arrays; descriptions are vocabulary indices."""

    customer: np.ndarray  # global customer index
    transaction: np.ndarray  # transaction number
    pence: np.ndarray  # signed amount
    credit: np.ndarray  # bool
    description: np.ndarray  # vocabulary index
    ts: np.ndarray  # epoch seconds

    def take(self, order: np.ndarray) -> Rows:
        return Rows(*(getattr(self, f)[order] for f in self.__dataclass_fields__))


def _monthly(
    customers: np.ndarray, first: np.ndarray, count: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(customer, month) for ``count`` consecutive months from ``first``, per customer."""
    cust = np.repeat(customers, count)
    starts = np.repeat(np.cumsum(count) - count, count)
    month = first[cust] + np.arange(len(cust)) - starts
    return cust, month


def _spread(
    target: np.ndarray, cust: np.ndarray, weights: np.ndarray, n_customers: int
) -> np.ndarray:
    """Split each customer's ``target`` total over their rows in proportion to weights."""
    total = np.bincount(cust, weights, minlength=n_customers)
    return target[cust] * weights / np.where(total > 0, total, 1)[cust]


def _spread_monthly(
    monthly: np.ndarray,
    cust: np.ndarray,
    day: np.ndarray,
    weights: np.ndarray,
    floor: float = 0.0,
) -> np.ndarray:
    """Split each customer's ``monthly`` total over its rows of each calendar month in
    proportion to ``weights`` (at least ``floor`` per row), so any run of whole months
    holds about that many months' worth, wherever the rows fell."""
    month = np.searchsorted(MONTH_START_DAY, day, side="right") - 1
    groups, group = np.unique(cust * len(MONTH_START_DAY) + month, return_inverse=True)
    owner = groups // len(MONTH_START_DAY)
    rows = np.bincount(group, minlength=len(groups))
    target = np.maximum(monthly[owner], floor * rows)
    return _spread(target, group, weights, len(groups))


def generate_block(
    p: pd.DataFrame,
    counts: dict[str, np.ndarray],
    n_rows: np.ndarray,
    first_customer: int,
    vocab: Vocabulary,
    rng: np.random.Generator,
) -> Rows:
    """Transactions of the customers in ``p`` (a slice of the profiles), sorted by time."""
    m = len(p)
    local = np.arange(m)
    # Structured rows, in priority order (kept first when a history is thin).
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    payday = p["payday"].to_numpy()
    months_per_year = len(MONTH_ABBR)
    cust, month = _monthly(local, counts["salary_first"], counts["salary_n"])
    income = p["income_pence"].to_numpy()
    amount = income[cust] * (1 + rng.normal(0, 0.01, len(cust)))
    desc = (
        vocab.offset[K["salary"]]
        + p["employer"].to_numpy()[cust] * months_per_year
        + CALENDAR_MONTH[month]
        - 1
    )
    day = MONTH_START_DAY[month] + payday[cust] - 1
    parts.append(
        (
            cust,
            np.full(len(cust), K["salary"]),
            amount,
            desc,
            day * SECONDS_PER_DAY + rng.integers(0, 6 * 3600, len(cust)),
        )
    )
    cust, month = _monthly(local, counts["rent_first"], counts["rent_n"])
    amount = (income * p["rent_share"].to_numpy())[cust]
    desc = (
        vocab.offset[K["rent"]]
        + p["rent_style"].to_numpy()[cust] * months_per_year
        + CALENDAR_MONTH[month]
        - 1
    )
    day = MONTH_START_DAY[month] + p["rent_day"].to_numpy()[cust] - 1
    parts.append(
        (
            cust,
            np.full(len(cust), K["rent"]),
            amount,
            desc,
            day * SECONDS_PER_DAY + rng.integers(6 * 3600, 9 * 3600, len(cust)),
        )
    )
    prices = np.array([price for _, price, _ in SUBSCRIPTIONS])
    for k in range(3):
        cust, month = _monthly(local, counts[f"sub{k}_first"], counts[f"sub{k}_n"])
        service = p[f"sub{k}"].to_numpy()[cust]
        day = MONTH_START_DAY[month] + p[f"sub{k}_day"].to_numpy()[cust] - 1
        parts.append(
            (
                cust,
                np.full(len(cust), K["subscription"]),
                prices[service].astype(float),
                vocab.offset[K["subscription"]] + service,
                day * SECONDS_PER_DAY + rng.integers(0, SECONDS_PER_DAY, len(cust)),
            )
        )
    days = np.concatenate(bonus_days(p)) if len(p) else np.empty(0, dtype=np.int64)
    owners = np.tile(local, len(days) // max(m, 1))
    cust, day = owners[days >= 0], days[days >= 0]
    parts.append(
        (
            cust,
            np.full(len(cust), K["bonus"]),
            income[cust] * rng.uniform(0.3, 1.5, len(cust)),
            vocab.offset[K["bonus"]] + rng.integers(0, vocab.size[K["bonus"]], len(cust)),
            day * SECONDS_PER_DAY + rng.integers(0, 6 * 3600, len(cust)),
        )
    )
    # Arrears fees in the outcome window (mostly defaulters'): after the decision.
    cust = np.repeat(local, counts["fee_n"])
    decision, end = p["decision_day"].to_numpy()[cust], p["end_day"].to_numpy()[cust]
    day = decision + (rng.random(len(cust)) * (end - decision)).astype(np.int64)
    parts.append(
        (
            cust,
            np.full(len(cust), K["fee"]),
            FEE_PENCE[rng.integers(0, len(FEE_PENCE), len(cust))].astype(float),
            vocab.offset[K["fee"]] + rng.integers(0, vocab.size[K["fee"]], len(cust)),
            day * SECONDS_PER_DAY + rng.integers(3 * 3600, 6 * 3600, len(cust)),
        )
    )
    s_cust, s_kind, s_amount, s_desc, s_time = (np.concatenate(x) for x in zip(*parts, strict=True))
    # Truncate thin histories: keep each customer's first n_rows structured rows.
    order = np.argsort(s_cust, kind="stable")
    s_cust, s_kind, s_amount, s_desc, s_time = (
        x[order] for x in (s_cust, s_kind, s_amount, s_desc, s_time)
    )
    per = np.bincount(s_cust, minlength=m)
    rank = np.arange(len(s_cust)) - np.repeat(np.cumsum(per) - per, per)
    keep = rank < n_rows[s_cust]
    s_cust, s_kind, s_amount, s_desc, s_time = (
        x[keep] for x in (s_cust, s_kind, s_amount, s_desc, s_time)
    )
    random_n = n_rows - np.bincount(s_cust, minlength=m)

    # Random rows: kind from per-customer probabilities driven by behaviour.
    r_cust = np.repeat(local, random_n)
    months_active = p["months_active"].to_numpy()
    per_row = months_active / np.maximum(random_n, 1)  # months per random row
    special = {
        "gig": np.where(~p["salaried"].to_numpy(), np.minimum(0.5, 8 * per_row), 0),
        "gambling": np.minimum(0.3, p["gamble_per_month"].to_numpy() * per_row),
        "fee": np.minimum(0.2, p["fees_per_month"].to_numpy() * per_row),
        "trap_debit": np.full(m, 0.01),
        "trap_credit": np.full(m, 0.004),
    }
    special["gambling_win"] = special["gambling"] * 0.1
    probs = np.zeros((m, len(RANDOM_KINDS)))
    for name, value in special.items():
        probs[:, RANDOM_KINDS.index(name)] = value
    # Leave at least 30% of a customer's random rows to everyday spending.
    probs *= np.minimum(1.0, 0.7 / probs.sum(axis=1))[:, None]
    rest = 1 - probs.sum(axis=1)
    for name, share in EVERYDAY.items():
        probs[:, RANDOM_KINDS.index(name)] = rest * share
    cumulative = np.cumsum(probs, axis=1)
    cumulative[:, -1] = 1.0
    u = rng.random(len(r_cust))
    r_kind = (
        np.minimum((u[:, None] > cumulative[r_cust]).sum(axis=1), len(RANDOM_KINDS) - 1)
        + K["grocery"]
    )
    # Descriptions: a favourite grocer most of the time; otherwise uniform within the kind.
    variant = rng.random(len(r_cust))
    r_desc = vocab.offset[r_kind] + (variant * vocab.size[r_kind]).astype(np.int64)
    grocery = r_kind == K["grocery"]
    favourite = rng.random(len(r_cust)) < 0.7
    brand = np.where(
        favourite, p["grocer"].to_numpy()[r_cust], rng.integers(0, len(GROCERS), len(r_cust))
    )
    r_desc = np.where(
        grocery,
        vocab.offset[K["grocery"]]
        + brand * GROCER_VARIANTS
        + rng.integers(0, GROCER_VARIANTS, len(r_cust)),
        r_desc,
    )
    # Days anywhere in the customer's extract, except the first random row of each, which
    # falls before the decision (every applicant has some history).
    open_day, end_day = p["open_day"].to_numpy()[r_cust], p["end_day"].to_numpy()[r_cust]
    first_of_customer = np.zeros(len(r_cust), dtype=bool)
    first_of_customer[np.cumsum(random_n)[random_n > 0] - random_n[random_n > 0]] = True
    end_day = np.where(first_of_customer, p["decision_day"].to_numpy()[r_cust], end_day)
    day = open_day + (rng.random(len(r_cust)) * (end_day - open_day)).astype(np.int64)
    time_of_day = np.clip(rng.normal(13.5 * 3600, 3.5 * 3600, len(r_cust)), 6 * 3600, 86_000)
    night = np.mod(rng.normal(21 * 3600, 3 * 3600, len(r_cust)), SECONDS_PER_DAY)
    time_of_day = np.where(r_kind == K["gambling"], night, time_of_day)
    time_of_day = np.where(
        r_kind == K["fee"], rng.integers(3 * 3600, 6 * 3600, len(r_cust)), time_of_day
    )
    r_time = day * SECONDS_PER_DAY + time_of_day.astype(np.int64)

    # Amounts for random rows: credits first, then spending sized to the income habit.
    r_amount = np.zeros(len(r_cust))
    expected_income = income * months_active
    is_kind = {name: r_kind == K[name] for name in RANDOM_KINDS}
    sel = is_kind["gig"]
    target = income * np.exp(rng.normal(0, 0.15, m))
    r_amount[sel] = _spread_monthly(target, r_cust[sel], day[sel], rng.gamma(2.0, size=sel.sum()))
    sel = is_kind["transfer_in"]
    r_amount[sel] = rng.lognormal(np.log(6000), 0.8, sel.sum())
    r_amount[is_kind["gambling_win"]] = rng.lognormal(
        np.log(3000), 1.0, is_kind["gambling_win"].sum()
    )
    r_amount[is_kind["trap_credit"]] = rng.integers(1, 300, is_kind["trap_credit"].sum())
    r_amount[is_kind["fee"]] = FEE_PENCE[rng.integers(0, len(FEE_PENCE), is_kind["fee"].sum())]
    sel = is_kind["gambling"]
    target = p["gamble_share"].to_numpy() * income
    r_amount[sel] = _spread_monthly(target, r_cust[sel], day[sel], rng.gamma(0.8, size=sel.sum()))
    fixed = np.bincount(
        s_cust, np.where(CREDIT_KINDS[s_kind], 0, s_amount), minlength=m
    ) + np.bincount(r_cust, r_amount * (is_kind["fee"] | is_kind["gambling"]), minlength=m)
    for name, (median, sd) in TYPICAL_PENCE.items():
        sel = is_kind[name]
        r_amount[sel] = rng.lognormal(np.log(median), sd, sel.sum())
    fixed += np.bincount(
        r_cust, r_amount * np.isin(r_kind, [K[k] for k in TYPICAL_PENCE]), minlength=m
    )
    # Lumps carry the rest of the habitual outgoings month by month (card bills, transfers
    # and cash are paid from each month's income), so any window of months shows the
    # customer's spending ratio, not the luck of where a few large payments fell.
    sel = np.isin(r_kind, [K[k] for k in LUMP_SCALE])
    monthly = (p["spend_ratio"].to_numpy() * expected_income - fixed) / months_active
    scale = np.zeros(len(KINDS))
    for name, value in LUMP_SCALE.items():
        scale[K[name]] = value
    weights = rng.gamma(2.0, size=sel.sum()) * scale[r_kind[sel]]
    r_amount[sel] = _spread_monthly(monthly, r_cust[sel], day[sel], weights, floor=2000)

    kind = np.concatenate([s_kind, r_kind])
    magnitude = np.clip(np.round(np.concatenate([s_amount, r_amount])), 1, MAX_CLEAN_PENCE)
    credit = CREDIT_KINDS[kind]
    pence = np.where(credit, magnitude, -magnitude).astype(np.int64)
    rows = Rows(
        customer=np.concatenate([s_cust, r_cust]) + first_customer,
        transaction=np.zeros(len(kind), dtype=np.int64),
        pence=pence,
        credit=credit,
        description=np.concatenate([s_desc, r_desc]).astype(np.int64),
        ts=START_TS + np.concatenate([s_time, r_time]).astype(np.int64),
    )
    return rows.take(np.argsort(rows.ts, kind="stable"))


# ---------------------------------------------------------------------------------------
# Messy data: damage chosen rows so that each breaks exactly one rule.
# ---------------------------------------------------------------------------------------

Overrides = dict[str, dict[int, str]]  # field -> {row: raw text}


def _plain_money(pence: int) -> str:
    sign = "-" if pence < 0 else ""
    return f"{sign}{abs(pence) // 100}.{abs(pence) % 100:02d}"


def _iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))


def _pick(options: tuple[str, ...], n: int, rng: np.random.Generator) -> list[str]:
    return [options[i] for i in rng.integers(0, len(options), n)]


def inject_transactions(
    rows: Rows, rng: np.random.Generator
) -> tuple[Overrides, dict[int, str], dict[str, int], dict[str, int]]:
    """Damage a block in place. Returns (field overrides, malformed line kind per row,
    injected counts per reason, accepted-variant counts).

    A customer's first row in the block (its anchor) is never touched, so every customer
    keeps a valid row; duplicate and conflict sources are untouched earlier rows.
    """
    n = len(rows.ts)
    overrides: Overrides = {
        f: {}
        for f in ("customer_id", "transaction_id", "amount", "type", "description", "timestamp")
    }
    _, anchors = np.unique(rows.customer, return_index=True)
    candidate = np.ones(n, dtype=bool)
    candidate[anchors] = False
    pool = rng.permutation(np.flatnonzero(candidate))
    wanted = {code: int(rng.binomial(len(pool), rate)) for code, rate in TRANSACTION_RATES.items()}
    n_variants = int(rng.binomial(len(pool), VARIANT_RATE))
    if sum(wanted.values()) + n_variants > len(pool):  # tiny inputs: inject nothing
        wanted = dict.fromkeys(wanted, 0)
        n_variants = 0
    bounds = np.cumsum([0, *wanted.values(), n_variants])
    targets = {code: np.sort(pool[bounds[i] : bounds[i + 1]]) for i, code in enumerate(wanted)}
    variant_rows = np.sort(pool[bounds[-2] : bounds[-1]])
    touched = np.zeros(n, dtype=bool)
    touched[pool[: bounds[-1]]] = True
    clean = np.flatnonzero(~touched)

    def sources_before(j: np.ndarray) -> np.ndarray:
        before = np.searchsorted(clean, j)  # >= 1: row 0 is an anchor, never touched
        return clean[(rng.random(len(j)) * before).astype(np.int64)]

    def put(field: str, where: np.ndarray, texts: list[str]) -> None:
        overrides[field].update(zip(where.tolist(), texts, strict=True))

    j = targets[C.DUPLICATE]
    i = sources_before(j)
    for name in rows.__dataclass_fields__:
        getattr(rows, name)[j] = getattr(rows, name)[i]
    j = targets[C.CONFLICTING_TRANSACTION_ID]
    i = sources_before(j)
    rows.transaction[j] = rows.transaction[i]
    same = rows.pence[j] == rows.pence[i]
    rows.pence[j[same]] += np.where(rows.credit[j[same]], 1, -1)
    j = targets[C.MALFORMED_ROW]
    malformed = dict(
        zip(j.tolist(), np.where(rng.random(len(j)) < 0.5, "extra", "short"), strict=True)
    )
    for code, field in (
        (C.MISSING_CUSTOMER_ID, "customer_id"),
        (C.MISSING_TRANSACTION_ID, "transaction_id"),
        (C.MISSING_AMOUNT, "amount"),
        (C.MISSING_TIMESTAMP, "timestamp"),
        (C.MISSING_TYPE, "type"),
        (C.MISSING_DESCRIPTION, "description"),
    ):
        put(field, targets[code], [""] * len(targets[code]))
    j = targets[C.INVALID_AMOUNT]
    fixed = _pick(INVALID_AMOUNTS, len(j), rng)
    three_dp = rng.random(len(j)) < 0.4  # e.g. -12.345
    digits = rng.integers(1, 10, len(j))
    put(
        "amount",
        j,
        [
            _plain_money(int(pence)) + str(d) if t else f
            for pence, d, t, f in zip(rows.pence[j], digits, three_dp, fixed, strict=True)
        ],
    )
    j = targets[C.AMOUNT_OUT_OF_RANGE]
    big = rng.integers(100_000_001, 10_000_000_000, len(j))
    put(
        "amount",
        j,
        [_plain_money(int(b if c else -b)) for b, c in zip(big, rows.credit[j], strict=True)],
    )
    j = targets[C.INVALID_TIMESTAMP]
    put("timestamp", j, _pick(INVALID_TIMESTAMPS, len(j), rng))
    j = targets[C.TIMESTAMP_OUT_OF_RANGE]
    years = _pick(OUT_OF_RANGE_YEARS, len(j), rng)
    put("timestamp", j, [y + _iso(int(t))[4:] for y, t in zip(years, rows.ts[j], strict=True)])
    j = targets[C.INVALID_TYPE]
    put("type", j, _pick(INVALID_TYPES, len(j), rng))
    j = targets[C.TYPE_PADDED_OR_MIXED_CASE]
    form = rng.integers(0, 5, len(j))
    words = np.where(rows.credit[j], "credit", "debit")
    put(
        "type",
        j,
        [
            (w.upper(), w.title(), f" {w}", f"{w} ", f" {w.title()} ")[f]
            for w, f in zip(words, form, strict=True)
        ],
    )
    j = targets[C.SIGN_DISAGREES_WITH_TYPE]
    put("amount", j, [_plain_money(-int(pence)) for pence in rows.pence[j]])
    j = targets[C.NON_ISO_TIMESTAMP]
    formats = _pick(("%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y"), len(j), rng)
    put(
        "timestamp",
        j,
        [time.strftime(f, time.gmtime(int(t))) for f, t in zip(formats, rows.ts[j], strict=True)],
    )
    j = targets[C.LARGE_AMOUNT]
    magnitude = rng.integers(1_000_000, 25_000_000, len(j))
    rows.pence[j] = np.where(rows.credit[j], magnitude, -magnitude)

    variants = {"pound_sign": 0, "thousands_separator": 0, "short_type": 0}
    choice = rng.integers(0, 3, len(variant_rows))
    for row, c in zip(variant_rows.tolist(), choice, strict=True):
        pence = int(rows.pence[row])
        if c == 2:
            overrides["type"][row] = "cr" if rows.credit[row] else "dr"
            variants["short_type"] += 1
        elif c == 1 and abs(pence) >= 100_000:
            sign = "-" if pence < 0 else ""
            overrides["amount"][row] = f'"{sign}{abs(pence) // 100:,}.{abs(pence) % 100:02d}"'
            variants["thousands_separator"] += 1
        else:
            overrides["amount"][row] = ("-£" if pence < 0 else "£") + _plain_money(abs(pence))
            variants["pound_sign"] += 1
    counts = {code: len(rows_hit) for code, rows_hit in targets.items()}
    return overrides, malformed, counts, variants


# ---------------------------------------------------------------------------------------
# Formatting: arrays -> CSV bytes, column-wise with Arrow (no per-row Python).
# ---------------------------------------------------------------------------------------

TIME_OF_DAY = pa.array(
    [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(SECONDS_PER_DAY)]
)
TYPE_WORDS = pa.array(["debit", "credit"])


def _money_text(pence: np.ndarray) -> pa.Array:
    magnitude = np.abs(pence)
    pounds = pc.cast(pa.array(magnitude // 100), pa.string())
    pennies = pc.utf8_lpad(pc.cast(pa.array(magnitude % 100), pa.string()), 2, "0")
    sign = pc.if_else(pa.array(pence < 0), "-", "")
    return pc.binary_join_element_wise(sign, pounds, ".", pennies, "")


def _timestamp_text(ts: np.ndarray) -> pa.Array:
    days = ts // SECONDS_PER_DAY
    first = int(days.min())
    calendar_days = np.arange(first, int(days.max()) + 1).astype("datetime64[D]")
    dates = pa.array(np.datetime_as_string(calendar_days).astype(object))
    return pc.binary_join_element_wise(
        dates.take(pa.array(days - first)), TIME_OF_DAY.take(pa.array(ts % SECONDS_PER_DAY)), "T"
    )


def _id_text(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _apply(values: pa.Array, replace: dict[int, str]) -> pa.Array:
    if not replace:
        return values
    mask = np.zeros(len(values), dtype=bool)
    positions = np.fromiter(replace, dtype=np.int64)
    mask[positions] = True
    ordered = [replace[int(i)] for i in np.sort(positions)]
    return pc.replace_with_mask(values, pa.array(mask), pa.array(ordered, pa.string()))


def format_block(
    rows: Rows,
    header: tuple[str, ...],
    customer_ids: pa.Array,
    txn_width: int,
    vocab: Vocabulary,
    overrides: Overrides | None = None,
    malformed: dict[int, str] | None = None,
) -> bytes:
    """CSV text (no header) of a block, as UTF-8 bytes."""
    overrides = overrides or {}
    fields = {
        "customer_id": customer_ids.take(pa.array(rows.customer)),
        "transaction_id": _id_text("T", rows.transaction, txn_width),
        "amount": _money_text(rows.pence),
        "type": TYPE_WORDS.take(pa.array(rows.credit.astype(np.int8))),
        "description": vocab.quoted.take(pa.array(rows.description)),
        "timestamp": _timestamp_text(rows.ts),
    }
    fields = {name: _apply(values, overrides.get(name, {})) for name, values in fields.items()}
    columns = [fields[FIELD_OF.get(name, name)] for name in header]
    lines = pc.binary_join_element_wise(*columns, ",")
    if malformed:
        replace = {}
        for j, how in malformed.items():
            parts = [col[j].as_py() for col in columns]
            if how == "extra":  # an unquoted comma inside the description
                position = header.index("description")
                parts[position] = parts[position].strip('"') + ", UK"
            else:  # the last field went missing
                parts = parts[:-1]
            replace[j] = ",".join(parts)
        lines = _apply(lines, replace)
    lines = pc.binary_join_element_wise(lines, "", "\n")
    offsets = np.frombuffer(
        lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=lines.offset * 4
    )
    return lines.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]


# ---------------------------------------------------------------------------------------
# Labels and truth.
# ---------------------------------------------------------------------------------------


def _date_text(days: np.ndarray, uk: np.ndarray | None = None) -> list[str]:
    """Calendar days (offsets from CALENDAR_START) as ISO dates, or DD/MM/YYYY where ``uk``."""
    dates = np.datetime64(CALENDAR_START, "D") + np.asarray(days, dtype=np.int64)
    iso = np.datetime_as_string(dates, unit="D").tolist()
    if uk is None:
        return iso
    return [f"{d[8:10]}/{d[5:7]}/{d[0:4]}" if u else d for d, u in zip(iso, uk, strict=True)]


def build_labels(
    customer_ids: list[str],
    defaulted: np.ndarray,
    messy: bool,
    rng: np.random.Generator,
    decision_day: np.ndarray | None = None,
) -> tuple[list[tuple[str, ...]], dict[str, int]]:
    """Label rows (customer id, value text[, decision date text]) and what was injected.
    ``decision_day``: each customer's decision date (calendar-day offsets), or None for
    labels without dates."""
    n = len(customer_ids)
    values = np.where(defaulted, "1", "0").astype(object)
    dated = decision_day is not None
    dates = np.array(_date_text(decision_day), dtype=object) if dated else None
    injected: dict[str, int] = {}

    def row(i: int, value: str | None = None, date: str | None = None) -> tuple[str, ...]:
        text = values[i] if value is None else value
        if dates is None:
            return (customer_ids[i], text)
        return (customer_ids[i], text, dates[i] if date is None else date)

    if not messy:
        return [row(i) for i in range(n)], injected
    wanted = {k: int(rng.binomial(n, r)) for k, r in LABEL_RATES.items()}
    if dated:
        wanted |= {k: int(rng.binomial(n, r)) for k, r in DATE_RATES.items()}
    pool = rng.permutation(n)
    chosen: dict[str, np.ndarray] = {}
    used = 0
    keys = ["customers_dropped", C.INVALID_LABEL, "conflicting_customers", "duplicate_label"]
    if dated:
        keys += list(DATE_RATES)
    for key in keys:
        chosen[key] = pool[used : used + wanted[key]]
        used += wanted[key]
    for i in chosen[C.INVALID_LABEL]:
        values[i] = INVALID_LABELS[rng.integers(len(INVALID_LABELS))]
    if dates is not None:
        # Accepted spelling first (a damaged row below overwrites its date anyway).
        uk = rng.random(n) < UK_DATE_RATE
        dates[:] = _date_text(decision_day, uk)  # type: ignore[arg-type]
        for i in chosen[C.MISSING_DECISION_DATE]:
            dates[i] = ""
        for i in chosen[C.INVALID_DECISION_DATE]:
            dates[i] = INVALID_DATES[rng.integers(len(INVALID_DATES))]
    keep = np.ones(n, dtype=bool)
    keep[chosen["customers_dropped"]] = False
    base = [row(i) for i in np.flatnonzero(keep)]
    extra = [row(i, "0" if values[i] == "1" else "1") for i in chosen["conflicting_customers"]]
    extra += [row(i) for i in chosen["duplicate_label"]]
    related = [chosen["conflicting_customers"], chosen["duplicate_label"]]
    if decision_day is not None:
        later = decision_day + rng.integers(1, 31, n)
        shifted = _date_text(later)
        extra += [row(i, date=shifted[i]) for i in chosen["conflicting_date_customers"]]
        related.append(chosen["conflicting_date_customers"])
    width = len(customer_ids[0]) - len("CUST_") if n else 6
    orphans = []
    for k in range(wanted["labels_without_transactions"]):
        value = "1" if rng.random() < TARGET_DEFAULT_RATE else "0"
        orphan = (f"CUST_{n + k + 1:0{width}d}", value)
        if decision_day is not None:
            orphan += (_date_text(decision_day[[int(rng.integers(n))]])[0],)
        orphans.append(orphan)
    extra += orphans
    # Extra rows land at random places after the row they relate to (files get appended to).
    related_rows = np.concatenate(related)
    after = np.searchsorted(np.flatnonzero(keep), related_rows) + 0.5
    position = after + rng.random(len(related_rows)) * (len(base) - after)
    position = np.concatenate([position, rng.random(len(orphans)) * len(base)])
    order = np.argsort(np.concatenate([np.arange(len(base)), position]), kind="stable")
    combined = base + extra
    rows = [combined[i] for i in order]
    injected[C.INVALID_LABEL] = len(chosen[C.INVALID_LABEL])
    injected[C.CONFLICTING_LABEL] = 2 * len(chosen["conflicting_customers"])
    injected["duplicate_label"] = len(chosen["duplicate_label"])
    injected["labels_without_transactions"] = len(orphans)
    unlabelled = ["customers_dropped", C.INVALID_LABEL, "conflicting_customers"]
    if dated:
        injected[C.MISSING_DECISION_DATE] = len(chosen[C.MISSING_DECISION_DATE])
        injected[C.INVALID_DECISION_DATE] = len(chosen[C.INVALID_DECISION_DATE])
        injected[C.CONFLICTING_DECISION_DATE] = 2 * len(chosen["conflicting_date_customers"])
        unlabelled += list(DATE_RATES)
    injected["customers_without_label"] = sum(len(chosen[k]) for k in unlabelled)
    return rows, injected


def auc(scores: np.ndarray, outcome: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum statistic (ties get average ranks)."""
    outcome = np.asarray(outcome, dtype=bool)
    positives, negatives = int(outcome.sum()), int((~outcome).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float((ranks[outcome].sum() - positives * (positives + 1) / 2) / (positives * negatives))


# ---------------------------------------------------------------------------------------
# The whole job.
# ---------------------------------------------------------------------------------------


def _rng(seed: int, stream: int, block: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, stream, block])


def generate(
    out_dir: Path,
    rows: int,
    customers: int,
    seed: int = 1,
    layout: str = "brief",
    messy: bool = False,
    progress: Callable[[int], None] | None = None,
    *,
    default_rate: float = TARGET_DEFAULT_RATE,
    history_mix: tuple[float, float, float] = DEFAULT_HISTORY_MIX,
    decision_dates: bool = True,
) -> dict:
    """Write transactions.csv, labels.csv, truth.csv, generation.json (+ injected.json).

    ``default_rate``: the mean true default probability; ``history_mix``: shares of thin,
    medium and long histories before the decision (``HISTORY_DAYS``); ``decision_dates``:
    False writes labels without the decision-date column (the transactions are the same).
    """
    if customers < 1 or rows < customers:
        raise ValueError("need at least one customer and at least one row per customer")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}")
    if not 0 < default_rate < 1:
        raise ValueError("default_rate must lie strictly between 0 and 1")
    if len(history_mix) != 3 or min(history_mix) < 0 or sum(history_mix) <= 0:
        raise ValueError("history_mix needs three shares (thin, medium, long), not all zero")
    out_dir.mkdir(parents=True, exist_ok=True)
    txn_header, label_header = LAYOUTS[layout]
    if not decision_dates:
        label_header = label_header[:2]
    vocab = build_vocabulary()
    profiles = customer_profiles(customers, _rng(seed, 0), default_rate, history_mix)
    counts = structured_counts(profiles)
    n_rows = rows_per_customer(profiles, counts["total"], rows, _rng(seed, 1))
    width = max(6, len(str(customers)))
    ids = [f"CUST_{i + 1:0{width}d}" for i in range(customers)]
    customer_ids = pa.array(ids)
    txn_width = max(8, len(str(rows)))
    injected = dict.fromkeys(TRANSACTION_RATES, 0)
    variants = {"pound_sign": 0, "thousands_separator": 0, "short_type": 0}
    next_txn = 1
    path = out_dir / "transactions.csv"
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as handle:
        handle.write((",".join(txn_header) + "\n").encode())
        for block, first in enumerate(range(0, customers, BLOCK_CUSTOMERS)):
            last = min(first + BLOCK_CUSTOMERS, customers)
            part = profiles.iloc[first:last]
            block_counts = {k: v[first:last] for k, v in counts.items()}
            rng = _rng(seed, 2, block)
            txns = generate_block(part, block_counts, n_rows[first:last], first, vocab, rng)
            txns.transaction = np.arange(next_txn, next_txn + len(txns.ts))
            next_txn += len(txns.ts)
            overrides, malformed = None, None
            if messy:
                overrides, malformed, found, kinds = inject_transactions(txns, rng)
                injected = {k: injected[k] + found[k] for k in injected}
                variants = {k: variants[k] + kinds[k] for k in variants}
            handle.write(
                format_block(txns, txn_header, customer_ids, txn_width, vocab, overrides, malformed)
            )
            if progress:
                progress(next_txn - 1)
    os.replace(partial, path)

    decision_day = profiles["decision_day"].to_numpy()
    label_rows, label_injected = build_labels(
        ids,
        profiles["defaulted"].to_numpy(),
        messy,
        _rng(seed, 3),
        decision_day if decision_dates else None,
    )
    lines = [",".join(label_header)] + [",".join(r) for r in label_rows]
    (out_dir / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    truth = pd.DataFrame(
        {
            "customer_id": ids,
            "true_probability": profiles["true_probability"].round(6),
            "defaulted": profiles["defaulted"].astype(int),
            "decision_date": _date_text(decision_day),
            "history_days": profiles["history_days"],
        }
    )
    truth.to_csv(out_dir / "truth.csv", index=False, lineterminator="\n")

    oracle = auc(profiles["true_probability"].to_numpy(), profiles["defaulted"].to_numpy())
    oracle = None if np.isnan(oracle) else round(oracle, 6)  # one class only: undefined
    history = profiles["history_days"]
    summary = {
        "parameters": {
            "rows": rows,
            "customers": customers,
            "seed": seed,
            "layout": layout,
            "messy": messy,
            "block_customers": BLOCK_CUSTOMERS,
            "target_default_rate": default_rate,
            "history_mix": dict(zip(HISTORY_DAYS, map(float, history_mix), strict=True)),
            "decision_dates": decision_dates,
        },
        "period": {
            "start": _iso(START_TS),
            "end": _iso(END_TS),
            "decisions": {"first": str(DECISION_FIRST), "last": str(DECISION_LAST)},
            "outcome_days": OUTCOME_DAYS,
            "history_days": {k: list(v) for k, v in HISTORY_DAYS.items()},
        },
        "files": {
            "transactions.csv": {"rows": rows, "columns": list(txn_header)},
            "labels.csv": {"rows": len(label_rows), "columns": list(label_header)},
            "truth.csv": {"rows": customers},
        },
        "default_rate": round(float(profiles["defaulted"].mean()), 6),
        "mean_true_probability": round(float(profiles["true_probability"].mean()), 6),
        "oracle_auc": oracle,
        "behaviour_rates": {
            "salaried": round(float(profiles["salaried"].mean()), 4),
            "salary_stopped": round(float(profiles["salary_stopped"].mean()), 4),
            "renter": round(float(profiles["renter"].mean()), 4),
            "gambler": round(float(profiles["gambler"].mean()), 4),
        },
        "history_days": {
            "median": int(history.median()),
            "over_180": round(float((history > 180).mean()), 4),
            "under_61": round(float((history < 61).mean()), 4),
        },
    }
    if messy:
        all_injected = {**injected, **label_injected}
        summary["injected"] = all_injected
        summary["accepted_variants"] = variants
        (out_dir / "injected.json").write_text(json.dumps(all_injected, indent=2) + "\n")
    (out_dir / "generation.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _shares(text: str) -> tuple[float, float, float]:
    parts = [float(x) for x in text.split(",")]
    if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0:
        raise argparse.ArgumentTypeError("three shares: thin,medium,long (e.g. 0.15,0.45,0.4)")
    return parts[0], parts[1], parts[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m features.synthetic",
        description="Write synthetic transactions/labels with a known default probability.",
    )
    parser.add_argument("--rows", type=int, default=100_000, help="transaction rows to write")
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--layout", choices=tuple(LAYOUTS), default="brief")
    parser.add_argument(
        "--messy", action="store_true", help="inject every data-quality problem of the contract"
    )
    parser.add_argument(
        "--default-rate",
        type=float,
        default=TARGET_DEFAULT_RATE,
        help=f"mean true default probability (default {TARGET_DEFAULT_RATE})",
    )
    parser.add_argument(
        "--history-mix",
        type=_shares,
        default=DEFAULT_HISTORY_MIX,
        help="shares of thin (14-60 days), medium (61-182) and long (183-400) histories "
        "before the decision, e.g. 0.15,0.45,0.4 (the default)",
    )
    parser.add_argument(
        "--no-decision-dates",
        action="store_true",
        help="labels without the decision-date column (customer_id, defaulted)",
    )
    args = parser.parse_args(argv)
    if args.customers < 1 or args.rows < args.customers:
        parser.error("--customers must be >= 1 and --rows >= --customers")
    if not 0 < args.default_rate < 1:
        parser.error("--default-rate must lie strictly between 0 and 1")
    started = time.perf_counter()
    summary = generate(
        args.out,
        args.rows,
        args.customers,
        args.seed,
        args.layout,
        args.messy,
        default_rate=args.default_rate,
        history_mix=args.history_mix,
        decision_dates=not args.no_decision_dates,
    )
    elapsed = time.perf_counter() - started
    print(
        f"wrote {args.rows:,} transactions for {args.customers:,} customers to {args.out} "
        f"in {elapsed:.1f} s; default rate {summary['default_rate']:.3f}, "
        f"oracle AUC {summary['oracle_auc']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
