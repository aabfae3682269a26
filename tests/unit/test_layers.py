"""worker/ is laid out by role, and each layer imports only the layers below it:
core (errors, envelope, settings, results) < brokers < api < runtime < cli."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parents[2] / "worker"
LAYERS = ["core", "brokers", "api", "runtime", "cli"]
CORE = {"errors", "envelope", "settings", "results"}


def layer_of(module: str) -> str | None:
    """The layer of a `worker.x.y` module name (None: the package itself, demo tasks)."""
    parts = module.split(".")
    if parts[0] != "worker" or len(parts) < 2:
        return None
    if parts[1] in CORE:
        return "core"
    return parts[1] if parts[1] in LAYERS else None


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(WORKER.rglob("*.py")):
        rel = path.relative_to(WORKER.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        out.append((name, path))
    return out


@pytest.mark.parametrize(("name", "path"), modules(), ids=[n for n, _ in modules()])
def test_imports_only_go_down(name: str, path: Path) -> None:
    own = layer_of(name)
    if own is None:
        return
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for target in targets:
            other = layer_of(target)
            if other is not None:
                assert LAYERS.index(other) <= LAYERS.index(own), (
                    f"{name} ({own}) imports {target} ({other}): layers only import down")
