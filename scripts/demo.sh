#!/usr/bin/env bash
# The main job, from a fresh clone: install into .venv, then run the demo (Ctrl-C stops).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install -q -e . >/dev/null
exec .venv/bin/sqlalchemy-pool-exporter demo "$@"
