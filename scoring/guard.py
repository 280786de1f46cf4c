"""Request bodies: received within bounds and parsed once, before FastAPI validates them.

Every route that takes a JSON body is a ``GuardedRoute``, so these checks run on the route
the router matched, whatever path reached it; there is no list of paths to keep in step
with the router. In order:

1. Content-Type must be JSON (the test FastAPI itself applies) -> 415.
2. A declared Content-Length over ``max_bytes`` -> 413, before any of the body is read.
3. The body is received against a deadline (``read_timeout_s`` -> 408) and the size cap
   (413). At most ``max_pending`` requests may hold a part-received body at once (more ->
   503 with ``Retry-After``). A refusal sent before the body is complete says
   ``Connection: close``, so the server reads no more of it.
4. A structural scan of the bytes (string contents skipped) bounds nesting depth, the number
   of objects and arrays, and the number of keys before any parsing -> 422.
5. One ``json.loads`` of the UTF-8 text that refuses a key repeated within one object (a
   parser would silently keep the last: ``{"customer_id": "A", "customer_id": "B"}``
   would be scored as B) -> 422.

Steps 4-5 run in a worker thread for large bodies. FastAPI gets the parsed value through
``ParsedRequest.json()`` (the documented custom-Request pattern) and validates it without
parsing the body again. Nothing here logs or echoes body content beyond a repeated key's
name (cut to 60 characters).
"""

from __future__ import annotations

import email.message
import json
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np
from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope

from scoring.settings import BodyLimits

MAX_ECHO_KEY = 60


class BodyRejectedError(Exception):
    """A request body refused before validation: status, detail, extra response headers."""

    def __init__(
        self, status: int, detail: Any, *, close: bool = False, headers: dict | None = None
    ):
        super().__init__(status, detail)
        self.status = status
        self.detail = detail
        self.headers = {**(headers or {}), **({"Connection": "close"} if close else {})}


def _invalid(kind: str, msg: str, loc: list[Any] | None = None) -> BodyRejectedError:
    return BodyRejectedError(422, [{"loc": loc or ["body"], "msg": msg, "type": kind}])


def is_json_content_type(value: str | None) -> bool:
    """``application/json`` or ``application/*+json``, parsed as FastAPI parses it."""
    if not value:
        return False
    message = email.message.Message()
    message["content-type"] = value
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


# ---------------------------------------------------------------- structure before parsing


@dataclass(frozen=True)
class JsonShape:
    depth: int  # deepest nesting of objects and arrays
    containers: int  # objects + arrays
    keys: int  # object keys (the ':' outside strings)


