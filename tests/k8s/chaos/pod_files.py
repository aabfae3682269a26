"""Python files the fault suite mounts into the real worker pods (one ConfigMap).

`chaos_tasks.py` is the task the bursts run: it records its own start and finish, with
its pod, in Redis (the history's task side). `state_proxy.py` is a sidecar the
WorkerPool's podStatePort points at: it passes /state, /cordon and /uncordon through to
the worker, and on GET /state answers slowly or with garbage while the fault switch
(a Redis key) says so.
"""

from __future__ import annotations

HISTORY_KEY = "chaos:history"
STATE_FAULT_KEY = "chaos:state-fault"
STATE_PROXY_PORT = 8090

CHAOS_TASKS = f'''
"""Fault-suite task: sleeps, and records start/finish with its pod in Redis."""
import json
import os
import time

import redis

from worker.api.task import task

_client = None


def _record(event, ctx):
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["CHAOS_HISTORY_URL"], socket_timeout=5)
    entry = {{"e": event, "id": ctx.id, "try": ctx.attempt,
             "pod": os.environ.get("QSCALE_POD_NAME", "?"), "t": time.time()}}
    for _ in range(20):  # the history must not lose an entry to a blip
        try:
            _client.rpush("{HISTORY_KEY}", json.dumps(entry))
            return
        except redis.RedisError:
            time.sleep(0.25)


@task(name="chaos.work", bind=True)
def work(ctx, seconds):
    _record("start", ctx)
    time.sleep(float(seconds))
    _record("finish", ctx)
    return seconds
'''

STATE_PROXY = f'''
"""Sidecar: the worker's HTTP port, with /state faults switched by a Redis key."""
import http.server
import os
import time
import urllib.error
import urllib.request

import redis

UPSTREAM = "http://127.0.0.1:8080"
SWITCH = redis.Redis.from_url(os.environ["FAULT_REDIS"], socket_timeout=1)
KEY = "{STATE_FAULT_KEY}:" + os.environ["FAULT_POOL"]
PASS = ("authorization", "content-type", "x-qscale-control-token")


def mode():
    try:
        return (SWITCH.get(KEY) or b"").decode()
    except redis.RedisError:
        return ""


class Handler(http.server.BaseHTTPRequestHandler):
    def forward(self, method):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if method == "GET" and self.path.startswith("/state"):
            fault = mode()
            if fault == "slow":
                time.sleep(10)
            elif fault == "garbage":
                return self.send(200, b'{{"busy": "lots", "in_flight": null}}')
            elif fault == "html":
                return self.send(200, b"<html>502 Bad Gateway</html>", "text/html")
        headers = {{k: v for k, v in self.headers.items() if k.lower() in PASS}}
        request = urllib.request.Request(UPSTREAM + self.path, data=body, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                self.send(reply.status, reply.read(), reply.headers.get("Content-Type"))
        except urllib.error.HTTPError as err:
            self.send(err.code, err.read())
        except Exception as exc:
            self.send(502, str(exc).encode())

    def do_GET(self):
        self.forward("GET")

    def do_POST(self):
        self.forward("POST")

    def send(self, code, body, ctype="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", ctype or "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("", {STATE_PROXY_PORT}), Handler).serve_forever()
'''
