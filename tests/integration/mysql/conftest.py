"""Module fixture: a throwaway database and users on the machine's MariaDB (see ``server``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.mysql.server import MariaDB, throwaway


@pytest.fixture(scope="module")
def mariadb() -> Iterator[MariaDB]:
    """This module's database ``sape_<hex>`` and users; dropped with their sessions after."""
    with throwaway() as db:
        yield db
