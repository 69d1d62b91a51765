"""A plain script instrumenting one engine, as a new user would: ``python shopapp.py DB``.

It makes three checkouts, pushes once (when a push URL is set) and prints, as JSON, the
settings the exporter ended up with. Exiting sends the final push.
"""

from __future__ import annotations

import json
import sys

from sqlalchemy import create_engine, text

import sqlalchemy_pool_exporter
from sqlalchemy_pool_exporter.instrumentation import runtime

engine = create_engine(f"sqlite:///{sys.argv[1]}")
stats = sqlalchemy_pool_exporter.instrument(engine, name="db")
for _ in range(3):
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
pusher = runtime.pusher()
if pusher is not None:
    pusher.push()
print(
    json.dumps(
        {
            "app": runtime.identity().app,
            "leak_threshold": stats.leak_threshold,
            "push_url": pusher.url if pusher else None,
            "push_interval": pusher.interval if pusher else None,
        }
    )
)
