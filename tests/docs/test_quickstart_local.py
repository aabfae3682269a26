"""The README's install and local quickstarts, run block by block as a reader pastes them.

The blocks are read from README.md, never retyped here. They run in a copy of the
checkout, in a fresh shell environment (system PATH, an empty HOME), against the test
Redis. What differs from a reader's machine, and only that: QSCALE_BROKER_URL names a
database of its own on the test Redis (the reader's default is database 0), so
concurrent runs never meet; QSCALE_HTTP_PORT is a free port; the virtualenv the
install block creates is kept between runs under $QSCALE_CACHE (the block still runs
`python3 -m venv` and `pip install .` on it), so only the first run downloads the
dependencies. A block shown right after a run block as ```text is output that must
appear.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from tests.docs.markdown import Block, blocks, section
from tests.docs.session import Terminal

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CHART_README = ROOT / "helm" / "qscale" / "README.md"
LOCAL_SECTIONS = ("Install", "Quickstart: a worker on your machine",
                  "Quickstart: your own tasks")
LOCK_KEY = "qscale-docs-test:lock"
CACHE = Path(os.environ.get("QSCALE_CACHE", "/var/cache/qscale")) / "docs-test"


# The sections whose blocks a test runs (or, for chart values, renders and checks).
RUN_BY = {
    README: {title: "tests/docs/test_quickstart_local.py" for title in LOCAL_SECTIONS}
    | {"Deploying on your own cluster": "tests/e2e/test_newcomer_install.py"},
    CHART_README: {"Install": "tests/e2e/test_newcomer_install.py",
                   "Adding your own tasks": "tests/chart/test_readme_examples.py"},
}


def test_every_block_of_the_readmes_is_run_or_marked() -> None:
    """A block the docs test cannot classify, or that sits where no test runs it, would
    silently go untested: each is run by a test or marked not-tested with its reason."""
    problems = [f"{b.where}: {b.problem()}" for page in (README, CHART_README)
                for b in blocks(page) if b.problem()]
    for page, sections in RUN_BY.items():
        run = {b for title in sections for b in section(page, title)}
        problems += [f"{b.where}: a {b.lang} block no test runs: run it or mark it "
                     "`not-tested: why`" for b in blocks(page)
                     if b.lang not in ("text", "console") and b.skip_reason is None
                     and b not in run]
    assert not problems, "\n".join(problems)


# Blocks shown but not run where they stand, because a test runs the same commands
# elsewhere: (page, section, a word of the block) -> (page, section) where they run.
SAME_AS = {
    (README, "Quickstart: on Kubernetes", "helm install"): (CHART_README, "Install"),
    (README, "Sending tasks from your application", "port-forward"):
        (README, "Deploying on your own cluster"),
}


def _commands(text: str) -> set[str]:
    """A shell block's commands: continuations joined, comments and output redirects gone."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = set()
    for raw in joined.splitlines():
        line = " ".join(re.sub(r"\s+#.*$", "", raw).replace(">/dev/null", " ").split())
        if line and not line.startswith("#"):
            found.add(line)
    return found


@pytest.mark.parametrize("shown", list(SAME_AS), ids=lambda key: key[1])
def test_blocks_marked_as_run_elsewhere_are_run_there(shown: tuple[Path, str, str]) -> None:
    """A not-tested block that says its commands run elsewhere: every one of them does."""
    page, title, word = shown
    candidates = [b for b in section(page, title)
                  if b.skip_reason is not None and word in b.text]
    assert len(candidates) == 1, f"{page.name} ({title}): no single block with {word!r}"
    target_page, target_title = SAME_AS[shown]
    ran = set().union(*(_commands(b.text) for b in section(target_page, target_title)
                        if b.lang == "sh" and b.skip_reason is None))
    missing = _commands(candidates[0].text) - ran
    assert not missing, (f"{candidates[0].where}: not run in {target_page.name} "
                         f"({target_title}): {sorted(missing)}")


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[str]:
    """A database of the test Redis that nothing else uses, emptied afterwards."""
    parts = urlsplit(redis_url)
    owner = uuid.uuid4().hex
    for db in range(2, 14):  # 0: the other tests; 14, 15: tests and benchmarks
        client = redis.Redis(host=parts.hostname or "127.0.0.1", port=parts.port or 6379,
                             db=db)
        if not client.set(LOCK_KEY, owner, nx=True, ex=900):
            continue
        if client.dbsize() != 1:  # someone else's data: leave it alone
            client.delete(LOCK_KEY)
            continue
        try:
            yield f"redis://{parts.hostname}:{parts.port}/{db}"
        finally:
            if client.get(LOCK_KEY) == owner.encode():
                client.flushdb()
        return
    pytest.fail("no free database 2-13 on the test Redis for the docs test", pytrace=False)


def copy_checkout(target: Path) -> Path:
    """The tracked (and new, unignored) files of the repository, as a reader's checkout."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def fresh_env(home: Path) -> dict[str, str]:
    """A new terminal's environment: system PATH, no virtualenv, nothing of the test's."""
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(home), "LANG": "C.UTF-8", "TERM": "dumb",
            "PIP_CACHE_DIR": str(CACHE / "pip-cache"), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_PROGRESS_BAR": "off"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_blocks(terminal: Terminal, page_blocks: list[Block]) -> list[str]:
    """Run each block in order; a ```text block after a run block is its expected output."""
    outputs: list[str] = []
    last = ""
    for block in page_blocks:
        if block.lang in ("text", "console"):
            missing = [line for line in block.text.splitlines()
                       if line.strip() and line.strip() not in last]
            assert not missing, f"{block.where}: shown output not printed: {missing}\n{last}"
            continue
        if block.skip_reason is not None:
            continue
        last = terminal.run(block)
        outputs.append(last)
    return outputs


@pytest.mark.redis
@pytest.mark.timeout(900)
def test_local_quickstarts_as_written(tmp_path: Path, redis_db: str) -> None:
    page_blocks = [b for title in LOCAL_SECTIONS for b in section(README, title)]
    assert any(b.background for b in page_blocks), "no worker started: the test lost track"
    CACHE.mkdir(parents=True, exist_ok=True)
    deps = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]
    env = {**fresh_env(tmp_path / "home"), "QSCALE_BROKER_URL": redis_db,
           "QSCALE_HTTP_PORT": str(_free_port())}
    logs = tmp_path / "logs"
    logs.mkdir()
    with (CACHE / f"checkout-{deps}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one run at a time uses the kept checkout
        checkout = CACHE / f"checkout-{deps}"  # its .venv is kept: see the docstring
        checkout.mkdir(exist_ok=True)
        for old in checkout.iterdir():
            if old.name != ".venv":
                shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
        copy_checkout(checkout)
        terminal = Terminal(checkout, env, logs)
        try:
            outputs = run_blocks(terminal, page_blocks)
        except AssertionError:
            print("\n".join(terminal.transcript))
            raise
        finally:
            stopped = terminal.close()
    assert all(stopped), f"a worker did not stop on SIGTERM:\n{terminal.background_logs()}"
    text = "\n".join(outputs)
    for shown in ("SUCCESS 5", "[0, 2, 4, 6, 8]", "flaky failed after 4 runs",
                  "myapp.tasks.flaky"):
        assert shown in text, f"{shown!r} not in the quickstart's output:\n{text[-3000:]}"
