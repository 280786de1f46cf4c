"""Every setting the scoring service reads, in one place.

``Settings.from_env()`` is the only code in ``scoring`` that reads the environment. The API
factory (``scoring.api.create_app``) takes a ``Settings``; the function app and the blob
bundle source read theirs through here too, so a name is spelt once.

| variable | meaning | default |
|---|---|---|
| ``MODEL_DIR`` | local bundle directory (relative: from the project root) | ``artifacts`` |
| ``MODEL_CONTAINER`` | blob container holding bundles (function app only) | unset: local |
| ``MODEL_NAME`` | bundle prefix inside ``MODEL_CONTAINER`` | ``current`` |
| ``SCORING_BODY_TIMEOUT_S`` | seconds a client has to send a request body | ``10`` |
| ``SCORING_MAX_PENDING_BODIES`` | bodies being received at once (more: 503) | ``16`` |
| ``DECISION_LOG_DIR`` | directory of the local decision audit trail | unset: off |
| ``DECISION_LOG_CONTAINER`` | blob container of the audit trail (function app only) | unset: off |
| ``DECISION_LOG_FSYNC`` | ``0`` skips fsync after each local write | ``1`` |
| ``DECISION_LOG_MAX_PENDING`` | requests waiting for the audit writer (more: 503) | ``256`` |
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from featurespec import FEATURES
from scoring.bundle import BundleSource, LocalDirSource
from scoring.schema import MAX_BATCH

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = "artifacts"
DEFAULT_MODEL_NAME = "current"
# Request bodies above this are refused with 413. The largest valid batch (1000 items with
# every field at its longest) is about 0.9 MiB: a test keeps the two consistent.
MAX_BODY_BYTES = 1_048_576
# The most keys a valid body can hold: a full batch whose items carry the id, every Part 1
# feature and lookback_days, plus "items".
MAX_JSON_KEYS = MAX_BATCH * (len(FEATURES) + 2) + 1


Number = TypeVar("Number", int, float)


class SettingsError(ValueError):
    """A setting has a value the service cannot use; the message names the variable."""


@dataclass(frozen=True)
class BodyLimits:
    """What a request body may cost before the app has looked at it.

    Valid bodies nest three deep (``{"items": [{...}]}``), hold at most ``MAX_BATCH + 2``
    objects and arrays and ``MAX_JSON_KEYS`` keys. The structural limits leave room for a
    helpful 422 about a misplaced value, and refuse (before parsing) bodies whose parse
    alone would cost more than the largest valid request.
    """

    max_bytes: int = MAX_BODY_BYTES
    read_timeout_s: float = 10.0
    max_pending: int = 16
    max_depth: int = 8
    max_containers: int = 2 * (MAX_BATCH + 2)
    max_keys: int = MAX_JSON_KEYS
    # Bodies larger than this are scanned and parsed in a worker thread, not the event loop.
    thread_above_bytes: int = 64 * 1024


@dataclass(frozen=True)
class DecisionLogSettings:
    """Where decisions are recorded (``scoring.audit``); both unset: not recorded."""

    directory: Path | None = None
    container: str | None = None
    fsync: bool = True
    max_pending: int = 256


@dataclass(frozen=True)
class Settings:
    model_dir: Path = field(default_factory=lambda: PROJECT_ROOT / DEFAULT_MODEL_DIR)
    model_container: str | None = None
    model_name: str = DEFAULT_MODEL_NAME
    body: BodyLimits = field(default_factory=BodyLimits)
    decision_log: DecisionLogSettings = field(default_factory=DecisionLogSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        path = Path(env.get("MODEL_DIR") or DEFAULT_MODEL_DIR)
        return cls(
            model_dir=path if path.is_absolute() else PROJECT_ROOT / path,
            model_container=(env.get("MODEL_CONTAINER") or "").strip() or None,
            model_name=(env.get("MODEL_NAME") or "").strip() or DEFAULT_MODEL_NAME,
            body=BodyLimits(
                read_timeout_s=_positive(env, "SCORING_BODY_TIMEOUT_S", float, 10.0),
                max_pending=_positive(env, "SCORING_MAX_PENDING_BODIES", int, 16),
            ),
            decision_log=DecisionLogSettings(
                directory=_path(env, "DECISION_LOG_DIR"),
                container=(env.get("DECISION_LOG_CONTAINER") or "").strip() or None,
                fsync=_flag(env, "DECISION_LOG_FSYNC", True),
                max_pending=_positive(env, "DECISION_LOG_MAX_PENDING", int, 256),
            ),
        )

    def local_source(self) -> BundleSource:
        return LocalDirSource(self.model_dir)


def _positive(env: Mapping[str, str], name: str, kind: type[Number], default: Number) -> Number:
    text = (env.get(name) or "").strip()
    if not text:
        return default
    what = "a whole number" if kind is int else "a number"
    try:
        value = kind(text)
    except ValueError:
        raise SettingsError(f"{name}={text[:40]!r} is not {what}") from None
    if not (value > 0 and math.isfinite(value)):
        raise SettingsError(f"{name} must be {what} greater than 0, got {text[:40]!r}")
    return value


def _path(env: Mapping[str, str], name: str) -> Path | None:
    text = (env.get(name) or "").strip()
    if not text:
        return None
    path = Path(text)
    return path if path.is_absolute() else PROJECT_ROOT / path


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    text = (env.get(name) or "").strip().lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be 1 or 0, got {text[:40]!r}")


def model_dir() -> Path:
    """``MODEL_DIR`` as an absolute path (relative values are from the project root, so the
    same setting works under uvicorn, pytest and the function app)."""
    return Settings.from_env().model_dir


def local_source() -> BundleSource:
    """The bundle in ``MODEL_DIR``, read from the environment at each call (so a holder
    built on it follows the setting on its next load)."""
    return Settings.from_env().local_source()
