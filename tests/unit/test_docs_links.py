"""Every relative link of the user pages resolves: the file exists and, for `#anchor`,
the page has that heading (GitHub's anchors: lower case, punctuation dropped, spaces to
hyphens, -1, -2 for repeats). A renamed section or a moved page fails here instead of
leaving a reader on a dead link."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted({ROOT / "README.md", ROOT / "helm" / "qscale" / "README.md",
                *ROOT.glob("docs/**/*.md"), *ROOT.glob("*/README.md")})
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The page without its fenced blocks (a `# comment` there is not a heading)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for title in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", _prose(page.read_text()),
                            re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def test_anchor_rule() -> None:
    assert "why-no-task-is-lost-what-is-guaranteed-and-where-it-ends" in anchors(
        ROOT / "README.md")
    assert "python--m-worker" in anchors(ROOT / "docs" / "reference" / "cli.md")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    dead = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            dead.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            dead.append(f"{target}: no heading with that anchor in {linked.name}")
    assert not dead, f"{page.relative_to(ROOT)}:\n" + "\n".join(dead)
