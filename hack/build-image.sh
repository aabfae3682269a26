#!/usr/bin/env bash
# Build the qscale images without any registry at build time.
#
#   hack/build-image.sh [--load] [--base IMAGE] [--tag REF] [NAME...]
#
# NAME is any of: qscale (default) qscale-redis qscale-rabbitmq qscale-prometheus all
#   qscale              the top-level Dockerfile with WHEELHOUSE=dist/wheelhouse: the
#                       wheelhouse is made here for the image's own Python (asked of
#                       the image's runtime stage), whatever Python runs this script
#   qscale-<component>  hack/images/<name>/Dockerfile on qscale/debian:bookworm
# Every image is tagged <name>:<version> (pyproject's version) and <name>:dev.
# --load     also load each image into the kind cluster (`make cluster-load`).
# --base     base image for the qscale image (default: qscale/debian:bookworm when
#            it exists here, else python:3.11-slim-bookworm). Env: BASE_IMAGE.
# --tag      tag the qscale image REF only (not qscale:<version>/dev). Env: QSCALE_IMAGE_TAG.
# Env: PY, the Python that builds the wheelhouse (any 3.8+ with pip; default .venv's).
# With a package index reachable from docker builds, plain `docker build .` needs none
# of this (see the Dockerfile).
# Prints one line per image with its size; exits non-zero with a reason on failure.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
export DOCKER_BUILDKIT=0   # the classic builder: the Dockerfiles use no BuildKit syntax

die() { echo "build-image: $*" >&2; exit 1; }
log() { echo "build-image: $*" >&2; }

LOAD=0
BASE_IMAGE="${BASE_IMAGE:-}"
TAG="${QSCALE_IMAGE_TAG:-}"
NAMES=()
while (($#)); do
  case "$1" in
    --load) LOAD=1 ;;
    --base) shift; BASE_IMAGE="${1:?--base needs an image}" ;;
    --tag) shift; TAG="${1:?--tag needs an image reference}" ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    all) NAMES+=(qscale qscale-redis qscale-rabbitmq qscale-prometheus) ;;
    qscale|qscale-redis|qscale-rabbitmq|qscale-prometheus) NAMES+=("$1") ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
