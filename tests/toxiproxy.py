"""Network faults on loopback: a toxiproxy-server the tests start, and its HTTP API.

`hack/test-tools.sh` builds the server from its Go module into $QSCALE_CACHE/bin.
A test puts a proxy between a process and what it talks to (a broker, the API
server), points the process at `proxy.address`, and then injects faults:

    with Toxiproxy.start() as toxi:
        proxy = toxi.proxy("redis", "127.0.0.1:6379")
        proxy.latency(200)          # +200 ms each way
        proxy.reset_peer()          # every connection gets a TCP RST
        proxy.half_open()           # data stops flowing, connections stay open
        proxy.disable()             # refuse and cut every connection
        proxy.heal()                # remove the toxics, enable again

Nothing here skips: a missing binary fails the test with how to build it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any, Self

CACHE = os.environ.get("QSCALE_CACHE", "/var/cache/qscale")
BINARY = os.path.join(CACHE, "bin", "toxiproxy-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ToxiproxyError(RuntimeError):
    """The toxiproxy API refused a request or the server did not start."""


class Toxiproxy:
    """One toxiproxy-server process on loopback (its API on a free port)."""

    def __init__(self, binary: str = BINARY) -> None:
        found = binary if os.path.isfile(binary) else shutil.which("toxiproxy-server")
        if not found:
            raise ToxiproxyError(f"toxiproxy-server not found at {binary}: run "
                                 "`bash hack/test-tools.sh` (make test does)")
        self.binary = found
        self.port = _free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.NamedTemporaryFile(prefix="toxiproxy-", suffix=".log",  # noqa: SIM115
                                                delete=False)
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, binary: str = BINARY) -> Toxiproxy:
        toxi = cls(binary)
        toxi._proc = subprocess.Popen(
            [toxi.binary, "-host", "127.0.0.1", "-port", str(toxi.port)],
            stdout=toxi._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if toxi._proc.poll() is not None:
                raise ToxiproxyError(f"toxiproxy-server exited: {toxi.log()[-2000:]}")
            with contextlib.suppress(OSError):
                toxi.request("GET", "/version")
                return toxi
            time.sleep(0.05)
        toxi.stop()
        raise ToxiproxyError("toxiproxy-server did not answer within 10 s")

    def log(self) -> str:
        with open(self._log.name, errors="replace") as handle:
            return handle.read()

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.api + path, method=method, data=data,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as reply:
                raw = reply.read()
        except urllib.error.HTTPError as err:
            raise ToxiproxyError(f"{method} {path}: {err.code} {err.read()[:300]!r}") from None
        try:
            return json.loads(raw) if raw.strip() else None
        except ValueError:  # /version answers plain text
            return raw.decode(errors="replace")

    def proxy(self, name: str, upstream: str, listen_port: int | None = None) -> Proxy:
        """A proxy listening on 127.0.0.1 (a free port unless given) in front of `upstream`."""
        port = listen_port or _free_port()
        self.request("POST", "/proxies", {"name": name, "listen": f"127.0.0.1:{port}",
                                          "upstream": upstream, "enabled": True})
        return Proxy(self, name, port)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Proxy:
    """One named proxy; `address` is what the process under test connects to."""

    def __init__(self, server: Toxiproxy, name: str, port: int) -> None:
        self.server, self.name, self.port = server, name, port
        self.address = f"127.0.0.1:{port}"
        self._toxics: set[str] = set()

    def toxic(self, kind: str, attributes: dict[str, Any], *, stream: str = "downstream",
              toxicity: float = 1.0, name: str | None = None) -> str:
        """Add a toxic (`latency`, `timeout`, `reset_peer`, `limit_data`, ...); returns its name."""
        toxic = name or f"{kind}_{stream}_{len(self._toxics)}"
        self.server.request("POST", f"/proxies/{self.name}/toxics", {
            "name": toxic, "type": kind, "stream": stream, "toxicity": toxicity,
            "attributes": attributes})
        self._toxics.add(toxic)
        return toxic

    def remove(self, toxic: str) -> None:
        with contextlib.suppress(ToxiproxyError):
            self.server.request("DELETE", f"/proxies/{self.name}/toxics/{toxic}")
        self._toxics.discard(toxic)

    def latency(self, ms: int, jitter: int = 0) -> None:
        """Delay data both ways by `ms` (± `jitter`)."""
        for stream in ("downstream", "upstream"):
            self.toxic("latency", {"latency": ms, "jitter": jitter}, stream=stream)

    def reset_peer(self, after_ms: int = 0) -> None:
        """Connections end with a TCP RST (after `after_ms`), new ones too."""
        self.toxic("reset_peer", {"timeout": after_ms})

    def timeout(self, ms: int) -> None:
        """Data stops; each connection is closed after `ms` (0: never)."""
        self.toxic("timeout", {"timeout": ms})

    def half_open(self) -> None:
        """Data stops flowing both ways but every connection stays open: the peer
        looks alive at the TCP level and never answers (a vanished host)."""
        for stream in ("downstream", "upstream"):
            self.toxic("timeout", {"timeout": 0}, stream=stream)

    def disable(self) -> None:
        """Refuse new connections and cut the open ones."""
        self.server.request("POST", f"/proxies/{self.name}", {"enabled": False})

    def enable(self) -> None:
        self.server.request("POST", f"/proxies/{self.name}", {"enabled": True})

    def heal(self) -> None:
        """Remove every toxic and enable the proxy."""
        for toxic in list(self._toxics):
            self.remove(toxic)
        self.enable()
