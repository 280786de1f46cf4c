"""Synthetic bank transactions whose default probability is known, for training and tests.

Why: the handover set has 10 rows. To train, to test the pipeline at scale and to judge a
model we need realistic data of any size *and* the truth behind it. Each customer gets a
latent risk; risk drives behaviours the features can see (gambling, bank fees, a salary
that stops, rent share of income, spending beyond income) and a known default
probability. ``truth.csv`` holds that probability, so a model's AUC can be compared with
the best achievable one (the oracle AUC).

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
# ~6 months of history ending at a fixed instant (never "today": output must not drift).
START_TS = calendar.timegm((2025, 1, 1, 0, 0, 0))
END_TS = calendar.timegm((2025, 6, 30, 23, 59, 59))
DAYS = 181
MONTH_START_DAY = np.array([0, 31, 59, 90, 120, 151])  # Jan..Jun 2025, offsets from START
MONTHS = len(MONTH_START_DAY)
MONTH_ABBR = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN")
SECONDS_PER_DAY = 86_400
BONUS_MONTH = 2  # March: year-end bonuses

TARGET_DEFAULT_RATE = 0.12
# Customers per generation block. Fixed, so output bytes never depend on the machine.
BLOCK_CUSTOMERS = 20_000
# Clean amounts stay below £10,000 so `large_amount` appears only where injected.
MAX_CLEAN_PENCE = 999_999

LAYOUTS: dict[str, tuple[tuple[str, ...], tuple[str, str]]] = {
    "brief": (
        ("customer_id", "transaction_id", "amount", "type", "description", "timestamp"),
        ("customer_id", "defaulted"),
    ),
    "handover": (
        ("transaction_id", "customer_id", "txn_timestamp", "amount", "txn_type", "description"),
        ("customer_id", "defaulted_within_90d"),
    ),
}
# Output header name -> canonical field.
FIELD_OF = {
    "txn_timestamp": "timestamp",
    "txn_type": "type",
    "defaulted_within_90d": "defaulted",
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


def _first_month(start_day: np.ndarray, day_of_month: np.ndarray) -> np.ndarray:
    """First month (0..6) whose given day falls on or after the customer's first day."""
    month = np.searchsorted(MONTH_START_DAY, start_day, side="right") - 1
    before = MONTH_START_DAY[month] + day_of_month - 1 < start_day
    return month + before


