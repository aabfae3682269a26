#!/usr/bin/env bash
# Build the qscale images without any registry at build time.
#
#   hack/build-image.sh [--load] [--base IMAGE] [NAME...]
#
# NAME is any of: qscale (default) qscale-redis qscale-rabbitmq qscale-prometheus all
#   qscale              wheelhouse on the host (`pip wheel`), then the top-level Dockerfile
#   qscale-<component>  hack/images/<name>/Dockerfile on qscale/debian:bookworm
# Every image is tagged <name>:<version> (pyproject's version) and <name>:dev.
# --load     also load each image into the kind cluster (`make cluster-load`).
# --base     base image for the qscale image (default: qscale/debian:bookworm when
#            it exists here, else python:3.11-slim-bookworm). Env: BASE_IMAGE.
# --tag T    tag each image <name>:T only, leaving <name>:<version> and :dev alone (a
#            benchmark pins the image it measures while others rebuild the shared tags).
# Prints one line per image with its size; exits non-zero with a reason on failure.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
export DOCKER_BUILDKIT=0   # the classic builder: the Dockerfiles use no BuildKit syntax

die() { echo "build-image: $*" >&2; exit 1; }
log() { echo "build-image: $*" >&2; }

LOAD=0
ONLY_TAG=""
BASE_IMAGE="${BASE_IMAGE:-}"
NAMES=()
while (($#)); do
  case "$1" in
    --load) LOAD=1 ;;
    --base) shift; BASE_IMAGE="${1:?--base needs an image}" ;;
    --tag) shift; ONLY_TAG="${1:?--tag needs a tag}" ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    all) NAMES+=(qscale qscale-redis qscale-rabbitmq qscale-prometheus) ;;
    qscale|qscale-redis|qscale-rabbitmq|qscale-prometheus) NAMES+=("$1") ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
((${#NAMES[@]})) || NAMES=(qscale)

PY="${PY:-$REPO_ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)" || die "no python3 to build the wheelhouse with"
VERSION="$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')" \
  || die "cannot read the version from pyproject.toml"
DEBIAN_BASE="qscale/debian:bookworm"

docker info >/dev/null 2>&1 || die "docker is not reachable (run 'make cluster' or hack/docker.sh first)"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
size_of() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1/1e6}'; }

# The wheelhouse: qscale's wheel plus every dependency, built with the host's pip
# (which may reach the package index); the image build then installs offline.
build_wheelhouse() {
  local wh="$REPO_ROOT/dist/wheelhouse"
  mkdir -p "$wh"
  rm -f "$wh"/qscale-*.whl
  rm -rf "$REPO_ROOT/build/lib"   # setuptools' stale copy would resurrect deleted modules
  log "wheelhouse: pip wheel . -> dist/wheelhouse"
  # Fixed zip timestamps: an unchanged tree gives a byte-identical wheel, so docker's
  # layer cache and `kind load` (which skips an image ID the node has) both hit.
  SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-315532800}" "$PY" -m pip wheel --quiet --disable-pip-version-check --find-links "$wh" -w "$wh" . >"$REPO_ROOT/dist/wheelhouse.log" 2>&1 \
    || die "pip wheel failed (is the package index reachable for new dependencies?)"
  ls "$wh"/qscale-"$VERSION"-*.whl >/dev/null 2>&1 || die "no qscale-$VERSION wheel in $wh"
  # pip resolved the markers for the host's Python; Debian bookworm's is 3.11.2, so add
  # what the image's Python needs on top (e.g. redis wants async-timeout below 3.11.3).
  local extra
  for _ in 1 2 3; do
    extra="$("$PY" - "$wh" "${TARGET_PYTHON:-3.11.2}" <<'PY'
import sys, zipfile
from pathlib import Path
from pip._vendor.packaging.markers import default_environment
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name

wheelhouse, version = Path(sys.argv[1]), sys.argv[2]
env = {**default_environment(), "python_full_version": version,
       "python_version": ".".join(version.split(".")[:2]), "extra": ""}
have = {canonicalize_name(w.name.split("-")[0]) for w in wheelhouse.glob("*.whl")}
missing = set()
for wheel in wheelhouse.glob("*.whl"):
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        for line in zf.read(meta).decode().splitlines():
            if line.startswith("Requires-Dist:"):
                req = Requirement(line.split(":", 1)[1].strip())
                if (req.marker is None or req.marker.evaluate(env)) and \
                        canonicalize_name(req.name) not in have:
                    missing.add(str(req).split(";")[0])
print(" ".join(sorted(missing)))
PY
)" || die "cannot inspect the wheelhouse"
    [ -n "$extra" ] || break
    log "wheelhouse: adding for Python ${TARGET_PYTHON:-3.11.2}: $extra"
    # shellcheck disable=SC2086
    "$PY" -m pip wheel --quiet --disable-pip-version-check --find-links "$wh" -w "$wh" $extra \
      || die "pip wheel $extra failed"
  done
}

