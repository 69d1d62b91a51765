"""``sqlalchemy-pool-exporter run -- <command …>``: instrument a program without touching it.

Every SQLAlchemy Engine created by the command's Python processes — gunicorn or uvicorn
workers, celery children, multiprocessing, ``subprocess`` pythons — is instrumented as
``instrument(engine)`` would, with the options of the ``POOL_EXPORTER_*`` environment
(``POOL_EXPORTER_PUSH_URL`` to push to a sidecar, ``POOL_EXPORTER_OTEL=true`` …), as
``opentelemetry-instrument`` does for its instrumentations.

How: the directory holding the package's ``bootstrap/sitecustomize.py`` goes first on
``PYTHONPATH``, which every Python process of the command tree inherits and imports at
start-up (see :mod:`sqlalchemy_pool_exporter.bootstrap.sitecustomize`, and
:mod:`sqlalchemy_pool_exporter.instrumentation.autoinstrument` for the hook it installs).
``POOL_EXPORTER_APP`` defaults to the command's name, so all its processes report as one
app. An app that calls ``instrument()`` itself keeps its own options: they take over
from ``run``'s for that engine.

Then ``run`` *becomes* the command (``exec``, on POSIX): same pid, signals go straight to
it, and its exit status is the command's own — a shell reports 128+N for death by signal
N exactly as if the command had been started directly. A command that cannot be found
exits 127, one that cannot be executed 126, as in a shell; invalid ``POOL_EXPORTER_*``
settings stop ``run`` before it starts anything (exit 2, one line naming the setting).
The command's Python needs sqlalchemy-pool-exporter installed (run it from the same
virtualenv); ``python -E``/``-I`` ignore ``PYTHONPATH`` and so are not instrumented.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import ValidationError

from sqlalchemy_pool_exporter import bootstrap
from sqlalchemy_pool_exporter.instrumentation.settings import AppSettings
from sqlalchemy_pool_exporter.settings import PREFIX, describe_error

#: The directory put first on the command's PYTHONPATH.
BOOTSTRAP_DIR = str(Path(bootstrap.__file__).resolve().parent)
PROG = "sqlalchemy-pool-exporter run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``run``: the command, after ``--``."""
    parser.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND ...",
        help="the program to run, e.g. -- gunicorn -w 4 app:app",
    )


def app_name(command: Sequence[str]) -> str:
    """The ``app`` label for ``command``: the program, or the script or module a Python runs."""
    words = list(command)
    program = os.path.basename(words[0])
    if program.startswith("python") and len(words) > 1:
        if words[1] == "-m" and len(words) > 2:
            return words[2]
        if not words[1].startswith("-"):
            return os.path.basename(words[1]).removesuffix(".py")
    return program or "python"


def child_environment(environ: Mapping[str, str], command: Sequence[str]) -> dict[str, str]:
    """``environ`` with the bootstrap directory first on PYTHONPATH and a default app name."""
    env = dict(environ)
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != BOOTSTRAP_DIR]
    env["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP_DIR, *rest])
    if not env.get(f"{PREFIX}APP"):
        env[f"{PREFIX}APP"] = app_name(command)
    return env


def run(args: argparse.Namespace) -> int:
    """Run the command instrumented; its exit status is the command's."""
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print(f"{PROG}: no command given (usage: {PROG} -- COMMAND ...)", file=sys.stderr)
        return 2
    try:
        AppSettings()
    except ValidationError as exc:
        print(f"{PROG}: {describe_error(exc)}", file=sys.stderr)
        return 2
    env = child_environment(os.environ, command)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        if os.name != "posix":  # no exec that keeps the process: wait for it instead
            return subprocess.call(command, env=env)
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        print(f"{PROG}: command not found: {command[0]}", file=sys.stderr)
        return 127
    except OSError as exc:
        print(f"{PROG}: cannot execute {command[0]}: {exc.strerror}", file=sys.stderr)
        return 126
    return 0  # not reached: exec does not return