_STEP = np.zeros(256, dtype=np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1
_STRUCTURAL = np.zeros(256, dtype=bool)
_STRUCTURAL[list(b'[]{}:"')] = True
QUOTE, BACKSLASH, COLON = ord('"'), ord("\\"), ord(":")


def json_shape(body: bytes) -> JsonShape:
    """Depth, containers and keys of a JSON text, from its bytes, without parsing it.

    Vectorised: only the structural bytes ``[]{}:"`` are looked at. A quote ends or starts
    a string unless an odd run of backslashes precedes it; brackets and colons between an
    opening and a closing quote are string content. UTF-8 never puts these ASCII bytes
    inside a multi-byte character. Exact for valid JSON; for invalid JSON it is exact up
    to the first error, which is as far as a parser gets.
    """
    data = np.frombuffer(body, dtype=np.uint8)
    where = np.flatnonzero(_STRUCTURAL[data])
    chars = data[where]
    quote = chars == QUOTE
    if b"\\" in body and quote.any():
        at = where[quote]
        is_backslash = data == BACKSLASH
        index = np.arange(data.size)
        # position of the last byte at or before i that is not a backslash
        last_plain = np.maximum.accumulate(np.where(is_backslash, -1, index))
        before = at - 1
        run = np.where(before >= 0, before - last_plain[np.maximum(before, 0)], 0)
        escaped = np.flatnonzero(quote)[(run & 1) == 1]
        quote[escaped] = False
    quotes_before = np.cumsum(quote) - quote
    outside = ((quotes_before & 1) == 0) & ~quote
    chars = chars[outside]
    steps = _STEP[chars]
    depth = int(np.cumsum(steps, dtype=np.int64).max()) if steps.size else 0
    return JsonShape(
        depth=max(depth, 0),
        containers=int(np.count_nonzero(steps == 1)),
        keys=int(np.count_nonzero(chars == COLON)),
    )


class _RepeatedKeyError(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _RepeatedKeyError(key)
            seen.add(key)
    return obj


def parse_json(body: bytes, limits: BodyLimits) -> Any:
    """The body's JSON value, or ``BodyRejectedError`` (422) saying what is wrong with it."""
    if not body.strip():
        raise _invalid("missing", "body is required: send a JSON object")
    shape = json_shape(body)
    if shape.depth > limits.max_depth:
        raise _invalid(
            "json_too_deep",
            f"body nests objects and arrays more than {limits.max_depth} deep",
        )
    if shape.containers > limits.max_containers:
        raise _invalid(
            "json_too_large",
            f"body has more than {limits.max_containers} objects and arrays",
        )
    if shape.keys > limits.max_keys:
        raise _invalid("json_too_large", f"body has more than {limits.max_keys} keys")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _invalid("json_invalid", "body is not valid JSON: it is not UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _RepeatedKeyError as exc:
        key = exc.key[:MAX_ECHO_KEY]
        raise _invalid(
            "duplicate_key", f"key {key!r} appears more than once in one object", ["body", key]
        ) from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise _invalid("json_invalid", f"body is not valid JSON: {exc.msg} ({where})") from None
    except (ValueError, RecursionError):  # e.g. an integer of more than 4300 digits
        raise _invalid("json_invalid", "body is not valid JSON: a number is too long") from None


# ---------------------------------------------------------------- receiving


class BodyGuard:
    """Receives and parses JSON bodies for one app (``app.state.body_guard``)."""

    def __init__(self, limits: BodyLimits):
        self.limits = limits
        self._lock = threading.Lock()  # apps may serve from several event loops' threads
        self._pending = 0  # requests holding a part-received body right now

    def _take_slot(self) -> bool:
        with self._lock:
            if self._pending >= self.limits.max_pending:
                return False
            self._pending += 1
            return True

    def _free_slot(self) -> None:
        with self._lock:
            self._pending -= 1

    def check_headers(self, request: Request) -> None:
        content_type = request.headers.get("content-type")
        if not is_json_content_type(content_type):
            got = (content_type or "none")[:60]
            raise BodyRejectedError(
                415, f"Content-Type must be application/json, got {got!r}", close=True
            )
        declared = request.headers.get("content-length")
        if declared is not None:
            if not (declared.isascii() and declared.strip().isdigit()):
                raise BodyRejectedError(400, "Content-Length is not a number", close=True)
            if int(declared) > self.limits.max_bytes:
                raise self._too_large()

    def _too_large(self) -> BodyRejectedError:
        return BodyRejectedError(
            413, f"request body is over the {self.limits.max_bytes}-byte limit", close=True
        )

    async def receive(self, receive: Receive) -> bytes:
        """The whole body, or ``BodyRejectedError`` (400/408/413/503) if it cannot be had."""
        limits = self.limits
        chunks: list[bytes] = []
        size = 0
        holding = False
        try:
            with anyio.move_on_after(limits.read_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        raise BodyRejectedError(
                            400, "the client went away before the body was complete", close=True
                        )
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limits.max_bytes:
                        raise self._too_large()
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
                    if not holding:
                        holding = self._take_slot()
                        if not holding:
                            raise BodyRejectedError(
                                503,
                                "too many request bodies are arriving at once; retry shortly",
                                close=True,
                                headers={"Retry-After": "1"},
                            )
            raise BodyRejectedError(
                408,
                f"the request body did not arrive within {limits.read_timeout_s:g} s",
                close=True,
            )
        finally:
            if holding:
                self._free_slot()

    async def read_json(self, request: Request) -> tuple[bytes, Any]:
        self.check_headers(request)
        body = await self.receive(request.receive)
        if len(body) > self.limits.thread_above_bytes:
            return body, await run_in_threadpool(parse_json, body, self.limits)
        return body, parse_json(body, self.limits)


class ParsedRequest(Request):
    """A request whose body the guard has already received and parsed."""

    def __init__(self, scope: Scope, receive: Receive, body: bytes, value: Any):
        super().__init__(scope, receive)
        self._guarded = (body, value)

    async def body(self) -> bytes:
        return self._guarded[0]

    async def json(self) -> Any:
        return self._guarded[1]


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class GuardedRoute(APIRoute):
    """An ``APIRoute`` whose JSON body goes through the app's ``BodyGuard`` first."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def guarded(request: Request) -> Response:
            guard: BodyGuard = request.app.state.body_guard
            body, value = await guard.read_json(request)
            return await handler(ParsedRequest(request.scope, request.receive, body, value))

        return guarded


async def on_body_rejected(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BodyRejectedError)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)
