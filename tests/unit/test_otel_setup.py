"""OpenTelemetry set-up in fresh interpreters: off by default, on from the environment."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.integration.conftest import ROOT


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter (the global MeterProvider can be set once only)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("POOL_EXPORTER_")}
    full_env.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_otel_off_never_imports_opentelemetry() -> None:
    done = run_python(
        """
        import sys
        from sqlalchemy import create_engine
        import sqlalchemy_pool_exporter
        engine = create_engine("sqlite://")
        sqlalchemy_pool_exporter.instrument(engine)
        engine.connect().close()
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"


def test_environment_turns_otel_on_through_the_global_meter_provider() -> None:
    done = run_python(
        """
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from sqlalchemy import create_engine
        import sqlalchemy_pool_exporter
        engine = create_engine("sqlite://")
        sqlalchemy_pool_exporter.instrument(engine, name="env")
        # The global provider may be set after instrument(): the API's proxy forwards.
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        for _ in range(3):
            engine.connect().close()
        for m in reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics:
            if m.name == "sqlalchemy.pool.checkouts":
                print(m.data.data_points[0].value, dict(m.data.data_points[0].attributes))
        """,
        POOL_EXPORTER_OTEL="true",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "3 {'db.client.connection.pool.name': 'env'}\n"


def test_without_opentelemetry_installed() -> None:
    # ``None`` in sys.modules makes ``import opentelemetry`` fail as if it were absent.
    done = run_python(
        """
        import sys
        sys.modules["opentelemetry"] = None
        from sqlalchemy import create_engine
        import sqlalchemy_pool_exporter
        engine = create_engine("sqlite://")
        try:
            sqlalchemy_pool_exporter.instrument(engine, otel=True)
        except ImportError as e:
            print("explicit:", e)
        print("instrumented:", len(sqlalchemy_pool_exporter.instrumentations()))
        sqlalchemy_pool_exporter.instrument(engine)  # POOL_EXPORTER_OTEL=true: logged
        print("instrumented:", len(sqlalchemy_pool_exporter.instrumentations()))
        """,
        POOL_EXPORTER_OTEL="true",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "explicit: otel needs opentelemetry-api: pip install "
        "'sqlalchemy-pool-exporter[otel]'\n"
        "instrumented: 0\n"
        "instrumented: 1\n"
    )
    assert "ignoring POOL_EXPORTER_OTEL" in done.stderr
