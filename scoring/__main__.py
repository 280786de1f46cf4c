"""Serve the scoring API locally: ``python -m scoring [--host H] [--port P]``."""

from __future__ import annotations

import argparse
import copy
import json
import logging
from typing import Any

from scoring.schema import BRIEF_EXAMPLE


class DropQueryString(logging.Filter):
    """uvicorn's access line is ``client - "METHOD path?query HTTP/v" status``; a query
    string can carry anything a caller put in the URL (ids, amounts), so keep the path.
    uvicorn percent-encodes the path, so its first ``?`` starts the query."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], *args[3:])
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration, with query strings dropped from access lines."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["drop_query_string"] = {"()": DropQueryString}
    config["loggers"]["uvicorn.access"]["filters"] = ["drop_query_string"]
    return config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve scoring.api:app with uvicorn.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--http",
        default="auto",
        choices=["auto", "h11", "httptools"],
        help="uvicorn HTTP implementation (httptools only if installed)",
    )
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--no-access-log",
        action="store_true",
        help="skip per-request access lines (method, path, status: never bodies or query strings)",
    )
    args = parser.parse_args(argv)
    from scoring.settings import Settings, SettingsError

    try:
        Settings.from_env()  # a bad setting is one line here, not a traceback from uvicorn
    except SettingsError as exc:
        parser.error(str(exc))

    import uvicorn

    # Our own loggers (model load events; never request content) alongside uvicorn's.
    logging.basicConfig(
        level=args.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s"
    )

    base = f"http://{args.host}:{args.port}"
    body = json.dumps(BRIEF_EXAMPLE)
    print(f"Scoring API on {base}  (docs: {base}/docs, model: {base}/model)")
    print(
        f"Try:\n  curl -s -X POST {base}/predict -H 'Content-Type: application/json' -d '{body}'",
        flush=True,
    )
    uvicorn.run(
        "scoring.api:app",
        host=args.host,
        port=args.port,
        http=args.http,
        log_level=args.log_level,
        log_config=log_config(),
        access_log=not args.no_access_log,
    )


if __name__ == "__main__":
    main()
