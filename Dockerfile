# syntax=docker/dockerfile:1
# One image for every taskexec service; the command picks the role:
#   taskexec router | taskexec worker automated|manual|integration | taskexec beat |
#   taskexec migrate | celery --broker=$CELERY_BROKER_URL flower --port=5555
#
# Elsewhere:   docker build -t taskexec:latest .
# No registry: bash scripts/build-base-image.sh   (debootstrap -> taskexec-base:bookworm), then
#              docker build --build-arg BASE_IMAGE=taskexec-base:bookworm -t taskexec:latest .
# The base must be Debian-like with python3 (>= 3.11) and the venv module.
ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- build stage
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
WORKDIR /src
# Dependencies first (cached while only the code changes): exactly the locked runtime set, every file checked
# against its hash (requirements.lock; `make lock` refreshes it from pyproject.toml).
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --quiet --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY taskexec ./taskexec
COPY commands ./commands
COPY api ./api
COPY workers ./workers
COPY sandbox ./sandbox
RUN /opt/venv/bin/pip install --quiet --no-deps . \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/pip uninstall --quiet --yes pip setuptools wheel \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# ---------------------------------------------------------------- runtime stage
FROM ${BASE_IMAGE}
# Extra Debian packages, e.g. EXTRA_APT_PACKAGES=debootstrap for a one-shot that builds the
# sandbox images without a registry. Empty by default.
ARG EXTRA_APT_PACKAGES=""
# postgresql-client: pg_dump / pg_restore for `taskexec db backup|restore` (Debian bookworm: 15; the
# client must be at least the server's major version).
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      postgresql-client $EXTRA_APT_PACKAGES \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
 && groupadd --system --gid 10001 taskexec \
 && useradd --system --uid 10001 --gid taskexec --home-dir /var/lib/taskexec --create-home \
      --shell /usr/sbin/nologin taskexec \
 && mkdir -p /var/lib/taskexec/sandbox /var/lib/taskexec/backups \
 && chown -R taskexec:taskexec /var/lib/taskexec
COPY --from=build /opt/venv /opt/venv
COPY scripts/healthcheck.py /opt/taskexec/healthcheck.py

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TEL_PORT=8081 \
    LOG_LEVEL=info

USER taskexec:taskexec
WORKDIR /var/lib/taskexec
EXPOSE 8081

# Checks the router's /health by default; other roles set TEL_HEALTHCHECK_URL (pools:
# http://127.0.0.1:9540/health, flower: http://127.0.0.1:5555/healthcheck, one-shots: none) or
# TEL_HEALTHCHECK_FILE (scheduler: its beat schedule file); compose.yaml does.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python3", "/opt/taskexec/healthcheck.py"]

ENTRYPOINT []
CMD ["taskexec", "router"]