build() {  # name context dockerfile [build-arg...]
  local name="$1" ctx="$2" dockerfile="$3"; shift 3
  local args=()
  for a in "$@"; do args+=(--build-arg "$a"); done
  local tags=(-t "$name:$VERSION" -t "$name:dev")
  [ -z "$ONLY_TAG" ] || tags=(-t "$name:$ONLY_TAG")
  log "docker build ${tags[1]} ($dockerfile)"
  docker build ${QSCALE_BUILD_NETWORK:+--network "$QSCALE_BUILD_NETWORK"} "${args[@]}" \
    -f "$dockerfile" "${tags[@]}" "$ctx" >"$REPO_ROOT/dist/build-$name.log" 2>&1 \
    || { tail -n 30 "$REPO_ROOT/dist/build-$name.log" >&2; die "docker build of $name failed (log: dist/build-$name.log)"; }
}

load() {  # image
  if [ -f "$REPO_ROOT/hack/env.sh" ]; then
    # shellcheck disable=SC1091
    source "$REPO_ROOT/hack/env.sh"
  fi
  if grep -q '^cluster-load:' "$REPO_ROOT/Makefile" 2>/dev/null; then
    make -s -C "$REPO_ROOT" cluster-load IMAGE="$1" || die "make cluster-load IMAGE=$1 failed"
  else
    command -v kind >/dev/null || die "kind is not on PATH (source hack/env.sh)"
    kind load docker-image --name "${QSCALE_CLUSTER_NAME:-qscale}" "$1" || die "kind load of $1 failed"
  fi
}

mkdir -p "$REPO_ROOT/dist"
# One build at a time per checkout: the wheelhouse and the tags are shared.
exec 9>"$REPO_ROOT/dist/.build-image.lock"
flock 9
for name in "${NAMES[@]}"; do
  case "$name" in
    qscale)
      if [ -z "$BASE_IMAGE" ]; then
        if have_image "$DEBIAN_BASE"; then BASE_IMAGE="$DEBIAN_BASE"; else BASE_IMAGE=python:3.11-slim-bookworm; fi
      fi
      build_wheelhouse
      build qscale "$REPO_ROOT" "$REPO_ROOT/Dockerfile" "BASE_IMAGE=$BASE_IMAGE"
      ;;
    *)
      have_image "$DEBIAN_BASE" || die "$DEBIAN_BASE is missing (hack/images/debian.sh builds it)"
      build "$name" "$REPO_ROOT/hack/images/$name" "$REPO_ROOT/hack/images/$name/Dockerfile" "BASE_IMAGE=$DEBIAN_BASE"
      ;;
  esac
  if [ -n "$ONLY_TAG" ]; then
    echo "$name:$ONLY_TAG $(size_of "$name:$ONLY_TAG")"
    ((LOAD)) && load "$name:$ONLY_TAG"
    continue
  fi
  echo "$name:$VERSION $(size_of "$name:$VERSION")"
  if ((LOAD)); then
    load "$name:$VERSION"
    load "$name:dev"
  fi
done
