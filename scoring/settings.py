"""Settings read from the environment (names fixed in the team contract)."""

from __future__ import annotations

import os
from pathlib import Path

from scoring.bundle import BundleSource, LocalDirSource

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = "artifacts"
# Request bodies above this are refused with 413 (a full 1000-item batch is ~400 KB).
MAX_BODY_BYTES = 1_048_576


def model_dir() -> Path:
    """``MODEL_DIR`` (default ``artifacts``); relative paths are from the project root, so
    the same setting works under uvicorn, pytest and the function app."""
    path = Path(os.environ.get("MODEL_DIR") or DEFAULT_MODEL_DIR)
    return path if path.is_absolute() else PROJECT_ROOT / path


def local_source() -> BundleSource:
    """The default bundle source. The function app swaps in a blob source when
    ``MODEL_CONTAINER`` is set (``scoring.api.holder.reset(factory)``)."""
    return LocalDirSource(model_dir())
