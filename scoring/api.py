"""The scoring API: ``create_app(settings, holder=..., root_path=...)`` builds it, and
``scoring.api:app`` is the app that factory builds from the environment (what uvicorn and
``python -m scoring`` serve).

Every route exists once, at ``/predict``, ``/health``, ... An app served under a prefix is
told so through ``root_path`` (the ASGI way): the function app passes ``/api``, its host's
route prefix, and Starlette then matches routes on the path without it. JSON bodies go
through ``scoring.guard`` on the matched route itself, so no path can skip it.

Per-app state lives on ``app.state`` and reaches handlers as FastAPI dependencies: the model
holder (``model_holder``; the model loads lazily on first use because ASGI startup hooks are
not reliable under Functions) and the body guard. Tests build their own app or override
``model_holder``; nothing here is a module global to reset. Handlers are ``async`` and score
with numpy in the event loop; the first model load and the parsing of large bodies run in
worker threads. Nothing here logs request content.

Every decision gets a ``request_id``. With a decision log (``scoring.audit``; the local one
when ``DECISION_LOG_DIR`` is set) a response is sent only after its decisions are recorded;
if they cannot be, the request is refused with 503 and nothing is released.

Query strings never reach uvicorn's access log, however the app is served: ``create_app``
installs ``DropQueryString`` on the ``uvicorn.access`` logger (uvicorn configures its
logging before it imports the app, and a logging configuration adds filters without
removing existing ones), so bare ``uvicorn scoring.api:app`` is covered as well as
``python -m scoring``.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from featurespec import ID
from scoring.audit import (
    DecisionLog,
    DecisionLogError,
    PendingDecisions,
    local_decision_log,
    new_request_ids,
    now,
)
from scoring.bundle import LoadedModel
from scoring.guard import BodyGuard, BodyRejectedError, GuardedRoute, on_body_rejected
from scoring.holder import ModelHolder, ModelUnavailableError
from scoring.inputs import Assembled, InputError, assemble
from scoring.predict import score_matrix
from scoring.schema import (
    BRIEF_EXAMPLE,
    MAX_BATCH,
    BatchRequest,
    BatchResponse,
    PredictRequest,
    PredictResponse,
)
from scoring.settings import Settings

_ERRORS: dict[int | str, dict[str, Any]] = {
    408: {"description": "The request body did not arrive in time; the connection is closed."},
    413: {"description": "Request body too large."},
    415: {"description": "Content-Type is not application/json."},
    422: {
        "description": "The body is not JSON within the limits (nesting, size, repeated keys) "
        "or a field is invalid or missing; each error names its field."
    },
    503: {"description": "No model loaded; the detail says why. Retried on later calls."},
}
_BODY_ERRORS = {
    **{k: _ERRORS[k] for k in (408, 413, 415, 422)},
    503: {
        "description": "No model loaded (the detail says why; retried on later calls), too "
        "many request bodies arriving at once, or the decision could not be recorded in the "
        "audit trail (then nothing was decided). Retry after the Retry-After seconds."
    },
}


ACCESS_LOGGER = "uvicorn.access"


class DropQueryString(logging.Filter):
    """uvicorn's access line is ``client - "METHOD path?query HTTP/v" status``; a query string
    can carry anything a caller put in the URL (ids, amounts), so keep only the path.
    uvicorn percent-encodes the path, so its first ``?`` starts the query."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], *args[3:])
        return True


