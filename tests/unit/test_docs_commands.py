"""The commands the user pages name exist: every `python -m worker|controller ...` (its
subcommands and --flags, checked against the real argparse trees) and every `make X`
(a target of the Makefile). A renamed flag or target fails here, not in a reader's
terminal. Code only: inline `code` spans and fenced blocks, never prose.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from controller.__main__ import _parser as controller_parser
from tests.docs.markdown import blocks
from worker.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "helm" / "qscale" / "README.md",
         *sorted((ROOT / "docs").glob("*.md"))]
PYTHON_M = re.compile(r"python -m (worker|controller)(?![.\w])([^`\n|;&)]*)")
MAKE = re.compile(r"(?:^|[\s;(]|&&)make ([a-z][\w-]*)")


def _code(page: Path) -> list[tuple[str, str]]:
    """(where, code) for every inline code span and every fenced block of the page."""
    text = page.read_text()
    fenced = blocks(page)
    found = [(b.where, re.sub(r"\\\n\s*", " ", b.text)) for b in fenced]
    outside = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    found += [(f"{page.name} (inline)", span) for span in re.findall(r"`([^`\n]+)`", outside)]
    return found


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _first_choices(parser: argparse.ArgumentParser) -> list[str] | None:
    """The choices of the parser's first positional argument (`dlq list|requeue|purge`)."""
    for action in parser._actions:
        if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
            return [str(c) for c in action.choices] if action.choices else None
    return None


def _problem(parser: argparse.ArgumentParser, args: str) -> str | None:
    first = True
    for token in re.sub(r"\s#.*", "", args).split():
        if token.startswith("--"):
            flag = token.split("=", 1)[0]
            if flag not in parser._option_string_actions:
                return f"no flag {flag} in `{parser.prog}`"
            continue
        subs = _subparsers(parser)
        if subs:
            if token not in subs:
                return f"no command {token!r} in `{parser.prog}` ({', '.join(subs)})"
            parser, first = subs[token], True
            continue
        choices = _first_choices(parser)
        if first and choices is not None and token not in choices:
            return f"`{parser.prog}` takes {'|'.join(choices)}, not {token!r}"
        first = False
    return None


def _commands() -> list[tuple[str, str, str]]:
    return [(where, program, args.strip()) for page in PAGES for where, code in _code(page)
            for program, args in PYTHON_M.findall(code)]


def test_the_scan_finds_the_commands() -> None:
    found = {f"{program} {args.split()[0]}" for _, program, args in _commands() if args}
    assert {"worker run", "worker enqueue", "worker result", "worker status",
            "worker dlq", "controller run"} <= found, found


def test_every_python_m_command_in_the_docs_exists() -> None:
    parsers = {"worker": build_parser(), "controller": controller_parser()}
    problems = []
    for where, program, args in _commands():
        problem = _problem(parsers[program], args)
        if problem:
            problems.append(f"{where}: python -m {program} {args}: {problem}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_make_target_in_the_docs_exists(page: Path) -> None:
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    named = {(where, target) for where, code in _code(page) for target in MAKE.findall(code)}
    missing = sorted(f"{where}: make {target}" for where, target in named
                     if target not in targets)
    assert not missing, "\n".join(missing)