((${#NAMES[@]})) || NAMES=(qscale)
if [ -n "$TAG" ] && [ "${NAMES[*]}" != qscale ]; then die "--tag applies to the qscale image alone"; fi

PY="${PY:-$REPO_ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)" || die "no python3 to build the wheelhouse with"
VERSION="$(sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -n1)"
[ -n "$VERSION" ] || die "cannot read the version from pyproject.toml"
DEBIAN_BASE="qscale/debian:bookworm"

docker info >/dev/null 2>&1 || die "docker is not reachable (run 'make cluster' or hack/docker.sh first)"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
# lines_of ARRAY CMD...: the non-empty output lines of CMD into ARRAY (bash 3.2 has no mapfile)
lines_of() {
  local __name="$1" __out __line; shift
  __out="$("$@")" || return 1
  while IFS= read -r __line; do
    [ -n "$__line" ] && eval "$__name+=(\"\$__line\")"
  done <<<"$__out"
  return 0
}
size_of() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1/1e6}'; }

# What the image's Python can install: the Dockerfile's runtime stage (cached by
# docker, shared with the real build) answers for itself.
image_target() {  # out.json
  local iid="$REPO_ROOT/dist/runtime.iid"
  docker build ${QSCALE_BUILD_NETWORK:+--network "$QSCALE_BUILD_NETWORK"} --target runtime \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --iidfile "$iid" -f "$REPO_ROOT/Dockerfile" "$REPO_ROOT" \
    >"$REPO_ROOT/dist/build-runtime.log" 2>&1 \
    || { tail -n 30 "$REPO_ROOT/dist/build-runtime.log" >&2; die "docker build --target runtime failed (log: dist/build-runtime.log)"; }
  docker run --rm --network none --entrypoint python3 "$(cat "$iid")" \
    -c "$("$PY" "$REPO_ROOT/hack/wheelhouse.py" target)" >"$1" \
    || die "cannot ask the image's Python what it installs"
}

# The wheelhouse: qscale's wheel (built here, pure Python) plus every dependency as
# a binary wheel for the image's Python, ABI and glibc (pip download --platform ...),
# so the image installs with no index whatever Python, OS or architecture runs this.
build_wheelhouse() {
  local wh="$REPO_ROOT/dist/wheelhouse" target="$REPO_ROOT/dist/image-target.json"
  image_target "$target"
  local pip_args=() line
  lines_of pip_args "$PY" "$REPO_ROOT/hack/wheelhouse.py" pip-args "$target" \
    || die "cannot work out the image's platform tags"
  rm -rf "$wh" "$REPO_ROOT/build/lib"   # a fresh set; setuptools' stale copy would resurrect deleted modules
  mkdir -p "$wh"
  log "wheelhouse: host Python $("$PY" -c 'import platform; print(platform.python_version(), "on", platform.system(), platform.machine())') -> image $("$PY" "$REPO_ROOT/hack/wheelhouse.py" describe "$target")"
  # Fixed zip timestamps: an unchanged tree gives a byte-identical wheel, so docker's
  # layer cache and `kind load` (which skips an image ID the node has) both hit.
  SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-315532800}" "$PY" -m pip wheel --quiet --disable-pip-version-check \
    --no-deps --ignore-requires-python -w "$wh" . >"$REPO_ROOT/dist/wheelhouse.log" 2>&1 \
    || { tail -n 20 "$REPO_ROOT/dist/wheelhouse.log" >&2; die "pip wheel . failed (log: dist/wheelhouse.log)"; }
  local wheel; wheel="$(ls "$wh"/qscale-"$VERSION"-*.whl 2>/dev/null | head -n1)"
  [ -n "$wheel" ] || die "no qscale-$VERSION wheel in $wh"
  local reqs=("$wheel") missing
  # pip evaluates markers for the Python running it: add what the image's Python needs
  # on top (e.g. redis wants async-timeout below 3.11.3), until nothing is missing.
  for _ in 1 2 3 4; do
    "$PY" -m pip download --quiet --disable-pip-version-check "${pip_args[@]}" \
      --find-links "$wh" -d "$wh" "${reqs[@]}" >>"$REPO_ROOT/dist/wheelhouse.log" 2>&1 \
      || { tail -n 20 "$REPO_ROOT/dist/wheelhouse.log" >&2; die "pip download for the image's Python failed (no binary wheel for it? log: dist/wheelhouse.log)"; }
    missing=()
    lines_of missing "$PY" "$REPO_ROOT/hack/wheelhouse.py" missing "$wh" "$target" \
      || die "cannot inspect the wheelhouse"
    ((${#missing[@]})) || break
    log "wheelhouse: adding for the image's Python: ${missing[*]}"
    reqs=("${missing[@]}")
  done
  "$PY" "$REPO_ROOT/hack/wheelhouse.py" prune "$wh" "$target" || die "the wheelhouse does not fit the image"
  log "wheelhouse: $(ls "$wh" | wc -l) wheels in dist/wheelhouse"
}

build() {  # name context dockerfile [build-arg...]
  local name="$1" ctx="$2" dockerfile="$3"; shift 3
  local args=() tags=(-t "$name:$VERSION" -t "$name:dev")
  for a in "$@"; do args+=(--build-arg "$a"); done
  if [ "$name" = qscale ] && [ -n "$TAG" ]; then tags=(-t "$TAG"); fi
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
if command -v flock >/dev/null 2>&1; then   # util-linux; macOS has none
  exec 9>"$REPO_ROOT/dist/.build-image.lock"
  flock 9
fi
for name in "${NAMES[@]}"; do
  case "$name" in
    qscale)
      if [ -z "$BASE_IMAGE" ]; then
        if have_image "$DEBIAN_BASE"; then BASE_IMAGE="$DEBIAN_BASE"; else BASE_IMAGE=python:3.11-slim-bookworm; fi
      fi
      build_wheelhouse
      build qscale "$REPO_ROOT" "$REPO_ROOT/Dockerfile" "BASE_IMAGE=$BASE_IMAGE" WHEELHOUSE=dist/wheelhouse
      ;;
    *)
      have_image "$DEBIAN_BASE" || die "$DEBIAN_BASE is missing (hack/images/debian.sh builds it)"
      build "$name" "$REPO_ROOT/hack/images/$name" "$REPO_ROOT/hack/images/$name/Dockerfile" "BASE_IMAGE=$DEBIAN_BASE"
      ;;
  esac
  if [ "$name" = qscale ] && [ -n "$TAG" ]; then
    echo "$TAG $(size_of "$TAG")"
    if ((LOAD)); then load "$TAG"; fi
    continue
  fi
  echo "$name:$VERSION $(size_of "$name:$VERSION")"
  if ((LOAD)); then
    load "$name:$VERSION"
    load "$name:dev"
  fi
done
