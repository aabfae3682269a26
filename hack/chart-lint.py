#!/usr/bin/env python3
"""kube-score and Checkov on every helm/qscale/ci/*-values.yaml render; clean, or justified.

Each render is scored by both tools (built/installed by hack/test-tools.sh into
$QSCALE_CACHE/bin). A finding passes only when hack/chart-lint-exceptions.yaml lists
its check for that object, with a reason; an exception that matches no finding in
any render fails too, so the list stays true. Exit 0 when clean, 1 otherwise.

    .venv/bin/python hack/chart-lint.py      (make test runs it)
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "qscale"
EXCEPTIONS = REPO / "hack" / "chart-lint-exceptions.yaml"
BIN = Path(os.environ.get("QSCALE_CACHE", "/var/cache/qscale")) / "bin"
Finding = tuple[str, str, str, str]  # (tool, check, "Kind/name", detail)


def tool(name: str) -> str:
    path = BIN / name
    if not os.access(path, os.X_OK):
        sys.exit(f"chart-lint: {path} missing: run `bash hack/test-tools.sh` (make test does)")
    return str(path)


def render(values: Path, out: Path) -> None:
    helm = os.environ.get("HELM") or tool("helm")
    result = subprocess.run([helm, "template", "qscale", str(CHART), "--namespace", "qscale",
                             "-f", str(values)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"chart-lint: helm template -f {values.name} failed:\n{result.stderr}")
    out.write_text(result.stdout)


def kube_score(path: Path) -> list[Finding]:
    result = subprocess.run([tool("kube-score"), "score", "-o", "json", str(path)],
                            capture_output=True, text=True, check=False)
    if not result.stdout.strip():
        sys.exit(f"chart-lint: kube-score failed on {path.name}:\n{result.stderr}")
    findings = []
    for obj in json.loads(result.stdout):
        name = f"{obj['type_meta']['kind']}/{obj['object_meta']['name']}"
        for check in obj["checks"]:
            if check["skipped"] or check["grade"] >= 10:  # 10: OK
                continue
            detail = "; ".join(c.get("summary") or "" for c in check.get("comments") or [])
            findings.append(("kube-score", check["check"]["id"], name, detail))
    return findings


def checkov(path: Path) -> list[Finding]:
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE")  # offline: no guideline download
    result = subprocess.run([tool("checkov"), "-f", str(path), "--framework", "kubernetes",
                             "--skip-download", "--quiet", "-o", "json"],
                            capture_output=True, text=True, check=False, env=env)
    try:
        reports = json.loads(result.stdout)
    except ValueError:
        sys.exit(f"chart-lint: checkov failed on {path.name}:\n{result.stderr[-3000:]}")
    findings = []
    for report in reports if isinstance(reports, list) else [reports]:
        for failed in report.get("results", {}).get("failed_checks", []):
            kind, _, rest = failed["resource"].partition(".")
            name = rest.split(".")[1] if "." in rest else rest  # Kind.namespace.name[.labels]
            findings.append(("checkov", failed["check_id"], f"{kind}/{name}",
                             failed["check_name"]))
    return findings


def main() -> int:
    exceptions: dict[str, list[dict[str, Any]]] = yaml.safe_load(EXCEPTIONS.read_text())
    rules = [(tool_name, entry) for tool_name, entries in exceptions.items()
             for entry in entries]
    for tool_name, entry in rules:
        if not str(entry.get("why", "")).strip():
            sys.exit(f"chart-lint: {tool_name} {entry.get('check')}: an exception needs a why")
    used: set[int] = set()
    unexplained: list[str] = []
    values_files = sorted((CHART / "ci").glob("*-values.yaml"))
    with tempfile.TemporaryDirectory() as tmp:
        for values in values_files:
            out = Path(tmp) / values.name
            render(values, out)
            findings = sorted(set(kube_score(out) + checkov(out)))
            for finding in findings:
                tool_name, check, obj, detail = finding
                match = next((i for i, (t, e) in enumerate(rules) if t == tool_name
                              and e["check"] == check
                              and any(fnmatch.fnmatch(obj, p) for p in e["objects"])), None)
                if match is None:
                    unexplained.append(f"ci/{values.name}: {tool_name} {check} {obj}: {detail}")
                else:
                    used.add(match)
            print(f"chart-lint: ci/{values.name}: {len(findings)} findings, "
                  f"{sum(1 for f in findings if f not in unexplained)} justified")
    stale = [f"{t} {e['check']} {e['objects']}" for i, (t, e) in enumerate(rules)
             if i not in used]
    for line in unexplained:
        print(f"chart-lint: NOT JUSTIFIED {line}", file=sys.stderr)
    for line in stale:
        print(f"chart-lint: STALE exception (matches nothing): {line}", file=sys.stderr)
    if unexplained or stale:
        return 1
    print(f"chart-lint: ok ({len(values_files)} renders, kube-score and checkov, "
          f"{len(rules)} justified exceptions in {EXCEPTIONS.relative_to(REPO)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
