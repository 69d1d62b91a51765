"""The package's shape, checked on its real sources and real imports.

* no import circles (module-level and function-level imports alike);
* the sidecar and the protocol import neither SQLAlchemy nor the app side;
* no runtime code generation, and SQLAlchemy's private names only in ``compat``.

Reading the sources with :mod:`ast` and :mod:`tokenize` is the test's business; the
package itself never does either.
"""

from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
import tokenize
from itertools import pairwise
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "exporter"
PACKAGE = "sqlalchemy_pool_exporter"

Graph = dict[str, dict[str, int]]  # module -> {imported module: line}


def modules(source: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` under ``source``, by dotted name."""
    found = {}
    for path in sorted((source / package).rglob("*.py")):
        parts = path.relative_to(source).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run: at any depth (functions too), not under TYPE_CHECKING."""
    found: list[ast.Import | ast.ImportFrom] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            found.append(child)
        elif isinstance(child, ast.If) and _type_checking(child.test):
            found.extend(_imports(ast.Module(body=child.orelse, type_ignores=[])))
        else:
            found.extend(_imports(child))
    return found


def import_graph(source: Path, package: str) -> Graph:
    """Which module of ``package`` imports which (importing ``a.b.c`` runs ``a`` and ``a.b``)."""
    mods = modules(source, package)
    graph: Graph = {name: {} for name in mods}
    for name, path in mods.items():
        is_package = path.name == "__init__.py"
        here = name if is_package else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [base]
                targets += [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
            for target in targets:
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    dotted = ".".join(parts[:i])
                    if dotted in mods and dotted != name:
                        graph[name].setdefault(dotted, node.lineno)
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def describe(graph: Graph, cycle: list[str]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in pairwise(cycle)) + f" -> {cycle[-1]}"


def test_the_package_has_no_import_circle() -> None:
    graph = import_graph(SOURCE, PACKAGE)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + describe(graph, cycle)
    # The walk sees what it must: module-level imports, and lazy ones inside functions.
    assert "sqlalchemy_pool_exporter.protocol.validation" in graph[f"{PACKAGE}.sidecar.server"]
    assert f"{PACKAGE}.probes.postgres" in graph[f"{PACKAGE}.probes.factory"]
    assert len(graph) >= 40


def test_the_walk_finds_a_circle_hidden_in_a_function(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import helper\n")
    (pkg / "b.py").write_text("def helper():\n    from pkg import a\n    return a\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
    )
    graph = import_graph(tmp_path, "pkg")
    cycle = find_cycle(graph)
    assert cycle == ["pkg.a", "pkg.b", "pkg.a"]
    assert describe(graph, cycle) == "pkg.a (line 1) -> pkg.b (line 2) -> pkg.a"
    assert graph["pkg.c"] == {}  # TYPE_CHECKING imports never run


SIDECAR_IMPORTS = """
import atexit, json, os, sys
registered = []
real_atexit, real_fork = atexit.register, os.register_at_fork

def atexit_register(fn, *args, **kwargs):
    registered.append(("atexit", getattr(fn, "__module__", None)))
    return real_atexit(fn, *args, **kwargs)

def register_at_fork(**hooks):
    registered.extend(("fork", getattr(h, "__module__", None)) for h in hooks.values())
    return real_fork(**hooks)

atexit.register, os.register_at_fork = atexit_register, register_at_fork
import sqlalchemy_pool_exporter.sidecar.server
import sqlalchemy_pool_exporter.sidecar.command
import sqlalchemy_pool_exporter.protocol.validation
print(json.dumps({"modules": sorted(sys.modules), "registered": registered}))
"""


def test_the_sidecar_loads_neither_sqlalchemy_nor_the_app_side() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOL_EXPORTER_")}
    result = subprocess.run(
        [sys.executable, "-c", SIDECAR_IMPORTS],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    loaded = report["modules"]
    assert f"{PACKAGE}.sidecar.server" in loaded  # the import did happen
    assert [m for m in loaded if m == "sqlalchemy" or m.startswith("sqlalchemy.")] == []
    assert [m for m in loaded if m.startswith(f"{PACKAGE}.instrumentation")] == []
    # No fork or exit hook of the exporter (the app side's runtime registers both).
    assert [r for r in report["registered"] if str(r[1]).startswith(PACKAGE)] == []


#: Builtins that turn text into running code, and the code-object constructors.
CODE_GENERATION = frozenset({"compile", "exec", "eval", "__import__", "CodeType", "FunctionType"})


def code_generation(path: Path) -> list[str]:
    """``file:line: what`` for every call of a code-generating builtin or use of ``ast``."""
    found = []
    tokens = [
        t
        for t in tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
        if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE)
    ]
    for before, token, after in zip(tokens, tokens[1:], tokens[2:], strict=False):
        if token.type != tokenize.NAME or before.string == ".":
            continue
        if token.string in CODE_GENERATION and after.string == "(":
            found.append(f"{path.name}:{token.start[0]}: {token.string}(")
        elif token.string == "ast" and (before.string in ("import", "from") or after.string == "."):
            found.append(f"{path.name}:{token.start[0]}: ast")
    return found


def test_no_runtime_code_generation() -> None:
    found = [hit for path in modules(SOURCE, PACKAGE).values() for hit in code_generation(path)]
    assert found == []


def test_the_code_generation_scan_sees_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import ast\n"
        "import re\n"
        "x = re.compile('a')  # compile( in a comment\n"
        "y = 'eval(1)'\n"
        "z = exec (code)\n"
        "w = compile(src, '<f>', 'exec')\n"
        "t = ast.parse('1')\n"
    )
    assert code_generation(sample) == [
        "sample.py:1: ast",
        "sample.py:5: exec(",
        "sample.py:6: compile(",
        "sample.py:7: ast",
    ]


def test_sqlalchemy_private_names_are_imported_only_by_compat() -> None:
    offenders = []
    for name, path in modules(SOURCE, PACKAGE).items():
        if name == f"{PACKAGE}.instrumentation.compat":
            continue
        for node in _imports(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == (
                "sqlalchemy"
            ):
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private or any(p.startswith("_") for p in (node.module or "").split(".")):
                    offenders.append(f"{name}:{node.lineno}: {node.module} {private}")
    assert offenders == []


@pytest.mark.parametrize("layer", ["protocol", "sidecar", "probes"])
def test_layers_below_the_app_side_never_import_it(layer: str) -> None:
    graph = import_graph(SOURCE, PACKAGE)
    leaks = {
        f"{module}:{line} -> {target}"
        for module, edges in graph.items()
        if module.startswith(f"{PACKAGE}.{layer}")
        for target, line in edges.items()
        if target.startswith(f"{PACKAGE}.instrumentation") or target.startswith(f"{PACKAGE}.cli")
    }
    assert leaks == set()


def test_the_app_side_never_imports_the_sidecar() -> None:
    graph = import_graph(SOURCE, PACKAGE)
    leaks = {
        f"{module}:{line} -> {target}"
        for module, edges in graph.items()
        if module.startswith(f"{PACKAGE}.instrumentation")
        for target, line in edges.items()
        if target.startswith((f"{PACKAGE}.sidecar", f"{PACKAGE}.cli"))
    }
    assert leaks == set()
