"""App-side settings: the default ``app`` label from the command line, and bad variables.

A bad ``POOL_EXPORTER_*`` variable is one warning line naming it and what is wrong, and
is ignored alone: every other variable still applies. An empty variable is unset.
"""

from __future__ import annotations

import logging
import os

import pytest

from sqlalchemy_pool_exporter.instrumentation.appname import default_app
from sqlalchemy_pool_exporter.instrumentation.engines import load_settings


@pytest.mark.parametrize(
    ("argv", "app"),
    [
        (["/venv/bin/gunicorn", "shop.wsgi:app"], "shop"),
        (
            ["/venv/bin/gunicorn", "-b", "127.0.0.1:8000", "--preload", "-w", "3", "shop.wsgi:app"],
            "shop",
        ),
        (["/venv/bin/gunicorn", "-b", "unix:/run/s.sock", "shop:create_app()"], "shop"),
        (["/venv/bin/gunicorn", "-c", "python:conf.gunicorn", "shop.wsgi"], "shop"),
        (["/venv/bin/gunicorn", "--log-level", "info", "-w", "4", "shop.wsgi"], "shop"),
        (["/venv/lib/python3.11/site-packages/gunicorn/__main__.py", "shop.wsgi:app"], "shop"),
        (["/venv/bin/uvicorn", "main:app", "--workers", "2"], "main"),
        (["/venv/bin/uvicorn", "--app-dir", "src", "billing.api:app"], "billing"),
        (["/venv/bin/hypercorn", "orders.asgi:app", "-b", "0.0.0.0:8000"], "orders"),
        (["/venv/bin/celery", "-A", "proj", "worker", "-l", "info"], "proj"),
        (["/venv/bin/celery", "--app=proj.celery:app", "worker"], "proj"),
        (["/venv/bin/celery", "-Aproj", "worker"], "proj"),
        (["/venv/bin/fastapi", "run", "main.py"], "main"),
        (["/venv/bin/flask", "--app", "shop", "run"], "shop"),
        (["/srv/app/report.py"], "report"),
        # the program name, only where the command does not name an app
        (["/venv/bin/celery", "worker"], "celery"),
        (["/venv/bin/gunicorn", "--preload", "shop.wsgi"], "gunicorn"),
        (["/venv/bin/rq", "worker"], "rq"),
        (["-c"], "python"),
        ([], "python"),
    ],
)
def test_default_app_is_the_apps_import_name(
    argv: list[str], app: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CELERY_APP", raising=False)
    monkeypatch.delenv("FLASK_APP", raising=False)
    assert default_app(argv) == app


def test_default_app_from_celery_app_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_APP", "billing.tasks")
    assert default_app(["/venv/bin/celery", "worker"]) == "billing"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("POOL_EXPORTER_"):
            monkeypatch.delenv(name)
    return monkeypatch


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


NOT_A_NUMBER = "Input should be a valid number, unable to parse string as a number"


def test_each_bad_variable_is_named_and_ignored_alone(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean_env.setenv("POOL_EXPORTER_PUSH_INTERVAL", "abc")
    clean_env.setenv("POOL_EXPORTER_LEAK_THRESHOLD", "30s")
    clean_env.setenv("POOL_EXPORTER_PEAK_WINDOW", "12")
    clean_env.setenv("POOL_EXPORTER_PUSH_URL", "http://127.0.0.1:9188/v1/push")
    clean_env.setenv("POOL_EXPORTER_APP", "shop")
    clean_env.setenv("POOL_EXPORTER_TOKEN", "s3cret-token")
    caplog.set_level(logging.WARNING, logger="sqlalchemy_pool_exporter")
    settings = load_settings()
    assert warnings_of(caplog) == [
        f"ignoring invalid setting variable=POOL_EXPORTER_PUSH_INTERVAL problem='{NOT_A_NUMBER}'",
        f"ignoring invalid setting variable=POOL_EXPORTER_LEAK_THRESHOLD problem='{NOT_A_NUMBER}'",
    ]
    assert (settings.push_interval, settings.leak_threshold) == (5.0, 30.0)  # defaults
    assert settings.push_url == "http://127.0.0.1:9188/v1/push"
    assert (settings.app, settings.peak_window) == ("shop", 12.0)
    assert settings.token is not None and settings.token.get_secret_value() == "s3cret-token"


def test_an_explicit_argument_replaces_a_bad_variable_silently(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean_env.setenv("POOL_EXPORTER_PUSH_INTERVAL", "abc")
    caplog.set_level(logging.WARNING, logger="sqlalchemy_pool_exporter")
    assert load_settings(push_interval=2.0).push_interval == 2.0
    assert warnings_of(caplog) == []


def test_a_bad_url_never_echoes_what_it_holds(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean_env.setenv("POOL_EXPORTER_PUSH_URL", "http://user:hunter2@sidecar:port/v1/push")
    clean_env.setenv("POOL_EXPORTER_APP", "shop")
    caplog.set_level(logging.WARNING, logger="sqlalchemy_pool_exporter")
    settings = load_settings()
    assert warnings_of(caplog) == [
        "ignoring invalid setting variable=POOL_EXPORTER_PUSH_URL "
        "problem='is not a valid URL (host:port?)'"
    ]
    assert (settings.push_url, settings.app) == (None, "shop")


def test_empty_variables_are_unset(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("APP", "PUSH_URL", "PUSH_INTERVAL", "LEAK_THRESHOLD", "TOKEN"):
        clean_env.setenv(f"POOL_EXPORTER_{name}", "")
    caplog.set_level(logging.WARNING, logger="sqlalchemy_pool_exporter")
    settings = load_settings()
    assert warnings_of(caplog) == []
    assert settings.app == default_app()
    assert (settings.push_url, settings.token) == (None, None)
    assert (settings.push_interval, settings.leak_threshold) == (5.0, 30.0)


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("http://127.0.0.1:9188", "http://127.0.0.1:9188/v1/push"),
        ("http://127.0.0.1:9188/", "http://127.0.0.1:9188/v1/push"),
        ("https://sidecar.local", "https://sidecar.local/v1/push"),
        ("http://127.0.0.1:9188/v1/push", "http://127.0.0.1:9188/v1/push"),
        ("http://proxy:80/pool-exporter/v1/push", "http://proxy:80/pool-exporter/v1/push"),
    ],
)
def test_push_url_without_a_path_gets_the_push_path(
    given: str, used: str, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("POOL_EXPORTER_PUSH_URL", given)
    assert load_settings().push_url == used
    clean_env.delenv("POOL_EXPORTER_PUSH_URL")
    assert load_settings(push_url=given).push_url == used
