"""hack/docker.sh never harms a workstation's Docker (issue #11, item 3).

Each test runs the real script against the fakes of tests/hack/fakebin on a
temporary machine (tests/hack/docker_machine.py): an existing daemon.json is never
modified, a dockerd qscale did not start is never stopped or restarted (nor is a
second one started beside it), the message names the exact missing capability, and
the privileged probe uses its own image. CI's unattended path (QSCALE_MANAGE_DOCKERD=1,
dockerd started from scratch with the qscale-runc wrapper) still works.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hack.docker_machine import FULL_CAPBND, FakeMachine, user_daemon_json

LEGACY_DAEMON_JSON = """{
  "runtimes": { "qscale-runc": { "path": "%s" } },
  "default-runtime": "qscale-runc",
  "storage-driver": "overlay2",
  "log-driver": "json-file",
  "log-opts": { "max-size": "10m", "max-file": "2" }
}
"""


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[FakeMachine]:
    m = FakeMachine(tmp_path)
    m.add_image("someones/app:latest")  # a workstation has images of its own
    yield m
    m.cleanup()


def _unchanged(m: FakeMachine, before: str) -> None:
    assert m.daemon_json.read_text() == before, "daemon.json was modified"
    assert [p.name for p in m.etc.iterdir()] == ["daemon.json"], "files added to /etc/docker"


# --- a Docker someone else runs ----------------------------------------------------

def test_users_docker_without_privileged_names_the_missing_capability(machine: FakeMachine) -> None:
    """The user's dockerd runs plain runc on a machine lacking CAP_SYS_RESOURCE."""
    before = user_daemon_json()
    machine.daemon_json.write_text(before)
    users = machine.start_dockerd("-H", "fd://", "--config-file", str(machine.daemon_json))
    machine.forget_starts()

    result = machine.run(manage=True)

    assert result.returncode != 0, result.stderr
    _unchanged(machine, before)
    assert "Your default runtime is now 'nvidia'" in result.stderr
    assert machine.alive(users), "the user's dockerd was stopped"
    assert machine.dockerd_starts() == [], "a dockerd was (re)started"
    assert "lacks CAP_SYS_RESOURCE;" in result.stderr, result.stderr
    for other in ("CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_BPF"):
        assert other not in result.stderr
    assert '"default-runtime": "qscale-runc"' in result.stderr  # the exact change to make
    assert "qscale did not start this Docker, so it changes nothing" in result.stderr
    assert "said: docker: Error response from daemon" in result.stderr  # docker's own reason


def test_complete_bounding_set_says_no_workaround(machine: FakeMachine) -> None:
    machine.capabilities(FULL_CAPBND)
    machine.docker_answers("runc")
    result = machine.run()
    assert result.returncode != 0
    assert "No capability is missing" in result.stderr, result.stderr
    assert "CAP_" not in result.stderr.split("No capability is missing")[0].split("said:")[0]
    assert machine.dockerd_starts() == []


def test_running_dockerd_that_does_not_answer_is_left_alone(machine: FakeMachine) -> None:
    """docker info fails (no access to the socket, or slow under load) while a dockerd runs."""
    before = user_daemon_json()
    machine.daemon_json.write_text(before)
    users = machine.start_dockerd("-H", "fd://")
    (machine.state / "up").unlink()
    machine.docker_denied()
    machine.forget_starts()

    result = machine.run(manage=True)

    assert result.returncode != 0
    _unchanged(machine, before)
    assert machine.alive(users)
    assert machine.dockerd_starts() == [], "a second dockerd was started beside the user's"
    assert f"dockerd is running (pid {users})" in result.stderr, result.stderr
    assert "permission denied" in result.stderr


def test_no_docker_and_no_opt_in_only_explains(machine: FakeMachine) -> None:
    before = user_daemon_json()
    machine.daemon_json.write_text(before)
    result = machine.run()
    assert result.returncode != 0
    _unchanged(machine, before)
    assert machine.dockerd_starts() == []
    assert not any(c.startswith("apt-get") for c in machine.calls()), "installed packages"
    assert "Docker is not running" in result.stderr
    assert "QSCALE_MANAGE_DOCKERD=1" in result.stderr


