"""Secrets of the sidecar read from files, and the warning for secrets on the command line.

``--token`` and ``--database-url`` work, but a command line is public on the machine:
every local user reads it in ``/proc/<pid>/cmdline`` (and ``ps``). So each secret can
come from a file instead — ``POOL_EXPORTER_TOKEN_FILE``/``--token-file``,
``POOL_EXPORTER_DATABASE_URL_FILE``/``--database-url-file`` — as Kubernetes mounts a
Secret, and ``serve`` logs a warning when one is given as a flag. A file's content is
the secret with surrounding whitespace (a trailing newline) removed. Setting both a
secret and its file, or a file that cannot be read or is empty, stops ``serve`` with
one line naming the setting; the secret itself is never printed.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from sqlalchemy_pool_exporter.probes.url import probe_target
from sqlalchemy_pool_exporter.settings import PREFIX
from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings

#: (secret setting, the setting naming its file)
SECRET_FILES = (("token", "token_file"), ("database_url", "database_url_file"))
MAX_SECRET_BYTES = 65536


def _invalid(name: str, message: str) -> ValueError:
    return ValueError(f"invalid setting {PREFIX}{name.upper()} ({name}): {message}")


def _read(path: Path, name: str) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise _invalid(name, f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise _invalid(name, f"{path} is larger than {MAX_SECRET_BYTES} bytes")
    try:
        text = data.decode().strip()
    except UnicodeDecodeError:
        raise _invalid(name, f"{path} is not UTF-8 text") from None
    if not text:
        raise _invalid(name, f"{path} is empty")
    return text


def resolve_secrets(settings: SidecarSettings) -> SidecarSettings:
    """``settings`` with each ``*_file`` read into its secret; ValueError naming the setting."""
    updates: dict[str, object] = {}
    for secret, file_setting in SECRET_FILES:
        path = getattr(settings, file_setting)
        if path is None:
            continue
        if getattr(settings, secret) is not None:
            raise _invalid(file_setting, f"set either {PREFIX}{secret.upper()} or this, not both")
        value = _read(path, file_setting)
        if secret == "database_url":
            try:
                probe_target(value)  # its ValueError never carries the URL
            except ValueError as exc:
                raise _invalid(file_setting, str(exc)) from None
        updates[secret] = SecretStr(value)
        updates[file_setting] = None
    return settings.model_copy(update=updates) if updates else settings


def secrets_on_command_line(given: dict[str, object]) -> list[str]:
    """The flags among ``given`` (flag values by setting) that carry a secret."""
    return ["--" + s.replace("_", "-") for s, _ in SECRET_FILES if given.get(s) is not None]
