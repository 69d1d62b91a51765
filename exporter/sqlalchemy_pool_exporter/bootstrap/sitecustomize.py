"""Imported at start-up by every Python process of ``sqlalchemy-pool-exporter run``'s command.

``run`` puts this directory first on ``PYTHONPATH``; the ``site`` module imports
``sitecustomize`` at every interpreter start, so every Python process of the command —
and their children, forked, spawned by multiprocessing or started as subprocesses, which
inherit the environment — runs this. It installs the engine-creation hook of
:mod:`sqlalchemy_pool_exporter.instrumentation.autoinstrument` (which imports nothing
until SQLAlchemy is imported), then runs the ``sitecustomize`` that would have run
without it (the distribution's, or another tool's such as ``opentelemetry-instrument``'s),
so both apply.
"""

# Imports kept to what the interpreter has loaded anyway: this runs in every process.
import importlib.machinery
import os
import sys


def _install() -> None:
    try:
        from sqlalchemy_pool_exporter.instrumentation import autoinstrument
    except ImportError:
        # Another interpreter than run's (no sqlalchemy-pool-exporter there): say so only
        # where it matters, in a Python that could build engines.
        if importlib.machinery.PathFinder.find_spec("sqlalchemy") is not None:
            print(
                f"sqlalchemy-pool-exporter run: {sys.executable} cannot import "
                "sqlalchemy_pool_exporter; its engines are not instrumented",
                file=sys.stderr,
            )
        return
    autoinstrument.install()


def _chain() -> None:
    """Run the next ``sitecustomize`` on the path, the one this module shadows."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    # What importlib.util.module_from_spec does, without importing importlib.util.
    module = spec.loader.create_module(spec) or type(sys)(spec.name)
    module.__spec__ = spec
    module.__loader__ = spec.loader
    module.__file__ = spec.origin
    spec.loader.exec_module(module)


_install()
_chain()
