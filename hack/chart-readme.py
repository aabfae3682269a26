#!/usr/bin/env python3
"""Rewrite the "## Values" table of helm/qscale/README.md from values.yaml.

Descriptions come from the `# -- ` comment above each key (continued by the plain
comment lines that follow it), like helm-docs does. A key with a description is
one row, its children are not listed separately. `--check` fails when the README
is stale.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

CHART = Path(__file__).resolve().parents[1] / "helm" / "qscale"
HEADING = "## Values\n"
KEY_LINE = re.compile(r"^(\s*)([A-Za-z_][\w-]*):(.*)$")


def lookup(data: Any, path: list[str]) -> Any:
    for part in path:
        data = data[part]
    return data


def rows(text: str) -> list[tuple[str, str, str]]:
    data = yaml.safe_load(text)
    stack: list[tuple[int, str]] = []
    description: list[str] = []
    described_prefixes: list[str] = []
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            description = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if description:
                description.append(stripped[1:].strip())
            continue
        match = KEY_LINE.match(line)
        if not match or stripped.startswith("- "):
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [key]
        dotted = ".".join(path)
        try:
            value = lookup(data, path)
        except (KeyError, TypeError):  # a key inside a list item (pools[0].queues)
            description = []
            continue
        covered = any(dotted.startswith(p + ".") for p in described_prefixes)
        if not covered and (description or not isinstance(value, dict) or not value):
            default = json.dumps(value)
            if len(default) > 60:
                default = default[:57] + "..."
            text_ = " ".join(description).replace("|", "\\|")
            out.append((dotted, default.replace("|", "\\|"), text_))
            if description and isinstance(value, dict):
                described_prefixes.append(dotted)
        if isinstance(value, dict) and value:
            stack.append((indent, key))
        description = []
    return out


def table() -> str:
    lines = ["| Key | Default | Description |", "|---|---|---|"]
    lines += [f"| `{k}` | `{d}` | {t} |" for k, d, t in rows((CHART / "values.yaml").read_text())]
    return "\n".join(lines) + "\n"


def main() -> int:
    readme_path = CHART / "README.md"
    readme = readme_path.read_text()
    if HEADING not in readme:
        print(f"chart-readme: no '{HEADING.strip()}' heading in {readme_path}", file=sys.stderr)
        return 1
    updated = readme[: readme.index(HEADING) + len(HEADING)] + "\n" + table()
    if "--check" in sys.argv[1:]:
        if updated != readme:
            print(f"chart-readme: {readme_path} is stale: run hack/chart-readme.py",
                  file=sys.stderr)
            return 1
        return 0
    readme_path.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
