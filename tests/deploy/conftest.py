"""The image's build, mirrored without docker: wheel and virtualenv built once per session.

:func:`image_venv` copies what the Dockerfile's build stage COPYs (minus what
``.dockerignore`` excludes) into a temporary ``/src``, then runs that stage's ``RUN``
line as written, with ``/wheels`` and ``/opt/venv`` moved into the temporary directory
and this interpreter's ``python``/``pip`` standing in for the base image's. The result
is the virtualenv the runtime stage would copy: the wheel installed with its
dependencies from the package index, in a fresh environment.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deploy.tools import ROOT, ImageVenv, read_dockerfile


def _dockerignore_filter() -> Callable[[str, list[str]], set[str]]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [
        line.strip().rstrip("/")
        for line in lines
        if line.strip() and not line.startswith(("#", "!")) and line.strip() != "*"
    ]

    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = set()
        for name in names:
            relative = os.path.relpath(os.path.join(directory, name), ROOT)
            for pattern in patterns:
                bare = pattern.removeprefix("**/")
                if fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(name, bare):
                    skipped.add(name)
        return skipped

    return ignore


@pytest.fixture(scope="session")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> ImageVenv:
    """Build the wheel and the image's virtualenv the way the Dockerfile's build stage does."""
    base = tmp_path_factory.mktemp("image")
    build = read_dockerfile()[0]
    assert build.all("WORKDIR") == ["/src"]
    src = base / "src"
    src.mkdir()
    ignore = _dockerignore_filter()
    for args in build.all("COPY"):
        *sources, destination = args.split()
        target = src / destination
        for source in sources:
            origin = ROOT / source.rstrip("/")
            if origin.is_dir():  # COPY dir/ dir/ copies the directory's contents
                shutil.copytree(origin, target, ignore=ignore, dirs_exist_ok=True)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)
    (run,) = build.all("RUN")
    wheels, venv = base / "wheels", base / "venv"
    script = run.replace("/wheels", str(wheels)).replace("/opt/venv", str(venv))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(build.env())
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (
        f"build stage failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    (wheel,) = wheels.glob("*.whl")
    return ImageVenv(venv, wheel)
