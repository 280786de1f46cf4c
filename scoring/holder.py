"""One model per process, loaded lazily, shared safely between threads.

Requests call ``get()``: once loaded it is a lock-free attribute read. The first call (or
the first after ``reset()``) loads under a lock so concurrent requests wait for one load
instead of racing. A failed load is remembered for ``retry_after`` seconds (so a broken
bundle does not hammer storage) and then retried, so fixing the bundle fixes the service
without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from scoring.bundle import BundleError, BundleSource, LoadedModel, load_bundle

log = logging.getLogger("scoring.model")


class ModelUnavailableError(RuntimeError):
    """No model can be served right now; the message says why (safe to show)."""


class ModelHolder:
    def __init__(
        self,
        source_factory: Callable[[], BundleSource],
        retry_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._factory = source_factory
        self.retry_after = retry_after
        self._clock = clock
        self._lock = threading.Lock()
        self._model: LoadedModel | None = None
        self._failure: str | None = None
        self._failed_at = 0.0
        self.load_count = 0  # successful loads
        self.attempt_count = 0  # all load attempts, failed ones included

    def peek(self) -> LoadedModel | None:
        """The loaded model, or None; never loads."""
        return self._model

    @property
    def last_error(self) -> str | None:
        return self._failure

    def get(self) -> LoadedModel:
        """The model, loading it if needed. Raises ``ModelUnavailableError``."""
        model = self._model
        if model is not None:
            return model
        with self._lock:
            if self._model is not None:
                return self._model
            if self._failure is not None and self._clock() - self._failed_at < self.retry_after:
                raise ModelUnavailableError(self._failure)
            self.attempt_count += 1
            try:
                model = load_bundle(self._factory())
            except BundleError as exc:
                self._remember_failure(str(exc))
                raise ModelUnavailableError(self._failure) from exc
            except Exception as exc:  # unexpected: keep serving 503s, log the detail
                log.exception("model load failed unexpectedly")
                self._remember_failure(f"model load failed: {type(exc).__name__}")
                raise ModelUnavailableError(self._failure) from exc
            self._model, self._failure = model, None
            self.load_count += 1
            log.info(
                "model loaded: %s in %.3fs (%s)%s",
                model.manifest.model_version,
                model.load_seconds,
                model.source,
                f"; warnings: {list(model.warnings)}" if model.warnings else "",
            )
            return model

    def _remember_failure(self, reason: str) -> None:
        self._failure, self._failed_at = reason, self._clock()
        log.warning("model unavailable: %s", reason)

    def reset(self, source_factory: Callable[[], BundleSource] | None = None) -> None:
        """Forget the model (and any failure); the next ``get()`` loads again."""
        with self._lock:
            if source_factory is not None:
                self._factory = source_factory
            self._model, self._failure, self._failed_at = None, None, 0.0
