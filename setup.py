"""Build hooks: the compiled ledger, and the dashboards and rules shipped in the wheel.

All metadata lives in ``pyproject.toml``; this file adds what it cannot say:

* the optional C extension ``sqlalchemy_pool_exporter.instrumentation._ledger`` (the hot
  path's bookkeeping, see ``instrumentation/ledger.py``). Where it cannot be compiled (no
  C compiler), the build goes on without it and the same bookkeeping runs in Python;
* ``build_py`` extended so that a built wheel carries the top-level ``grafana/`` and
  ``prometheus/`` directories as ``sqlalchemy_pool_exporter/_assets/`` (see
  ``exporter/sqlalchemy_pool_exporter/cli/assets.py`` for why and for which files count).
  Editable installs skip the copy: ``sqlalchemy_pool_exporter.cli.assets`` reads the
  checkout's own directories instead.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _asset_rules():  # type: ignore[no-untyped-def]
    # Loaded by path: importing the package would need its dependencies,
    # which are not installed at build time; assets.py itself is standard library only.
    path = ROOT / "exporter" / "sqlalchemy_pool_exporter" / "cli" / "assets.py"
    spec = importlib.util.spec_from_file_location("_exporter_assets", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithAssets(build_py):
    """``build_py`` that also copies the bundled assets into the package's ``_assets``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        rules = _asset_rules()
        target = Path(self.build_lib) / "sqlalchemy_pool_exporter" / rules.PACKAGED_DIR
        # Start clean: an in-tree build directory may hold assets deleted since.
        shutil.rmtree(target, ignore_errors=True)
        assets = list(rules.iter_assets(ROOT))
        if not assets:
            raise SystemExit(f"no assets found under {ROOT} in {rules.ASSET_DIRS}")
        for relative in assets:
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / relative, destination)


LEDGER_SOURCES = Path("exporter/sqlalchemy_pool_exporter/instrumentation/_ledger_c")
LEDGER = Extension(
    "sqlalchemy_pool_exporter.instrumentation._ledger",
    sorted(str(p.relative_to(ROOT)) for p in (ROOT / LEDGER_SOURCES).glob("*.c")),
    depends=[str(LEDGER_SOURCES / "ledger.h")],
    optional=True,  # no compiler: install anyway, ledger.py does the same in Python
)

setup(cmdclass={"build_py": BuildPyWithAssets}, ext_modules=[LEDGER])
