"""Secrets of ``serve`` from files, never needed on the command line; empty means unset."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sqlalchemy_pool_exporter.cli import build_parser
from sqlalchemy_pool_exporter.sidecar.command import load
from tests.unit.sidecar_payloads import encode, payload
from tests.unit.test_sidecar_command import serve


def push(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, data=encode(payload("a")), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_token_from_a_file_is_required_and_not_on_the_command_line(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret-from-file\n")  # as a mounted Secret often ends: a newline
    proc = serve(
        "--listen", "127.0.0.1:0", "--push-listen", "127.0.0.1:0", "--token-file", str(secret)
    )
    try:
        assert proc.stderr is not None
        event = json.loads(proc.stderr.readline())
        assert (event["event"], event["token"]) == ("listening", True)
        assert push(event["push"], None) == 401
        assert push(event["push"], "s3cret-from-file\n".strip()) == 200
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert b"s3cret" not in cmdline
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    assert "s3cret" not in rest


def test_empty_token_means_no_token() -> None:
    proc = serve(
        "--listen", "127.0.0.1:0", "--push-listen", "127.0.0.1:0", env={"POOL_EXPORTER_TOKEN": ""}
    )
    try:
        assert proc.stderr is not None
        event = json.loads(proc.stderr.readline())
        assert (event["event"], event["token"]) == ("listening", False)
        assert push(event["push"], None) == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


@pytest.mark.parametrize(
    ("content", "flags", "env", "line"),
    [
        (
            None,
            ["--token-file", "{missing}"],
            {},
            "invalid setting POOL_EXPORTER_TOKEN_FILE (token_file): cannot read {missing}: "
            "No such file or directory",
        ),
        (
            "\n",
            ["--token-file", "{file}"],
            {},
            "invalid setting POOL_EXPORTER_TOKEN_FILE (token_file): {file} is empty",
        ),
        (
            "hunter2",
            [],
            {"POOL_EXPORTER_TOKEN_FILE": "{file}", "POOL_EXPORTER_TOKEN": "hunter2"},
            "invalid setting POOL_EXPORTER_TOKEN_FILE (token_file): set either "
            "POOL_EXPORTER_TOKEN or this, not both",
        ),
        (
            "oracle://app:hunter2@db/shop",
            [],
            {"POOL_EXPORTER_DATABASE_URL_FILE": "{file}"},
            "invalid setting POOL_EXPORTER_DATABASE_URL_FILE (database_url_file): database "
            "probe supports PostgreSQL, MySQL and MariaDB, not 'oracle'",
        ),
    ],
)
def test_unusable_secret_file_is_one_line_naming_the_setting(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    content: str | None,
    flags: list[str],
    env: dict[str, str],
    line: str,
) -> None:
    file, missing = tmp_path / "secret", tmp_path / "missing"
    if content is not None:
        file.write_text(content)

    def fill(text: str) -> str:
        return text.format(file=file, missing=missing)

    for key, value in env.items():
        monkeypatch.setenv(key, fill(value))
    with pytest.raises(ValueError) as caught:
        load(build_parser().parse_args(["serve", *map(fill, flags)]))
    assert str(caught.value) == fill(line)
    assert "hunter2" not in str(caught.value)


def test_unusable_secret_file_exits_2(tmp_path: Path) -> None:
    proc = serve("--token-file", str(tmp_path / "missing"))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert err == (
        "sqlalchemy-pool-exporter serve: invalid setting POOL_EXPORTER_TOKEN_FILE "
        f"(token_file): cannot read {tmp_path / 'missing'}: No such file or directory\n"
    )
    assert out == ""


def test_database_url_flag_draws_a_warning() -> None:
    proc = serve(
        "--listen",
        "127.0.0.1:0",
        "--push-listen",
        "127.0.0.1:0",
        "--database-url",
        "postgresql://app:pw-secret@127.0.0.1:1/shop",
    )
    try:
        assert proc.stderr is not None
        warning = json.loads(proc.stderr.readline())
        assert (warning["level"], warning["flag"], warning["instead"]) == (
            "warning",
            "--database-url",
            "--database-url-file",
        )
        assert "pw-secret" not in json.dumps(warning)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    assert "pw-secret" not in rest
