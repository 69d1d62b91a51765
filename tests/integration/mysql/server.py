"""The machine's MariaDB (or MySQL) for the probe's scenarios: throwaway database and users.

The server itself is shared (127.0.0.1:3306, ``root`` without a password, as CI sets it
up), so nothing here changes a global setting: each test module gets its own database
and users (``sape_<random>``), dropped afterwards, and a test limits or times out only
its own users and sessions (``MAX_USER_CONNECTIONS``, ``SET SESSION wait_timeout``).
Unreachable, the scenarios skip on a developer machine and FAIL in CI (``CI`` set).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pymysql
import pytest

HOST, PORT = "127.0.0.1", 3306
#: Users of a module, each with SELECT and UPDATE on its database; ``monitor`` and
#: ``flaky`` (the probe that loses its login) also have PROCESS; ``nobody`` never connects
#: but as a probe; ``limited`` may hold 2 connections.
ROLES = ("app", "monitor", "limited", "nobody", "flaky")


def admin() -> Any:
    """A root connection in autocommit mode."""
    return pymysql.connect(host=HOST, port=PORT, user="root", autocommit=True, connect_timeout=3)


@dataclass
class MariaDB:
    """One test module's database and users on the shared server."""

    database: str
    password: str
    users: dict[str, str] = field(default_factory=dict)

    def url(self, role: str = "app", *, password: str | None = None, port: int = PORT) -> str:
        """``mysql+pymysql://`` URL of ``role`` (its real password unless given)."""
        pw = self.password if password is None else password
        return f"mysql+pymysql://{self.users[role]}:{pw}@{HOST}:{port}/{self.database}"

    @contextlib.contextmanager
    def cursor(self) -> Iterator[Any]:
        """A root cursor (autocommit)."""
        conn = admin()
        try:
            with conn.cursor() as cur:
                yield cur
        finally:
            conn.close()

    def threads(self, role: str) -> list[tuple[int, str]]:
        """(id, command) of every session of ``role``'s user, as root sees them."""
        with self.cursor() as cur:
            cur.execute(
                "SELECT ID, COMMAND FROM information_schema.PROCESSLIST WHERE USER = %s"
                " ORDER BY ID",
                (self.users[role],),
            )
            return [(int(i), str(c)) for i, c in cur.fetchall()]

    def variable(self, name: str) -> int:
        """A global variable's value (read only: tests never change globals)."""
        with self.cursor() as cur:
            cur.execute(f"SELECT @@GLOBAL.{name}")
            return int(cur.fetchone()[0])


@contextlib.contextmanager
def throwaway() -> Iterator[MariaDB]:
    """A database ``sape_<hex>`` with a table ``stock`` and the users of :data:`ROLES`."""
    try:
        conn = admin()
    except pymysql.err.OperationalError as exc:
        message = f"MariaDB/MySQL not reachable at {HOST}:{PORT} as root: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run every integration test)")
        pytest.skip(message)
    tag = secrets.token_hex(4)
    db = MariaDB(database=f"sape_{tag}", password=secrets.token_hex(8))
    db.users = {role: f"sape_{role}_{tag}" for role in ROLES}
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {db.database}")
            cur.execute(
                f"CREATE TABLE {db.database}.stock (id INT PRIMARY KEY, n INT) ENGINE=InnoDB"
            )
            cur.execute(f"INSERT INTO {db.database}.stock VALUES (1, 10)")
            for role, user in db.users.items():
                limit = " WITH MAX_USER_CONNECTIONS 2" if role == "limited" else ""
                # hex password, inlined: '%' of the host would clash with %s parameters
                cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{db.password}'{limit}")
                cur.execute(f"GRANT SELECT, UPDATE ON {db.database}.* TO '{user}'@'%'")
            cur.execute(f"GRANT PROCESS ON *.* TO '{db.users['monitor']}'@'%'")
            cur.execute(f"GRANT PROCESS ON *.* TO '{db.users['flaky']}'@'%'")
        yield db
    finally:
        with conn.cursor() as cur:
            # Sessions of the users first (a test that failed may have left some).
            placeholders = ", ".join(["%s"] * len(db.users))
            cur.execute(
                f"SELECT ID FROM information_schema.PROCESSLIST WHERE USER IN ({placeholders})",
                tuple(db.users.values()),
            )
            for (thread,) in cur.fetchall():
                with contextlib.suppress(pymysql.err.OperationalError):
                    cur.execute(f"KILL {int(thread)}")
            for user in db.users.values():
                cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
            cur.execute(f"DROP DATABASE IF EXISTS {db.database}")
        conn.close()
