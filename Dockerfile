# qscale: one image for the worker (`python -m worker run`, the default) and the
# controller (`python -m controller run`).
#
# The build needs no package index: hack/build-image.sh first runs
# `pip wheel . -w dist/wheelhouse` on the host, and this file installs only from
# that wheelhouse. Works with docker's classic builder (no BuildKit syntax).
#
#   docker build -t qscale:dev .                                           # python slim base
#   docker build --build-arg BASE_IMAGE=qscale/debian:bookworm -t qscale:dev .  # plain Debian
#
# Either base must be Debian bookworm (Python 3.11, glibc 2.36): the wheelhouse
# holds cp311 manylinux wheels.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- runtime: a base that is guaranteed to have python3 (the slim image has it;
# plain Debian gets it from apt, without compilers or pip's build tooling).
# tini is PID 1: it forwards SIGTERM to the supervisor and reaps the orphans a
# hard-killed task leaves behind (the supervisor kills the task's process group).
FROM ${BASE_IMAGE} AS runtime
RUN set -eu; \
    missing=""; \
    command -v python3 >/dev/null 2>&1 || missing="python3 ca-certificates"; \
    command -v tini >/dev/null 2>&1 || missing="$missing tini"; \
    if [ -n "$missing" ]; then \
      apt-get update; \
      apt-get install -y --no-install-recommends $missing; \
      rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    fi; \
    python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version'

# --- build: create the virtualenv and install qscale from the wheelhouse.
FROM runtime AS build
RUN set -eu; \
    if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then \
      apt-get update; \
      apt-get install -y --no-install-recommends python3-venv; \
      rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -m venv /opt/qscale
COPY dist/wheelhouse /wheelhouse
# qscale uses the synchronous Kubernetes client: its asyncio twin (~70 MB) goes.
RUN set -eu; \
    /opt/qscale/bin/pip install --no-cache-dir --no-index --find-links /wheelhouse qscale; \
    /opt/qscale/bin/pip uninstall -y -q setuptools wheel || true; \
    site="$(/opt/qscale/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; \
    rm -rf "$site/kubernetes/aio"; \
    /opt/qscale/bin/python -c 'import worker, controller'

# --- final: runtime + the virtualenv, non-root, nothing to compile with.
FROM runtime
LABEL org.opencontainers.image.title="qscale" \
      org.opencontainers.image.description="Queue-driven autoscaling multiprocessing workers on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN set -eu; \
    groupadd --system --gid 10001 qscale; \
    useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin qscale; \
    mkdir -p /app; chown 10001:10001 /app
COPY --from=build /opt/qscale /opt/qscale
# /tmp is an emptyDir in the chart, so a read-only root filesystem works: the
# worker's prometheus multiprocess directory and every temp file live there.
ENV PATH=/opt/qscale/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIRTUAL_ENV=/opt/qscale \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TMPDIR=/tmp \
    LANG=C.UTF-8
WORKDIR /app
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["tini", "--"]
CMD ["python", "-m", "worker", "run"]