def test_probe_never_uses_whatever_image_is_newest(machine: FakeMachine) -> None:
    """The privileged probe runs qscale's own probe image, not `docker images | head -1`."""
    machine.docker_answers("qscale-runc")
    result = machine.run()
    assert result.returncode == 0, result.stderr
    runs = [c for c in machine.calls() if c.startswith("docker run")]
    assert runs, machine.calls()
    assert all("qscale/privileged-probe:" in c and "--privileged" in c for c in runs), runs
    assert not any("someones/app" in c for c in runs)
    assert machine.dockerd_starts() == []


# --- the dockerd qscale itself started (this CI machine) -----------------------------

def test_opt_in_starts_dockerd_from_scratch_without_writing_daemon_json(
        machine: FakeMachine) -> None:
    """CI on a fresh VM: no daemon.json, no dockerd; the wrapper goes on the command line."""
    result = machine.run(manage=True)
    assert result.returncode == 0, result.stderr
    assert not machine.daemon_json.exists(), "daemon.json was created"
    (start,) = machine.dockerd_starts()
    wrapper = machine.cache / "bin" / "qscale-runc"
    assert f"--add-runtime qscale-runc={wrapper}" in start
    assert "--default-runtime qscale-runc" in start
    assert f"--pidfile {machine.pidfile}" in start
    assert wrapper.exists()


def test_opt_in_keeps_the_users_settings(machine: FakeMachine) -> None:
    """A daemon.json with data-root and mirrors (no runtime keys) is read as it is."""
    before = json.dumps({"data-root": "/srv/docker",
                         "registry-mirrors": ["https://mirror.example.internal"]}) + "\n"
    machine.daemon_json.write_text(before)
    result = machine.run(manage=True)
    assert result.returncode == 0, result.stderr
    _unchanged(machine, before)
    (start,) = machine.dockerd_starts()
    assert f"--config-file {machine.daemon_json}" in start
    assert "--default-runtime qscale-runc" in start


def test_opt_in_stops_before_overriding_another_default_runtime(machine: FakeMachine) -> None:
    before = user_daemon_json()
    machine.daemon_json.write_text(before)
    result = machine.run(manage=True)
    assert result.returncode != 0
    _unchanged(machine, before)
    assert machine.dockerd_starts() == []
    assert '"runtimes" without qscale-runc' in result.stderr, result.stderr


def test_legacy_daemon_json_of_this_vm_is_used_unchanged(machine: FakeMachine) -> None:
    """The daemon.json an older qscale wrote on this VM: dockerd starts with it, untouched."""
    before = LEGACY_DAEMON_JSON % (machine.cache / "bin" / "qscale-runc")
    machine.daemon_json.write_text(before)
    result = machine.run(manage=True)
    assert result.returncode == 0, result.stderr
    _unchanged(machine, before)
    (start,) = machine.dockerd_starts()
    assert "--add-runtime" not in start and "--default-runtime" not in start


def test_only_qscales_own_dockerd_is_restarted(machine: FakeMachine) -> None:
    """qscale's dockerd (its pidfile) lacking the wrapper is restarted with it; nothing else."""
    ours = machine.start_dockerd("--pidfile", str(machine.pidfile))
    users = machine.start_dockerd("-H", "fd://")
    machine.forget_starts()
    result = machine.run()
    assert result.returncode == 0, result.stderr
    assert machine.dockerd_stopped() == [ours]
    assert machine.alive(users)
    (start,) = machine.dockerd_starts()
    assert "--default-runtime qscale-runc" in start
    assert not machine.daemon_json.exists()


def test_stale_pidfile_naming_another_process_is_not_ours(machine: FakeMachine) -> None:
    """A pidfile left behind whose PID now belongs to the user's dockerd: not restarted."""
    users = machine.start_dockerd("-H", "fd://")
    machine.pidfile.write_text(f"{users}\n")
    machine.forget_starts()
    result = machine.run(manage=True)
    assert result.returncode != 0
    assert machine.alive(users)
    assert machine.dockerd_starts() == []
    assert "lacks CAP_SYS_RESOURCE" in result.stderr
