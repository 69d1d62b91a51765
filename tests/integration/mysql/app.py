"""An app process for the sidecar scenarios: one instrumented pool pushing to a sidecar.

``python app.py <url> <pool name> '<create_engine kwargs as JSON>'`` instruments the engine
and pushes to ``POOL_EXPORTER_PUSH_URL`` (one pusher per process: a test's in-process
engines could not push to a sidecar of their own). Each ``checkout`` line on stdin
checks out one connection, runs ``SELECT 1`` and returns it, then prints ``done``;
stdin closed ends the process.
"""

from __future__ import annotations

import json
import sys

from sqlalchemy import create_engine, text

import sqlalchemy_pool_exporter


def main() -> None:
    url, name, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    engine = create_engine(url, **options)
    sqlalchemy_pool_exporter.instrument(engine, name=name)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "checkout":
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            print("done", flush=True)
    engine.dispose()


if __name__ == "__main__":
    main()
