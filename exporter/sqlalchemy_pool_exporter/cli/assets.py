"""``sqlalchemy-pool-exporter assets --output DIR``: the bundled dashboards and rules.

The Grafana dashboards and provisioning files (``grafana/``) and the Prometheus alert
and recording rules with their promtool tests (``prometheus/``) ship inside the wheel,
so a user who installed the package without cloning the repository can still get them:
this command writes them out under ``DIR/grafana/`` and ``DIR/prometheus/``, keeping
the repository's layout, byte for byte. The generators and their tooling stay behind:
only dashboards, provisioning, rules and rule tests are assets.

Where the files come from:

- an installed wheel carries them in ``sqlalchemy_pool_exporter/_assets/`` — ``setup.py`` copies the
  asset files of the two top-level directories there when the wheel is built;
- a source checkout or an editable install (``pip install -e .``) has no such copy, so
  the repository's own ``grafana/`` and ``prometheus/`` beside ``exporter/`` are read.

Which files count as assets is decided here (:data:`ASSET_DIRS`, :data:`ASSET_SUFFIXES`)
and ``setup.py`` loads this module to use the same rule. It imports only the standard
library, because it runs at build time before any dependency is installed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

ASSET_DIRS: tuple[str, ...] = ("grafana/dashboards", "grafana/provisioning", "prometheus")
"""Directories of the repository that are shipped (the generators' tooling is not)."""

ASSET_SUFFIXES: frozenset[str] = frozenset({".json", ".yaml", ".yml", ".md"})
"""File types that are assets: dashboards, provisioning, rules, rule tests, notes."""

PACKAGED_DIR = "_assets"
"""Directory inside the installed package that holds the assets in a wheel."""


def is_asset(relative: Path) -> bool:
    """Whether a path (relative to an asset root) is shipped: by suffix, never hidden."""
    return relative.suffix in ASSET_SUFFIXES and not any(
        part.startswith(".") or part in ("__pycache__", "node_modules") for part in relative.parts
    )


def iter_assets(root: Path) -> Iterator[Path]:
    """Asset paths under ``root`` (relative to it, sorted), e.g. ``grafana/dashboards/x.json``."""
    for top in ASSET_DIRS:
        base = root / top
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            relative = path.relative_to(root)
            if path.is_file() and is_asset(relative):
                yield relative


def asset_root() -> Path:
    """The directory holding ``grafana/`` and ``prometheus/``: packaged copy, else checkout."""
    package_dir = Path(__file__).resolve().parents[1]
    packaged = package_dir / PACKAGED_DIR
    if packaged.is_dir():
        return packaged
    checkout = package_dir.parents[1]  # the repository: exporter/sqlalchemy_pool_exporter
    if (checkout / "grafana").is_dir() and (checkout / "prometheus").is_dir():
        return checkout
    raise FileNotFoundError(
        f"bundled assets not found: neither {packaged} (installed wheel) nor "
        f"{checkout}/grafana and {checkout}/prometheus (source checkout) exist"
    )


def write_assets(output: Path, *, force: bool = False, root: Path | None = None) -> list[Path]:
    """Copy every asset under ``output``; returns the written paths (relative).

    A file that already exists with different content is only replaced with ``force``;
    without it nothing at all is written, so a user's edited copy is never half-updated.
    """
    source = root if root is not None else asset_root()
    assets = list(iter_assets(source))
    if not assets:
        raise FileNotFoundError(f"no assets under {source}")
    contents = {relative: (source / relative).read_bytes() for relative in assets}
    if not force:
        changed = [
            relative
            for relative, data in contents.items()
            if (output / relative).exists() and (output / relative).read_bytes() != data
        ]
        if changed:
            raise FileExistsError(
                f"{len(changed)} file(s) under {output} differ from the bundled ones, "
                f"e.g. {changed[0]}; pass --force to overwrite them"
            )
    for relative, data in contents.items():
        target = output / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return assets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``assets``."""
    parser.add_argument(
        "--output",
        "-o",
        type=Path,
        required=True,
        metavar="DIR",
        help="directory to write grafana/ and prometheus/ into (created if needed)",
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite files that differ from the bundled ones"
    )


def run(args: argparse.Namespace) -> int:
    """Write the assets; prints one line per file and a summary."""
    output: Path = args.output
    try:
        written = write_assets(output, force=args.force)
    except (FileExistsError, FileNotFoundError) as exc:
        print(f"sqlalchemy-pool-exporter assets: {exc}", file=sys.stderr)
        return 1
    for relative in written:
        print(output / relative)
    print(f"wrote {len(written)} files to {output}", file=sys.stderr)
    return 0
