"""Every input the fuzzer ever found failing stays a regression test, and the seed corpus
always passes; a short coverage-guided run is part of the suite (`make fuzz`: longer)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
KEPT = sorted(p for p in (HERE / "crashers").glob("*-*") if p.is_file()) + sorted(
    p for p in (HERE / "corpus").glob("*/*") if p.is_file())


@pytest.mark.parametrize("path", KEPT, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_kept_inputs_pass(path: Path) -> None:
    target = path.name.split("-", 1)[0] if path.parent.name == "crashers" else path.parent.name
    TARGETS[target](path.read_bytes())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_a_short_fuzzing_run_finds_nothing(target: str) -> None:
    seconds = os.environ.get("QSCALE_FUZZ_SECONDS", "15")
    done = subprocess.run([sys.executable, "-m", "tests.fuzz.run_atheris", target,
                           "--seconds", seconds], cwd=REPO, capture_output=True, text=True,
                          timeout=int(seconds) + 120, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Done " in done.stderr, done.stderr[-2000:]
