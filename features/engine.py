"""The engine contract: what every engine (pandas, Spark, the DuckDB reference) hands back.

An engine reads the transactions, applies the rules of ``features.rules``, fills a
``Tally`` and computes one row of features per customer. ``finish_run`` then does the
rest the same way for every engine: it withholds customers outside the API's bounds,
joins the labels, builds the report and returns one ``RunResult``. Quarantined rows go
to a ``QuarantineSink`` (a callable taking frames of ``QUARANTINE_COLUMNS``) as they are
found; without one they are collected into the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from features.definitions import FEATURE_NAMES, ID, TARGET, out_of_bounds
from features.labels import Labels
from features.report import Report, build_report
from features.rules import QUARANTINE_COLUMNS
from features.tally import InputShape, Tally

QuarantineSink = Callable[[pd.DataFrame], None]


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


def join_labels(features: pd.DataFrame, labels: pd.Series) -> pd.DataFrame:
    """The training set: labelled customers' features with ``defaulted`` last."""
    joined = features.merge(labels.rename(TARGET).reset_index(), on=ID, how="inner")
    return joined[[ID, *FEATURE_NAMES, TARGET]]


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
) -> RunResult:
    """The shared last step of every engine. ``features`` has one row per customer
    (``customer_id`` and ``FEATURE_NAMES``), none withheld yet; ``started`` is the run's
    ``time.monotonic()`` start."""
    published, withheld = withhold_out_of_range(features)
    training_set = join_labels(published, labels.labels) if labels is not None else None
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
    )
    return RunResult(
        features=published,
        training_set=training_set,
        report=report,
        quarantine_rows=rows_quarantined,
        label_quarantine=labels.quarantine if labels is not None else None,
        quarantine=quarantine,
    )
