# The sqlalchemy-pool-exporter sidecar: `sqlalchemy-pool-exporter serve`, configured only
# through POOL_EXPORTER_* environment variables (see README, "The sidecar").
#
# Build from the repository root:   docker build -t sqlalchemy-pool-exporter .
#
# Defaults suit Kubernetes, where the app shares the pod's network namespace: metrics on
# 0.0.0.0:9187, pushes accepted on loopback only (127.0.0.1:9188). When the app runs in
# another container (compose), set POOL_EXPORTER_PUSH_LISTEN=0.0.0.0:9188 and a
# POOL_EXPORTER_TOKEN there, not here.
#
# The base is pinned by full version tag. Pin it further by digest in your registry
# mirror (`docker buildx imagetools inspect python:3.11.14-slim-bookworm`).

# --- build: a wheel from the source, installed into a self-contained virtualenv ---------
FROM python:3.11.14-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY exporter/ exporter/
COPY grafana/ grafana/
COPY prometheus/ prometheus/

RUN pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install "$(ls /wheels/*.whl)[sidecar]" \
 && /opt/venv/bin/sqlalchemy-pool-exporter --version

# --- runtime: the virtualenv only, no compilers, no source, no pip cache -----------------
FROM python:3.11.14-slim-bookworm

LABEL org.opencontainers.image.title="sqlalchemy-pool-exporter" \
      org.opencontainers.image.description="Prometheus exporter sidecar for SQLAlchemy connection pools" \
      org.opencontainers.image.licenses="Apache-2.0"

# The state directory (POOL_EXPORTER_STATE_DIR) belongs to the user, so a named volume
# mounted there starts out writable by it (docker copies the directory's ownership).
RUN groupadd --system --gid 10001 exporter \
 && useradd --system --uid 10001 --gid exporter --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin exporter \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/sqlalchemy-pool-exporter

COPY --from=build /opt/venv /opt/venv

# No .pyc writes: the root filesystem is read-only in the Kubernetes manifests.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

# 9187: /metrics, /healthz.  9188: POST /v1/push from the app's processes (and /api/pools).
EXPOSE 9187 9188

# slim has no curl: ask /healthz with the standard library, on the port the metrics
# listener was configured to use.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; host, _, port = os.environ.get('POOL_EXPORTER_LISTEN', '0.0.0.0:9187').rpartition(':'); host = host.strip('[]'); host = '127.0.0.1' if host in ('', '0.0.0.0', '::') else host; urllib.request.urlopen(f'http://{host}:{port}/healthz', timeout=4)"]

ENTRYPOINT ["sqlalchemy-pool-exporter", "serve"]
