"""Database URLs for the probes, parsed without SQLAlchemy and never echoed.

The sidecar takes a SQLAlchemy-style URL (``postgresql+psycopg2://user:pw@host:5432/db``,
``mysql+pymysql://user:pw@host:3306/db``, ``mariadb://…``) or a libpq connection string
(``host=db dbname=shop``). Parsing one must never put the
password into an error, a log line or a repr: every error here names only what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

#: One ``key = value`` of a libpq connection string; a value may be single-quoted, with
#: backslash escapes inside the quotes.
_DSN_PAIR = re.compile(r"\s*(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s'=]+)\s*")
#: URL scheme (before any ``+driver``) -> the probe that speaks it.
BACKENDS = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}
#: URL query parameters the MySQL probe passes on to PyMySQL; any other is refused by name.
MYSQL_QUERY_PARAMETERS = ("unix_socket", "charset", "ssl_ca", "ssl_cert", "ssl_key")


@dataclass(frozen=True)
class ProbeTarget:
    """A parsed database URL: backend, connection fields and the libpq DSN if given so."""

    backend: str
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    query: dict[str, str] = field(default_factory=dict)
    dsn: dict[str, str] | None = field(default=None, repr=False)  # a libpq key=value string

    def given(self, database_key: str) -> dict[str, str | int]:
        """The connection fields the URL gives, as a driver's keywords (``database_key``)."""
        fields = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            database_key: self.database,
        }
        return {key: value for key, value in fields.items() if value is not None}


def probe_target(url: str) -> ProbeTarget:
    """Parse ``url``; ValueError (without the URL's text) if it is not usable."""
    if "://" not in url:
        return ProbeTarget(backend="postgresql", dsn=parse_dsn(url))
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        # the parser's message may quote the URL, password included: say less
        raise ValueError("database URL could not be parsed") from None
    scheme = parts.scheme.split("+", 1)[0].lower()
    backend = BACKENDS.get(scheme)
    if backend is None:
        raise ValueError(f"database probe supports PostgreSQL, MySQL and MariaDB, not {scheme!r}")
    query = dict(parse_qsl(parts.query))
    unknown = sorted(set(query) - set(MYSQL_QUERY_PARAMETERS)) if backend == "mysql" else []
    if unknown:
        raise ValueError(f"database URL parameter(s) not supported: {', '.join(unknown)}")
    return ProbeTarget(
        backend=backend,
        host=unquote(parts.hostname) if parts.hostname else None,
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        database=unquote(parts.path.lstrip("/")) or None,
        query=query,
    )


def parse_dsn(text: str) -> dict[str, str]:
    """The ``key=value`` pairs of a libpq connection string; ValueError if it is not one."""
    pairs: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        match = _DSN_PAIR.match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError("database URL is not a valid URL or libpq DSN")
        key, value = match.groups()
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        pairs[key] = value
        pos = match.end()
    if not pairs:
        raise ValueError("database URL is not a valid URL or libpq DSN")
    return pairs
