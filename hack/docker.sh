#!/usr/bin/env bash
# Ensure a Docker engine that can run --privileged containers on this VM.
# Skips everything when a working Docker already exists; otherwise installs
# Debian's docker.io, registers the qscale-runc OCI wrapper as the default
# runtime and starts dockerd in the background (no systemd on the host).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WRAPPER="$BIN_DIR/qscale-runc"
PROBE_IMAGE="qscale/debian:$DEBIAN_SUITE"

build_wrapper() {
  local src="$HACK_DIR/oci-wrapper"
  local sum; sum="$(cat "$src"/*.go "$src"/go.mod | sha256sum | cut -c1-12)"
  if [ -x "$WRAPPER" ] && [ -f "$WRAPPER.sum" ] && [ "$(cat "$WRAPPER.sum")" = "$sum" ]; then
    return 0
  fi
  log "building OCI runtime wrapper ($WRAPPER)"
  (cd "$src" && CGO_ENABLED=0 "$GO" build -trimpath -o "$WRAPPER.new" .) || die "cannot build $src"
  mv -f "$WRAPPER.new" "$WRAPPER"
  echo "$sum" > "$WRAPPER.sum"
}

docker_up() { timeout 20 docker info >/dev/null 2>&1; }

# A privileged container that can start needs no help from us.
docker_privileged_ok() {
  local img
  if docker image inspect "$PROBE_IMAGE" >/dev/null 2>&1; then img="$PROBE_IMAGE"; else
    img="$(docker images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | grep -v -e '<none>' -e '/pause:' | head -n1 || true)"
  fi
  [ -n "$img" ] || return 2   # no image to probe with
  timeout 60 docker run --rm --privileged --entrypoint /bin/true "$img" >/dev/null 2>&1 ||
    timeout 60 docker run --rm --privileged --entrypoint true "$img" >/dev/null 2>&1
}

install_docker() {
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1; then
    run_logged apt-docker bash -c 'apt-get update -q && apt-get install -y -q --no-install-recommends docker.io runc containerd iptables ca-certificates'
  fi
  command -v dockerd >/dev/null 2>&1 || die "dockerd not found after installing docker.io"
}

write_daemon_json() {
  mkdir -p /etc/docker
  local want
  want="$(cat <<JSON
{
  "runtimes": { "qscale-runc": { "path": "$WRAPPER" } },
  "default-runtime": "qscale-runc",
  "storage-driver": "overlay2",
  "log-driver": "json-file",
  "log-opts": { "max-size": "10m", "max-file": "2" }
}
JSON
)"
  if [ "$(cat /etc/docker/daemon.json 2>/dev/null)" != "$want" ]; then
    printf '%s\n' "$want" > /etc/docker/daemon.json
    return 1  # changed
  fi
  return 0
}

start_dockerd() {
  local pidf=/var/run/qscale-dockerd.pid
  if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
    log "restarting dockerd (pid $(cat "$pidf")) to pick up daemon.json"
    kill "$(cat "$pidf")"; for _ in $(seq 60); do kill -0 "$(cat "$pidf")" 2>/dev/null || break; sleep 0.5; done
  fi
  # a pidfile left by a killed session would make dockerd refuse to start
  if [ -f "$pidf" ] && ! grep -qa dockerd "/proc/$(cat "$pidf")/cmdline" 2>/dev/null; then rm -f "$pidf"; fi
  log "starting dockerd (log: $LOG_DIR/dockerd.log)"
  # setsid + nohup: dockerd must outlive this script and the caller's session
  setsid nohup dockerd --pidfile "$pidf" >>"$LOG_DIR/dockerd.log" 2>&1 </dev/null &
  # 180 s of wall time: on a cold page cache dockerd first reloads every image's metadata
  local deadline=$((SECONDS + 180))
  while ((SECONDS < deadline)); do docker_up && return 0; sleep 0.5; done
  tail -n 30 "$LOG_DIR/dockerd.log" >&2 || true
  die "dockerd did not come up within 180s (log: $LOG_DIR/dockerd.log)"
}

main() {
  if docker_up; then
    local probe=0; docker_privileged_ok || probe=$?
    if [ "$probe" = 0 ]; then
      log "docker: working engine with privileged containers found, leaving it alone"
      return 0
    fi
    if [ "$probe" = 2 ] && [ ! -f /var/run/qscale-dockerd.pid ]; then
      log "docker: engine up but no image to probe privileged mode with; using it as is"
      return 0
    fi
  fi
  install_docker
  build_wrapper
  if docker_up; then
    if ! write_daemon_json; then
      if [ -f /var/run/qscale-dockerd.pid ]; then start_dockerd; else
        die "a running dockerd (not started by qscale) cannot run privileged containers; add runtime $WRAPPER as default-runtime in /etc/docker/daemon.json and restart it"
      fi
    fi
  else
    write_daemon_json || true
    start_dockerd
  fi
  docker_up || die "docker is not reachable"
  log "docker: $(docker version --format '{{.Server.Version}}' 2>/dev/null) up, default runtime $(docker info --format '{{.DefaultRuntime}}' 2>/dev/null)"
}

main "$@"
