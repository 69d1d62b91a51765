"""``sqlalchemy-pool-exporter doctor``: from a running sidecar's numbers to causes and fixes.

Reads the sidecar's ``/api/diagnosis`` (its pools aggregated across processes, and its
database probe's last result) and prints one finding per cause it sees: the cause's
number in the runbook's table, the evidence and the setting or code to change.
``--json`` prints the document as it came. Exit status: 0 healthy, 1 findings, 2 the
sidecar could not be read (one line on stderr). ``--threshold NAME=VALUE`` overrides
when a number becomes a finding (see ``diagnosis.inputs.Thresholds``).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import fields
from typing import Any

from sqlalchemy_pool_exporter.cli.status import DEFAULT_URL
from sqlalchemy_pool_exporter.diagnosis.inputs import Thresholds

THRESHOLDS = tuple(f.name for f in fields(Thresholds))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``doctor``."""
    parser.add_argument(
        "--url",
        default=DEFAULT_URL,
        help=f"the sidecar listener serving /api/diagnosis (default {DEFAULT_URL})",
    )
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"override a threshold ({', '.join(THRESHOLDS)})",
    )


class Unreadable(Exception):
    """The diagnosis could not be read."""


def fetch(url: str, thresholds: dict[str, str], timeout: float = 5.0) -> dict[str, Any]:
    """The ``/api/diagnosis`` document of the sidecar at ``url``."""
    query = urllib.parse.urlencode(thresholds)
    target = url.rstrip("/") + "/api/diagnosis" + (f"?{query}" if query else "")
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:
            doc: dict[str, Any] = json.loads(response.read())
            return doc
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()[:200]
        raise Unreadable(f"sidecar at {url} answered HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise Unreadable(
            f"cannot reach the sidecar at {url}: {getattr(exc, 'reason', exc)}"
        ) from None
    except ValueError:
        raise Unreadable(f"{url} did not return JSON; is it a sidecar?") from None


def parse_thresholds(pairs: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` pairs, checked against the known thresholds."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in THRESHOLDS:
            raise ValueError(f"--threshold {pair!r}: expected NAME=VALUE, NAME one of {THRESHOLDS}")
        try:
            float(value)
        except ValueError:
            raise ValueError(f"--threshold {name}: {value!r} is not a number") from None
        out[name] = value
    return out


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def render(doc: dict[str, Any]) -> str:
    """The findings as text, one block per finding."""
    findings = doc.get("findings") or []
    probe = "" if doc.get("probe") else " (no database probe: server-side causes not checked)"
    if not findings:
        return f"healthy: no cause found{probe}\n"
    lines = [f"{len(findings)} finding(s){probe}"]
    for f in findings:
        where = " / ".join(x for x in (f.get("app"), f.get("pool")) if x) or "database server"
        lines.append("")
        lines.append(f"cause {f['cause']}: {f['title']}  [{where}]")
        lines.append(f"  {f['summary']}")
        for key, value in (f.get("evidence") or {}).items():
            lines.append(f"  - {key}: {_value(value)}")
        lines.append(f"  fix: {f['fix']}")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """Print the diagnosis; 0 healthy, 1 findings, 2 unreadable or bad flags."""
    try:
        doc = fetch(args.url, parse_thresholds(args.threshold))
    except (Unreadable, ValueError) as exc:
        print(f"sqlalchemy-pool-exporter doctor: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        sys.stdout.write(render(doc))
    return 0 if doc.get("healthy") else 1
