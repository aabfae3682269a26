"""Code blocks of a markdown page, with the docs test's convention for each.

The convention, written in a fenced block's info string (shown in the markdown source,
not by a renderer) or its first line:

    ```sh                          run in the reader's terminal; must exit 0
    ```sh second-terminal          started in the background, like a worker left running
                                   in another terminal; stopped (SIGTERM) at the end
    ```sh not-tested: <why>        not run by the docs test, and says why
    ```python / yaml / dockerfile  whose first line is `# <path>`: the file to save, written
                                   where the reader's terminal is
    ```python                      otherwise: run with the terminal's `python`

`text` and `console` blocks are output, never run; every block names its language. A
block that fits none of these fails the test: every quickstart block is run or marked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RUNNABLE = ("sh", "bash", "shell", "python", "yaml", "dockerfile")
OUTPUT = ("text", "console")
_FENCE = re.compile(r"^(```+)\s*(\S*)\s*(.*)$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_FILE_LINE = re.compile(r"^#\s+([\w./-]+\.(?:py|ya?ml|txt|toml)|[\w./-]*Dockerfile[\w.-]*)\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    heading: str      # the nearest heading above it
    lang: str
    info: str         # the rest of the info string
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line} ({self.heading})"

    @property
    def skip_reason(self) -> str | None:
        match = re.match(r"not-tested:\s*(.*)", self.info)
        return match.group(1).strip() if match else None

    @property
    def background(self) -> bool:
        return self.info.strip() == "second-terminal"

    @property
    def file(self) -> str | None:
        """The path a reader saves this block as (its first line `# path`)."""
        first = self.text.split("\n", 1)[0]
        match = _FILE_LINE.match(first)
        return match.group(1) if match and self.lang != "sh" else None

    def problem(self) -> str | None:
        """Why the docs test cannot tell what to do with this block, if it cannot."""
        if not self.lang:
            return "a block needs a language (`text` for output)"
        if self.lang in OUTPUT or self.skip_reason is not None:
            return None if self.skip_reason != "" else "not-tested without a reason"
        if self.lang not in RUNNABLE:
            return f"unknown block language {self.lang!r} (mark it not-tested: why)"
        if self.lang in ("yaml", "dockerfile") and self.file is None:
            return f"a {self.lang} block needs a first line `# <file name>` or not-tested"
        if self.info and not self.background:
            return f"unknown marker {self.info!r}"
        return None


def blocks(path: Path) -> list[Block]:
    """Every fenced block of the page, in order, with the heading it sits under."""
    found: list[Block] = []
    heading, fence, start, lang, info = "", "", 0, "", ""
    body: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if fence:
            if line.strip() == fence:
                found.append(Block(path, start, heading, lang, info, "\n".join(body) + "\n"))
                fence = ""
            else:
                body.append(line)
            continue
        match = _FENCE.match(line)
        if match:
            fence, lang, info, start, body = match.group(1), match.group(2).lower(), \
                match.group(3), number, []
            continue
        heading_match = _HEADING.match(line)
        if heading_match:
            heading = heading_match.group(2)
    assert not fence, f"{path}: unclosed code block from line {start}"
    return found


def section(path: Path, title: str) -> list[Block]:
    """The blocks under the heading `title` and its subheadings; fails if it is gone."""
    text = path.read_text().splitlines()
    level = 0
    titles: dict[str, int] = {}
    inside: set[str] = set()
    fence = False
    for line in text:
        if line.startswith("```"):
            fence = not fence
            continue
        match = None if fence else _HEADING.match(line)
        if not match:
            continue
        depth, name = len(match.group(1)), match.group(2)
        titles[name] = depth
        if name == title:
            level = depth
            inside.add(name)
        elif level and depth > level:
            inside.add(name)
        elif level and depth <= level:
            level = 0
    assert title in titles, f"{path.name} has no heading {title!r} (renamed? update the test)"
    return [b for b in blocks(path) if b.heading in inside]
