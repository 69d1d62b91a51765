"""Owner stamps: which app process holds a server session, written in its application_name.

With attribution on (``instrument(engine, stamp_application_name=True)`` or
``POOL_EXPORTER_STAMP_APPLICATION_NAME=true``) every new PostgreSQL connection of an
instrumented engine is named ``sape:<pid>:<app>@<host>`` (at most 63 bytes, what the
server keeps) — unless the app named its connections itself, which always wins. The
database probe then reports each stamped session's state, and the sidecar joins a
session to the process (``host``, ``pid``) and, through the backend pid each connection
recorded at connect time, to the checkout site holding it.

This module only formats and parses stamps: both the app side and the sidecar use it,
and it imports neither.
"""

from __future__ import annotations

from typing import Any

#: Every stamp starts with this (no ``_`` or ``%``: it is matched with ``LIKE``).
STAMP_MARK = "sape:"
#: PostgreSQL keeps NAMEDATALEN - 1 bytes of an application_name.
MAX_LENGTH = 63


def make_stamp(pid: int, app: str, host: str) -> str:
    """The application_name naming process ``pid`` of ``app`` on ``host``."""
    text = f"{STAMP_MARK}{pid}:{app}@{host}"
    return text.encode()[:MAX_LENGTH].decode(errors="ignore")


def parse_stamp(name: str) -> dict[str, Any] | None:
    """``{"pid", "app", "host"}`` of a stamp (host possibly cut short), or None."""
    if not name.startswith(STAMP_MARK):
        return None
    pid_text, sep, rest = name[len(STAMP_MARK) :].partition(":")
    if not sep or not pid_text.isdigit():
        return None
    app, _, host = rest.rpartition("@")
    return {"pid": int(pid_text), "app": app, "host": host}
