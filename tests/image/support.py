"""Helpers of the image tests: a copy of the checkout, another host Python, a smoke run."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from worker.api.client import Client
from worker.envelope import Envelope

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_PYTHON = (3, 11)          # Debian bookworm's python3, the image's
# What hack/build-image.sh and the Dockerfile read (the rest of the checkout is not
# in the build context: .dockerignore).
CONTEXT = ("pyproject.toml", "README.md", "Dockerfile", ".dockerignore", "worker",
           "controller", "hack/build-image.sh", "hack/wheelhouse.py")


def copy_checkout(dst: Path, with_wheelhouse: bool = False) -> None:
    """The files an image build reads, from this checkout's working tree."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for rel in CONTEXT:
        src, target = REPO_ROOT / rel, dst / rel
        if not src.exists():  # an older checkout (the test is also run against main)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=ignore)
        else:
            shutil.copy2(src, target)
    if with_wheelhouse:
        shutil.copytree(REPO_ROOT / "dist" / "wheelhouse", dst / "dist" / "wheelhouse")


def docker_available() -> None:
    proc = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False,
                          timeout=60)
    if proc.returncode != 0:
        pytest.fail(f"docker is not reachable: {proc.stderr.strip()[-300:]} "
                    "(make cluster sets it up)", pytrace=False)


def _version(python: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([python, "-c", "import sys, pip; print(*sys.version_info[:3])"],
                             capture_output=True, text=True, check=False, timeout=60)
    except OSError:
        return None
    if out.returncode != 0:
        return None
    return tuple(int(p) for p in out.stdout.split())


def other_python() -> tuple[str, tuple[int, ...]]:
    """A Python with pip whose minor version is not the image's: QSCALE_OTHER_PYTHON, else
    3.12/3.13/3.10 from PATH, pyenv or uv. Never skips: none is a failure."""
    wanted = os.environ.get("QSCALE_OTHER_PYTHON")
    candidates = [wanted] if wanted else []
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for minor in ("3.12", "3.13", "3.10"):
        candidates += sorted(glob.glob(f"{pyenv_root}/versions/{minor}.*/bin/python{minor}"))
        if shutil.which(f"python{minor}"):
            candidates.append(f"python{minor}")
        if shutil.which("uv"):
            found = subprocess.run(["uv", "python", "find", minor], capture_output=True,
                                   text=True, check=False, timeout=60).stdout.strip()
            if found:
                candidates.append(found)
    for python in candidates:
        version = _version(python)
        if version and version[:2] != IMAGE_PYTHON:
            return python, version
        if wanted:
            pytest.fail(f"QSCALE_OTHER_PYTHON={wanted} is not a Python other than "
                        f"{IMAGE_PYTHON} with pip (got {version})", pytrace=False)
    pytest.fail("no host Python other than the image's 3.11 with pip: install one "
                "(`uv python install 3.12`, `pyenv install 3.12`) or set QSCALE_OTHER_PYTHON",
                pytrace=False)


def run_logged(argv: list[str], *, env: dict[str, str], cwd: Path, timeout: float,
               what: str) -> str:
    """Run a build; its stderr (the build's log lines) is returned, or the test fails."""
    try:
        proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what} did not finish in {timeout:.0f}s: {exc}", pytrace=False)
    if proc.returncode != 0:
        logs = "".join(f"\n--- {p.name} ---\n" + p.read_text(errors="replace")[-2500:]
                       for p in sorted((cwd / "dist").glob("*.log")))
        pytest.fail(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-1500:]}\n"
                    f"{proc.stderr[-2500:]}{logs}", pytrace=False)
    return proc.stdout + proc.stderr


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False,
                          timeout=timeout)


def smoke_image(tag: str, redis_url: str, queue: str) -> None:
    """The image imports worker and controller as the non-root user, and a worker run
    from it with a read-only root filesystem completes a task sent through real Redis."""
    probe = _docker("run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
                    "--entrypoint", "python", tag, "-c",
                    "import os, sys, worker, controller; "
                    "print(os.getuid(), *sys.version_info[:2])")
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["10001", *map(str, IMAGE_PYTHON)], probe.stdout

    run = _docker("run", "-d", "--network", "host", "--read-only", "--tmpfs", "/tmp",
                  "-e", f"QSCALE_BROKER_URL={redis_url}", "-e", f"QSCALE_QUEUES={queue}",
                  "-e", "QSCALE_IMPORTS=worker.demo_tasks", "-e", "QSCALE_CONCURRENCY=1",
                  "-e", "QSCALE_HTTP_HOST=127.0.0.1", "-e", "QSCALE_HTTP_PORT=0", tag)
    assert run.returncode == 0, run.stderr
    container = run.stdout.strip()
    try:
        with Client(redis_url) as client:
            handle = client.send(Envelope.create("qscale.demo.add", [2, 3], queue=queue))
            try:
                assert handle.get(timeout=120) == 5
            except Exception as exc:
                logs = _docker("logs", "--tail", "40", container)
                raise AssertionError(f"the task did not complete in the image: {exc!r}\n"
                                     f"{logs.stdout}{logs.stderr}") from exc
    finally:
        _docker("rm", "-f", container)
