"""What a diagnosis returns: findings, each naming a cause, its evidence and its fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: The causes, by number, as the runbook's table names them.
CAUSES = {
    1: "sessions never closed",
    2: "pool too small for the concurrency",
    3: "transactions held across slow calls",
    4: "leaks on error paths",
    5: "pool_recycle at or above the server's idle limit",
    6: "max_overflow too low for bursts",
    7: "row-lock waits and deadlocks holding connections",
    8: "NullPool by accident",
    9: "combined limits above the server's max_connections",
    10: "engines created per request, pools inherited across fork",
    11: "callers waiting for a connection now",
    12: "pool_timeout long enough to hang requests",
}


@dataclass
class Finding:
    """One cause seen in one pool (or on the server): evidence and the fix."""

    cause: int
    summary: str
    fix: str
    evidence: dict[str, Any] = field(default_factory=dict)
    app: str | None = None
    pool: str | None = None

    @property
    def title(self) -> str:
        """The cause's name in the causes table."""
        return CAUSES[self.cause]

    def as_dict(self) -> dict[str, Any]:
        """JSON form (``/api/diagnosis``, ``doctor --json``)."""
        return {"title": self.title, **asdict(self)}


def document(findings: list[Finding]) -> dict[str, Any]:
    """The diagnosis as JSON: ``healthy`` and the findings, by cause number."""
    ordered = sorted(findings, key=lambda f: (f.cause, f.app or "", f.pool or ""))
    return {"healthy": not ordered, "findings": [f.as_dict() for f in ordered]}
