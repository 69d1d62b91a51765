"""The default ``app`` label: which application this process serves, read from its command.

Processes of two apps pushing to one sidecar are told apart only by ``app``. The program
name alone (``gunicorn``, ``uvicorn``, ``celery``) would merge them, so the default is
the application's import name where the command line names it:

* WSGI/ASGI servers (gunicorn, uvicorn, hypercorn, granian, daphne) take the app as
  ``module:attribute`` — ``gunicorn shop.wsgi:app`` → ``shop``, ``uvicorn main:app`` →
  ``main`` — or as a bare module (``gunicorn shop.wsgi``);
* ``celery -A proj worker`` and ``flask --app shop run`` name it with ``-A``/``--app``
  (or ``CELERY_APP``/``FLASK_APP``);
* ``fastapi run main.py`` and ``python main.py`` run a file: ``main``.

The first part of a dotted module is taken (``shop.wsgi`` → ``shop``): it is the
project's package. Otherwise the program name (``python -m pkg`` → ``pkg``) is the last
resort. ``POOL_EXPORTER_APP`` (or ``instrument(app=...)``) always wins. Worker processes
see their server's command line: gunicorn and celery fork theirs, and uvicorn's
``--workers`` (multiprocessing spawn) hands its ``sys.argv`` to each worker.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence

#: Programs that take the application as ``module:attribute`` (or a bare module).
SERVERS = frozenset({"gunicorn", "uvicorn", "hypercorn", "granian", "daphne", "fastapi"})
#: Programs that name the application with ``-A``/``--app``.
APP_FLAG_PROGRAMS = frozenset({"celery", "flask"})
#: Options whose value looks like ``name:thing`` but is not the application.
_CONFIG_OPTIONS = frozenset({"-c", "--config"})
_MODULE = r"[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*"
_APP_SPEC = re.compile(rf"^({_MODULE}):[A-Za-z_]")
_BARE_MODULE = re.compile(rf"^({_MODULE})$")
FALLBACK = "python"


def program_name(argv0: str) -> str:
    """``gunicorn`` for ``/venv/bin/gunicorn`` and for ``.../gunicorn/__main__.py``."""
    path = argv0.rstrip("/")
    name = os.path.basename(path)
    if name in ("__main__.py", "__main__"):
        name = os.path.basename(os.path.dirname(path))
    name = name.removesuffix(".py")
    return name if name and not name.startswith("-") else ""


def _package(module: str) -> str:
    return module.split(".", 1)[0]


def _from_app_flag(args: Sequence[str]) -> str | None:
    for i, arg in enumerate(args):
        value = None
        if arg in ("-A", "--app") and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--app="):
            value = arg.removeprefix("--app=")
        elif arg.startswith("-A") and len(arg) > 2:
            value = arg[2:]
        if value:
            match = _BARE_MODULE.match(value.split(":", 1)[0])
            if match:
                return _package(match.group(1))
    return None


def _from_server_args(args: Sequence[str]) -> str | None:
    # ``module:attribute`` anywhere wins (uvicorn takes options after it). Failing that,
    # the last bare module or ``.py`` file that is not the value of an option: which
    # options take a value is not known here, so one right after an option is skipped.
    candidates: list[str] = []
    for i, arg in enumerate(args):
        before = args[i - 1] if i else ""
        if arg.startswith("-") or before in _CONFIG_OPTIONS:
            continue
        match = _APP_SPEC.match(arg)
        if match:
            return _package(match.group(1))
        if not (before.startswith("-") and "=" not in before):
            candidates.append(arg)
    for arg in reversed(candidates):
        if arg.endswith(".py"):  # fastapi run main.py
            return program_name(arg) or None
        match = _BARE_MODULE.match(arg)
        if match and match.group(1) not in ("run", "dev"):
            return _package(match.group(1))
    return None


def default_app(argv: Sequence[str] | None = None) -> str:
    """The ``app`` label for the command ``argv`` (default: ``sys.argv``)."""
    args = list(sys.argv if argv is None else argv)
    if not args or not args[0]:
        return FALLBACK
    program = program_name(args[0])
    found = None
    if program in APP_FLAG_PROGRAMS:
        env = os.environ.get(f"{program.upper()}_APP", "")  # FLASK_APP, CELERY_APP
        found = _from_app_flag([*args[1:], *(["--app", env] if env else [])])
    elif program in SERVERS:
        found = _from_server_args(args[1:])
    return _package(found) if found else program or FALLBACK
