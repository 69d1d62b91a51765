"""``sqlalchemy-pool-exporter serve``: run the sidecar until SIGTERM or Ctrl-C.

Every :class:`~sqlalchemy_pool_exporter.sidecar.settings.SidecarSettings` field is a
flag (``max_body_bytes`` → ``--max-body-bytes``); a flag wins over its
``POOL_EXPORTER_*`` variable. An invalid value exits with status 2 and one line naming
the setting. Once both listeners are bound, one log line ``listening`` gives the actual
addresses (``metrics``, ``push``), so port 0 works for tests and tools. With
``--database-url`` the database probe (PostgreSQL, MySQL or MariaDB, by the URL's
scheme) runs in the same process and its families join ``/metrics``; the URL itself is
never logged. Secrets given as flags (``--token``, ``--database-url``) get a warning:
``--token-file``/``--database-url-file`` keep them off the command line
(:mod:`~sqlalchemy_pool_exporter.sidecar.secrets`). With ``--state-dir`` the saved state
is restored before the listeners open; a directory held by another sidecar exits with
status 1 (``cannot keep state``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from pydantic import ValidationError

from sqlalchemy_pool_exporter.logs import configure_process_logging, get_logger
from sqlalchemy_pool_exporter.probes.factory import ProbeUnavailable, make_probe
from sqlalchemy_pool_exporter.settings import PREFIX, describe_error
from sqlalchemy_pool_exporter.sidecar.keeper import StateError
from sqlalchemy_pool_exporter.sidecar.process import tune_gc
from sqlalchemy_pool_exporter.sidecar.secrets import resolve_secrets, secrets_on_command_line
from sqlalchemy_pool_exporter.sidecar.server import ListenError, Sidecar
from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings

log = get_logger("sqlalchemy_pool_exporter.sidecar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per sidecar setting."""
    for name, info in SidecarSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = f"env {PREFIX}{name.upper()}"
        help_text = f"{info.description or ''} ({env}; default {info.default!r})"
        if info.annotation is bool:
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(flag, dest=name, default=None, metavar=name.upper(), help=help_text)


def load(args: argparse.Namespace) -> SidecarSettings:
    """Settings from the environment, overridden by the flags given."""
    given = {
        n: getattr(args, n)
        for n in SidecarSettings.model_fields
        if getattr(args, n, None) is not None
    }
    return resolve_secrets(SidecarSettings(**given))


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; 2 on invalid settings, 1 if a port cannot be bound."""
    try:
        settings = load(args)
    except ValidationError as exc:
        print(f"sqlalchemy-pool-exporter serve: {describe_error(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a secret file that cannot be used
        print(f"sqlalchemy-pool-exporter serve: {exc}", file=sys.stderr)
        return 2
    configure_process_logging(settings.log_format, settings.log_level)
    tune_gc()
    for flag in secrets_on_command_line(vars(args)):
        log.warning(
            "secret given on the command line: every local user can read it in "
            "/proc/<pid>/cmdline; use the file setting instead",
            flag=flag,
            instead=f"{flag}-file",
        )
    # Signal handlers first: a SIGTERM that arrives as soon as "listening" is printed
    # (tools wait for that line) must stop the sidecar cleanly, not kill it.
    done = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        done.set()

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _serve(settings, Sidecar(settings), done)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _serve(settings: SidecarSettings, sidecar: Any, done: threading.Event) -> int:
    try:
        sidecar.start()
    except StateError as exc:
        log.error("cannot keep state", error=str(exc), state_dir=settings.state_dir)
        return 1
    except ListenError as exc:
        log.error(
            "cannot listen",
            error=f"{exc.strerror or exc}",
            address=exc.address,
            setting=f"{PREFIX}{exc.setting.upper()}",
        )
        return 1
    probe = _make_probe(settings, sidecar.registry)
    sidecar.probe = probe
    log.info(
        "listening",
        metrics=sidecar.metrics_url,
        push=sidecar.push_url,
        per_process=settings.per_process,
        state_dir=settings.state_dir,
        token=bool(settings.token),  # an empty --token is no token
        probe=probe is not None,
    )
    if probe is not None:
        probe.start()  # after the "listening" line, which tools wait for first
    try:
        while not done.wait(1.0):
            pass
    finally:
        if probe is not None:
            probe.stop()
        sidecar.stop()
        log.info("stopped", processes=sidecar.aggregator.live_count())
    return 0


def _make_probe(settings: SidecarSettings, registry: Any) -> Any:
    if settings.database_url is None:
        return None
    try:
        probe = make_probe(
            settings.database_url.get_secret_value(), interval=settings.probe_interval
        )
    except ProbeUnavailable as exc:
        log.warning("database probe unavailable", error=str(exc))
        return None
    registry.register(probe)
    return probe
