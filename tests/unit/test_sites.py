"""Checkout sites: the first frame of the app's own code, on every path into the pool."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session

import sqlalchemy_pool_exporter


def _site(stats: sqlalchemy_pool_exporter.PoolStats) -> str:
    [held] = stats.read().held
    return held.site


def test_site_on_raw_core_and_orm_paths_in_any_order(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    stats = sqlalchemy_pool_exporter.instrument(engine, name="sites", registry=None)
    here = "tests/unit/test_sites.py"

    def raw() -> str:
        conn = engine.raw_connection()
        site = _site(stats)
        conn.close()
        return site

    def core() -> str:
        with engine.connect():
            return _site(stats)

    def orm() -> str:
        with Session(engine) as session:
            session.execute(text("SELECT 1"))
            return _site(stats)

    # Alternate the paths so remembered depths get tried, missed and re-learned.
    for _ in range(3):
        for fn, line_of in (
            (orm, "session.execute"),
            (raw, "engine.raw_connection()"),
            (core, "with engine.connect()"),
            (orm, "session.execute"),
        ):
            site = fn()
            assert site.startswith(f"{here}:") and site.endswith(f" in {fn.__name__}"), site
            line = int(site.split(":")[1].split()[0])
            assert line_of in _source_line(line), (site, _source_line(line))


def test_app_hook_between_sqlalchemy_frames(make_engine: Callable[..., Engine]) -> None:
    # A checkout made from inside an app hook that SQLAlchemy calls: the site is app code.
    engine = make_engine()
    other = make_engine()
    stats = sqlalchemy_pool_exporter.instrument(other, name="hooked", registry=None)
    seen: list[str] = []

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: object, record: object) -> None:
        conn = other.raw_connection()
        seen.append(_site(stats))
        conn.close()

    with engine.connect():
        pass
    assert seen and seen[0].startswith("tests/unit/test_sites.py:")


def _source_line(number: int) -> str:
    with open(__file__) as f:
        return f.read().splitlines()[number - 1]
