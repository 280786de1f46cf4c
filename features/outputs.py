"""Writing the job's outputs to a directory: CSVs, the report, and the quarantine file."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import TextIO

import pandas as pd

from features.definitions import FEATURES
from features.pipeline import PipelineResult
from features.report import render_markdown

MONEY_COLUMNS = tuple(f.name for f in FEATURES if f.kind == "money")


def to_csv_text(frame: pd.DataFrame) -> str:
    """CSV with money at exactly 2 dp (floats are only an output format here)."""
    out = frame.copy()
    for column in MONEY_COLUMNS:
        if column in out:
            out[column] = out[column].map("{:.2f}".format)
    return out.to_csv(index=False, lineterminator="\n")


class QuarantineWriter:
    """Appends quarantined rows to a CSV as they arrive, so they never pile up in memory."""

    def __init__(self, handle: TextIO) -> None:
        self._handle = handle
        self._columns: list[str] | None = None

    def __call__(self, frame: pd.DataFrame) -> None:
        if self._columns is None:
            self._columns = list(frame.columns)
            frame.to_csv(self._handle, index=False, lineterminator="\n")
        else:  # the pipeline always hands over the same columns in the same order
            frame.to_csv(self._handle, index=False, header=False, lineterminator="\n")

    def finish(self, columns: list[str]) -> None:
        """Write the header alone if no row was quarantined."""
        if self._columns is None:
            csv.writer(self._handle, lineterminator="\n").writerow(columns)
            self._columns = columns


def output_frames(result: PipelineResult) -> dict[str, pd.DataFrame]:
    """The tables a run publishes, by file stem (every engine writes the same set)."""
    frames = {"features": result.features}
    if result.training_set is not None:
        frames["training_set"] = result.training_set
    if result.label_quarantine is not None:
        frames["labels_quarantine"] = result.label_quarantine
    return frames


def write_outputs(result: PipelineResult, out_dir: Path) -> list[Path]:
    """Write features, training set (if labelled) and the report. Returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, frame in output_frames(result).items():
        written.append(_write_atomic(out_dir / f"{stem}.csv", to_csv_text(frame)))
    report = json.dumps(result.report, indent=2, ensure_ascii=False) + "\n"
    written.append(_write_atomic(out_dir / "dq_report.json", report))
    written.append(_write_atomic(out_dir / "dq_report.md", render_markdown(result.report)))
    return written


def _write_atomic(path: Path, text: str) -> Path:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return path