def customer_profiles(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Per-customer behaviour parameters and the true default probability."""
    z = rng.standard_normal(n)
    p = pd.DataFrame({"z": z})
    p["salaried"] = rng.random(n) < _sigmoid(1.6 - 0.9 * z)
    income = np.exp(rng.normal(np.log(2300), 0.35, n) - 0.15 * z)
    p["income_pence"] = np.round(np.clip(income, 800, 8500) * 100).astype(np.int64)
    p["start_day"] = np.where(rng.random(n) < 0.85, 0, rng.integers(1, 121, n))
    p["months_active"] = (DAYS - p["start_day"]) / (DAYS / MONTHS)
    stopped = p["salaried"] & (rng.random(n) < _sigmoid(-2.4 + 1.0 * z))
    p["salary_stopped"] = stopped
    p["stop_month"] = np.where(stopped, rng.integers(2, 6, n), MONTHS)
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
    p["fees_per_month"] = np.exp(-2.5 + 1.1 * z + rng.normal(0, 0.4, n))
    p["spend_ratio"] = np.clip(0.9 + 0.1 * z + rng.normal(0, 0.08, n), 0.55, 1.5)
    p["bonus"] = p["salaried"] & (rng.random(n) < 0.24 * _sigmoid(-z))
    p["grocer"] = _weighted_choice(rng, GROCER_WEIGHTS, n)
    p["activity"] = np.exp(rng.normal(0, 0.5, n))

    eta = (
        0.5 * z
        + 1.6 * stopped
        + 0.8 * ~p["salaried"]
        + 4.0 * (p["rent_share"] - 0.27) * p["renter"]
        + 0.5 * gambler
        + 0.6 * gambler * (np.log(share) - np.log(0.03))
        + 0.5 * (np.log(p["fees_per_month"]) + 2.5)
        + 3.0 * (p["spend_ratio"] - 0.9)
        - 0.4 * p["bonus"]
    ).to_numpy(dtype=float)
    p["true_probability"] = _sigmoid(eta + _intercept_for_rate(eta, TARGET_DEFAULT_RATE))
    p["defaulted"] = rng.random(n) < p["true_probability"]
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


def structured_counts(p: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per customer: first month and number of monthly rows of each structured kind."""
    out: dict[str, np.ndarray] = {}
    start = p["start_day"].to_numpy()
    first = _first_month(start, p["payday"].to_numpy())
    out["salary_first"] = first
    # A salaried customer is paid at least once in the window (if it has a payday in it).
    paid = np.maximum(p["stop_month"].to_numpy(), np.minimum(first + 1, MONTHS)) - first
    out["salary_n"] = paid * p["salaried"].to_numpy()
    first = _first_month(start, p["rent_day"].to_numpy())
    out["rent_first"] = first
    out["rent_n"] = (MONTHS - first) * p["renter"].to_numpy()
    for k in range(3):
        first = _first_month(start, p[f"sub{k}_day"].to_numpy())
        out[f"sub{k}_first"] = first
        out[f"sub{k}_n"] = (MONTHS - first) * (p["n_subs"].to_numpy() > k)
    bonus_day = MONTH_START_DAY[BONUS_MONTH] + p["payday"].to_numpy() - 1
    out["bonus_n"] = (
        p["bonus"].to_numpy() & (start <= bonus_day) & (p["stop_month"].to_numpy() > BONUS_MONTH)
    ).astype(np.int64)
    out = {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}
    out["total"] = sum(out[f"{k}_n"] for k in ("salary", "rent", "sub0", "sub1", "sub2", "bonus"))
    return out


def rows_per_customer(
    p: pd.DataFrame, structured_total: np.ndarray, rows: int, rng: np.random.Generator
) -> np.ndarray:
    """Rows per customer summing to ``rows``: all structured rows plus at least one more
    when there is room, else a thinner history (structured rows are then truncated)."""
    n = len(p)
    weights = p["activity"].to_numpy() / p["activity"].sum()
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
    cust, month = _monthly(local, counts["salary_first"], counts["salary_n"])
    income = p["income_pence"].to_numpy()
    amount = income[cust] * (1 + rng.normal(0, 0.01, len(cust)))
    desc = vocab.offset[K["salary"]] + p["employer"].to_numpy()[cust] * MONTHS + month
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
    desc = vocab.offset[K["rent"]] + p["rent_style"].to_numpy()[cust] * MONTHS + month
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
    cust = np.repeat(local, counts["bonus_n"])
    day = MONTH_START_DAY[BONUS_MONTH] + payday[cust] - 1
    parts.append(
        (
            cust,
            np.full(len(cust), K["bonus"]),
            income[cust] * rng.uniform(0.3, 1.5, len(cust)),
            vocab.offset[K["bonus"]] + rng.integers(0, vocab.size[K["bonus"]], len(cust)),
            day * SECONDS_PER_DAY + rng.integers(0, 6 * 3600, len(cust)),
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
    start_day = p["start_day"].to_numpy()
    day = start_day[r_cust] + (rng.random(len(r_cust)) * (DAYS - start_day[r_cust])).astype(int)
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
    target = expected_income * np.exp(rng.normal(0, 0.15, m))
    r_amount[sel] = _spread(target, r_cust[sel], rng.gamma(2.0, size=sel.sum()), m)
    sel = is_kind["transfer_in"]
    r_amount[sel] = rng.lognormal(np.log(6000), 0.8, sel.sum())
    r_amount[is_kind["gambling_win"]] = rng.lognormal(
        np.log(3000), 1.0, is_kind["gambling_win"].sum()
    )
    r_amount[is_kind["trap_credit"]] = rng.integers(1, 300, is_kind["trap_credit"].sum())
    r_amount[is_kind["fee"]] = FEE_PENCE[rng.integers(0, len(FEE_PENCE), is_kind["fee"].sum())]
    sel = is_kind["gambling"]
    target = p["gamble_share"].to_numpy() * expected_income
    r_amount[sel] = _spread(target, r_cust[sel], rng.gamma(0.8, size=sel.sum()), m)
    fixed = np.bincount(
        s_cust, np.where(CREDIT_KINDS[s_kind], 0, s_amount), minlength=m
    ) + np.bincount(r_cust, r_amount * (is_kind["fee"] | is_kind["gambling"]), minlength=m)
    for name, (median, sd) in TYPICAL_PENCE.items():
        sel = is_kind[name]
        r_amount[sel] = rng.lognormal(np.log(median), sd, sel.sum())
    fixed += np.bincount(
        r_cust, r_amount * np.isin(r_kind, [K[k] for k in TYPICAL_PENCE]), minlength=m
    )
    sel = np.isin(r_kind, [K[k] for k in LUMP_SCALE])
    n_lump = np.bincount(r_cust[sel], minlength=m)
    target = np.maximum(p["spend_ratio"].to_numpy() * expected_income - fixed, 2000 * n_lump)
    scale = np.zeros(len(KINDS))
    for name, value in LUMP_SCALE.items():
        scale[K[name]] = value
    weights = rng.gamma(2.0, size=sel.sum()) * scale[r_kind[sel]]
    r_amount[sel] = _spread(target, r_cust[sel], weights, m)

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


def build_labels(
    customer_ids: list[str], defaulted: np.ndarray, messy: bool, rng: np.random.Generator
) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Label rows (customer id, value text) and what was injected into them."""
    n = len(customer_ids)
    values = np.where(defaulted, "1", "0").astype(object)
    injected: dict[str, int] = {}
    if not messy:
        return list(zip(customer_ids, values, strict=True)), injected
    wanted = {k: int(rng.binomial(n, r)) for k, r in LABEL_RATES.items()}
    pool = rng.permutation(n)
    chosen: dict[str, np.ndarray] = {}
    used = 0
    for key in ("customers_dropped", C.INVALID_LABEL, "conflicting_customers", "duplicate_label"):
        chosen[key] = pool[used : used + wanted[key]]
        used += wanted[key]
    for i in chosen[C.INVALID_LABEL]:
        values[i] = INVALID_LABELS[rng.integers(len(INVALID_LABELS))]
    keep = np.ones(n, dtype=bool)
    keep[chosen["customers_dropped"]] = False
    base = [(customer_ids[i], values[i]) for i in np.flatnonzero(keep)]
    extra = [
        (customer_ids[i], "0" if values[i] == "1" else "1") for i in chosen["conflicting_customers"]
    ]
    extra += [(customer_ids[i], values[i]) for i in chosen["duplicate_label"]]
    width = len(customer_ids[0]) - len("CUST_") if n else 6
    orphans = [
        (f"CUST_{n + k + 1:0{width}d}", "1" if rng.random() < TARGET_DEFAULT_RATE else "0")
        for k in range(wanted["labels_without_transactions"])
    ]
    extra += orphans
    # Extra rows land at random places after the row they relate to (files get appended to).
    related = np.concatenate([chosen["conflicting_customers"], chosen["duplicate_label"]])
    after = np.searchsorted(np.flatnonzero(keep), related) + 0.5
    position = after + rng.random(len(related)) * (len(base) - after)
    position = np.concatenate([position, rng.random(len(orphans)) * len(base)])
    order = np.argsort(np.concatenate([np.arange(len(base)), position]), kind="stable")
    combined = base + extra
    rows = [combined[i] for i in order]
    injected[C.INVALID_LABEL] = len(chosen[C.INVALID_LABEL])
    injected[C.CONFLICTING_LABEL] = 2 * len(chosen["conflicting_customers"])
    injected["duplicate_label"] = len(chosen["duplicate_label"])
    injected["labels_without_transactions"] = len(orphans)
    injected["customers_without_label"] = (
        len(chosen["customers_dropped"])
        + len(chosen[C.INVALID_LABEL])
        + len(chosen["conflicting_customers"])
    )
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
) -> dict:
    """Write transactions.csv, labels.csv, truth.csv, generation.json (+ injected.json)."""
    if customers < 1 or rows < customers:
        raise ValueError("need at least one customer and at least one row per customer")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    txn_header, label_header = LAYOUTS[layout]
    vocab = build_vocabulary()
    profiles = customer_profiles(customers, _rng(seed, 0))
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

    label_rows, label_injected = build_labels(
        ids, profiles["defaulted"].to_numpy(), messy, _rng(seed, 3)
    )
    lines = [",".join(label_header)] + [f"{c},{v}" for c, v in label_rows]
    (out_dir / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    truth = pd.DataFrame(
        {
            "customer_id": ids,
            "true_probability": profiles["true_probability"].round(6),
            "defaulted": profiles["defaulted"].astype(int),
        }
    )
    truth.to_csv(out_dir / "truth.csv", index=False, lineterminator="\n")

    oracle = auc(profiles["true_probability"].to_numpy(), profiles["defaulted"].to_numpy())
    oracle = None if np.isnan(oracle) else round(oracle, 6)  # one class only: undefined
    summary = {
        "parameters": {
            "rows": rows,
            "customers": customers,
            "seed": seed,
            "layout": layout,
            "messy": messy,
            "block_customers": BLOCK_CUSTOMERS,
            "target_default_rate": TARGET_DEFAULT_RATE,
        },
        "period": {"start": _iso(START_TS), "end": _iso(END_TS)},
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
    }
    if messy:
        all_injected = {**injected, **label_injected}
        summary["injected"] = all_injected
        summary["accepted_variants"] = variants
        (out_dir / "injected.json").write_text(json.dumps(all_injected, indent=2) + "\n")
    (out_dir / "generation.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


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
    args = parser.parse_args(argv)
    if args.customers < 1 or args.rows < args.customers:
        parser.error("--customers must be >= 1 and --rows >= --customers")
    started = time.perf_counter()
    summary = generate(args.out, args.rows, args.customers, args.seed, args.layout, args.messy)
    elapsed = time.perf_counter() - started
    print(
        f"wrote {args.rows:,} transactions for {args.customers:,} customers to {args.out} "
        f"in {elapsed:.1f} s; default rate {summary['default_rate']:.3f}, "
        f"oracle AUC {summary['oracle_auc']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
