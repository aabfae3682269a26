"""helm lint --strict on every CI values file, and k8s/ in sync with the chart."""

from __future__ import annotations

import filecmp
import os
import subprocess
from pathlib import Path

import pytest

from tests.chart.conftest import CHART, CI_VALUES, REPO_ROOT


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.stem for p in CI_VALUES])
def test_helm_lint_strict(helm: str, values: Path) -> None:
    result = subprocess.run([helm, "lint", "--strict", str(CHART), "-f", str(values)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def diff_trees(left: Path, right: Path) -> list[str]:
    cmp = filecmp.dircmp(left, right)
    problems = [f"only in {left}: {n}" for n in cmp.left_only]
    problems += [f"only in {right}: {n}" for n in cmp.right_only]
    problems += [f"differs: {left / n}" for n in cmp.diff_files]
    for sub in cmp.common_dirs:
        problems += diff_trees(left / sub, right / sub)
    return problems


def test_k8s_manifests_match_the_chart(helm: str, tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(REPO_ROOT / "hack" / "gen-k8s.sh"), str(tmp_path)],
                            capture_output=True, text=True, timeout=180, check=False,
                            env={**os.environ, "HELM": helm})
    assert result.returncode == 0, result.stderr
    problems = []
    for part in ("base", "overlays"):
        problems += diff_trees(REPO_ROOT / "k8s" / part, tmp_path / part)
    assert not problems, "k8s/ is stale, run `make k8s-gen`:\n" + "\n".join(problems)
