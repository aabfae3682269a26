# qscale: one image for the worker (`python -m worker run`, the default) and the
# controller (`python -m controller run`).
#
# With a package index (PyPI or your mirror), nothing needs to be prepared:
#
#   docker build -t qscale:dev .
#
# The builder stage builds qscale and its dependencies for the image's own Python;
# the final stage is the runtime alone, non-root (uid 10001), fine with a read-only
# root filesystem (/tmp is the only place it writes). Build arguments:
#
#   BASE_IMAGE     a Debian-based image (default python:3.11-slim-bookworm); one
#                  without python3 or tini gets them from apt (plain debian:bookworm).
#   WHEELHOUSE     a directory of the build context holding qscale's wheel and every
#                  dependency for the image's Python: installed with no index at all.
#                  hack/build-image.sh makes dist/wheelhouse for it (the offline build).
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL   a package index mirror.
#   BUILD_CA_CERT  PEM text of a CA certificate pip should trust in the builder (a
#                  TLS-intercepting proxy); the final image does not get it.
#
# Works with BuildKit and with docker's classic builder (no BuildKit-only syntax).
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
    python3 -c 'import sys; assert sys.version_info[:2] >= (3, 11), "qscale needs Python >= 3.11, the base has " + sys.version'

# --- build: a virtualenv with qscale, from the package index or the wheelhouse.
FROM runtime AS build
RUN set -eu; \
    if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then \
      apt-get update; \
      apt-get install -y --no-install-recommends python3-venv; \
      rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -m venv /opt/qscale
# .dockerignore lets in only the sources and dist/wheelhouse.
COPY . /src/
ARG WHEELHOUSE=
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG BUILD_CA_CERT=
# qscale uses the synchronous Kubernetes client: its asyncio twin (~70 MB) goes.
RUN set -eu; \
    pip=/opt/qscale/bin/pip; \
    if [ -n "$WHEELHOUSE" ]; then \
      wh="/src/${WHEELHOUSE#./}"; \
      if ! ls "$wh"/qscale-*.whl >/dev/null 2>&1; then \
        echo "WHEELHOUSE=$WHEELHOUSE: no qscale wheel there (hack/build-image.sh makes dist/wheelhouse; .dockerignore admits only that directory)" >&2; \
        exit 1; \
      fi; \
      $pip install --no-cache-dir --no-index --find-links "$wh" qscale; \
    else \
      if [ -n "$BUILD_CA_CERT" ]; then \
        printf '%s\n' "$BUILD_CA_CERT" > /tmp/build-ca.pem; \
        cat "$(/opt/qscale/bin/python -c 'import pip._vendor.certifi as c; print(c.where())')" /tmp/build-ca.pem > /tmp/pip-ca.pem; \
        export PIP_CERT=/tmp/pip-ca.pem; \
      fi; \
      $pip install --no-cache-dir --disable-pip-version-check /src; \
      rm -f /tmp/build-ca.pem /tmp/pip-ca.pem; \
    fi; \
    $pip uninstall -y -q setuptools wheel || true; \
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
