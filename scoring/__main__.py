"""Serve the scoring API locally: ``python -m scoring [--host H] [--port P]``."""

from __future__ import annotations

import argparse
import json
import logging

from scoring.schema import BRIEF_EXAMPLE


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
        access_log=not args.no_access_log,
    )


if __name__ == "__main__":
    main()
