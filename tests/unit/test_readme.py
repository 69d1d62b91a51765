"""The README against the code, without running its commands (``tests/deploy`` runs them).

Every ``sqlalchemy-pool-exporter`` command parses with the real argument parser; every
``POOL_EXPORTER_*`` variable is a real setting, and the two settings tables list every
setting with its real flag and default; every script, benchmark and repository path a
command names exists and takes the flags given; every extra is in ``pyproject.toml``;
every Python block compiles and imports only real names; every metric, recording rule
and alert named exists; every ``##`` section is in the table of contents and every
link resolves. Each failure names the README line and what to fix.
"""

from __future__ import annotations

import ast
import contextlib
import glob
import importlib
import inspect
import io
import json
import os
import re
import subprocess
import sys
from functools import cache
from importlib.metadata import metadata
from typing import Any

import pytest
import yaml

from sqlalchemy_pool_exporter.cli import build_parser
from sqlalchemy_pool_exporter.instrumentation.engines import instrument
from sqlalchemy_pool_exporter.instrumentation.plugin import OPTIONS
from sqlalchemy_pool_exporter.instrumentation.settings import AppSettings
from sqlalchemy_pool_exporter.settings import PREFIX
from sqlalchemy_pool_exporter.sidecar.settings import SidecarSettings
from tests import readme
from tests.readme import ROOT, TEXT

PROGRAM = "sqlalchemy-pool-exporter"
SETTINGS = {**AppSettings.model_fields, **SidecarSettings.model_fields}
#: Programs that run the command after them (`opentelemetry-instrument sqlalchemy-pool-exporter …`).
WRAPPERS = frozenset({"opentelemetry-instrument"})
PYTHONS = frozenset({"python", "python3", ".venv/bin/python"})
#: Top-level entries of the repository: a command word starting with one names a path.
TOP_LEVEL = sorted(p.name for p in ROOT.iterdir() if not p.name.startswith("."))


def _at(line: int) -> str:
    return f"README.md:{line}"


# -- structure -------------------------------------------------------------------------


def test_every_section_is_in_the_table_of_contents_in_order() -> None:
    contents = next(line for line in readme.LINES if line.startswith("**Contents:**"))
    start = readme.LINES.index(contents)
    paragraph = " ".join(readme.LINES[start : readme.LINES.index("", start)])
    listed = re.findall(r"\]\(#([^)]+)\)", paragraph)
    sections = [readme.anchor(title) for title, _ in readme.headings(2)]
    missing = [s for s in sections if s not in listed]
    assert not missing, f"add these ## sections to the **Contents:** line: {missing}"
    assert listed == sections, "the **Contents:** line must list the ## sections in order"


def test_set_up_commands_come_first() -> None:
    first = readme.blocks()[0]
    assert first.lang == "sh" and first.line < readme.headings(2)[0][1]
    assert [c.simple()[0][0] for c in readme.commands()[:2]] == [
        "./scripts/demo.sh",
        "./scripts/test.sh",
    ], "the README opens with ./scripts/demo.sh and ./scripts/test.sh, in that order"


def test_every_anchor_link_names_a_heading() -> None:
    anchors = {readme.anchor(t) for level in range(1, 5) for t, _ in readme.headings(level)}
    broken = [
        f"{_at(readme.line_of(f'](#{target})'))}: #{target}"
        for target in re.findall(r"\]\(#([^)]+)\)", TEXT)
        if target not in anchors
    ]
    assert not broken, f"links to headings that do not exist (rename the link): {broken}"


def test_every_relative_link_resolves_to_a_repository_file() -> None:
    broken = []
    for target in re.findall(r"\]\(([^)#\s]+)[^)]*\)", TEXT):
        if target.startswith(("http://", "https://")):
            continue
        path = (ROOT / target).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            broken.append(f"{_at(readme.line_of(f']({target}'))}: {target}")
    assert not broken, f"links to files missing from the repository: {broken}"


# -- commands --------------------------------------------------------------------------


