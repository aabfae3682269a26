#!/usr/bin/env bash
# Make sure Docker can start kind's node (a --privileged container), without ever
# harming the Docker of the machine we run on.
#
#   - A Docker that runs the privileged probe is left alone (the probe is a static
#     program alone in its own image, built here: no other image is ever used).
#   - /etc/docker/daemon.json is never written, whoever owns the daemon.
#   - A dockerd that qscale did not start is never stopped or restarted. When it
#     needs a workaround (this VM's capability bounding set lacks CAP_SYS_RESOURCE,
#     so runc refuses privileged containers), the script names the missing
#     capability, prints the exact change to make, and exits non-zero.
#   - qscale starts a dockerd of its own only when told to (QSCALE_MANAGE_DOCKERD=1:
#     a throwaway CI machine, set by .ci/run) and none is running: Debian's docker.io
#     is installed if missing, the hack/oci-wrapper runtime is given on dockerd's
#     command line (the machine's daemon.json, if any, is read as it is) and the
#     pidfile $QSCALE_DOCKERD_PIDFILE marks that daemon as qscale's. Only that daemon
#     is ever restarted, and only when it lacks the wrapper runtime.
#
# Paths, for tests that run this against a fake dockerd/docker (tests/hack):
#   QSCALE_DOCKER_ETC      (/etc/docker)                    where daemon.json is read
#   QSCALE_DOCKERD_PIDFILE (/var/run/qscale-dockerd.pid)    marks the dockerd qscale started
#   QSCALE_PROC            (/proc)                          processes and capabilities
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DOCKER_ETC="${QSCALE_DOCKER_ETC:-/etc/docker}"
DAEMON_JSON="$DOCKER_ETC/daemon.json"
PIDFILE="${QSCALE_DOCKERD_PIDFILE:-/var/run/qscale-dockerd.pid}"
PROC="${QSCALE_PROC:-/proc}"
MANAGE="${QSCALE_MANAGE_DOCKERD:-0}"
WRAPPER="$BIN_DIR/qscale-runc"
RUNTIME_NAME=qscale-runc

# Linux capability numbers (include/uapi/linux/capability.h), as hack/oci-wrapper.
CAP_NAMES=(CAP_CHOWN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_FSETID CAP_KILL
  CAP_SETGID CAP_SETUID CAP_SETPCAP CAP_LINUX_IMMUTABLE CAP_NET_BIND_SERVICE CAP_NET_BROADCAST
  CAP_NET_ADMIN CAP_NET_RAW CAP_IPC_LOCK CAP_IPC_OWNER CAP_SYS_MODULE CAP_SYS_RAWIO
  CAP_SYS_CHROOT CAP_SYS_PTRACE CAP_SYS_PACCT CAP_SYS_ADMIN CAP_SYS_BOOT CAP_SYS_NICE
  CAP_SYS_RESOURCE CAP_SYS_TIME CAP_SYS_TTY_CONFIG CAP_MKNOD CAP_LEASE CAP_AUDIT_WRITE
  CAP_AUDIT_CONTROL CAP_SETFCAP CAP_MAC_OVERRIDE CAP_MAC_ADMIN CAP_SYSLOG CAP_WAKE_ALARM
  CAP_BLOCK_SUSPEND CAP_AUDIT_READ CAP_PERFMON CAP_BPF CAP_CHECKPOINT_RESTORE)

# Ends the script with a reason and what to do; never changes anything.
stop() {
  printf 'qscale: FAILED: %s\n' "$1" >&2
  shift
  local line
  for line in "$@"; do printf '  %s\n' "$line" >&2; done
  exit 1
}

# --- what is there ---------------------------------------------------------------

# coreutils' timeout where there is one (macOS has none)
with_timeout() {
  if command -v timeout >/dev/null 2>&1; then timeout "$@"; else shift; "$@"; fi
}

# The line of docker's output that says what failed (not "Run 'docker run --help'").
reason_of() {
  local text="$1" line
  line="$(printf '%s\n' "$text" | grep -i -m1 -e 'error' -e 'denied' -e 'cannot' || true)"
  [ -n "$line" ] || line="$(printf '%s\n' "$text" | grep -v '^\s*$' | tail -n1)"
  printf '%s' "$line"
}

DOCKER_ERR=""
docker_up() {
  local err rc=0
  err="$(with_timeout 20 docker info 2>&1 >/dev/null)" || rc=$?
  DOCKER_ERR="$(reason_of "$err")"
  [ "$rc" -eq 0 ]
}

