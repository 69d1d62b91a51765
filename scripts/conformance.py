"""SQLAlchemy's own engine and pool tests, plain and with every engine instrumented.

The exporter wraps pool methods and listens to pool events; the only proof that it
changes nothing SQLAlchemy promises (when a connection returns to the pool, which
events fire, what survives ``dispose()``) is SQLAlchemy's own test suite. This script
downloads the sdist of the *installed* SQLAlchemy version (cached under ``.cache/``),
extracts its ``test/`` tree and pytest configuration, and runs the engine, pool and
asyncio engine tests on SQLite and aiosqlite twice, concurrently (the tests mostly sleep):

* plain;
* with ``tests/conformance/instrument_engines.py`` loaded, which instruments every
  engine and every stand-alone pool the suite creates, with default options.

Any test that passes plain and does not pass instrumented fails the run, by name. The
installed SQLAlchemy is tested, not the sdist's ``lib/`` (``python -s``: SQLAlchemy's
conftest only puts ``lib/`` first on ``sys.path`` when user site-packages are enabled).

Usage: ``.venv/bin/python scripts/conformance.py`` (the interpreter of the environment
to test; exit status 0 when nothing regressed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import sqlalchemy

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIR = ROOT / "tests" / "conformance"
#: Test files relative to the sdist root; globs, since file names move between releases.
TEST_FILES = (
    "test/engine/test_pool.py",
    "test/engine/test_reconnect.py",
    "test/engine/test_execute.py",
    "test/engine/test_transaction.py",
    "test/engine/test_logging.py",
    "test/ext/asyncio/test_engine*.py",
)
#: SQLAlchemy's ``--db`` names from its setup.cfg ``[db]`` section: in-memory SQLite
#: through pysqlite, and through the aiosqlite asyncio driver.
DATABASES = ("sqlite", "aiosqlite")
#: What the run needs from the sdist: the tests, the pytest and sqla_testing configuration,
#: and the plugin bootstrap that SQLAlchemy's conftest loads by path from ``lib/``.
SDIST_FILES = ("pyproject.toml", "setup.cfg")
SDIST_DIRS = ("test/", "lib/sqlalchemy/testing/plugin/")


def fetch_sdist(version: str, cache: Path) -> Path:
    """The sdist of SQLAlchemy ``version``, downloaded into ``cache`` once."""
    archive = cache / f"sqlalchemy-{version}.tar.gz"
    if not archive.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            subprocess.run(
                [
                    *(sys.executable, "-m", "pip", "download", "-q", "--no-deps"),
                    *("--no-binary", ":all:", "-d", tmp, f"sqlalchemy=={version}"),
                ],
                check=True,
            )
            (found,) = Path(tmp).glob("*.tar.gz")
            found.rename(archive)
    return archive


def extract(archive: Path, version: str, into: Path) -> Path:
    """A fresh tree of what the test run needs from the sdist; returns its root."""
    # Each run gets its own tree: SQLite tests create database files (attached schemas)
    # in the working directory, which two concurrent runs must not share.
    prefix = f"sqlalchemy-{version}/"
    with tarfile.open(archive) as tar:
        members = [
            m
            for m in tar.getmembers()
            if m.name.removeprefix(prefix) in SDIST_FILES
            or m.name.removeprefix(prefix).startswith(SDIST_DIRS)
        ]
        # The "data" filter (no links out, no special files) where this Python has it.
        safe: dict[str, str] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(into, members=members, **safe)  # type: ignore[arg-type]
    return into / prefix


def test_paths(tree: Path) -> list[str]:
    """The test files of this release, relative to ``tree``; each pattern must match."""
    found: list[str] = []
    for pattern in TEST_FILES:
        matches = sorted(str(p.relative_to(tree)) for p in tree.glob(pattern))
        if not matches:
            raise SystemExit(f"conformance: no {pattern} in SQLAlchemy's sdist")
        found += matches
    return found


def start(tree: Path, out: Path, name: str, *, instrumented: bool) -> subprocess.Popen[bytes]:
    """Start one pytest run of the suite in ``tree``; its log and JUnit XML go to ``out``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOL_EXPORTER_")}
    args = [sys.executable, "-s", "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    args += [f"--junitxml={out / (name + '.xml')}", *test_paths(tree)]
    args += [f"--db={db}" for db in DATABASES]
    if instrumented:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGIN_DIR), env.get("PYTHONPATH")]))
        env["POOL_EXPORTER_CONFORMANCE_COUNT"] = str(out / "instrumented.json")
        args += ["-p", "instrument_engines"]
    with (out / (name + ".log")).open("wb") as log:
        return subprocess.Popen(args, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)


#: An outcome: passed, skipped or failed, and the first line of why it did not pass.
Outcome = tuple[str, str]


def outcomes(junit: Path) -> dict[str, Outcome]:
    """Test id -> outcome; an error in setup or teardown fails the test too."""
    rank = {"passed": 0, "skipped": 1, "failed": 2}
    result: dict[str, Outcome] = {}
    if not junit.exists():
        return result
    for case in ET.parse(junit).iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        outcome: Outcome = ("passed", "")
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                why = (child.get("message") or "").strip().splitlines()[:1]
                outcome = ("skipped" if child.tag == "skipped" else "failed", "".join(why)[:200])
                if outcome[0] == "failed":
                    break
        if rank[outcome[0]] >= rank[result.get(test_id, ("passed", ""))[0]]:
            result[test_id] = outcome
    return result


def passed(results: dict[str, Outcome]) -> int:
    return sum(outcome == "passed" for outcome, _ in results.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "conformance")
    options = parser.parse_args()
    version = sqlalchemy.__version__
    began = time.monotonic()
    archive = fetch_sdist(version, options.cache)
    out = Path(tempfile.mkdtemp(prefix="conformance-"))
    names = ("plain", "instrumented")
    runs = [
        start(extract(archive, version, out / name), out, name, instrumented=name != "plain")
        for name in names
    ]
    for proc in runs:
        proc.wait()
    for name in names:
        shutil.rmtree(out / name)  # the extracted trees; logs and reports stay
    plain, inst = (outcomes(out / f"{name}.xml") for name in names)
    count = out / "instrumented.json"
    seen = json.loads(count.read_text()) if count.exists() else {}
    summary = ", ".join(f"{n} {what}" for what, n in seen.items()) or "no report"
    print(
        f"conformance: SQLAlchemy {version}, {len(plain)} tests on {'+'.join(DATABASES)}: "
        f"{passed(plain)} pass plain, {passed(inst)} instrumented ({summary}); "
        f"{time.monotonic() - began:.0f} s; logs in {out}"
    )
    problems: list[str] = []
    if not passed(plain):
        problems.append("the plain run passed no test")
    if not (seen.get("engines") and seen.get("checkouts")):
        problems.append(f"the instrumented run proves nothing: {summary}")
    for test_id in sorted(plain):
        if plain[test_id][0] == "passed" and inst.get(test_id, ("", ""))[0] != "passed":
            outcome, why = inst.get(test_id, ("missing", ""))
            problems.append(f"passes plain, {outcome} instrumented: {test_id}: {why}")
    for line in problems:
        print(f"conformance: FAIL {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