def _exporter_invocations() -> list[tuple[int, list[str]]]:
    """(line, arguments) of every ``sqlalchemy-pool-exporter`` run in a command or prose."""
    found: list[tuple[int, list[str]]] = []
    for command in readme.commands():
        for words in command.simple():
            _, words = readme.split_assignments(words)
            if words[0] in WRAPPERS:
                words = words[1:]
            if os.path.basename(words[0]) == PROGRAM:
                found.append((command.line, words[1:]))
    for number, line in enumerate(readme.prose().splitlines(), 1):
        for code in re.findall(r"`([^`]*)`", line):
            if code.startswith(PROGRAM + " ") and "<" not in code and "[" not in code:
                found.append((number, code.split()[1:]))
    return found


def test_every_exporter_command_parses_with_the_real_parser() -> None:
    invocations = _exporter_invocations()
    assert len(invocations) >= 10
    for line, args in invocations:
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
                build_parser().parse_args(args)
        except SystemExit as exc:
            assert exc.code == 0, (
                f"{_at(line)}: `{PROGRAM} {' '.join(args)}` is rejected by the real parser "
                f"({errors.getvalue().strip().splitlines()[-1]}): fix the README or the CLI"
            )
    named = {args[0] for _, args in invocations if args and not args[0].startswith("-")}
    assert named == set(_subcommands()), (
        f"every subcommand should be shown in the README: missing {set(_subcommands()) - named}"
    )


def _subcommands() -> dict[str, Any]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    choices: dict[str, Any] = sub.choices  # type: ignore[assignment]
    return choices


def test_every_flag_shown_in_prose_with_its_command_exists() -> None:
    # `serve` flags in the settings table, `status`/`demo`/`assets` flags in the text.
    options = {name: set(p._option_string_actions) for name, p in _subcommands().items()}
    for row in readme.table(
        "| environment (`POOL_EXPORTER_…`) | flag of `serve` | default | meaning |"
    ):
        flag = row[1].strip("`")
        assert flag in options["serve"], f"{_at(readme.line_of(row[1]))}: serve has no {flag}"
    for flag in ("--duration", "--port", "--workers", "--threads", "--leak-rate"):
        assert f"`{flag}" in TEXT and flag in options["demo"], flag
    for flag in ("--watch", "--sites", "--url"):
        assert flag in TEXT and flag in options["status"], flag
    assert "`--force`" in TEXT and "--force" in options["assets"]


def test_every_setting_named_is_a_real_setting() -> None:
    named = set(re.findall(r"\bPOOL_EXPORTER_([A-Z][A-Z0-9_]*)", TEXT))
    unknown = sorted(n for n in named if n.lower() not in SETTINGS)
    assert not unknown, (
        f"README names settings that AppSettings/SidecarSettings do not have: "
        f"{[PREFIX + n for n in unknown]} (first at {_at(readme.line_of(PREFIX + unknown[0]))})"
        if unknown
        else ""
    )
    for words in (w for c in readme.commands() for w in c.simple()):
        names, _ = readme.split_assignments(words)
        for name in names:
            if name.startswith(PREFIX):
                assert name.removeprefix(PREFIX).lower() in SETTINGS, name


def _default_text(field: Any) -> str:
    """A field's default as the README's tables write it."""
    default = field.default
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "off" if not default else "on"
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def test_sidecar_settings_table_has_every_setting_with_its_flag_and_default() -> None:
    rows = readme.table("| environment (`POOL_EXPORTER_…`) | flag of `serve` | default | meaning |")
    fields = SidecarSettings.model_fields
    by_name = {row[0].strip("`").lower(): row for row in rows}
    assert sorted(by_name) == sorted(fields), (
        "the sidecar settings table must list exactly SidecarSettings' fields: "
        f"missing {sorted(set(fields) - set(by_name))}, "
        f"unknown {sorted(set(by_name) - set(fields))}"
    )
    for name, row in by_name.items():
        assert row[1] == f"`--{name.replace('_', '-')}`", f"{name}: flag is --{name}"
        assert row[2].strip("`") == _default_text(fields[name]), (
            f"{_at(readme.line_of(row[0]))}: default of {PREFIX}{name.upper()} is "
            f"{_default_text(fields[name])!r}, the README says {row[2]!r}"
        )


