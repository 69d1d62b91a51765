"""``sqlalchemy-pool-exporter status``: every app, pool and process of a running sidecar.

Reads the sidecar's ``/api/pools`` and prints one row per (app, pool) — live processes,
connections in use against the limit, worst utilization and peak, callers waiting, the
oldest checkout, leaked connections and the checkout sites holding the most
connections — followed by one indented row per process. A pool whose processes have all
exited (or expired) is still known to the sidecar, which keeps its totals; it has no
state now, so its row says ``no live process`` instead of showing numbers. ``--watch``
redraws it every few seconds until Ctrl-C. An unreachable sidecar is one line on stderr
and exit status 1.

``/api/pools`` names hosts, databases and code, so the sidecar serves it on its loopback
push listener by default (``POOL_EXPORTER_API_LISTEN``), and that is where ``status``
looks unless told otherwise with ``--url``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:9188"
COLUMNS = (
    "APP",
    "POOL",
    "PROCS",
    "IN USE",
    "UTIL",
    "PEAK",
    "PENDING",
    "OLDEST",
    "LEAKED",
    "TOP CHECKOUT SITES",
)

NO_LIVE_PROCESS = "no live process"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``status``."""
    parser.add_argument(
        "--url",
        default=DEFAULT_URL,
        help=f"the sidecar listener serving /api/pools: the push listener unless "
        f"POOL_EXPORTER_API_LISTEN says otherwise (default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=2.0,
        default=None,
        metavar="SECONDS",
        help="redraw every SECONDS (default 2) until Ctrl-C",
    )
    parser.add_argument("--sites", type=int, default=2, help="checkout sites shown per pool")


class Unreachable(Exception):
    """The sidecar could not be read."""


def fetch(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """The ``/api/pools`` document of the sidecar at ``url``."""
    target = url.rstrip("/") + "/api/pools"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:
            doc: dict[str, Any] = json.loads(response.read())
            return doc
    except urllib.error.HTTPError as exc:
        hint = (
            " (is /api/pools served there? see POOL_EXPORTER_API_LISTEN)" if exc.code == 404 else ""
        )
        raise Unreachable(
            f"sidecar at {url} answered HTTP {exc.code} for /api/pools{hint}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"cannot reach the sidecar at {url}: {reason}") from None
    except ValueError:
        raise Unreachable(f"{target} did not return JSON; is {url} a sidecar?") from None


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 120:
        return f"{value / 60:.1f}m"
    return f"{value:.1f}s"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _in_use(gauges: dict[str, Any]) -> str:
    limit = gauges.get("max_connections")
    used = gauges.get("checked_out", 0)
    return f"{used}/{limit}" if limit is not None else f"{used}/∞"


def _sites(pool: dict[str, Any], n: int) -> str:
    shown = [
        f"{s['site'] or '?'}: {s['held']} held, {_seconds(s['oldest_seconds'])}"
        for s in pool.get("sites", [])[:n]
    ]
    return "; ".join(shown) or "-"


def _gauge_cells(g: dict[str, Any]) -> tuple[str, ...]:
    # The same six columns for a pool's sums and for each of its processes.
    return (
        _in_use(g),
        _percent(g.get("utilization_ratio")),
        _percent(g.get("peak_utilization_ratio")),
        str(g.get("pending", 0)),
        _seconds(g.get("oldest_checkout_seconds")),
        str(g.get("leaked_connections", 0)),
    )


def rows(doc: dict[str, Any], sites: int = 2) -> list[tuple[str, ...]]:
    """Table rows (without the header): a pool row, then one row per process."""
    out: list[tuple[str, ...]] = []
    for pool in doc.get("pools", []):
        if not pool["processes"]:
            out.append((pool["app"], pool["pool"], "0", *["-"] * 6, NO_LIVE_PROCESS))
            continue
        out.append(
            (
                pool["app"],
                pool["pool"],
                str(pool["processes"]),
                *_gauge_cells(pool["gauges"]),
                _sites(pool, sites),
            )
        )
        for proc in pool.get("per_process", []):
            out.append(("", f"  └ {proc['process']}", "", *_gauge_cells(proc["gauges"]), ""))
        omitted = pool.get("per_process_omitted", 0)
        if omitted:
            out.append(("", f"  … {omitted} more", *[""] * (len(COLUMNS) - 2)))
    return out


def render(doc: dict[str, Any], sites: int = 2) -> str:
    """The whole table as text."""
    table = [COLUMNS, *rows(doc, sites)]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table
    ]
    if len(table) == 1:
        lines.append("(no pools reported yet)")
    live = len(doc.get("processes", []))
    idle = sum(1 for pool in doc.get("pools", []) if not pool["processes"])
    footer = f"{live} live process{'es' if live != 1 else ''}"
    if idle:
        footer += f"; {idle} pool{'s' if idle != 1 else ''} with no live process (totals kept)"
    lines.append(footer)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the table once, or redraw it with ``--watch``; 1 if the sidecar is unreachable."""
    if args.watch is None:
        try:
            print(render(fetch(args.url), args.sites))
        except Unreachable as exc:
            print(f"sqlalchemy-pool-exporter status: {exc}", file=sys.stderr)
            return 1
        return 0
    interval = max(args.watch, 0.1)
    try:
        while True:
            try:
                text = render(fetch(args.url), args.sites)
            except Unreachable as exc:
                text = f"{exc} (retrying every {interval:g}s)"
            stamp = time.strftime("%H:%M:%S")
            sys.stdout.write(f"\x1b[H\x1b[2J{args.url}  {stamp}  (Ctrl-C to stop)\n\n{text}\n")
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
