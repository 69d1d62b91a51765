"""A Flask app factory with Flask-SQLAlchemy and two binds (``gunicorn 'flask_app:create_app()'``).

The default bind (``orders``) and the ``audit`` bind are SQLite files under
``FLASK_APP_DIR``. The factory creates the tables — so a preloading master holds pooled
connections when it forks — and registers :class:`PoolExporter` like any extension.
``/orders``, ``/audit`` and ``/both`` make one checkout per bind they read, ``/pid``
none; every answer names the worker that served it.
"""

from __future__ import annotations

import os

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqlalchemy_pool_exporter.integrations.flask import PoolExporter


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
pool_exporter = PoolExporter(names={None: "orders", "audit": "audit"})


class Order(db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)


class AuditEntry(db.Model):  # type: ignore[name-defined,misc]
    __bind_key__ = "audit"
    id: Mapped[int] = mapped_column(primary_key=True)


def create_app() -> Flask:
    """The app, configured from the environment."""
    app = Flask(__name__)
    folder = os.environ["FLASK_APP_DIR"]
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{folder}/orders.db"
    app.config["SQLALCHEMY_BINDS"] = {
        "audit": {"url": f"sqlite:///{folder}/audit.db", "pool_size": 1, "max_overflow": 1}
    }
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_size": 2, "max_overflow": 1}
    db.init_app(app)
    pool_exporter.init_app(app)
    with app.app_context():
        db.create_all()

    def count(model: type) -> int:
        return int(db.session.execute(select(func.count()).select_from(model)).scalar_one())

    @app.get("/pid")
    def pid() -> dict[str, int]:
        return {"pid": os.getpid()}

    @app.get("/orders")
    def orders() -> dict[str, int]:
        return {"pid": os.getpid(), "orders": count(Order)}

    @app.get("/audit")
    def audit() -> dict[str, int]:
        return {"pid": os.getpid(), "audit": count(AuditEntry)}

    @app.get("/both")
    def both() -> dict[str, int]:
        return {"pid": os.getpid(), "orders": count(Order), "audit": count(AuditEntry)}

    return app
