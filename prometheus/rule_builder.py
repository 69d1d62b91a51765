"""The rule builder every alert is written with: selectors, recording rules, alerts.

How the rules aggregate. Pool series come from the sidecar (labels ``app``, ``pool``;
processes already folded together, or one series per ``process`` with per-process output)
or from an app in embedded mode (``pool`` only). The recording rules fold everything into
one series per ``group_by`` labels (by default namespace, job, app, pool): gauges that add
up across processes (pending, leaked, max_connections) are summed, ratios take the worst
process (``max``), counters are summed rates. Labels a series lacks stay absent, so the
same expressions serve both modes. Unbounded pools have no ``max_connections`` or
utilization series and idle pools have zero rates, so no alert can fire for them.

:class:`RuleBuilder` holds one config and the recording rules made so far, in the order
they were first asked for (that order is the order of ``recording.yaml``); each alert
takes its ``for``, severity and runbook anchor from the config's entry of its name.
"""

from __future__ import annotations

from typing import Any

#: labels of sqlalchemy_pool_info besides the series' own
#: (INFO_LABELS of the package's protocol/catalog.py)
INFO_LABELS = (
    "pool_class", "dialect", "driver", "database", "host",
    "timeout_seconds", "recycle_seconds", "pre_ping",
)
#: how an alert names the pool it is about; labels a series lacks are left out
POOL_REF = (
    "SQLAlchemy pool {{ $labels.pool }}"
    "{{ with $labels.app }} of app {{ . }}{{ end }}"
    "{{ with $labels.namespace }} in namespace {{ . }}{{ end }}"
)


class RuleBuilder:
    """Builds the rules of one config: recording rules on demand, alerts from its entries."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.cfg = config
        self.alerts_cfg: dict[str, dict[str, Any]] = config["alerts"]
        self.by = ", ".join(config["group_by"])
        self.recording: dict[str, str] = {}

    # -- helpers -------------------------------------------------------------------------
    def sel(self, metric: str, extra: str = "") -> str:
        """``metric{pool_selector, extra}``."""
        matchers = ", ".join(m for m in (self.cfg["pool_selector"], extra) if m)
        return f"{metric}{{{matchers}}}" if matchers else metric

    def record(self, name: str, expr: str) -> str:
        """Add a recording rule (once) and return its name."""
        self.recording.setdefault(name, expr)
        return name

    def gauge(self, metric: str, op: str) -> str:
        """Per-pool ``op`` (sum or max) of a gauge."""
        return self.record(
            f"app_pool:{metric}:{op}", f"{op} by ({self.by}) ({self.sel(metric)})"
        )

    def rate(self, counter: str, window: str) -> str:
        """Per-pool summed rate of a ``_total`` counter."""
        return self.record(
            f"app_pool:{counter}:rate{window}",
            f"sum by ({self.by}) (rate({self.sel(counter + '_total')}[{window}]))",
        )

    def alert(self, name: str, expr: str, summary: str, description: str) -> dict[str, Any]:
        """An alerting rule, its ``for``, severity and runbook link from the config."""
        a = self.alerts_cfg[name]
        rule: dict[str, Any] = {"alert": name, "expr": expr}
        if a.get("for"):
            rule["for"] = a["for"]
        rule["labels"] = {"severity": a["severity"]}
        rule["annotations"] = {
            "summary": summary,
            "description": description,
            "runbook_url": f"{self.cfg['runbook_url']}#{name.lower()}",
        }
        return rule
