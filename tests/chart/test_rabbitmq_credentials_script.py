"""The RabbitMQ init container that writes the definitions RabbitMQ imports at boot: any
user and password round-trips into valid JSON, or the container stops with exit 2.
`grep` reads line by line, so a password with a newline passed the control-character
check and wrote a password other than the Secret's (found reading the chart)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.chart.conftest import Render, named


def _script(render: Render) -> str:
    sts = named(render("--set", "broker.type=rabbitmq"), "StatefulSet", "qscale-rabbitmq")
    init = next(c for c in sts["spec"]["template"]["spec"]["initContainers"]
                if c["name"] == "sync-credentials")
    script: str = init["args"][0]
    return script


def _run(script: str, tmp_path: Path, user: str, password: str
         ) -> tuple[subprocess.CompletedProcess[str], Path]:
    definitions, data = tmp_path / "definitions", tmp_path / "data"
    definitions.mkdir(exist_ok=True)
    data.mkdir(exist_ok=True)
    script = (script.replace("/etc/rabbitmq/definitions", str(definitions))
              .replace("/var/lib/rabbitmq", str(data)))
    env = {"PATH": os.environ["PATH"], "RABBITMQ_DEFAULT_USER": user,
           "RABBITMQ_DEFAULT_PASS": password, "ERLANG_COOKIE": "cookie"}
    proc = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True,
                          timeout=30, check=False)
    return proc, definitions / "definitions.json"


@pytest.mark.parametrize("password", ["plain", 'q"uo\\te', "sp ace", "ünï€ødé", "$(id)`x`"])
def test_any_printable_password_round_trips(render: Render, tmp_path: Path,
                                            password: str) -> None:
    proc, out = _run(_script(render), tmp_path, "qscale", password)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["users"][0] == {"name": "qscale", "password": password, "tags": ["administrator"]}


@pytest.mark.parametrize("password", ["a\nb", "trailing\n", "\ttab", "bell\a"])
def test_a_control_character_stops_the_container(render: Render, tmp_path: Path,
                                                 password: str) -> None:
    proc, out = _run(_script(render), tmp_path, "qscale", password)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "control character" in proc.stderr
    assert not out.exists()