# Where the docker CLI points: DOCKER_HOST, else a non-default context, else "".
docker_endpoint() {
  if [ -n "${DOCKER_HOST:-}" ]; then echo "DOCKER_HOST=$DOCKER_HOST"; return; fi
  local ctx; ctx="$(docker context show 2>/dev/null || true)"
  if [ -n "$ctx" ] && [ "$ctx" != default ]; then echo "docker context '$ctx'"; fi
}

sha256_12() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum; else shasum -a 256; fi | cut -c1-12
}

cmdline_of() { tr '\0' ' ' <"$PROC/$1/cmdline" 2>/dev/null; }

# PIDs of every running dockerd (whoever started it).
running_dockerds() {
  local d
  for d in "$PROC"/[0-9]*; do
    [ -r "$d/comm" ] && [ "$(cat "$d/comm" 2>/dev/null)" = dockerd ] && echo "${d##*/}"
  done
  return 0
}

# The PID of the dockerd qscale started, if it still runs: the pidfile names a
# live dockerd whose command line carries that very pidfile.
ours_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid; pid="$(tr -dc '0-9' <"$PIDFILE")"
  [ -n "$pid" ] || return 1
  local cmd; cmd="$(cmdline_of "$pid")"
  case "$cmd" in
    *dockerd*"--pidfile $PIDFILE "*) echo "$pid" ;;
    *) return 1 ;;
  esac
}

