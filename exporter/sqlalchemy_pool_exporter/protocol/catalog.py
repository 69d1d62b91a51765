"""The metric catalog: the one table every metric name, help text and rule derives from.

Each :class:`Metric` row says what a series is called, what kind it is, what it means,
its unit, its own labels and how the sidecar combines it across processes. From this
table alone come

* the push snapshot's fields (:data:`GAUGE_FIELDS`, :data:`COUNTER_FIELDS`,
  :data:`HISTOGRAM_FIELDS`) that the app side fills in,
* the sidecar's validation of those fields and its aggregation rules
  (:data:`SUM_GAUGES`, :data:`LIMIT_GAUGES`, :data:`MAX_GAUGES`),
* the metric families served by both the embedded collector and the sidecar
  (:mod:`sqlalchemy_pool_exporter.exposition`),
* the metric reference ``docs/metrics.md`` (``scripts/metrics_doc.py``).

A snapshot field is one number, so a series with a label of its own (``state``,
``kind``) maps each label value to its own field: ``sqlalchemy_pool_connections
{state="idle"}`` is the field ``gauges.idle``. Adding a counter is one row here: the
snapshot, the validator, the aggregator, both exporters and the reference follow.

``scope`` says who serves a row: ``pool`` rows travel in pushes and are labelled
``pool`` (plus ``app`` at the sidecar); ``sidecar`` rows are the sidecar's own view of
its processes; ``database`` rows come from the database probe; ``exporter`` rows are the
exporter's own health.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["gauge", "counter", "histogram", "info"]
Scope = Literal["pool", "sidecar", "database", "exporter"]
#: How the sidecar combines one pool's values across processes: ``sum``; ``limit``
#: (summed, absent while any live process has no such limit); ``max`` (the worst
#: process); ``count`` (of live processes); ``one`` (the latest description);
#: ``total`` (counters and histograms: live processes plus every retired one).
Across = Literal["sum", "limit", "max", "count", "one", "total", "-"]

#: Labels of ``sqlalchemy_pool_info``: a static description, never a credential.
INFO_LABELS = (
    "pool_class",
    "dialect",
    "driver",
    "database",
    "host",
    "timeout_seconds",
    "recycle_seconds",
    "pre_ping",
)


#: ``kind`` and ``cause`` of ``sqlalchemy_pool_invalidations_total``: one field per pair.
INVALIDATION_KINDS = ("hard", "soft")
INVALIDATION_CAUSES = ("pre_ping", "error", "explicit", "other")
#: ``kind`` of ``sqlalchemy_pool_db_idle_timeout_seconds`` (a probe serves those it has).
IDLE_TIMEOUT_KINDS = ("idle_session", "idle_in_transaction", "wait")


@dataclass(frozen=True)
class Metric:
    """One row of the catalog."""

    name: str  # as exposed; counters without their ``_total`` suffix
    kind: Kind
    help: str
    unit: str
    scope: Scope = "pool"
    across: Across = "total"
    labels: tuple[str, ...] = ()
    #: (label values, snapshot field) per series; for pool rows only.
    fields: tuple[tuple[tuple[str, ...], str], ...] = ()
    #: The field may be null: the pool class has no such limit.
    nullable: bool = False
    #: The value is a whole count (validated as an integer).
    integer: bool = True

    @property
    def exposed(self) -> str:
        """The name a scrape shows (``_total`` added to counters)."""
        return f"{self.name}_total" if self.kind == "counter" else self.name


def _one(field: str) -> tuple[tuple[tuple[str, ...], str], ...]:
    return (((), field),)


CATALOG: tuple[Metric, ...] = (
    # -- pool gauges: the state now --------------------------------------------------
    Metric(
        "sqlalchemy_pool_connections",
        "gauge",
        "Connections in use (checked_out) or idle in the pool.",
        "connections",
        across="sum",
        labels=("state",),
        fields=((("checked_out",), "checked_out"), (("idle",), "idle")),
    ),
    Metric(
        "sqlalchemy_pool_size",
        "gauge",
        "Configured pool_size.",
        "connections",
        across="limit",
        fields=_one("size"),
        nullable=True,
    ),
    Metric(
        "sqlalchemy_pool_max_overflow",
        "gauge",
        "Configured max_overflow.",
        "connections",
        across="limit",
        fields=_one("max_overflow"),
        nullable=True,
    ),
    Metric(
        "sqlalchemy_pool_max_connections",
        "gauge",
        "Hard limit pool_size + max_overflow; absent for unbounded pools.",
        "connections",
        across="limit",
        fields=_one("max_connections"),
        nullable=True,
    ),
    Metric(
        "sqlalchemy_pool_overflow",
        "gauge",
        "Overflow connections open now.",
        "connections",
        across="sum",
        fields=_one("overflow"),
    ),
    Metric(
        "sqlalchemy_pool_pending",
        "gauge",
        "Callers blocked waiting for a connection now.",
        "callers",
        across="sum",
        fields=_one("pending"),
    ),
    Metric(
        "sqlalchemy_pool_utilization_ratio",
        "gauge",
        "Checked-out connections / max_connections.",
        "ratio",
        across="max",
        fields=_one("utilization_ratio"),
        nullable=True,
        integer=False,
    ),
    Metric(
        "sqlalchemy_pool_peak_utilization_ratio",
        "gauge",
        "Highest utilization within the last peak window.",
        "ratio",
        across="max",
        fields=_one("peak_utilization_ratio"),
        nullable=True,
        integer=False,
    ),
    Metric(
        "sqlalchemy_pool_oldest_checkout_seconds",
        "gauge",
        "Age of the longest-held checked-out connection (0 if none).",
        "seconds",
        across="max",
        fields=_one("oldest_checkout_seconds"),
        integer=False,
    ),
    Metric(
        "sqlalchemy_pool_oldest_wait_seconds",
        "gauge",
        "How long the longest-waiting caller still inside pool.connect() has waited (0 if none).",
        "seconds",
        across="max",
        fields=_one("oldest_wait_seconds"),
        integer=False,
    ),
    Metric(
        "sqlalchemy_pool_recycle_seconds",
        "gauge",
        "Configured pool_recycle; absent when connections are never recycled.",
        "seconds",
        across="max",
        fields=_one("recycle_seconds"),
        nullable=True,
        integer=False,
    ),
    Metric(
        "sqlalchemy_pool_leaked_connections",
        "gauge",
        "Checked-out connections held longer than the leak threshold.",
        "connections",
        across="sum",
        fields=_one("leaked_connections"),
    ),
    # -- pool counters ------------------------------------------------------------------
    Metric(
        "sqlalchemy_pool_checkouts",
        "counter",
        "Successful checkouts.",
        "checkouts",
        fields=_one("checkouts"),
    ),
    Metric(
        "sqlalchemy_pool_checkout_timeouts",
        "counter",
        "Checkouts that raised sqlalchemy.exc.TimeoutError (pool limit reached).",
        "checkouts",
        fields=_one("checkout_timeouts"),
    ),
    Metric(
        "sqlalchemy_pool_connections_created",
        "counter",
        "New DBAPI connections opened.",
        "connections",
        fields=_one("connections_created"),
    ),
    Metric(
        "sqlalchemy_pool_connect_errors",
        "counter",
        "Failed attempts to open a DBAPI connection.",
        "attempts",
        fields=_one("connect_errors"),
    ),
    Metric(
        "sqlalchemy_pool_connections_closed",
        "counter",
        "DBAPI connections closed by the pool.",
        "connections",
        fields=_one("connections_closed"),
    ),
    Metric(
        "sqlalchemy_pool_invalidations",
        "counter",
        "Invalidated connections by kind (hard: closed; soft: replaced at next checkout) and"
        " cause (pre_ping: found dead at checkout and replaced, the app saw nothing; error: a"
        " disconnect error reached the app; explicit: the app called invalidate(); other).",
        "connections",
        labels=("kind", "cause"),
        fields=tuple(
            ((kind, cause), f"invalidations_{kind}_{cause}")
            for kind in INVALIDATION_KINDS
            for cause in INVALIDATION_CAUSES
        ),
    ),
    Metric(
        "sqlalchemy_pool_leaks",
        "counter",
        "Checkouts that crossed the leak threshold (each counted once).",
        "checkouts",
        fields=_one("leaks"),
    ),
    Metric(
        "sqlalchemy_pool_gc_reclaimed",
        "counter",
        "Connections never returned by the app and reclaimed by the garbage collector.",
        "connections",
        fields=_one("gc_reclaimed"),
    ),
    Metric(
        "sqlalchemy_pool_checkout_cancellations",
        "counter",
        "Waits for a connection abandoned by cancellation (asyncio task cancelled, timeout of"
        " the caller's own, KeyboardInterrupt).",
        "checkouts",
        fields=_one("checkout_cancellations"),
    ),
    Metric(
        "sqlalchemy_pool_fork_inherited_connections",
        "counter",
        "Pooled connections a forked child inherited open from its parent (SQLAlchemy's fork"
        " hazard: the fix is engine.dispose(close=False) in the child).",
        "connections",
        fields=_one("fork_inherited_connections"),
    ),
    # -- pool histograms ----------------------------------------------------------------
    Metric(
        "sqlalchemy_pool_wait_seconds",
        "histogram",
        "Time from asking the pool for a connection to getting one (or timing out).",
        "seconds",
        fields=_one("wait_seconds"),
        integer=False,
    ),
    Metric(
        "sqlalchemy_pool_use_seconds",
        "histogram",
        "Time a connection stayed checked out.",
        "seconds",
        fields=_one("use_seconds"),
        integer=False,
    ),
    Metric(
        "sqlalchemy_pool_connect_seconds",
        "histogram",
        "Time to open a new DBAPI connection.",
        "seconds",
        fields=_one("connect_seconds"),
        integer=False,
    ),
    # -- pool description -----------------------------------------------------------
    Metric(
        "sqlalchemy_pool_info",
        "info",
        "Static description of the pool.",
        "",
        across="one",
        labels=INFO_LABELS,
    ),
    # -- the sidecar's view of its processes -----------------------------------------
    Metric(
        "sqlalchemy_pool_processes",
        "gauge",
        "Live processes reporting this pool.",
        "processes",
        scope="sidecar",
        across="count",
    ),
    # -- database server (probe) -------------------------------------------------------
    Metric(
        "sqlalchemy_pool_db_up",
        "gauge",
        "1 if the last database probe succeeded.",
        "",
        scope="database",
        across="-",
    ),
    Metric(
        "sqlalchemy_pool_db_max_connections",
        "gauge",
        "Server max_connections.",
        "connections",
        scope="database",
        across="-",
    ),
    Metric(
        "sqlalchemy_pool_db_reserved_connections",
        "gauge",
        "Connection slots reserved for superusers (and reserved_connections roles).",
        "connections",
        scope="database",
        across="-",
    ),
    Metric(
        "sqlalchemy_pool_db_connections",
        "gauge",
        "Client sessions by state (pg_stat_activity.state; MySQL: the process list).",
        "connections",
        scope="database",
        across="-",
        labels=("state",),
    ),
    Metric(
        "sqlalchemy_pool_db_oldest_transaction_seconds",
        "gauge",
        "Age of the oldest open transaction, by backend state.",
        "seconds",
        scope="database",
        across="-",
        labels=("state",),
        integer=False,
    ),
    Metric(
        "sqlalchemy_pool_db_lock_waiting_connections",
        "gauge",
        "Client backends waiting for a lock now.",
        "connections",
        scope="database",
        across="-",
    ),
    Metric(
        "sqlalchemy_pool_db_oldest_lock_wait_seconds",
        "gauge",
        "Longest current lock wait (0 if none).",
        "seconds",
        scope="database",
        across="-",
        integer=False,
    ),
    Metric(
        "sqlalchemy_pool_db_deadlocks",
        "counter",
        "Deadlocks the server detected in the probed database.",
        "deadlocks",
        scope="database",
        across="-",
    ),
    Metric(
        "sqlalchemy_pool_db_aborted_clients",
        "counter",
        "Connections the server dropped because the client vanished or stayed idle past"
        " wait_timeout (MySQL/MariaDB Aborted_clients).",
        "connections",
        scope="database",
        across="-",
    ),
    Metric(
        "sqlalchemy_pool_db_idle_timeout_seconds",
        "gauge",
        "The server's idle limits that kill pooled connections, by kind (idle_session,"
        " idle_in_transaction, wait); 0 = none.",
        "seconds",
        scope="database",
        across="-",
        labels=("kind",),
        integer=False,
    ),
    # -- the exporter's own health -----------------------------------------------------
    Metric(
        "pool_exporter_pushes",
        "counter",
        "Pushes received, by result.",
        "pushes",
        scope="exporter",
        across="-",
        labels=("result",),
    ),
    Metric(
        "pool_exporter_push_rejected",
        "counter",
        "Pushes rejected, by reason.",
        "pushes",
        scope="exporter",
        across="-",
        labels=("reason",),
    ),
    Metric(
        "pool_exporter_processes",
        "gauge",
        "Live processes pushing to this sidecar.",
        "processes",
        scope="exporter",
        across="-",
    ),
    Metric(
        "pool_exporter_processes_expired",
        "counter",
        "Processes retired because they stopped pushing.",
        "processes",
        scope="exporter",
        across="-",
    ),
    Metric(
        "pool_exporter_pool_resets",
        "counter",
        "Pools whose counters restarted from zero in a live process (a new pool, same name).",
        "pools",
        scope="exporter",
        across="-",
    ),
    Metric(
        "pool_exporter_errors",
        "counter",
        "Errors inside the exporter caught before they reached the app.",
        "errors",
        scope="exporter",
        across="-",
        labels=("where",),
    ),
    # -- the sidecar's own limits (what keeps it up under hostile load) ------------------
    Metric(
        "pool_exporter_limit_hits",
        "counter",
        "Times a sidecar limit was reached and something was refused, closed or dropped.",
        "events",
        scope="exporter",
        across="-",
        labels=("limit",),
    ),
    Metric(
        "pool_exporter_connections",
        "gauge",
        "Open HTTP connections, by listener.",
        "connections",
        scope="exporter",
        across="-",
        labels=("listener",),
    ),
    Metric(
        "pool_exporter_groups",
        "gauge",
        "(app, pool) groups kept, live or retained.",
        "groups",
        scope="exporter",
        across="-",
    ),
    Metric(
        "pool_exporter_groups_dropped",
        "counter",
        "(app, pool) groups dropped after their retention period with no live process.",
        "groups",
        scope="exporter",
        across="-",
    ),
    Metric(
        "pool_exporter_state_bytes",
        "gauge",
        "Push body bytes held as the latest state of live processes.",
        "bytes",
        scope="exporter",
        across="-",
    ),
    Metric(
        "pool_exporter_per_process_limited",
        "gauge",
        "1 while per-process output is over max_series and aggregated series are served.",
        "",
        scope="exporter",
        across="-",
    ),
)

BY_NAME: dict[str, Metric] = {m.name: m for m in CATALOG}
POOL_METRICS: tuple[Metric, ...] = tuple(m for m in CATALOG if m.scope == "pool")


def _fields(kind: Kind) -> tuple[str, ...]:
    return tuple(f for m in POOL_METRICS if m.kind == kind for _, f in m.fields)


#: The fields of a pool snapshot's ``gauges``, ``counters`` and ``histograms``.
GAUGE_FIELDS = _fields("gauge")
COUNTER_FIELDS = _fields("counter")
HISTOGRAM_FIELDS = _fields("histogram")


def _gauges(**where: object) -> tuple[str, ...]:
    return tuple(
        f
        for m in POOL_METRICS
        if m.kind == "gauge" and all(getattr(m, k) == v for k, v in where.items())
        for _, f in m.fields
    )


#: Gauge fields the sidecar sums, sums-or-omits, and takes the worst of.
SUM_GAUGES = _gauges(across="sum")
LIMIT_GAUGES = _gauges(across="limit")
MAX_GAUGES = _gauges(across="max")
#: Gauge fields that may be null, and those that are whole counts.
NULLABLE_GAUGES = frozenset(_gauges(nullable=True))
INTEGER_GAUGES = frozenset(_gauges(integer=True))


def metric(name: str) -> Metric:
    """The catalog row named ``name`` (KeyError if there is none)."""
    return BY_NAME[name]


# -- OpenTelemetry ---------------------------------------------------------------------
# ``instrument(engine, otel=True)`` reports the pool rows through the OpenTelemetry
# Metrics API too. A row the semantic conventions for database client connection pools
# name is reported under their name, unit and attributes; every other pool row keeps its
# meaning as ``sqlalchemy.pool.<name>`` (see :func:`otel_instrument`).

#: Pool rows the semantic conventions name: row -> (instrument name, unit).
OTEL_SEMCONV: dict[str, tuple[str, str]] = {
    "sqlalchemy_pool_connections": ("db.client.connection.count", "{connection}"),
    # pool_size is how many connections a QueuePool keeps open while idle.
    "sqlalchemy_pool_size": ("db.client.connection.idle.max", "{connection}"),
    "sqlalchemy_pool_max_connections": ("db.client.connection.max", "{connection}"),
    "sqlalchemy_pool_pending": ("db.client.connection.pending_requests", "{request}"),
    "sqlalchemy_pool_checkout_timeouts": ("db.client.connection.timeouts", "{timeout}"),
    "sqlalchemy_pool_connect_seconds": ("db.client.connection.create_time", "s"),
    "sqlalchemy_pool_wait_seconds": ("db.client.connection.wait_time", "s"),
    "sqlalchemy_pool_use_seconds": ("db.client.connection.use_time", "s"),
}
#: The one instrument of the conventions with no row: SQLAlchemy's pools keep no minimum
#: of idle connections, so it is 0 for every pool that has a size.
OTEL_IDLE_MIN = ("db.client.connection.idle.min", "{connection}")
#: The attribute naming the pool on every instrument (the ``pool`` label).
OTEL_POOL_ATTRIBUTE = "db.client.connection.pool.name"
#: Row labels the conventions name, with their values: (attribute, {label value: value}).
OTEL_LABELS: dict[str, tuple[str, dict[str, str]]] = {
    "state": ("db.client.connection.state", {"checked_out": "used", "idle": "idle"}),
}
_OTEL_UNITS = {"seconds": "s", "ratio": "1", "": "1"}


def otel_instrument(row: Metric) -> tuple[str, str]:
    """(OpenTelemetry instrument name, UCUM unit) of a pool row."""
    if row.name in OTEL_SEMCONV:
        return OTEL_SEMCONV[row.name]
    # OpenTelemetry names carry no unit: the unit travels beside the name.
    base = row.name.removeprefix("sqlalchemy_pool_").removesuffix("_seconds").removesuffix("_ratio")
    unit = _OTEL_UNITS.get(row.unit, "{" + row.unit.removesuffix("s") + "}")
    return f"sqlalchemy.pool.{base}", unit
