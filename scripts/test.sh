#!/usr/bin/env bash
# The whole test suite, from a fresh clone on a fresh machine: installs what the tests
# need (Debian packages when run as root, Python packages into .venv), then runs lint,
# type checks, the suite on SQLAlchemy 2.1, and the unit suite again on SQLAlchemy 2.0;
# after each, SQLAlchemy's own tests with every engine instrumented (scripts/conformance.py).
#
#   scripts/test.sh [PYTEST ARGS]   everything CI runs
#   scripts/test.sh --unit [ARGS]   the fast loop: lint, types and tests/unit only, on the
#                                   existing .venv; no Debian or npm installs, no 2.0 run
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
UNIT_ONLY=""
if [ "${1:-}" = "--unit" ]; then
    UNIT_ONLY=1
    shift
fi

# The hot path's compiled ledger must have been built (the suite runs it, and the Python
# twin again with SQLALCHEMY_POOL_EXPORTER_PURE_PYTHON=1).
compiled_ledger_check() {
    "${1:-.venv/bin/python}" -c 'from sqlalchemy_pool_exporter.instrumentation import ledger
assert ledger.COMPILED, "the compiled ledger was not built: is a C compiler installed?"'
}

if [ -n "$UNIT_ONLY" ]; then
    if ! .venv/bin/python -c "import sqlalchemy_pool_exporter, pytest, hypothesis" 2>/dev/null; then
        if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
        .venv/bin/pip install -q --upgrade pip >/dev/null
        .venv/bin/pip install -q -e ".[test]" "sqlalchemy[asyncio]>=2.1,<2.2"
    fi
    # The compiled ledger is built in place by the editable install: again when its source
    # is newer than the module.
    built=$(ls exporter/sqlalchemy_pool_exporter/instrumentation/_ledger.*.so 2>/dev/null | head -1)
    newer=$(find exporter/sqlalchemy_pool_exporter/instrumentation/_ledger_c -newer "${built:-/}" 2>/dev/null | head -1)
    if [ -z "$built" ] || [ -n "$newer" ]; then
        .venv/bin/pip install -q --no-deps -e .
    fi
    compiled_ledger_check
    echo "== ruff"; .venv/bin/ruff check exporter tests benchmarks
    .venv/bin/ruff format --check exporter tests benchmarks
    echo "== mypy"; .venv/bin/mypy
    echo "== pytest unit"
    exec .venv/bin/pytest -q -p no:cacheprovider -m unit "$@" tests/unit
fi

