"""`docker build .` with a package index and no dist/wheelhouse (issue #11, item 2).

The builder stage builds qscale and its dependencies for the image's own Python from
the index; nothing is prepared on the host. No container registry is reachable here,
so the base is the Debian bookworm image built by hack/images/debian.sh
(`BASE_IMAGE=qscale/debian:bookworm`): the same Dockerfile stages run as with the
default python:3.11-slim-bookworm, plus the apt step that installs python3 and tini.
This machine reaches PyPI through a TLS-intercepting proxy, so its extra CA
certificates (/usr/local/share/ca-certificates) go in as BUILD_CA_CERT.
On ffc2428 the build fails at once: COPY dist/wheelhouse finds nothing.

Also here: the offline build (hack/build-image.sh) with every other host Python found.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.image.support import (
    IMAGE_PYTHON,
    copy_checkout,
    docker_available,
    run_logged,
    smoke_image,
)

BASE = "qscale/debian:bookworm"


def _extra_ca() -> str:
    if "QSCALE_BUILD_CA_CERT" in os.environ:
        return os.environ["QSCALE_BUILD_CA_CERT"]
    return "".join(Path(p).read_text() for p in
                   sorted(glob.glob("/usr/local/share/ca-certificates/**/*.crt", recursive=True)))


def test_docker_build_without_wheelhouse(tmp_path: Path, redis_url: str, queue_name: str) -> None:
    docker_available()
    ctx = tmp_path / "checkout"
    copy_checkout(ctx)
    assert not (ctx / "dist").exists()
    # A context no earlier build had (README.md is in it), so Docker's layer cache
    # cannot answer for the pip step: the index is really used, every run.
    with (ctx / "README.md").open("a") as readme:
        readme.write(f"\n<!-- image test {uuid.uuid4()} -->\n")
    tag = "qscale-test/online:latest"
    argv = ["docker", "build", "--build-arg", f"BASE_IMAGE={BASE}", "-t", tag]
    ca = _extra_ca()
    if ca:
        argv += ["--build-arg", f"BUILD_CA_CERT={ca}"]
    if os.environ.get("QSCALE_BUILD_NETWORK"):
        argv += ["--network", os.environ["QSCALE_BUILD_NETWORK"]]
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    proc = subprocess.run([*argv, str(ctx)], env=env, capture_output=True, text=True,
                          check=False, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Collecting pydantic" in proc.stdout, proc.stdout[-3000:]
    history = subprocess.run(["docker", "history", "--no-trunc", tag], capture_output=True,
                             text=True, check=True).stdout
    assert "BEGIN CERTIFICATE" not in history, "the build CA reached the final image"
    smoke_image(tag, redis_url, queue=queue_name)


def _pythons() -> list[str]:
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = []
    for minor in ("3.10", "3.12", "3.13"):
        found += sorted(glob.glob(f"{root}/versions/{minor}.*/bin/python{minor}"))[-1:]
    return found or ["python3"]


@pytest.mark.parametrize("python", _pythons())
def test_offline_build_with_each_host_python(tmp_path: Path, redis_url: str, queue_name: str,
                                             python: str) -> None:
    docker_available()
    ctx = tmp_path / "checkout"
    copy_checkout(ctx)
    tag = f"qscale-test/host-python:{Path(python).name}"
    env = {k: v for k, v in os.environ.items() if k not in ("BASE_IMAGE",)}
    env.update(PY=python, QSCALE_IMAGE_TAG=tag)
    run_logged(["bash", str(ctx / "hack" / "build-image.sh"), "qscale"], env=env, cwd=ctx,
               timeout=3600, what=f"hack/build-image.sh with {python}")
    assert IMAGE_PYTHON == (3, 11)
    smoke_image(tag, redis_url, queue=queue_name)
    shutil.rmtree(ctx, ignore_errors=True)
