"""The generated references (docs/reference, by hack/gen-docs.py) match the code.

A settings field, a CLI flag, a WorkerPool field or a task API signature that changes
without `python hack/gen-docs.py` fails here with the diff. And no QSCALE_ variable is
read by the code or set by the chart without a line in the settings reference.
"""

from __future__ import annotations

import ast
import difflib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference"
VARIABLE = re.compile(r"\bQSCALE_[A-Z0-9_]*[A-Z0-9]\b")


def test_generated_references_are_current(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "hack" / "gen-docs.py"), "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    pages = sorted(p.name for p in tmp_path.glob("*.md"))
    assert pages == ["cli.md", "settings.md", "task-api.md", "workerpool.md"]
    stale = []
    for name in pages:
        want = (tmp_path / name).read_text().splitlines()
        have = (REFERENCE / name).read_text().splitlines() if (REFERENCE / name).is_file() \
            else []
        if want != have:
            diff = difflib.unified_diff(have, want, f"docs/reference/{name}", "generated",
                                        lineterm="", n=1)
            stale.append("\n".join(list(diff)[:30]))
    assert not stale, ("stale references; run `python hack/gen-docs.py`:\n"
                       + "\n\n".join(stale))


def _variables_in_code() -> dict[str, str]:
    """QSCALE_ names in the string literals of worker/ and controller/ (where each is)."""
    found: dict[str, str] = {}
    for path in sorted([*ROOT.glob("worker/**/*.py"), *ROOT.glob("controller/**/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for name in VARIABLE.findall(node.value):
                    found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def _variables_in_chart() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted((ROOT / "helm" / "qscale" / "templates").rglob("*")):
        if path.is_file():
            for name in re.findall(r"name: (QSCALE_[A-Z0-9_]+)", path.read_text()):
                found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def test_every_variable_the_code_reads_or_the_chart_sets_is_documented() -> None:
    documented = set(re.findall(r"^\| `(QSCALE_[A-Z0-9_]+)` \|",
                                (REFERENCE / "settings.md").read_text(), re.MULTILINE))
    used = {**_variables_in_chart(), **_variables_in_code()}
    assert len(used) > 20, used  # the scan itself works
    missing = {name: where for name, where in used.items() if name not in documented}
    assert not missing, f"QSCALE_ variables without a settings field (and so a doc): {missing}"
