"""The engine contract: what every engine (pandas, Spark, the DuckDB reference) hands back.

An engine reads the transactions, applies the rules of ``features.rules``, fills a
``Tally`` and computes one row of features per customer. ``finish_run`` then does the
rest the same way for every engine: it withholds customers outside the API's bounds,
joins the labels, builds the report and returns one ``RunResult``. Quarantined rows go
to a ``QuarantineSink`` (a callable taking frames of ``QUARANTINE_COLUMNS``) as they are
found; without one they are collected into the result.

Decision dates: when the labels carry them, ``decision_window`` gives the engine a
``Window`` (each customer's decision date and the lookback). A valid row is then in its
customer's window when ``decision - lookback <= ts < decision`` (UK wall-clock seconds,
the decision being the start of its date); only those rows enter features, time features
count from the decision, and every other valid row is counted under a ``WINDOW_RULES``
code (still in ``rows_used``: it passed every rule). Without decision dates nothing
changes: every valid row, one batch-wide as-of (features/README.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from features.definitions import FEATURE_NAMES, ID, SECONDS_PER_DAY, TARGET, out_of_bounds
from features.labels import Labels
from features.report import Report, build_report, iso_dates
from features.rules import DEFAULT_LOOKBACK_DAYS, QUARANTINE_COLUMNS
from features.schema import DECISION_DATE
from features.tally import InputShape, Tally

QuarantineSink = Callable[[pd.DataFrame], None]
# The lookback a command-line run asked for (``python -m features --lookback-days``), for
# engine entry points that were not handed one. ``features.command`` sets it for the run.
REQUESTED_LOOKBACK_DAYS: ContextVar[int] = ContextVar(
    "requested_lookback_days", default=DEFAULT_LOOKBACK_DAYS
)


def lookback_or_requested(lookback_days: int | None) -> int:
    """``lookback_days`` when given, else what the command line asked for (default 180)."""
    days = REQUESTED_LOOKBACK_DAYS.get() if lookback_days is None else lookback_days
    if type(days) is not int or days < 1:
        raise ValueError("lookback_days must be a whole number of days, at least 1")
    return days


@dataclass(frozen=True)
class Window:
    """Decision-date mode: which rows each customer's features use."""

    decisions: pd.Series  # customer_id -> start of the decision date, UK wall-clock seconds
    lookback_days: int

    @property
    def lookback_seconds(self) -> int:
        return self.lookback_days * SECONDS_PER_DAY

    def frame(self) -> pd.DataFrame:
        """(customer_id, decision_ts, window_start_ts): the table Spark and DuckDB join."""
        decision = self.decisions.astype("int64")
        return pd.DataFrame(
            {
                ID: decision.index.astype(str),
                "decision_ts": decision.to_numpy(),
                "window_start_ts": decision.to_numpy() - self.lookback_seconds,
            }
        )


def decision_window(labels: Labels | None, lookback_days: int) -> Window | None:
    """The run's window when its labels carry decision dates, else None (batch mode)."""
    if labels is None or labels.decision_dates is None:
        return None
    return Window(labels.decision_dates, lookback_days)


@dataclass
class RunResult:
    """One run's outputs, whichever engine made them."""

    features: pd.DataFrame  # one row per customer, customer_id first
    training_set: pd.DataFrame | None  # labelled customers, defaulted last
    report: Report
    quarantine_rows: int
    label_quarantine: pd.DataFrame | None = None  # rejected label rows, when labels given
    quarantine: pd.DataFrame | None = None  # collected only when the run had no sink

    @property
    def quarantine_columns(self) -> list[str]:
        """Header of the quarantine file: always ``QUARANTINE_COLUMNS``."""
        return list(QUARANTINE_COLUMNS)


class QuarantineCollector:
    """A ``QuarantineSink`` that keeps the frames (for runs without a file to write to)."""

    def __init__(self) -> None:
        self.frames: list[pd.DataFrame] = []

    def __call__(self, frame: pd.DataFrame) -> None:
        self.frames.append(frame)

    def frame(self) -> pd.DataFrame:
        if not self.frames:
            return pd.DataFrame(columns=list(QUARANTINE_COLUMNS))
        return pd.concat(self.frames, ignore_index=True)


def withhold_out_of_range(features: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """(features of the customers inside the shared bounds, ids of those withheld).

    A customer whose aggregates leave the range the API accepts (e.g. total_credit above
    ``MAX_ABS_MONEY``) is a data error, not a customer: publishing it would give a features
    row the API refuses and a training row no request can reproduce.
    """
    outside = out_of_bounds(features)
    if not outside.any():
        return features, []
    withheld = features.loc[outside, ID].astype(str).tolist()
    return features[~outside].reset_index(drop=True), withheld


def join_labels(
    features: pd.DataFrame, labels: pd.Series, decisions: pd.Series | None = None
) -> pd.DataFrame:
    """The training set: labelled customers' features with ``defaulted`` last, and with
    decision dates, ``decision_date`` (ISO) second (never a model input)."""
    joined = features.merge(labels.rename(TARGET).reset_index(), on=ID, how="inner")
    if decisions is None:
        return joined[[ID, *FEATURE_NAMES, TARGET]]
    dates = iso_dates(decisions).rename(DECISION_DATE)
    joined = joined.merge(dates.rename_axis(ID).reset_index(), on=ID, how="left")
    return joined[[ID, DECISION_DATE, *FEATURE_NAMES, TARGET]]


def finish_run(
    *,
    engine: str,
    tally: Tally,
    shape: InputShape,
    features: pd.DataFrame,
    labels: Labels | None,
    rows_quarantined: int,
    started: float,
    generated_at: datetime,
    quarantine: pd.DataFrame | None = None,
    window: Window | None = None,
    valid_customers: pd.Index | None = None,
) -> RunResult:
    """The shared last step of every engine. ``features`` has one row per customer
    (``customer_id`` and ``FEATURE_NAMES``), none withheld yet; ``started`` is the run's
    ``time.monotonic()`` start. With decision dates, ``window`` is the run's window and
    ``valid_customers`` every customer with a valid row (in or out of its window)."""
    if window is not None and valid_customers is None:
        raise ValueError("an engine in decision-date mode must say which customers it saw")
    featured = pd.Index(features[ID])
    published, withheld = withhold_out_of_range(features)
    training_set = (
        join_labels(published, labels.labels, window.decisions if window else None)
        if labels is not None
        else None
    )
    report = build_report(
        tally,
        shape,
        published,
        labels,
        rows_quarantined=rows_quarantined,
        withheld=withheld,
        generated_at=generated_at,
        elapsed=time.monotonic() - started,
        engine=engine,
        decision_dates=window.decisions if window else None,
        lookback_days=window.lookback_days if window else None,
        featured=featured,
        valid_customers=valid_customers,
    )
    return RunResult(
        features=published,
        training_set=training_set,
        report=report,
        quarantine_rows=rows_quarantined,
        label_quarantine=labels.quarantine if labels is not None else None,
        quarantine=quarantine,
    )
