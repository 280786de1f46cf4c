"""ASGI middleware that refuses bodies the API will not parse, before they are read.

Wrong or missing Content-Type -> 415; body over the cap -> 413 (declared length checked up
front; a chunked body is counted while buffered); a JSON object with the same key twice
-> 422 (a parser would silently keep the last one, so {"customer_id": "A",
"customer_id": "B"} would be scored as B). Pure ASGI, so it works the same under uvicorn
and the Azure Functions ASGI adapter.
"""

from __future__ import annotations

import json
from typing import Any


def is_json_content_type(value: str | None) -> bool:
    if not value:
        return False
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def duplicate_key(body: bytes) -> str | None:
    """The first key that appears twice in one JSON object, or None.

    Bodies that are not valid JSON are left to the app, which explains them in its own 422.
    """
    repeated: list[str] = []

    def keep_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                repeated.append(key)
            seen.add(key)
        return dict(pairs)

    try:
        json.loads(body, object_pairs_hook=keep_pairs)
    except (ValueError, RecursionError):
        return None
    return repeated[0] if repeated else None


async def _reply(send: Any, status: int, detail: Any) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyGuard:
    def __init__(self, app: Any, max_body_bytes: int, body_routes: frozenset[tuple[str, str]]):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_routes = body_routes  # (method, path) pairs that take a JSON body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) not in self.body_routes:
            await self.app(scope, receive, send)
            return
        content_type = content_length = None
        for raw_name, value in scope["headers"]:
            name = raw_name.lower()  # ASGI says lowercase; adapters may not all comply
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                content_length = value.decode("latin-1")
        if not is_json_content_type(content_type):
            await _reply(
                send,
                415,
                f"Content-Type must be application/json, got {(content_type or 'none')[:60]!r}",
            )
            return
        limit = self.max_body_bytes
        if content_length is not None:
            if not content_length.isdigit():
                await _reply(send, 400, "Content-Length is not a number")
                return
            if int(content_length) > limit:
                await _reply(send, 413, f"request body is over the {limit}-byte limit")
                return
        # Buffer the body (at most the limit), check it, then replay it to the app.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # disconnect: let the app see it
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _reply(send, 413, f"request body is over the {limit}-byte limit")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        repeated = duplicate_key(body)
        if repeated is not None:
            error = {
                "loc": ["body", repeated[:60]],
                "type": "duplicate_key",
                "msg": f"key {repeated[:60]!r} appears more than once in one object",
            }
            await _reply(send, 422, [error])
            return
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
