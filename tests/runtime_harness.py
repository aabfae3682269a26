"""Run `python -m worker run` as a real subprocess and talk to it, for runtime tests.

Also a loopback TCP proxy, so a test can take "the broker" away from a worker
and give it back without touching the shared Redis/RabbitMQ servers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from worker.brokers import Broker, open_broker
from worker.envelope import Envelope

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               worker: WorkerProcess | None = None, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    tail = f"\n--- worker log ---\n{worker.log()[-4000:]}" if worker else ""
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{tail}", pytrace=False)


def publish(broker_url: str, queue: str, task: str, args_list: list[list[Any]]) -> list[str]:
    """Send one message per args list; returns the task ids."""
    envelopes = [Envelope.create(task, args, queue=queue) for args in args_list]
    with open_broker(broker_url) as broker:
        broker.publish_many(queue, [env.encode() for env in envelopes])
    return [env.id for env in envelopes]


def broker(broker_url: str) -> Broker:
    return open_broker(broker_url)


class WorkerProcess:
    """One `python -m worker run` with QSCALE_* settings; logs go to a temp file."""

    def __init__(self, broker_url: str, queue: str, **settings: Any) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("QSCALE_")
               and k != "PROMETHEUS_MULTIPROC_DIR"}
        env.update({"QSCALE_BROKER_URL": broker_url, "QSCALE_QUEUES": queue,
                    "QSCALE_IMPORTS": "tests.runtime_tasks", "QSCALE_HTTP_HOST": "127.0.0.1",
                    "QSCALE_HTTP_PORT": str(self.port), "QSCALE_CONCURRENCY": "2",
                    "QSCALE_LEASE_SECONDS": "2", "QSCALE_POD_NAME": f"test-{queue}",
                    "QSCALE_LOG_LEVEL": "INFO", "PYTHONPATH": REPO})
        if "QSCALE_TEST_REDIS_URL" in os.environ:
            env["QSCALE_TEST_REDIS_URL"] = os.environ["QSCALE_TEST_REDIS_URL"]
        env.update({f"QSCALE_{k.upper()}": str(v) for k, v in settings.items()})
        self.env = env
        self._log = tempfile.NamedTemporaryFile(prefix="qscale-worker-", suffix=".log",  # noqa: SIM115
                                                delete=False)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.proc = subprocess.Popen([sys.executable, "-m", "worker", "run"], env=self.env,
                                     cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        with open(self._log.name, errors="replace") as f:
            return f.read()

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}",
                                        timeout=5) as resp:
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as err:
            return int(err.code), bytes(err.read())
        except OSError:
            return 0, b""

    def state(self) -> dict[str, Any]:
        code, body = self.get("/state")
        return dict(json.loads(body)) if code == 200 else {}

    def wait_ready(self, timeout: float = 30) -> WorkerProcess:
        def ready() -> bool:
            self.check_alive()
            return self.get("/readyz")[0] == 200
        wait_until(ready, timeout, "worker /readyz", self)
        return self

    def wait_http(self, timeout: float = 30) -> None:
        def up() -> bool:
            self.check_alive()
            return self.get("/healthz")[0] == 200
        wait_until(up, timeout, "worker /healthz", self)

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"worker exited early with {self.proc.returncode}:\n"
                        f"{self.log()[-4000:]}", pytrace=False)

    def children(self) -> list[int]:
        return list(self.state().get("children", []))

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker did not exit within {timeout:.0f}s:\n{self.log()[-4000:]}",
                        pytrace=False)

    def stop(self) -> None:
        """Best-effort cleanup: SIGKILL the supervisor (children follow via PDEATHSIG)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; `down()` cuts every connection."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
