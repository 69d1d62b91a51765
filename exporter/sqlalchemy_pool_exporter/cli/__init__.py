"""Command line: ``sqlalchemy-pool-exporter <command>`` (or ``python -m sqlalchemy_pool_exporter``).

Each command lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; this module only dispatches, importing the chosen one.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "serve": (
        "sqlalchemy_pool_exporter.sidecar.command",
        "run the sidecar: receive pushes, serve /metrics",
    ),
    "status": (
        "sqlalchemy_pool_exporter.cli.status",
        "show every app, pool and process of a running sidecar",
    ),
    "doctor": (
        "sqlalchemy_pool_exporter.cli.doctor",
        "name the causes a running sidecar's pools show, with evidence and fixes",
    ),
    "demo": (
        "sqlalchemy_pool_exporter.cli.demo",
        "run an instrumented demo workload on SQLite and serve its metrics",
    ),
    "assets": (
        "sqlalchemy_pool_exporter.cli.assets",
        "write the bundled dashboards and alert rules to a directory",
    ),
    "run": (
        "sqlalchemy_pool_exporter.cli.run",
        "run a command with every SQLAlchemy engine of its Python processes instrumented",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available command."""
    from sqlalchemy_pool_exporter import __version__

    parser = argparse.ArgumentParser(
        prog="sqlalchemy-pool-exporter",
        description="Prometheus exporter for SQLAlchemy connection pools.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # command not available in this build
            raise
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
