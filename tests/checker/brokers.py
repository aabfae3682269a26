"""Private brokers for the checker: its own Redis and RabbitMQ processes on loopback.

The checker kills its broker with SIGKILL and starts it again from the same data
directory; the shared test brokers (hack/services.sh) are never touched. Both are
the Debian packages the services script installs. Redis runs with an append-only
file (`appendfsync` chosen by the caller: `always` loses no acknowledged write on
a crash, `everysec` up to about a second); RabbitMQ keeps durable queues and
persistent messages in its own data directory.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Protocol

import amqp
import redis


class BrokerDown(RuntimeError):
    """The private broker did not come up."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(ready: object, what: str, timeout: float, log: Path) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if ready():  # type: ignore[operator]
                return time.monotonic() - started
        except Exception:  # not up yet
            pass
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise BrokerDown(f"{what} did not come up within {timeout:.0f}s\n{tail}")


class PrivateBroker(Protocol):
    url: str
    port: int

    def start(self) -> float: ...
    def kill(self) -> None: ...
    def stop(self) -> None: ...


class PrivateRedis:
    """redis-server on a free port with AOF; `kill()` is SIGKILL, `start()` recovers."""

    def __init__(self, appendfsync: str = "always") -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = Path(tempfile.mkdtemp(prefix="qscale-chk-redis-"))
        self.appendfsync = appendfsync
        self.log = self.dir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start (or restart from the AOF); returns the seconds it took to answer."""
        self._proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
             "--dir", str(self.dir), "--appendonly", "yes",
             "--appendfsync", self.appendfsync, "--save", "", "--logfile", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        return _wait(client.ping, "private redis", 30, self.log)

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(10)

    def channels_summary(self) -> str:
        """Unacknowledged deliveries per channel, with its connection's client port."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}/api/channels?columns=name,"
            "messages_unacknowledged,consumer_count,state,connection_details",
            headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                channels = json.loads(resp.read())
        except (OSError, ValueError) as exc:
            return f"(management API: {exc})"
        return "; ".join(
            f"{c.get('name')} unacked={c.get('messages_unacknowledged')} "
            f"consumers={c.get('consumer_count')} state={c.get('state')}"
            for c in channels) or "(no channels)"

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRabbit:
    """A RabbitMQ node of its own (name, ports, data directory), user guest on loopback."""

    def __init__(self) -> None:
        self.name = f"qscale-chk-{uuid.uuid4().hex[:8]}@localhost"
        self.port, self.dist_port, self.api_port = free_port(), free_port(), free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.api = f"http://guest:guest@127.0.0.1:{self.api_port}"
        self.dir = Path(tempfile.mkdtemp(prefix="qscale-chk-rabbit-"))
        self.log = self.dir / "server.log"
        (self.dir / "data").mkdir()
        (self.dir / "log").mkdir()
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.api_port}\n")
        (self.dir / "enabled_plugins").write_text("[rabbitmq_management].\n")
        shutil.chown(self.dir, "rabbitmq", "rabbitmq")
        for path in self.dir.rglob("*"):
            shutil.chown(path, "rabbitmq", "rabbitmq")
        os.chmod(self.dir, 0o755)
        self._proc: subprocess.Popen[bytes] | None = None

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.update(
            RABBITMQ_NODENAME=self.name, RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port), RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.dir / "data"), RABBITMQ_LOG_BASE=str(self.dir / "log"),
            RABBITMQ_CONFIG_FILE=str(self.dir / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.dir / "enabled_plugins"),
            HOME="/var/lib/rabbitmq")
        return env

    def start(self) -> float:
        with open(self.log, "ab") as out:
            self._proc = subprocess.Popen(["rabbitmq-server"], env=self._env(), stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True)

        def answers() -> bool:
            conn = amqp.Connection(f"127.0.0.1:{self.port}", userid="guest", password="guest",
                                   connect_timeout=2)
            conn.connect()
            conn.close()
            return True

        return _wait(answers, "private rabbitmq", 120, self.log)

    def _beam_pids(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                environ = (entry / "environ").read_bytes().split(b"\0")
                if f"RABBITMQ_NODENAME={self.name}".encode() in environ:
                    pids.append(int(entry.name))
        return pids

    def kill(self) -> None:
        """SIGKILL every process of this node (the Erlang VM and its helpers)."""
        for pid in self._beam_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(10)
        deadline = time.monotonic() + 10
        while self._beam_pids() and time.monotonic() < deadline:
            time.sleep(0.1)

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
