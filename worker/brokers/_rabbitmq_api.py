"""Read-only numbers from RabbitMQ's management HTTP API (in-flight and delayed counts).

AMQP itself cannot tell how many messages are unacknowledged, so these come from
the management plugin. Its numbers are sampled (every ~5 s by default), and the
API is optional: when unreachable the caller gets None and tries again later.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, unquote, urlsplit

log = logging.getLogger(__name__)

TIMEOUT = 2.0          # seconds per HTTP request
RETRY_AFTER = 10.0     # seconds to stay quiet after the API failed


def api_url_from_amqp(amqp_url: str) -> str:
    """Same host and credentials as the AMQP URL, port 15672 (https for amqps)."""
    parts = urlsplit(amqp_url)
    scheme = "https" if parts.scheme == "amqps" else "http"
    user = parts.username or "guest"
    password = parts.password or "guest"
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{host}:15672"


def vhost_from_amqp(amqp_url: str) -> str:
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


class ManagementApi:
    """A tiny client for the two endpoints the broker's stats need."""

    def __init__(self, base_url: str, vhost: str) -> None:
        parts = urlsplit(base_url)
        host = parts.hostname or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        self._base = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
        creds = f"{unquote(parts.username or 'guest')}:{unquote(parts.password or 'guest')}"
        self._auth = "Basic " + base64.b64encode(creds.encode()).decode()
        self._vhost = quote(vhost, safe="")
        self._quiet_until = 0.0

    def _get(self, path: str) -> Any:
        if time.monotonic() < self._quiet_until:
            return None
        request = urllib.request.Request(self._base + path,
                                         headers={"Authorization": self._auth})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return {}
            log.warning("RabbitMQ management API answered %s for %s", exc.code, path)
        except (OSError, ValueError) as exc:
            log.warning("RabbitMQ management API unreachable: %s", exc)
        self._quiet_until = time.monotonic() + RETRY_AFTER
        return None

    def unacknowledged(self, queue: str) -> int | None:
        """Messages delivered to consumers and not yet acked; None when unknown."""
        data = self._get(f"/api/queues/{self._vhost}/{quote(queue, safe='')}"
                         "?columns=messages_unacknowledged")
        if data is None:
            return None
        if not isinstance(data, dict):  # a queue the stats database has not seen yet
            return 0
        return int(data.get("messages_unacknowledged") or 0)

    def total_messages(self, name_prefix: str) -> int | None:
        """Messages in all queues whose name starts with `name_prefix`."""
        pattern = quote("^" + re.escape(name_prefix), safe="")
        data = self._get(f"/api/queues/{self._vhost}?page=1&page_size=500&use_regex=true"
                         f"&name={pattern}&columns=name,messages")
        if not isinstance(data, dict):
            return None
        return sum(int(item.get("messages") or 0) for item in data.get("items", []))