# Capabilities this machine's bounding set lacks (docker asks for all of them
# for a privileged container; runc then fails with "unable to apply caps").
missing_caps() {
  local bnd last i out=()
  bnd="$(awk '/^CapBnd:/ {print $2}' "$PROC/self/status" 2>/dev/null)"
  last="$(cat "$PROC/sys/kernel/cap_last_cap" 2>/dev/null || echo $((${#CAP_NAMES[@]} - 1)))"
  [ -n "$bnd" ] || return 0
  for ((i = 0; i <= last; i++)); do
    if (((16#$bnd >> i & 1) == 0)); then out+=("${CAP_NAMES[$i]:-CAP_$i}"); fi
  done
  echo "${out[*]}"
}

# --- the privileged probe ----------------------------------------------------------

PROBE_ERR=""
probe_image() {
  local src="$HACK_DIR/privileged-probe" sum arch dir
  sum="$(cat "$src/main.go" "$src/go.mod" | sha256_12)"
  PROBE_IMAGE="qscale/privileged-probe:$sum"
  have_image "$PROBE_IMAGE" && return 0
  arch="$(docker version --format '{{.Server.Arch}}' 2>/dev/null || true)"
  [ -n "$arch" ] || arch="$("$GO" env GOARCH)"
  dir="$(mktemp -d)"
  if ! (cd "$src" && CGO_ENABLED=0 GOOS=linux GOARCH="$arch" "$GO" build -trimpath -ldflags '-s -w' -o "$dir/probe" .) >&2; then
    rm -rf "$dir"
    stop "cannot build the privileged probe ($src) with $GO" \
      "kind needs Go anyway (hack/tools.sh builds it): install Go, or set GO=/path/to/go"
  fi
  tar -C "$dir" -cf - probe |
    docker import --change 'ENTRYPOINT ["/probe"]' - "$PROBE_IMAGE" >/dev/null ||
    { rm -rf "$dir"; stop "docker import of the privileged probe failed"; }
  rm -rf "$dir"
}

privileged_ok() {
  probe_image
  local out rc=0
  out="$(with_timeout 120 docker run --rm --privileged --network none "$PROBE_IMAGE" 2>&1)" || rc=$?
  PROBE_ERR="$(reason_of "$out")"
  [ "$rc" -eq 0 ] && log "privileged probe: ${out##*$'\n'}"
  [ "$rc" -eq 0 ]
}

# --- qscale's own dockerd (QSCALE_MANAGE_DOCKERD=1 only) -------------------------

build_wrapper() {
  local src="$HACK_DIR/oci-wrapper"
  local sum; sum="$(cat "$src"/*.go "$src"/go.mod | sha256_12)"
  if [ -x "$WRAPPER" ] && [ -f "$WRAPPER.sum" ] && [ "$(cat "$WRAPPER.sum")" = "$sum" ]; then
    return 0
  fi
  log "building OCI runtime wrapper ($WRAPPER)"
  (cd "$src" && CGO_ENABLED=0 "$GO" build -trimpath -o "$WRAPPER.new" .) || die "cannot build $src"
  mv -f "$WRAPPER.new" "$WRAPPER"
  echo "$sum" > "$WRAPPER.sum"
}

install_docker() {
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1; then
    run_logged apt-docker bash -c 'apt-get update -q && apt-get install -y -q --no-install-recommends docker.io runc containerd iptables ca-certificates'
  fi
  command -v dockerd >/dev/null 2>&1 || die "dockerd not found after installing docker.io"
}

# The dockerd flags qscale adds to the machine's daemon.json (read, never written).
# dockerd refuses a setting given both ways, so a key the file sets is not passed;
# a file that sets another runtime or default runtime stops us.
DOCKERD_ARGS=()
dockerd_args() {
  local out
  out="$(python3 - "$DAEMON_JSON" "$RUNTIME_NAME" "$WRAPPER" <<'PY'
import json, sys
path, name, wrapper = sys.argv[1:4]
try:
    with open(path) as f:
        conf = json.load(f)
except FileNotFoundError:
    conf = {}
except (OSError, ValueError) as exc:
    print(f"STOP {path} cannot be read as JSON ({exc})")
    sys.exit(0)
args = []
if conf:
    args += ["--config-file", path]
runtimes = conf.get("runtimes")
if runtimes is None:
    args += ["--add-runtime", f"{name}={wrapper}"]
elif (runtimes.get(name) or {}).get("path") != wrapper:
    print(f"STOP {path} sets \"runtimes\" without {name} -> {wrapper}")
    sys.exit(0)
default = conf.get("default-runtime")
if default is None:
    args += ["--default-runtime", name]
elif default != name:
    print(f"STOP {path} sets \"default-runtime\": \"{default}\"")
    sys.exit(0)
if "log-driver" not in conf and "log-opts" not in conf:
    args += ["--log-driver", "json-file", "--log-opt", "max-size=10m", "--log-opt", "max-file=2"]
print("ARGS")
print("\n".join(args))
PY
)" || die "cannot read $DAEMON_JSON"
  case "$out" in
    STOP*)
      stop "qscale would start its own dockerd, but ${out#STOP }" \
        "qscale never edits daemon.json. Add to it yourself (keep your other settings):" \
        "  \"runtimes\": {\"$RUNTIME_NAME\": {\"path\": \"$WRAPPER\"}}," \
        "  \"default-runtime\": \"$RUNTIME_NAME\"" \
        "then start Docker and rerun." ;;
  esac
  mapfile -t DOCKERD_ARGS < <(printf '%s\n' "$out" | tail -n +2 | grep -v '^$')
}

start_own_dockerd() {
  dockerd_args
  # a pidfile left by a killed session would make dockerd refuse to start
  if [ -f "$PIDFILE" ] && ! ours_pid >/dev/null; then rm -f "$PIDFILE"; fi
  log "starting dockerd ${DOCKERD_ARGS[*]} (log: $LOG_DIR/dockerd.log)"
  # setsid + nohup: dockerd must outlive this script and the caller's session
  setsid nohup dockerd --pidfile "$PIDFILE" "${DOCKERD_ARGS[@]}" >>"$LOG_DIR/dockerd.log" 2>&1 </dev/null &
  # 180 s of wall time: on a cold page cache dockerd first reloads every image's metadata
  local deadline=$((SECONDS + 180))
  while ((SECONDS < deadline)); do docker_up && return 0; sleep 0.5; done
  tail -n 30 "$LOG_DIR/dockerd.log" >&2 || true
  die "dockerd did not come up within 180s (log: $LOG_DIR/dockerd.log)"
}

stop_own_dockerd() {
  local pid="$1"
  log "stopping the dockerd qscale started (pid $pid): it lacks the $RUNTIME_NAME runtime"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 120); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  die "the dockerd qscale started (pid $pid) did not stop within 60s"
}

# --- what we tell a user whose Docker needs a change ----------------------------

