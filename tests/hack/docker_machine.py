"""A fake machine for hack/docker.sh: fake docker/dockerd/go on PATH, temporary roots.

hack/docker.sh reads its paths from QSCALE_DOCKER_ETC, QSCALE_DOCKERD_PIDFILE and
QSCALE_PROC; the fakes (tests/hack/fakebin) keep their state in FAKE_DOCKER_STATE.
As root, every run also happens in a private mount namespace where /etc/docker and
/run are bind mounts of this machine's temporary directories, so a script that
ignored those variables (main before issue #11 did) still only touches the fakes.
Root without that sandbox is refused: the script under test must never reach the
real /etc/docker or the real dockerd.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_SH = REPO_ROOT / "hack" / "docker.sh"
FAKEBIN = Path(__file__).parent / "fakebin"
# This VM's bounding set: every capability up to 40 except CAP_SYS_RESOURCE (24).
VM_CAPBND = "000001fffeffffff"
FULL_CAPBND = "000001ffffffffff"


@dataclass
class FakeMachine:
    root: Path
    etc: Path = field(init=False)
    run_dir: Path = field(init=False)
    proc: Path = field(init=False)
    cache: Path = field(init=False)
    state: Path = field(init=False)

    def __post_init__(self) -> None:
        self.etc = self.root / "etc-docker"
        self.run_dir = self.root / "run"
        self.proc = self.root / "proc"
        self.cache = self.root / "cache"
        self.state = self.root / "state"
        for d in (self.etc, self.run_dir, self.proc / "self", self.proc / "sys" / "kernel",
                  self.cache, self.state):
            d.mkdir(parents=True, exist_ok=True)
        self.capabilities(VM_CAPBND)

    # --- the machine's state -------------------------------------------------
    @property
    def daemon_json(self) -> Path:
        return self.etc / "daemon.json"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "qscale-dockerd.pid"

    def capabilities(self, capbnd: str, last: int = 40) -> None:
        (self.proc / "self" / "status").write_text(
            f"Name:\tbash\nCapInh:\t0000000000000000\nCapBnd:\t{capbnd}\n")
        (self.proc / "sys" / "kernel" / "cap_last_cap").write_text(f"{last}\n")

    def docker_answers(self, default_runtime: str = "runc") -> None:
        (self.state / "up").touch()
        (self.state / "default_runtime").write_text(default_runtime + "\n")

    def docker_denied(self) -> None:
        (self.state / "denied").touch()

    def add_image(self, ref: str) -> None:
        with (self.state / "images").open("a") as f:
            f.write(ref + "\n")

    def start_dockerd(self, *args: str) -> int:
        """A dockerd (the fake) started by someone else, e.g. the user's systemd."""
        # started in the background of a shell that exits at once, like a daemon: when
        # it is stopped, init reaps it (a child of pytest would linger as a zombie)
        out = subprocess.run(["bash", "-c", '"$0" "$@" </dev/null >/dev/null 2>&1 & echo $!',
                              str(FAKEBIN / "dockerd"), *args], env=self._env({}),
                             capture_output=True, text=True, check=True, timeout=30)
        pid = int(out.stdout.strip())
        deadline = time.monotonic() + 10
        while not ((self.proc / str(pid) / "cmdline").exists() and (self.state / "up").exists()):
            assert time.monotonic() < deadline, "fake dockerd did not register"
            time.sleep(0.05)
        return pid

    def forget_starts(self) -> None:
        (self.state / "dockerd.starts").unlink(missing_ok=True)

    # --- what happened -------------------------------------------------------
    def _lines(self, name: str) -> list[str]:
        path = self.state / name
        return path.read_text().splitlines() if path.exists() else []

    def dockerd_starts(self) -> list[str]:
        return self._lines("dockerd.starts")

    def dockerd_stopped(self) -> list[int]:
        return [int(p) for p in self._lines("dockerd.stopped")]

    def calls(self) -> list[str]:
        return self._lines("calls")

    def alive(self, pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return (self.proc / str(pid)).exists()

    def cleanup(self) -> None:
        for pid in {int(p) for p in self._lines("dockerd.pids")}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # --- running hack/docker.sh ---------------------------------------------
    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DOCKER_", "QSCALE_")) and k != "CI"}
        env.update({
            "PATH": f"{FAKEBIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "GO": str(FAKEBIN / "go"),
            "FAKE_DOCKER_STATE": str(self.state),
            "QSCALE_CACHE": str(self.cache),
            "QSCALE_DOCKER_ETC": str(self.etc),
            "QSCALE_DOCKERD_PIDFILE": str(self.pidfile),
            "QSCALE_PROC": str(self.proc),
            "QSCALE_DOCKER_WAIT": "3",
        })
        env.update(extra)
        return env

    def _sandbox(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        binds = [(self.run_dir, Path("/var/run").resolve())]
        if Path("/etc/docker").is_dir():
            binds.append((self.etc, Path("/etc/docker")))
        mounts = " && ".join(f"mount --bind '{src}' '{dst}'" for src, dst in binds)
        probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "--",
                                "bash", "-c", f"{mounts} && test -d /etc"],
                               capture_output=True, text=True, check=False)
        if probe.returncode != 0:
            pytest.fail("as root, hack/docker.sh is only run inside a private mount namespace "
                        f"(unshare failed: {probe.stderr.strip()})", pytrace=False)
        return ["unshare", "--mount", "--propagation", "private", "--",
                "bash", "-c", f'{mounts} && exec "$@"', "sandbox"]

    def run(self, manage: bool = False, **extra: str) -> subprocess.CompletedProcess[str]:
        if manage:
            extra.setdefault("QSCALE_MANAGE_DOCKERD", "1")
        return subprocess.run([*self._sandbox(), "bash", str(DOCKER_SH)],
                              env=self._env(extra), capture_output=True, text=True,
                              timeout=240, check=False, stdin=subprocess.DEVNULL)


def user_daemon_json() -> str:
    """A workstation's daemon.json: its own data-root, mirrors and a GPU runtime."""
    return json.dumps({
        "data-root": "/srv/docker",
        "registry-mirrors": ["https://mirror.example.internal"],
        "runtimes": {"nvidia": {"path": "/usr/bin/nvidia-container-runtime"}},
        "default-runtime": "nvidia",
    }, indent=2) + "\n"
