"""The RabbitMQ management API for tests: inspect and delete queues without our code."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request


def api_request(api: str, path: str, *, method: str = "GET", body: object = None,
                ok_missing: bool = False) -> object:
    """Call the RabbitMQ management API (base URL with user:password@)."""
    parts = api.split("://", 1)
    creds, host = parts[1].split("@", 1)
    request = urllib.request.Request(
        f"{parts[0]}://{host}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Basic " + base64.b64encode(creds.encode()).decode(),
                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
    except urllib.error.HTTPError as exc:
        if ok_missing and exc.code == 404:
            return None
        raise
    return json.loads(text) if text else None


def api_get(api: str, path: str) -> list[dict[str, object]]:
    result = api_request(api, path)
    assert isinstance(result, list)
    return result