explain_privileged() {
  local missing="$1" who="$2"
  local lines=("docker run --privileged said: ${PROBE_ERR:-(nothing)}")
  if [ -n "$missing" ]; then
    lines+=("This machine's capability bounding set lacks $missing; Docker asks for every"
      "capability for a privileged container, so runc refuses to start one."
      "$who. The workaround is qscale's OCI runtime wrapper,"
      "which drops the capabilities the machine lacks and then runs runc:"
      "  1. build it:  $GO build -C $HACK_DIR/oci-wrapper -o $WRAPPER ."
      "  2. add to $DAEMON_JSON (keep your other settings; merge into \"runtimes\" if set):"
      "       \"runtimes\": {\"$RUNTIME_NAME\": {\"path\": \"$WRAPPER\"}},"
      "       \"default-runtime\": \"$RUNTIME_NAME\""
      "     (kind cannot choose a runtime: it must be the default)")
    local current; current="$(docker info --format '{{.DefaultRuntime}}' 2>/dev/null || true)"
    if [ -n "$current" ] && [ "$current" != runc ] && [ "$current" != "$RUNTIME_NAME" ]; then
      lines+=("     Your default runtime is now '$current'; $RUNTIME_NAME runs runc, so containers"
        "     that need '$current' would then need --runtime $current.")
    fi
    lines+=("  3. restart Docker yourself (this stops its running containers)."
      "Or use a machine or VM whose bounding set is complete.")
  else
    lines+=("No capability is missing from this machine's bounding set, so qscale knows no"
      "workaround. $who. kind needs privileged containers:"
      "see https://kind.sigs.k8s.io/docs/user/known-issues/ for your setup.")
  fi
  stop "this Docker cannot start a --privileged container, which kind's node needs" "${lines[@]}"
}

# --- decisions -------------------------------------------------------------------

main() {
  if docker_up; then
    if privileged_ok; then
      log "docker: privileged containers work, leaving this Docker alone"
      return 0
    fi
    local missing pid runtime
    missing="$(missing_caps)"
    if pid="$(ours_pid)"; then
      runtime="$(docker info --format '{{.DefaultRuntime}}' 2>/dev/null || true)"
      if [ "$runtime" != "$RUNTIME_NAME" ]; then
        build_wrapper
        stop_own_dockerd "$pid"
        start_own_dockerd
        privileged_ok || explain_privileged "$missing" "The dockerd qscale started fails even with $RUNTIME_NAME"
        log "docker: qscale's dockerd restarted with the $RUNTIME_NAME runtime"
        return 0
      fi
      explain_privileged "$missing" "The dockerd qscale started (pid $pid) already runs $RUNTIME_NAME"
    fi
    if [ -n "$missing" ]; then (build_wrapper) >/dev/null 2>&1 || true; fi
    explain_privileged "$missing" "qscale did not start this Docker, so it changes nothing"
  fi

  # Docker does not answer. Never start a second daemon next to a running one,
  # nor one the CLI would not even talk to.
  local endpoint pids
  endpoint="$(docker_endpoint)"
  if [ -n "$endpoint" ]; then
    stop "docker does not answer at $endpoint: $DOCKER_ERR" \
      "Start that Docker (or unset DOCKER_HOST / docker context use default) and rerun."
  fi
  pids="$(running_dockerds | tr '\n' ' ')"
  if [ -n "$pids" ]; then
    # dockerd may be starting up, or slow under load: give it time, never restart it
    local deadline=$((SECONDS + ${QSCALE_DOCKER_WAIT:-120}))
    while ((SECONDS < deadline)); do docker_up && { main; return; }; sleep 2; done
    stop "dockerd is running (pid ${pids% }) but 'docker info' fails: $DOCKER_ERR" \
      "qscale never restarts a dockerd. Check that you may use its socket (the docker group," \
      "or run as root), or wait until it answers, then rerun."
  fi
  if [ "$MANAGE" != 1 ]; then
    stop "Docker is not running: ${DOCKER_ERR:-docker info failed}" \
      "Start your Docker (e.g. 'sudo systemctl start docker', or Docker Desktop) and rerun." \
      "On a throwaway machine (CI), QSCALE_MANAGE_DOCKERD=1 lets qscale install Debian's" \
      "docker.io and start a dockerd of its own (it never edits $DAEMON_JSON)."
  fi
  install_docker
  build_wrapper
  start_own_dockerd
  privileged_ok || explain_privileged "$(missing_caps)" "The dockerd qscale started fails even with $RUNTIME_NAME"
  log "docker: $(docker version --format '{{.Server.Version}}' 2>/dev/null) up (started by qscale, pidfile $PIDFILE), default runtime $(docker info --format '{{.DefaultRuntime}}' 2>/dev/null)"
}

main "$@"
