"""The scoring API: ``scoring.api:app``, served by uvicorn and by the Azure Functions app.

Routes answer at ``/predict`` (plain uvicorn, as the brief says) and ``/api/predict`` (the
Functions host passes the full path, including its ``/api`` prefix): one router included
twice, the ``/api`` copy hidden from the OpenAPI schema.

The model loads lazily on first use (ASGI startup hooks are not reliable under Functions)
and is then shared. Handlers are ``async`` and score with numpy in the event loop; the one
slow step, the first load, runs in a worker thread. Nothing here logs request content.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from features.definitions import ID
from scoring.bundle import LoadedModel
from scoring.guard import BodyGuard
from scoring.holder import ModelHolder, ModelUnavailableError
from scoring.inputs import Assembled, InputError, assemble
from scoring.schema import (
    BRIEF_EXAMPLE,
    MAX_BATCH,
    BatchRequest,
    BatchResponse,
    PredictRequest,
    PredictResponse,
)
from scoring.settings import MAX_BODY_BYTES, local_source

TOP_REASONS = 3
API_PREFIX = "/api"

holder = ModelHolder(local_source)

_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"description": "Request body too large."},
    415: {"description": "Content-Type is not application/json."},
    422: {"description": "A field is invalid or missing; each error names its field."},
    503: {"description": "No model loaded; the detail says why. Retried on later calls."},
}


async def current_model() -> LoadedModel:
    model = holder.peek()
    if model is None:
        model = await run_in_threadpool(holder.get)
    return model


def _score(model: LoadedModel, ids: list[str], data: Assembled) -> list[dict[str, Any]]:
    """Vectorised scoring of assembled rows into response dicts.

    Probabilities, contributions and each row's top reasons are computed for the whole
    matrix at once; Python only assembles the output (``tolist`` avoids numpy scalars).
    """
    probs = model.scorer.probabilities(data.matrix).tolist()
    contrib = model.scorer.contributions(data.matrix)
    threshold = model.manifest.threshold
    version = model.manifest.model_version
    reasons: list[list[dict[str, Any]] | None]
    if contrib is None:
        reasons = [None] * len(ids)
    else:
        fields = [model.plan.field_for(j) for j in range(contrib.shape[1])]
        top = np.argsort(-contrib, axis=1, kind="stable")[:, :TOP_REASONS].tolist()
        values, contribs = data.matrix.tolist(), contrib.tolist()
        reasons = [
            [{"feature": fields[j], "value": x[j], "contribution": c[j]} for j in order if c[j] > 0]
            for order, x, c in zip(top, values, contribs, strict=True)
        ]
    return [
        {
            "customer_id": cid,
            "probability": p,
            "prediction": int(p >= threshold),
            "model_version": version,
            "threshold": threshold,
            "reasons": reasons[i],
            "defaulted_fields": data.defaulted[i],
            "ignored_fields": data.ignored[i],
        }
        for i, (cid, p) in enumerate(zip(ids, probs, strict=True))
    ]


router = APIRouter()


@router.get("/health", summary="Liveness: the process answers.")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready", summary="Readiness: a model is loaded (503 otherwise).", responses={503: _ERRORS[503]}
)
async def ready() -> JSONResponse:
    try:
        model = await current_model()
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
async def model_info() -> JSONResponse:
    model = await current_model()
    return JSONResponse(model.metadata())


@router.post(
    "/predict",
    summary="Default probability for one customer.",
    response_model=PredictResponse,
    responses={k: _ERRORS[k] for k in (413, 415, 422, 503)},
)
async def predict(body: PredictRequest) -> JSONResponse:  # type: ignore[valid-type]
    model = await current_model()
    record = body.__dict__
    data = assemble(model.plan, [record])
    return JSONResponse(_score(model, [record[ID]], data)[0])


@router.post(
    "/predict/batch",
    summary=f"Default probabilities for up to {MAX_BATCH} customers, scored together.",
    response_model=BatchResponse,
    responses={k: _ERRORS[k] for k in (413, 415, 422, 503)},
)
async def predict_batch(body: BatchRequest) -> JSONResponse:
    model = await current_model()
    records = [item.__dict__ for item in body.items]
    data = assemble(model.plan, records, loc_prefix=("body", "items"), indexed=True)
    results = _score(model, [r[ID] for r in records], data)
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


async def _on_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    all_errors = exc.errors()
    for err in all_errors[:MAX_ERRORS]:
        loc = [_short(part) for part in err.get("loc", ())]
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "")
            errors.append(
                {
                    "loc": ["body"],
                    "msg": f"body is not valid JSON: {reason}".strip(),
                    "type": "json_invalid",
                }
            )
            continue
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


async def _on_http_error(request: Request, exc: StarletteHTTPException) -> Any:
    """FastAPI answers 400 "error parsing the body" for bodies json.loads raises on with
    something other than JSONDecodeError; report them like any other invalid JSON."""
    if exc.status_code == 400 and request.method == "POST":
        msg = "body is not valid JSON: not UTF-8, nested too deeply, or a number too long"
        return JSONResponse(
            {"detail": [{"loc": ["body"], "msg": msg, "type": "json_invalid"}]}, status_code=422
        )
    return await http_exception_handler(request, exc)


async def _on_input_error(_: Request, exc: InputError) -> JSONResponse:
    return JSONResponse({"detail": exc.errors}, status_code=422)


async def _on_unavailable(_: Request, exc: ModelUnavailableError) -> JSONResponse:
    return JSONResponse(
        {"detail": f"model unavailable: {exc}"}, status_code=503, headers={"Retry-After": "5"}
    )


def create_app() -> FastAPI:
    app = FastAPI(
        title="Credit-risk scoring",
        version="1.0.0",
        description=(
            "90-day default probability from a customer's Part 1 features. "
            "Example request (from the brief): `" + str(BRIEF_EXAMPLE).replace("'", '"') + "`. "
            "GET /model says which model is loaded, which fields it needs, and whether it is a "
            "placeholder. Routes also answer under /api for the Azure Functions host."
        ),
    )
    app.include_router(router)
    app.include_router(router, prefix=API_PREFIX, include_in_schema=False)
    app.add_exception_handler(RequestValidationError, _on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(InputError, _on_input_error)  # type: ignore[arg-type]
    app.add_exception_handler(ModelUnavailableError, _on_unavailable)  # type: ignore[arg-type]
    body_routes = frozenset(
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in route.methods & {"POST", "PUT", "PATCH"}
    )
    app.add_exception_handler(StarletteHTTPException, _on_http_error)  # type: ignore[arg-type]
    app.add_middleware(BodyGuard, max_body_bytes=MAX_BODY_BYTES, body_routes=body_routes)
    return app


app = create_app()
