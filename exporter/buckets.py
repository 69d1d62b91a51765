"""Histogram bucket lookup compiled into the hot path: an observation without a call.

``bisect_left(bounds, value)`` is a single C call, yet its generic comparisons cost more
than the rest of an observation. So the hot-path factories in :mod:`exporter.acquire`
are written with ``bucket_index(bounds, value)`` — plain Python that works as it reads —
and :func:`specialise` compiles a copy of such a factory, for one tuple of bounds, in
which every such call is an inline binary decision tree over those bounds as constants:
four or five float comparisons, no call, no loop. The result is the same index
(``le`` semantics: a value equal to a bound falls in that bound's bucket).

The copy is compiled from the factory's own source, with its line numbers, so
tracebacks and coverage still point at the real file. That source is read when the
factory is defined (:func:`inlinable`), i.e. as the module is imported: a file edited or
replaced later (a deploy over a running process) is never compiled into it. Where the
source cannot be read (a bytecode-only install) the factory is used as written.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import threading
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from exporter.logs import get_logger

log = get_logger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

_cache: dict[tuple[Callable[..., Any], tuple[float, ...]], Callable[..., Any]] = {}
#: factory -> (its source as imported, first line number, file name)
_sources: dict[Callable[..., Any], tuple[str, int, str]] = {}
_lock = threading.Lock()


def bucket_index(bounds: Sequence[float], value: float) -> int:
    """Index of the bucket ``value`` falls in: the first bound >= value, or len(bounds)."""
    return bisect_left(bounds, value)


def decision_tree(bounds: Sequence[float], name: str) -> ast.expr:
    """An expression equal to ``bucket_index(bounds, <name>)``.

    The first bound is tested first: a healthy pool hands out an idle connection well
    inside it, so most waits cost one comparison; the rest is a balanced binary search.
    """
    return _test(name, bounds[0], ast.Constant(0), _search(bounds, name, 1, len(bounds)))


def _test(name: str, bound: float, then: ast.expr, otherwise: ast.expr) -> ast.expr:
    value = ast.Name(id=name, ctx=ast.Load())
    compare = ast.Compare(left=value, ops=[ast.LtE()], comparators=[ast.Constant(bound)])
    return ast.IfExp(test=compare, body=then, orelse=otherwise)


def _search(bounds: Sequence[float], name: str, lo: int, hi: int) -> ast.expr:
    # The index among lo..hi (hi meaning "above every bound").
    if lo == hi:
        return ast.Constant(lo)
    mid = (lo + hi) // 2
    below, above = _search(bounds, name, lo, mid), _search(bounds, name, mid + 1, hi)
    return _test(name, bounds[mid], below, above)


class _Inline(ast.NodeTransformer):
    """Replace ``bucket_index(<anything>, <name>)`` by a decision tree over ``bounds``."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.replaced = 0

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        func, args = node.func, node.args
        # Only a plain name as the value: the tree reads it up to five times.
        if (
            isinstance(func, ast.Name)
            and func.id == bucket_index.__name__
            and len(args) == 2
            and not node.keywords
            and isinstance(args[1], ast.Name)
        ):
            self.replaced += 1
            return ast.copy_location(decision_tree(self.bounds, args[1].id), node)
        return node


def inlinable(factory: F) -> F:
    """Decorator: keep ``factory``'s source, as imported, for :func:`specialise`."""
    try:
        lines, first = inspect.getsourcelines(factory)
        filename = inspect.getsourcefile(factory) or "<unknown>"
    except (OSError, TypeError) as exc:
        log.debug("hot path not specialised", reason=str(exc))
    else:
        _sources[factory] = ("".join(lines), first, filename)
    return factory


def specialise(factory: F, bounds: tuple[float, ...]) -> F:
    """``factory`` recompiled with its ``bucket_index`` calls inlined for ``bounds``.

    Every ``bucket_index`` call in the factory must be given these very bounds; the
    caller keys its choice of specialised factory by them.
    """
    key = (factory, bounds)
    with _lock:
        done = _cache.get(key)
        if done is None:
            done = _cache[key] = _compile(factory, bounds)
    return done  # type: ignore[return-value]


def _compile(factory: F, bounds: tuple[float, ...]) -> F:
    source = _sources.get(factory)
    if source is None:  # not marked inlinable, or its source could not be read
        return factory
    text, first, filename = source
    try:
        tree = ast.parse(textwrap.dedent(text))
        function = tree.body[0]
        assert isinstance(function, ast.FunctionDef)
        if function.decorator_list:  # compiled once: not marked again; first line kept
            function.lineno = function.decorator_list[0].lineno
            function.decorator_list = []
        inline = _Inline(bounds)
        tree = ast.fix_missing_locations(inline.visit(tree))
        if not inline.replaced:
            return factory
        ast.increment_lineno(tree, first - 1)
        # Compiled as its module is: with postponed evaluation of annotations (the
        # feature object ``from __future__ import annotations`` carries the flag).
        code = compile(tree, filename, "exec", flags=annotations.compiler_flag,
                       dont_inherit=True)
        namespace: dict[str, Any] = {}
        exec(code, factory.__globals__, namespace)
        compiled: F = namespace[factory.__name__]
    except Exception as exc:  # the plain code is always correct: never fail instrument()
        log.debug("hot path not specialised", reason=f"{type(exc).__name__}: {exc}")
        return factory
    return compiled
