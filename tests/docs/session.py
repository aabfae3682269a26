"""A reader's terminal: markdown blocks run one after another, as a person pastes them.

Each shell block runs in a fresh `bash` that first restores what the blocks before it
left (exported variables, an activated virtualenv, the current directory), so `export`,
`. .venv/bin/activate` and `cd` carry over as they do in a terminal. A failing command
fails the block (`set -eo pipefail`). Background blocks (a worker left running in a
second terminal) get a process group of their own and are stopped with SIGTERM at the
end, then SIGKILL if they do not stop.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from tests.docs.markdown import Block


class Terminal:
    def __init__(self, cwd: Path, env: dict[str, str], log_dir: Path,
                 rewrite: dict[str, str] | None = None) -> None:
        self.env = env
        self.log_dir = log_dir
        self.state = log_dir / "terminal.env"
        self.cwd_file = log_dir / "terminal.cwd"
        self.cwd_file.write_text(str(cwd))
        self.state.write_text("")
        self.rewrite = rewrite or {}
        self.background: list[tuple[Block, subprocess.Popen[bytes], Path]] = []
        self.transcript: list[str] = []
        self.stopped = 0  # background processes before this index were stopped on purpose

    @property
    def cwd(self) -> Path:
        return Path(self.cwd_file.read_text().strip())

    def _text(self, block: Block) -> str:
        text = block.text
        for old, new in self.rewrite.items():
            text = text.replace(old, new)
        return text

    def _script(self, body: str, *, save: bool) -> str:
        restore = (f"set -a; . {shlex.quote(str(self.state))}; set +a\n"
                   f"cd {shlex.quote(str(self.cwd))}\n")
        keep = (f"\nexport -p > {shlex.quote(str(self.state))}\n"
                f"pwd > {shlex.quote(str(self.cwd_file))}\n") if save else ""
        return f"{restore}set -eo pipefail\n{body}\n{keep}"

    def run(self, block: Block, timeout: float = 300) -> str:
        """Run (or save, or start) one block; returns its output. Fails with context."""
        if block.file is not None:
            target = self.cwd / block.file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(self._text(block))
            self.transcript.append(f"[{block.where}] saved {block.file}")
            return ""
        body = self._text(block)
        if block.lang == "python":
            body = f"python - <<'QSCALE_DOCS_PY'\n{body}QSCALE_DOCS_PY"
        if block.background:
            return self._start(block, body)
        started = time.monotonic()
        try:
            done = subprocess.run(["bash", "-c", self._script(body, save=True)], env=self.env,
                                  capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{block.where}: still running after {timeout:.0f}s:\n"
                                 f"{body}\n{self.background_logs()}") from exc
        output = done.stdout + done.stderr
        self.transcript.append(f"[{block.where}] {time.monotonic() - started:.1f}s "
                               f"exit {done.returncode}\n{output[-1500:]}")
        if done.returncode != 0:
            raise AssertionError(f"{block.where}: exited {done.returncode}\n--- block ---\n"
                                 f"{body}\n--- output ---\n{output[-4000:]}\n"
                                 f"{self.background_logs()}")
        self.check_background()
        return output

    def _start(self, block: Block, body: str) -> str:
        """Start a second-terminal command; one already running there gets Ctrl-C first."""
        for earlier, proc, _ in self.background:
            if _group_alive(proc.pid):
                _signal_group(proc.pid, signal.SIGINT)
                if not _wait_group(proc, 40.0):
                    raise AssertionError(f"{earlier.where}: did not stop within 40 s of "
                                         f"Ctrl-C\n{self.background_logs()}")
        self.stopped = len(self.background)
        log = self.log_dir / f"background-{len(self.background)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(["bash", "-c", self._script(body, save=False)],
                                    env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.background.append((block, proc, log))
        self.transcript.append(f"[{block.where}] started in the background (pid {proc.pid})")
        time.sleep(1.0)
        self.check_background()
        return ""

    def check_background(self) -> None:
        """A second-terminal process that died (and was not stopped) is a failed block."""
        for block, proc, log in self.background[self.stopped:]:
            if proc.poll() is not None:
                raise AssertionError(f"{block.where}: the second-terminal command exited "
                                     f"{proc.returncode}:\n{log.read_text()[-3000:]}")

    def background_logs(self) -> str:
        return "".join(f"--- {block.where} (second terminal) ---\n{log.read_text()[-3000:]}\n"
                       for block, _, log in self.background)

    def close(self, grace: float = 40.0) -> list[bool]:
        """SIGTERM every background process group and wait until each is empty (a worker
        drains first); per group, whether it stopped by itself (False: SIGKILLed)."""
        for _, proc, _ in self.background:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        stopped = [_wait_group(proc, deadline - time.monotonic())
                   for _, proc, _ in self.background]
        for _, proc, _ in self.background:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        return stopped


def _wait_group(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """Wait until the process group led by `proc` is gone; False if it outlived `seconds`."""
    deadline = time.monotonic() + seconds
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        proc.poll()  # reap the leader, or the group never looks empty
        time.sleep(0.2)
    return not _group_alive(proc.pid)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
