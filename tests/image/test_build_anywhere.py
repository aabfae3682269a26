"""The qscale image builds on a host whose Python is not the image's (issue #11, item 2).

hack/build-image.sh's offline build makes dist/wheelhouse with the host's Python and
the image installs it with no index. Here the wheelhouse is built by a Python of
another minor version than the image's 3.11 (3.12 from pyenv or uv on this kind of
machine), in a copy of the checkout, and the image it gives must install, import
worker and controller, and run a task against the real Redis with a read-only root
filesystem as the non-root user. On ffc2428 the 3.12 host downloaded cp312 wheels
(pydantic-core, PyYAML) and the image's `pip install --no-index` found none to use.

The build is cached by Docker's layer cache, keyed on the wheelhouse's content:
built for the image's Python, it is byte-identical whichever Python made it, so after
`hack/build-image.sh` (the e2e fixtures run it) the image layers are a cache hit and
the test costs the wheelhouse download and the task. `make image-check` adds the
builds that need a package index inside `docker build` (tests/image/heavy).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image.support import (
    IMAGE_PYTHON,
    REPO_ROOT,
    copy_checkout,
    docker_available,
    other_python,
    run_logged,
    smoke_image,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TAG = "qscale-test/host-python:latest"


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[Path]:
    docker_available()
    dst = tmp_path / "checkout"
    copy_checkout(dst)
    yield dst
    shutil.rmtree(dst, ignore_errors=True)


def test_wheelhouse_from_another_python_makes_a_working_image(
        checkout: Path, redis_url: str, queue_name: str) -> None:
    python, version = other_python()
    assert version[:2] != IMAGE_PYTHON, version
    env = {k: v for k, v in os.environ.items() if k not in ("BASE_IMAGE", "QSCALE_IMAGE_TAG")}
    env.update(PY=python, QSCALE_IMAGE_TAG=TAG)
    out = run_logged(["bash", str(checkout / "hack" / "build-image.sh"), "qscale"], env=env,
                     cwd=checkout, timeout=1800,
                     what=f"hack/build-image.sh with host Python {'.'.join(map(str, version))}")
    assert f"host Python {'.'.join(map(str, version))}" in out, out
    wheels = sorted(p.name for p in (checkout / "dist" / "wheelhouse").glob("*.whl"))
    abi = f"cp{IMAGE_PYTHON[0]}{IMAGE_PYTHON[1]}"
    for binary in ("pydantic_core", "pyyaml"):
        built = [w for w in wheels if w.lower().startswith(binary + "-")]
        assert built and all(f"-{abi}-{abi}-manylinux" in w for w in built), (binary, wheels)
    assert not [w for w in wheels if "-cp3" in w and f"-{abi}-" not in w], wheels

    smoke_image(TAG, redis_url, queue=queue_name)


def test_wheelhouse_refuses_a_python_it_cannot_target(tmp_path: Path) -> None:
    """An image whose Python is not CPython on glibc is refused before any download."""
    target = tmp_path / "target.json"
    target.write_text('{"implementation": "cpython", "libc": "", "libc_version": "",'
                      ' "python": [3, 11, 2], "machine": "x86_64", "env": {}}')
    proc = subprocess.run(["python3", str(REPO_ROOT / "hack" / "wheelhouse.py"), "pip-args",
                           str(target)], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode != 0
    assert "CPython on glibc only" in proc.stderr + proc.stdout
