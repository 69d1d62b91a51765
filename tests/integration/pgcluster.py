"""A throwaway PostgreSQL cluster for integration tests: initdb, start, stop, kill backends.

The cluster lives in a temporary directory (data, unix socket, server log), listens on a
free port of 127.0.0.1 only, and is tuned for tests: ``fsync=off``, trust
authentication, a small ``max_connections`` so that "out of connection slots" is cheap
to reach. When the tests run as root, PostgreSQL refuses to start, so every server
command runs as the ``postgres`` OS user and the directory is handed to that user.

Roles created at start:

* ``postgres`` — superuser, used by the tests themselves to inspect and kill backends;
* ``app`` — an ordinary login role, as a web app would use (reserved slots apply to it);
* ``monitor`` — member of ``pg_monitor``, as the sidecar's probe should be configured;
  every statement it runs is written to the server log, so tests can count them;
* ``pwuser`` — password-authenticated (scram) role, for credential-redaction tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2

from tests.conftest import wait_for as wait_for  # the tests of this package import it here

PG_USER = "postgres"
PWUSER_PASSWORD = "pw-Secr3t-do-not-leak"


def find_bindir() -> Path | None:
    """Directory holding initdb/pg_ctl/postgres, or None when PostgreSQL is not installed."""
    candidates: list[Path] = []
    for name in ("pg_ctl", "initdb"):
        found = shutil.which(name)
        if found:
            candidates.append(Path(os.path.realpath(found)).parent)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        if out:
            candidates.append(Path(out))
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True))
    for bindir in candidates:
        if all((bindir / b).is_file() for b in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """One PostgreSQL server in a temporary directory, on 127.0.0.1:<free port>."""

    def __init__(
        self, bindir: Path, *, max_connections: int = 20, reserved_connections: int = 3
    ) -> None:
        self.bindir = bindir
        self.max_connections = max_connections
        self.superuser_reserved_connections = reserved_connections
        self.as_root = os.geteuid() == 0
        # /tmp rather than $TMPDIR: the postgres user must reach it (a TMPDIR under
        # /root would not do) and the socket path must stay under 107 bytes.
        self.base = Path(
            tempfile.mkdtemp(
                prefix="pool-exporter-pg-", dir="/tmp" if os.path.isdir("/tmp") else None
            )
        )
        self.data = self.base / "data"
        self.logfile = self.base / "server.log"
        self.port = free_port()
        self.running = False

    # -- process control -----------------------------------------------------------

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", PG_USER, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            log = self.server_log()[-3000:]
            raise RuntimeError(
                f"{args[0]} failed ({proc.returncode}): {proc.stderr.strip()}\n{log}"
            )

    def init(self) -> None:
        """initdb with test settings, roles' authentication and a private socket dir."""
        if self.as_root:
            shutil.chown(self.base, PG_USER, PG_USER)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            PG_USER,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.base}'",
            "max_connections": str(self.max_connections),
            "superuser_reserved_connections": str(self.superuser_reserved_connections),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "16MB",
            "log_connections": "on",
            "log_line_prefix": "'%m [%p] %u@%d app=%a '",
        }
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
        hba = (self.data / "pg_hba.conf").read_text()
        (self.data / "pg_hba.conf").write_text("host all pwuser 127.0.0.1/32 scram-sha-256\n" + hba)
        if self.as_root:
            for path in (self.data / "postgresql.conf", self.data / "pg_hba.conf"):
                shutil.chown(path, PG_USER, PG_USER)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.logfile)
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back and disconnect every client)."""
        self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data))
        self.running = False

    def restart(self) -> None:
        """Stop then start the server on the same port."""
        self.stop()
        self.start()

    def ensure_running(self) -> None:
        """Start the server if a test left it stopped."""
        if not self.running:
            self.start()

    def destroy(self) -> None:
        """Stop the server (if up) and delete the directory."""
        if self.running:
            with contextlib.suppress(Exception):
                self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def setup_roles(self) -> None:
        """Create the ``app``, ``monitor`` and ``pwuser`` roles."""
        with self.admin() as cur:
            cur.execute("CREATE ROLE app LOGIN")
            cur.execute("CREATE ROLE monitor LOGIN IN ROLE pg_monitor")
            cur.execute("ALTER ROLE monitor SET log_statement = 'all'")
            cur.execute("CREATE ROLE pwuser LOGIN PASSWORD %s", (PWUSER_PASSWORD,))

    # -- connecting ----------------------------------------------------------------

    def url(
        self,
        driver: str = "psycopg2",
        user: str = "app",
        database: str = "postgres",
        password: str | None = None,
        **query: str,
    ) -> str:
        """SQLAlchemy URL of this server over TCP 127.0.0.1."""
        cred = user if password is None else f"{user}:{password}"
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        return f"postgresql+{driver}://{cred}@127.0.0.1:{self.port}/{database}" + (
            f"?{qs}" if qs else ""
        )

    @contextlib.contextmanager
    def admin(self) -> Iterator[Any]:
        """A superuser autocommit cursor on a fresh connection, closed afterwards."""
        conn = psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=PG_USER,
            dbname="postgres",
            connect_timeout=5,
            application_name="test-admin",
        )
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                yield cur
        finally:
            conn.close()

    # -- inspecting and killing backends -------------------------------------------

    def backends(self, application_name: str | None = None) -> list[tuple[int, str, str]]:
        """(pid, application_name, state) of client backends other than the admin's own."""
        with self.admin() as cur:
            cur.execute(
                "SELECT pid, application_name, coalesce(state, '') FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                " AND (%(app)s::text IS NULL OR application_name = %(app)s) ORDER BY pid",
                {"app": application_name},
            )
            return [(int(p), str(a), str(s)) for p, a, s in cur.fetchall()]

    def terminate_backends(self, application_name: str | None = None) -> int:
        """pg_terminate_backend every matching client backend; wait until they are gone."""
        with self.admin() as cur:
            cur.execute(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'"
                " AND pid <> pg_backend_pid()"
                " AND (%(app)s::text IS NULL OR application_name = %(app)s)",
                {"app": application_name},
            )
            pids = [int(r[0]) for r in cur.fetchall()]
            for pid in pids:
                cur.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        wait_for(lambda: not {p for p, _, _ in self.backends()} & set(pids))
        return len(pids)

    def wait_quiet(self) -> None:
        """Wait until no client backend is left (earlier tests' closes are asynchronous).

        Backends still there after a few seconds belong to a test that failed before
        disposing its engine: they are terminated, so one failure does not cascade.
        """
        try:
            wait_for(lambda: not self.backends(), timeout=3)
        except AssertionError:
            self.terminate_backends()

    def server_log(self) -> str:
        """Everything the server has logged so far."""
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""


@contextlib.contextmanager
def throwaway_cluster(max_connections: int, reserved_connections: int) -> Iterator[PgCluster]:
    """A started cluster with the test roles, destroyed on exit.

    Missing server binaries skip the test on a developer's machine and fail it in CI.
    """
    import pytest

    from tests.conftest import IN_CI

    bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found"
        if IN_CI:
            pytest.fail(message + " (CI must run every integration test)")
        pytest.skip(message)
    cluster = PgCluster(
        bindir, max_connections=max_connections, reserved_connections=reserved_connections
    )
    try:
        cluster.init()
        cluster.start()
        cluster.setup_roles()
        yield cluster
    finally:
        cluster.destroy()