def test_instrument_options_table_matches_the_signature_and_app_settings() -> None:
    rows = readme.table("| argument | environment | default | meaning |")
    parameters = [p for p in inspect.signature(instrument).parameters if p != "engine"]
    arguments = [row[0].strip("`") for row in rows if row[0] != "—"]
    assert sorted(arguments) == sorted(parameters), (
        f"the options table must list instrument()'s parameters: "
        f"missing {sorted(set(parameters) - set(arguments))}, "
        f"unknown {sorted(set(arguments) - set(parameters))}"
    )
    fields = AppSettings.model_fields
    variables = {
        row[1].strip("`").removeprefix(PREFIX).lower(): row for row in rows if row[1] != "—"
    }
    assert sorted(variables) == sorted(fields), (
        f"the options table must list every AppSettings variable: "
        f"missing {sorted(PREFIX + f.upper() for f in set(fields) - set(variables))}"
    )
    for name, row in variables.items():
        if fields[name].default_factory is not None:
            continue  # app: derived from the command line, described in words
        expected = _default_text(fields[name]).replace("off", "false")
        assert row[2].strip("`") == expected, (
            f"{_at(readme.line_of(row[1]))}: default of {PREFIX}{name.upper()} is {expected!r}"
        )


@cache
def _help_of(script: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, f"{script} --help failed: {result.stderr}"
    return result.stdout


def test_every_script_and_benchmark_exists_and_takes_the_flags_given() -> None:
    seen = set()
    for command in readme.commands():
        for words in command.simple():
            _, words = readme.split_assignments(words)
            if words[0] in PYTHONS:
                script, flags = words[1], [w.split("=")[0] for w in words[2:] if w[:2] == "--"]
                assert (ROOT / script).is_file(), f"{_at(command.line)}: no file {script}"
                for flag in flags:
                    assert flag in _help_of(script), (
                        f"{_at(command.line)}: {script} has no option {flag}"
                    )
                seen.add(script)
            elif words[0].startswith("./scripts/"):
                path = ROOT / words[0]
                assert path.is_file() and os.access(path, os.X_OK), (
                    f"{_at(command.line)}: {words[0]} is not an executable file"
                )
                for flag in (w for w in words[1:] if w.startswith("--")):
                    assert f'"{flag}"' in path.read_text(), (
                        f"{_at(command.line)}: {words[0]} does not handle {flag}"
                    )
    for path in re.findall(
        r"`(?:python |\.venv/bin/python )?((?:benchmarks|scripts)/\w+\.py)", TEXT
    ):
        assert (ROOT / path).is_file(), f"{_at(readme.line_of(path))}: no file {path}"
    assert {"benchmarks/overhead.py", "prometheus/generate.py", "grafana/generate.py"} <= seen


def _paths_in(word: str) -> list[str]:
    """Repository paths inside one command word (``a=b``, ``src:dst:ro``, ``$PWD/…``)."""
    out = []
    for part in re.split(r"[=:]", word.replace("$PWD/", "")):
        if part.split("/")[0] in TOP_LEVEL and "/" in part:
            out.append(part)
    return out


def test_every_repository_path_in_a_command_exists() -> None:
    checked = 0
    for command in readme.commands():
        directory = ROOT
        for words in command.simple():
            if words[0] == "cd":
                directory = ROOT / words[1]
                assert directory.is_dir(), f"{_at(command.line)}: no directory {words[1]}"
                continue
            if words[:2] == ["npm", "run"]:
                scripts = json.loads((directory / "package.json").read_text())["scripts"]
                assert words[2] in scripts, f"{_at(command.line)}: no npm script {words[2]}"
            if words[:2] == ["docker", "build"]:
                assert (ROOT / "Dockerfile").is_file()
            # The last word of `docker run` is an image (grafana/grafana), not a path.
            for word in words[:-1] if words[:2] == ["docker", "run"] else words:
                for path in _paths_in(word):
                    assert glob.glob(str(ROOT / path)), f"{_at(command.line)}: no {path} here"
                    checked += 1
    assert checked >= 15


def test_every_extra_named_is_in_pyproject_and_every_extra_is_named() -> None:
    extras = set(metadata("sqlalchemy-pool-exporter").get_all("Provides-Extra") or [])
    named = set(re.findall(r"(?:\.|sqlalchemy-pool-exporter|\.whl|`)\[(\w+)\]", TEXT))
    assert named <= extras, f"README names extras pyproject.toml lacks: {named - extras}"
    assert extras <= named, f"the Install section should describe extras {extras - named}"


# -- code ------------------------------------------------------------------------------


def _resolve(dotted: str) -> object:
    """The object a dotted ``sqlalchemy_pool_exporter…`` name stands for, importing as needed."""
    parts = dotted.split(".")
    obj: object = importlib.import_module(parts[0])
    for index, part in enumerate(parts[1:], 1):
        if not hasattr(obj, part):
            importlib.import_module(".".join(parts[: index + 1]))
        obj = getattr(obj, part)
    return obj


def _package_names(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "sqlalchemy_pool_exporter"
        ):
            names += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names if a.name.startswith("sqlalchemy_pool_exporter")]
        elif isinstance(node, ast.Attribute):
            chain, inner = [node.attr], node.value
            while isinstance(inner, ast.Attribute):
                chain.insert(0, inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id == "sqlalchemy_pool_exporter":
                names.append(".".join([inner.id, *chain]))
    return names


def test_python_blocks_compile_and_use_only_real_names() -> None:
    python = [b for b in readme.blocks() if b.lang == "python"]
    assert len(python) >= 8
    used: set[str] = set()
    for block in python:
        try:
            code = compile(block.text, f"README.md:{block.line}", "exec", ast.PyCF_ONLY_AST)
        except SyntaxError as exc:
            pytest.fail(f"{_at(block.line + (exc.lineno or 1) - 1)}: not valid Python: {exc.msg}")
        for name in _package_names(code):
            try:
                _resolve(name)
            except (ImportError, AttributeError) as exc:
                pytest.fail(f"{_at(block.line)}: {name} does not exist ({exc}): fix the README")
            used.add(name)
    assert "sqlalchemy_pool_exporter.instrument" in used


def test_dotted_names_and_keywords_in_prose_are_real() -> None:
    calls = re.findall(r"`(sqlalchemy_pool_exporter(?:\.\w+)+)(\([^`]*\))?`", readme.prose())
    assert len(calls) >= 6
    for dotted, arguments in calls:
        try:
            obj = _resolve(dotted)
        except (ImportError, AttributeError) as exc:
            pytest.fail(f"{_at(readme.line_of(dotted))}: {dotted} does not exist ({exc})")
        if arguments and callable(obj):
            accepted = inspect.signature(obj).parameters
            for keyword in re.findall(r"(\w+)=", arguments):
                assert keyword in accepted, f"{dotted} takes no argument {keyword}="


def test_yaml_blocks_parse() -> None:
    for block in (b for b in readme.blocks() if b.lang == "yaml"):
        assert isinstance(yaml.safe_load(block.text), dict), _at(block.line)


# -- names of what the product exports ----------------------------------------------------


def test_every_metric_rule_and_alert_named_exists() -> None:
    reference = (ROOT / "docs" / "metrics.md").read_text()
    metrics = set(re.findall(r"^\| `(\w+)` \|", reference, re.MULTILINE))
    plugin = {"pool_exporter_" + option for option in OPTIONS}
    text = TEXT
    for name in set(re.findall(r"(?<![\w:.-])((?:sqlalchemy_pool|pool_exporter)_[a-z_]+)", text)):
        if name == "sqlalchemy_pool_exporter" or name in plugin:
            continue
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        known = base in metrics or (name.endswith("_") and any(m.startswith(name) for m in metrics))
        assert known, (
            f"{_at(readme.line_of(name))}: {name} is neither a metric of docs/metrics.md "
            f"nor a plugin option"
        )
    recording = (ROOT / "prometheus" / "recording.yaml").read_text()
    for rule in set(re.findall(r"\b((?:database|app_pool):[a-z_]+(?::[a-z_]+)*)", text)):
        assert f"record: {rule}" in recording, f"{_at(readme.line_of(rule))}: no rule {rule}"
    alerts = (ROOT / "prometheus" / "alerts.yaml").read_text()
    shipped = set(re.findall(r"alert: (\w+)", alerts))
    named = set(re.findall(r"\b(SQLAlchemyPool\w+)", text))
    assert named <= shipped, f"alerts named in the README but not shipped: {named - shipped}"
    table = {
        row[0].strip("`") for row in readme.table("| alert | severity | fires when (defaults) |")
    }
    assert table == shipped, f"the alerts table must list every shipped alert: {shipped - table}"
