"""Server sessions joined to app processes and checkout sites, for ``/api/pools``.

With attribution on, each app connection carries its owner in ``application_name``
(``host``, ``pid``; see :mod:`sqlalchemy_pool_exporter.probes.stamp`) and each held
connection of a push its server ``backend_pid``. The database probe reports the stamped
server sessions; this module joins the two:

* every held connection gains ``server_state`` — ``active``, ``idle in transaction``,
  ``waiting on a lock``, … — when its session was seen by the last probe;
* ``server_sessions`` lists the sessions that hold things up — idle in a transaction,
  waiting on a lock, or blocking another session — each with the app, process and
  (when the connection is checked out) checkout site holding it.

A session whose stamp names a process the sidecar does not know is still listed, with
its app and pid from the stamp and no site. Nothing here queries the database.
"""

from __future__ import annotations

from typing import Any

LOCK_WAIT = "waiting on a lock"


def server_state(session: dict[str, Any]) -> str:
    """What a server session is doing, in the words ``/api/pools`` uses."""
    return LOCK_WAIT if session.get("waiting_on_lock") else str(session.get("state") or "unknown")


def _troubled(session: dict[str, Any], blockers: set[int]) -> bool:
    state = str(session.get("state") or "")
    return (
        state.startswith("idle in transaction")
        or bool(session.get("waiting_on_lock"))
        or session.get("backend_pid") in blockers
    )


def annotate(doc: dict[str, Any], sessions: list[dict[str, Any]] | None) -> dict[str, Any]:
    """``doc`` (an ``/api/pools`` document) with server states and troubled sessions."""
    if sessions is None:
        return doc
    # A backend pid is unique on the server at any one time; the stamp's pid confirms
    # that the session belongs to the process holding the connection.
    by_owner: dict[tuple[int, int], dict[str, Any]] = {}
    for s in sessions:
        owner = s.get("owner") or {}
        if owner.get("pid") is not None and s.get("backend_pid") is not None:
            by_owner[(int(owner["pid"]), int(s["backend_pid"]))] = s
    pids = {p["process"]: p["pid"] for p in doc.get("processes", [])}
    holders: dict[int, dict[str, Any]] = {}
    for pool in doc.get("pools", []):
        for held in pool.get("held", []):
            pid = pids.get(held.get("process"))
            backend = held.get("backend_pid")
            session = by_owner.get((pid, backend)) if pid is not None and backend else None
            if session is not None:
                held["server_state"] = server_state(session)
                holders[int(backend)] = {"pool": pool.get("pool"), **held}
    blockers = {int(b) for s in sessions for b in s.get("blocked_by") or []}
    troubled: list[dict[str, Any]] = []
    for s in sessions:
        if not _troubled(s, blockers):
            continue
        owner = s.get("owner") or {}
        held = holders.get(int(s.get("backend_pid") or 0), {})
        troubled.append(
            {
                "backend_pid": s.get("backend_pid"),
                "server_state": server_state(s),
                "blocked_by": list(s.get("blocked_by") or []),
                "blocking": s.get("backend_pid") in blockers,
                "transaction_seconds": s.get("transaction_seconds"),
                "state_seconds": s.get("state_seconds"),
                "app": owner.get("app"),
                "host": owner.get("host"),
                "pid": owner.get("pid"),
                "process": held.get("process") or f"{owner.get('host')}/{owner.get('pid')}",
                "pool": held.get("pool"),
                "site": held.get("site"),
                "held_seconds": held.get("age_seconds"),
            }
        )
    troubled.sort(key=lambda t: -float(t["transaction_seconds"] or t["state_seconds"] or 0.0))
    return {**doc, "server_sessions": troubled}