apt_updated=""
apt_install() {  # install Debian packages (as root), or say how when we cannot
    [ $# -gt 0 ] || return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "test.sh: installing $*"
        if [ -z "$apt_updated" ]; then
            DEBIAN_FRONTEND=noninteractive apt-get update -qq
            apt_updated=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    else
        echo "test.sh: missing; install: apt-get install $*" >&2
    fi
}

# Debian packages the integration tests drive for real.
debs=()
for bin in prometheus promtool prometheus-alertmanager; do
    command -v "$bin" >/dev/null 2>&1 || debs=(prometheus prometheus-alertmanager)
done
apt_install "${debs[@]}"

# Python environment: SQLAlchemy 2.1 (the main run).
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e ".[test]" "sqlalchemy[asyncio]>=2.1,<2.2"
compiled_ledger_check

# >>> Deploy: kubectl (kustomize rendering), docker-compose (`config` only: no engine is
# needed), node/npm (CRD schema check of deploy/kubernetes) and PostgreSQL from Debian
# when missing; hadolint and kubernetes-validate come with the [test] extras.
deploy_debs=()
command -v kubectl >/dev/null 2>&1 || deploy_debs+=(kubernetes-client)
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 \
    || deploy_debs+=(docker-compose)
command -v npm >/dev/null 2>&1 || deploy_debs+=(nodejs npm)
# PostgreSQL server binaries: the compose example app runs against a throwaway cluster.
command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
    || deploy_debs+=(postgresql)
apt_install "${deploy_debs[@]}"
if command -v npm >/dev/null 2>&1; then
    (cd tests/deploy/crd && npm ci --prefer-offline --no-audit --no-fund --loglevel=error >/dev/null)
else
    echo "test.sh: npm not found; the CRD check of deploy/kubernetes needs node and npm" >&2
    if [ -n "${CI:-}" ]; then exit 1; fi
fi
# <<< Deploy

# >>> MariaDB: the MySQL/MariaDB probe's scenarios run against a server on 127.0.0.1:3306
# whose root logs in without a password (each test module makes and drops its own
# database and users). Installed and started when missing; in CI an unreachable server
# fails those tests.
if ! (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null; then
    command -v mariadbd >/dev/null 2>&1 || command -v mysqld >/dev/null 2>&1 \
        || apt_install mariadb-server
    if [ "$(id -u)" = 0 ]; then
        service mariadb start >/dev/null 2>&1 || service mysql start >/dev/null 2>&1 \
            || echo "test.sh: could not start MariaDB" >&2
        # Debian's root uses unix_socket auth; the tests log in over TCP as root@127.0.0.1.
        mysql -uroot -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
            GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" 2>/dev/null || true
    fi
fi
# <<< MariaDB

# >>> Grafana dashboard: node modules of its schema check (@grafana/schema + TypeScript),
# the generator's lint and types. Without npm the schema check cannot run: fatal in CI.
if command -v npm >/dev/null 2>&1; then
    (cd grafana/schema-check && npm ci --prefer-offline --no-audit --no-fund --loglevel=error >/dev/null)
else
    echo "test.sh: npm not found; the dashboard schema check needs node and npm" >&2
    if [ -n "${CI:-}" ]; then exit 1; fi
fi
echo "== ruff, mypy (grafana)"; .venv/bin/ruff check grafana && .venv/bin/mypy --strict grafana/*.py
# <<< Grafana dashboard

# >>> Alert rules: the generator's lint and types (promtool checks, promtool unit tests,
# the generated-files-up-to-date check and the end-to-end alert run are pytest tests).
echo "== ruff, mypy (prometheus)"; .venv/bin/ruff check prometheus && .venv/bin/mypy --strict prometheus/*.py
# <<< Alert rules

# >>> Process exit: the Celery test needs Redis on 127.0.0.1:6379; started here if absent.
redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }
if ! redis_up; then
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server
    if command -v redis-server >/dev/null 2>&1; then
        redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' --appendonly no >/dev/null
        for _ in $(seq 50); do redis_up && break; sleep 0.1; done
    fi
fi
# <<< Process exit

echo "== ruff"; .venv/bin/ruff check exporter tests benchmarks scripts
.venv/bin/ruff format --check exporter tests benchmarks scripts
echo "== mypy"; .venv/bin/mypy && .venv/bin/mypy --strict scripts/conformance.py
# Tests start programs of the environment (gunicorn, sqlalchemy-pool-exporter) by name.
export PATH="$ROOT/.venv/bin:$PATH"
echo "== pytest (SQLAlchemy $(.venv/bin/python -c 'import sqlalchemy; print(sqlalchemy.__version__)'))"
.venv/bin/pytest -q -p no:cacheprovider "$@" tests
# SQLAlchemy's own engine, pool and asyncio tests, plain and with every engine instrumented.
echo "== conformance (SQLAlchemy 2.1)"; .venv/bin/python scripts/conformance.py
# The same unit suite and conformance run on the Python twin of the compiled ledger.
echo "== pytest unit, Python ledger"
SQLALCHEMY_POOL_EXPORTER_PURE_PYTHON=1 .venv/bin/pytest -q -p no:cacheprovider -m unit tests/unit
echo "== conformance (SQLAlchemy 2.1), Python ledger"
SQLALCHEMY_POOL_EXPORTER_PURE_PYTHON=1 .venv/bin/python scripts/conformance.py

# SQLAlchemy 2.0: the unit suite again, in its own environment.
if [ ! -x .venv-sa20/bin/python ]; then python3 -m venv .venv-sa20; fi
.venv-sa20/bin/pip install -q --upgrade pip >/dev/null
.venv-sa20/bin/pip install -q -e ".[test]" "sqlalchemy[asyncio]>=2.0,<2.1"
compiled_ledger_check .venv-sa20/bin/python
export PATH="$ROOT/.venv-sa20/bin:$PATH"
echo "== pytest unit (SQLAlchemy $(.venv-sa20/bin/python -c 'import sqlalchemy; print(sqlalchemy.__version__)'))"
.venv-sa20/bin/pytest -q -p no:cacheprovider tests/unit
echo "== conformance (SQLAlchemy 2.0)"; .venv-sa20/bin/python scripts/conformance.py
cd "$ROOT"
