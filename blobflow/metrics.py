"""Structured metrics as log lines, in the one form Application Insights keeps.

The Functions Python worker forwards a log record to the host as its formatted message,
level and logger name only (``azure_functions_worker.dispatcher.on_logging``); ``extra``
fields do not become custom dimensions (Azure/azure-functions-python-worker issues 1327 and
1681). So each metric is one line, ``<name> <compact JSON>``, which the ``traces`` table
stores whole and a log query parses back with ``parse_json`` (the drift alert in
``infra/modules/monitoring.bicep``). The same fields are also passed as ``extra``, for any
handler that does read them (an OpenTelemetry exporter, tests).

Only names and numbers go into a metric: feature names, PSI values, row counts, the model
version and the batch name (an operator-chosen folder name checked against
``blobflow.naming.BATCH_NAME``), never a customer id, an amount or a description.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from scoring.drift import psi_records

DRIFT_METRIC = "drift_psi"  # the prefix the drift alert's query matches


def metric_line(name: str, record: dict[str, Any]) -> str:
    """``name {json}``: one line, keys sorted, no spaces, non-ASCII escaped."""
    return f"{name} {json.dumps(record, sort_keys=True, separators=(',', ':'))}"


def parse_metric_line(line: str, name: str) -> dict[str, Any] | None:
    """The record of a ``metric_line`` (what the alert query does in KQL), else None."""
    prefix = f"{name} "
    if not line.startswith(prefix):
        return None
    value = json.loads(line[len(prefix) :])
    return value if isinstance(value, dict) else None


def log_drift(log: logging.Logger, batch: str, report: dict[str, Any]) -> None:
    """One ``drift_psi`` line per model input and one for the score, then a summary line:
    a warning naming the drifted inputs, or an info line when nothing drifted."""
    for record in psi_records(report):
        record = {**record, "batch": batch}
        extra = {f"drift_{key}": value for key, value in record.items()}
        log.info("%s", metric_line(DRIFT_METRIC, record), extra=extra)
    drifted = report["drifted"]
    score = report["score"]
    if drifted or score["drifted"]:
        log.warning(
            "batch=%s drift: %d of %d inputs at or above PSI %s (%s); score PSI %.4f",
            batch,
            len(drifted),
            len(report["features"]),
            report["threshold"],
            ", ".join(drifted) or "none",
            score["psi"],
        )
    else:
        log.info(
            "batch=%s drift: no input at or above PSI %s; score PSI %.4f",
            batch,
            report["threshold"],
            score["psi"],
        )
    for warning in report["warnings"]:
        log.info("batch=%s drift: %s", batch, warning)
