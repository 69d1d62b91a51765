"""Every new Engine of the process instrumented, with no code change (``run``'s hook).

``sqlalchemy-pool-exporter run`` starts its command with a ``sitecustomize`` that calls
:func:`install`. That must cost nothing to a Python process that never uses SQLAlchemy
(the command's tree may run many), so nothing is imported: a finder on ``sys.meta_path``
waits for ``sqlalchemy.engine.interfaces`` to be imported and then hooks engine
creation; the exporter itself is imported when the first engine is built.

The hook is :meth:`sqlalchemy.engine.interfaces.Dialect.engine_created`, the classmethod
``create_engine()`` calls with every finished Engine (also for ``create_async_engine()``,
``engine_from_config()``) before handing it back. It is wrapped on the ``Dialect`` base
class, so every dialect that keeps the inherited one (all of SQLAlchemy's do) runs it;
the wrapper calls the original, then
:func:`~sqlalchemy_pool_exporter.instrumentation.engines.instrument_automatically`.

Why there, and what was ruled out:

* a ConnectionEvents listener (``engine_connect``) on the Engine class would see every
  engine, but any such listener puts every Connection on SQLAlchemy's event-dispatching
  path: slower for every statement of the app, forever;
* a class-level PoolEvents listener (``first_connect``) costs nothing per checkout, but
  fires inside the first checkout (too late to count it) and is given a pool, which
  does not know its engine;
* wrapping ``Engine.__init__`` breaks ``create_engine()``: it reads the keyword arguments
  ``Engine.__init__`` declares (``echo``, ``logging_name`` …) from its signature;
* wrapping ``create_engine`` means rebinding it in every module that re-exports it
  (``sqlalchemy``, ``sqlalchemy.engine``, ``sqlalchemy.engine.create``, the asyncio
  extension's private copy).

``engine_created`` runs once per engine, never per checkout: an engine instrumented this
way costs exactly what ``instrument()`` costs (``benchmarks/overhead.py``, variant
``run``). A dialect that overrides ``engine_created`` without calling the base class's is
not seen; use ``instrument()`` or the URL plugin for its engines.
"""

from __future__ import annotations

import importlib
import sys

# Only the type checker reads these: at run time this module is imported by every Python
# process of run's command at start-up, and must cost them (next to) nothing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType
    from typing import Any

#: The module defining ``Dialect``; the hook goes on once it has been executed.
TARGET = "sqlalchemy.engine.interfaces"
_MARK = "_pool_exporter_autoinstrument"


def install() -> None:
    """Hook engine creation now if SQLAlchemy is loaded, else as soon as it is imported."""
    module = sys.modules.get(TARGET)
    if module is not None:
        _hook(module)
    elif not any(getattr(f, _MARK, False) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def _hook(interfaces: ModuleType) -> None:
    dialect: Any = interfaces.Dialect
    hook = vars(dialect).get("engine_created")
    original = getattr(hook, "__func__", None)
    if original is None:
        print("sqlalchemy-pool-exporter: this SQLAlchemy has no engine hook", file=sys.stderr)
        return
    if getattr(original, _MARK, False):
        return  # hooked already (a second sitecustomize on the path, say)

    def engine_created(cls: type, engine: Any) -> None:
        original(cls, engine)
        _instrument(engine)

    setattr(engine_created, _MARK, True)
    engine_created.__wrapped__ = original  # type: ignore[attr-defined]
    dialect.engine_created = classmethod(engine_created)


def _instrument(engine: Any) -> None:
    try:
        # Imported on the first engine, not at start: see the module docstring.
        engines = importlib.import_module("sqlalchemy_pool_exporter.instrumentation.engines")
        engines.instrument_automatically(engine)
    except Exception as exc:  # the app's engine must be built whatever happens here
        print(f"sqlalchemy-pool-exporter: engine not instrumented: {exc!r}", file=sys.stderr)


class _Loader:
    """Executes the target module with its own loader, then hooks it."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _hook(module)

    def __getattr__(self, name: str) -> Any:
        # Everything else (get_source for tracebacks, resource readers) is the real loader's.
        return getattr(self._loader, name)


class _Finder:
    """Finds nothing itself: lends the target's spec a loader that hooks it after loading."""

    _pool_exporter_autoinstrument = True  # _MARK: recognised by any copy of this module

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != TARGET:
            return None
        sys.meta_path[:] = [f for f in sys.meta_path if f is not self]  # needed once only
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader)
                return spec  # type: ignore[no-any-return]
        return None