def guard_access_log() -> None:
    """Install ``DropQueryString`` on uvicorn's access logger, once per process."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, DropQueryString) for f in logger.filters):
        logger.addFilter(DropQueryString())


async def model_holder(request: Request) -> ModelHolder:
    """The app's model holder (``app.state.holder``); a dependency tests may override.
    ``async`` so FastAPI calls it in the event loop (a plain ``def`` dependency is run in
    a worker thread, which cost 0.15 ms a request)."""
    return request.app.state.holder


Holder = Annotated[ModelHolder, Depends(model_holder)]


async def decision_log(request: Request) -> DecisionLog | None:
    """The app's decision log (``app.state.decision_log``), None when decisions are not
    recorded; a dependency tests may override."""
    return request.app.state.decision_log


Audit = Annotated[DecisionLog | None, Depends(decision_log)]


async def loaded_model(holder: ModelHolder) -> LoadedModel:
    """The holder's model; the first load runs in a worker thread. Raises
    ``ModelUnavailableError`` (a 503)."""
    model = holder.peek()
    if model is None:
        model = await run_in_threadpool(holder.get)
    return model


def _score(model: LoadedModel, ids: list[str], data: Assembled) -> list[dict[str, Any]]:
    """Vectorised scoring of assembled rows into response dicts.

    Probabilities and each row's reasons are computed for the whole matrix at once; Python
    only assembles the output (``tolist`` avoids numpy scalars). ``reasons`` is None for a
    bundle that gives none (GET /model says why).
    """
    scores = score_matrix(model, data.matrix)
    probs, predictions = scores.probability.tolist(), scores.prediction.tolist()
    explainer = model.explainer
    reasons: list[list[dict[str, Any]]] | list[None]
    reasons = [None] * len(ids) if explainer is None else explainer.explain(data.matrix)
    request_ids = new_request_ids(len(ids))
    return [
        {
            "request_id": request_ids[i],
            "customer_id": cid,
            "probability": p,
            "prediction": predictions[i],
            "model_version": scores.model_version,
            "threshold": scores.threshold,
            "reasons": reasons[i],
            "defaulted_fields": data.defaulted[i],
            "ignored_fields": data.ignored[i],
        }
        for i, (cid, p) in enumerate(zip(ids, probs, strict=True))
    ]


async def _record(
    audit: DecisionLog | None,
    model: LoadedModel,
    requests: list[dict[str, Any]],
    results: list[dict[str, Any]],
) -> None:
    """Write the decisions to the audit trail before they are released (raises
    ``DecisionLogError``, a 503, if they cannot be)."""
    if audit is None:
        return
    await audit.record(
        PendingDecisions(
            decided_at=now(),
            model_version=model.manifest.model_version,
            model_sha256=model.manifest.sha256,
            requests=requests,
            results=results,
        )
    )


router = APIRouter(route_class=GuardedRoute)


@router.get("/health", summary="Liveness: the process answers.")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready", summary="Readiness: a model is loaded (503 otherwise).", responses={503: _ERRORS[503]}
)
async def ready(holder: Holder) -> JSONResponse:
    try:
        model = await loaded_model(holder)
    except ModelUnavailableError as exc:
        return JSONResponse({"status": "unavailable", "detail": str(exc)}, status_code=503)
    return JSONResponse(
        {
            "status": "ready",
            "model_version": model.manifest.model_version,
            "placeholder": model.manifest.placeholder,
            "warnings": list(model.warnings),
        }
    )


@router.get(
    "/model",
    summary="The loaded model's manifest and runtime facts.",
    responses={503: _ERRORS[503]},
)
async def model_info(holder: Holder, audit: Audit) -> JSONResponse:
    model = await loaded_model(holder)
    return JSONResponse(
        {
            **model.metadata(),
            "decision_log": audit.describe() if audit is not None else {"enabled": False},
        }
    )


@router.post(
    "/predict",
    summary="Default probability for one customer.",
    response_model=PredictResponse,
    responses=_BODY_ERRORS,
)
async def predict(body: PredictRequest, holder: Holder, audit: Audit) -> JSONResponse:  # type: ignore[valid-type]
    model = await loaded_model(holder)
    record = body.__dict__
    data = assemble(model.plan, [record])
    results = _score(model, [record[ID]], data)
    await _record(audit, model, [record], results)
    return JSONResponse(results[0])


@router.post(
    "/predict/batch",
    summary=f"Default probabilities for up to {MAX_BATCH} customers, scored together.",
    response_model=BatchResponse,
    responses=_BODY_ERRORS,
)
async def predict_batch(body: BatchRequest, holder: Holder, audit: Audit) -> JSONResponse:
    model = await loaded_model(holder)
    records = [item.__dict__ for item in body.items]
    data = assemble(model.plan, records, loc_prefix=("body", "items"), indexed=True)
    results = _score(model, [r[ID] for r in records], data)
    await _record(audit, model, records, results)
    return JSONResponse({"model_version": model.manifest.model_version, "results": results})


def _field_message(loc: list[Any], msg: str) -> str:
    path = ".".join(str(p) for p in loc[1:] if p != "body") if loc else ""
    return f"{path}: {msg}" if path else msg


# A hostile body must not turn into a much larger error response: cap what is echoed.
MAX_ERRORS = 20
MAX_ECHO_CHARS = 64


def _short(part: Any) -> Any:
    return (
        part[:MAX_ECHO_CHARS] + "..."
        if isinstance(part, str) and len(part) > MAX_ECHO_CHARS
        else part
    )


async def _on_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    all_errors = exc.errors()
    errors = []
    for err in all_errors[:MAX_ERRORS]:
        loc = [_short(part) for part in err.get("loc", ())]
        errors.append(
            {
                "loc": loc,
                "msg": _field_message(loc, err.get("msg", "invalid")),
                "type": err.get("type", "value_error"),
            }
        )
    if len(all_errors) > MAX_ERRORS:
        more = len(all_errors) - MAX_ERRORS
        errors.append({"loc": ["body"], "msg": f"... and {more} more errors", "type": "too_many"})
    return JSONResponse({"detail": errors}, status_code=422)


async def _on_input_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InputError)
    return JSONResponse({"detail": exc.errors}, status_code=422)


async def _on_unavailable(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": f"model unavailable: {exc}"}, status_code=503, headers={"Retry-After": "5"}
    )


async def _on_not_recorded(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})


_FROM_SETTINGS: Any = object()


def create_app(
    settings: Settings | None = None,
    *,
    holder: ModelHolder | None = None,
    root_path: str = "",
    decision_log: DecisionLog | None = _FROM_SETTINGS,
) -> FastAPI:
    """A scoring app. ``settings`` default to the environment's; ``holder`` defaults to one
    that lazily loads the bundle in ``settings.model_dir``; ``root_path`` is the prefix a
    host serves the app under (the function app's ``/api``), empty for plain uvicorn;
    ``decision_log`` defaults to the local one ``DECISION_LOG_DIR`` names (None: off)."""
    settings = settings or Settings.from_env()
    guard_access_log()
    app = FastAPI(
        title="Credit-risk scoring",
        version="1.0.0",
        description=(
            "90-day default probability from a customer's Part 1 features. "
            "Example request (from the brief): `" + str(BRIEF_EXAMPLE).replace("'", '"') + "`. "
            "GET /model says which model is loaded, which fields it needs, and whether it is a "
            "placeholder."
        ),
        root_path=root_path,
    )
    app.state.settings = settings
    app.state.holder = holder or ModelHolder(settings.local_source)
    app.state.body_guard = BodyGuard(settings.body)
    if decision_log is _FROM_SETTINGS:
        chosen = settings.decision_log
        decision_log = local_decision_log(
            chosen.directory, fsync=chosen.fsync, max_pending=chosen.max_pending
        )
    app.state.decision_log = decision_log
    if decision_log is not None:
        app.add_event_handler("shutdown", decision_log.close)
    app.include_router(router)
    app.add_exception_handler(BodyRejectedError, on_body_rejected)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(InputError, _on_input_error)
    app.add_exception_handler(ModelUnavailableError, _on_unavailable)
    app.add_exception_handler(DecisionLogError, _on_not_recorded)
    return app


app = create_app()
