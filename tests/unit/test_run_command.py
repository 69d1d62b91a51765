"""``run``'s environment for its command: the bootstrap directory first, one app name."""

from __future__ import annotations

import os

import pytest

from sqlalchemy_pool_exporter.cli.run import BOOTSTRAP_DIR, app_name, child_environment


@pytest.mark.parametrize(
    ("command", "app"),
    [
        (["gunicorn", "-w", "4", "app:app"], "gunicorn"),
        (["/venv/bin/uvicorn", "--workers", "2", "main:app"], "uvicorn"),
        (["python3", "manage.py", "runserver"], "manage"),
        (["/usr/bin/python3.12", "-m", "celery", "-A", "proj", "worker"], "celery"),
        (["python", "-c", "pass"], "python"),
        (["python"], "python"),
    ],
)
def test_app_name_is_the_program_or_what_python_runs(command: list[str], app: str) -> None:
    assert app_name(command) == app


def test_bootstrap_directory_goes_first_once_and_holds_only_sitecustomize() -> None:
    env = child_environment({"PYTHONPATH": f"/src{os.pathsep}{BOOTSTRAP_DIR}"}, ["gunicorn"])
    assert env["PYTHONPATH"] == f"{BOOTSTRAP_DIR}{os.pathsep}/src"
    assert env["POOL_EXPORTER_APP"] == "gunicorn"
    assert sorted(p for p in os.listdir(BOOTSTRAP_DIR) if p.endswith(".py")) == [
        "__init__.py",
        "sitecustomize.py",
    ]


def test_an_app_name_given_is_kept() -> None:
    env = child_environment({"POOL_EXPORTER_APP": "shop"}, ["gunicorn"])
    assert (env["POOL_EXPORTER_APP"], env["PYTHONPATH"]) == ("shop", BOOTSTRAP_DIR)
