"""The chart's broker and Prometheus pods run under `docker run` with the real images.

Each test renders the chart, then runs the pod it describes (init and main containers,
env from the rendered Secrets, ConfigMap and emptyDir mounts, the pod's uid, read-only
root, no capabilities, the image's ENTRYPOINT and CMD unless the chart sets them).
Docker and the images are required (built with hack/build-image.sh when missing): a
missing one fails, nothing skips. The official upstream images are not pulled here
(no registry access); tests/chart/test_upstream_contract.py checks the renders against
their documented contracts.

Issue #11 item 4, RabbitMQ: `helm uninstall` keeps the PVC. If the Secret is lost as
well (deleted by hand, or a chart before 0.2.0, whose Secret went with the release), the
next install has a new password while RabbitMQ keeps its users on the volume, and chart
0.1.0 created the user on the first boot only: every worker then failed to log in. Here
the RabbitMQ pod runs twice on one data directory with two renders' passwords: the new
one logs in, the old one is refused, a persistent message published before is still
queued (on 634e48f the second start refuses the new password).
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import amqp
import pytest
import yaml

from tests.chart.conftest import find_helm, helm_template

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
QUEUE = "parked"


def _docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True,
                            timeout=timeout, check=False)
    if check and result.returncode != 0:
        pytest.fail(f"docker {' '.join(args[:3])} ...: {result.stderr[-1500:]}", pytrace=False)
    return result.stdout


def _render(component: str, *args: str) -> dict[str, Any]:
    """The chart's pod of `component` (its StatefulSet or Deployment, ConfigMaps, Secrets)."""
    out = helm_template(find_helm(), *args).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    name = f"qscale-{component}"
    workloads = [d for d in docs if d["kind"] in ("StatefulSet", "Deployment")
                 and d["metadata"]["name"] == name]
    assert len(workloads) == 1, name
    return {
        "workload": workloads[0],
        "configmaps": {d["metadata"]["name"]: d.get("data", {})
                       for d in docs if d["kind"] == "ConfigMap"},
        "secrets": {d["metadata"]["name"]: {k: base64.b64decode(v).decode()
                                            for k, v in d.get("data", {}).items()}
                    for d in docs if d["kind"] == "Secret"},
    }


def _spec(pod: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = pod["workload"]["spec"]["template"]["spec"]
    return spec


def _image(pod: dict[str, Any]) -> str:
    image: str = _spec(pod)["containers"][0]["image"]
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True,
                      check=False).returncode != 0:
        name = image.split(":", maxsplit=1)[0]
        built = subprocess.run(["bash", str(REPO / "hack" / "build-image.sh"), name],
                               capture_output=True, text=True, timeout=1800, check=False)
        if built.returncode != 0:
            pytest.fail(f"{image} missing and hack/build-image.sh {name} failed:\n"
                        + built.stderr[-2000:], pytrace=False)
    return image


def _env(container: dict[str, Any], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    env = {}
    for entry in container.get("env", []):
        source = entry.get("valueFrom", {})
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[entry["name"]] = secrets[ref["name"]][ref["key"]]
        elif source.get("resourceFieldRef", {}).get("resource") == "limits.memory":
            env[entry["name"]] = str(512 * 1024 * 1024)  # as the kubelet gives it: bytes
        else:
            pytest.fail(f"env {entry['name']}: no value this test can give", pytrace=False)
    return env


def _expand(words: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion in command and args."""
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                   lambda m: env.get(m.group(1), m.group(0)), w) for w in words]


def _mounts(container: dict[str, Any], dirs: dict[str, Path]) -> list[str]:
    args = []
    for mount in container.get("volumeMounts", []):
        spec = f"{dirs[mount['name']]}:{mount['mountPath']}"
        args += ["-v", spec + (":ro" if mount.get("readOnly") else "")]
    return args


def _run_pod(pod: dict[str, Any], image: str, root: Path, data: Path | None, name: str,
             port: int) -> int:
    """Init containers to completion, then the main container; returns `port`'s host port.
    `data` stands in for the claim of the StatefulSet's volumeClaimTemplate `data`."""
    spec = _spec(pod)
    uid, gid = spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]
    dirs: dict[str, Path] = {"data": data} if data else {}
    for volume in spec["volumes"]:
        path = root / volume["name"]
        path.mkdir()
        if "configMap" in volume:
            for key, text in pod["configmaps"][volume["configMap"]["name"]].items():
                (path / key).write_text(text)
            path.chmod(0o755)
        else:
            assert "emptyDir" in volume, volume  # fresh per pod, writable by the pod's user
            _chown(image, path, uid, gid)
        dirs[volume["name"]] = path

    def run_args(container: dict[str, Any]) -> list[str]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        env = _env(container, pod["secrets"])
        command = _expand(container.get("command", []), env)
        return ["--user", f"{uid}:{gid}", "--read-only", "--cap-drop", "ALL",
                *(a for k, v in env.items() for a in ("-e", f"{k}={v}")),
                *_mounts(container, dirs),
                *(["--entrypoint", command[0]] if command else []), image,
                *command[1:], *_expand(container.get("args", []), env)]

    for init in spec.get("initContainers", []):
        _docker("run", "--rm", "--network", "none", *run_args(init))
    # The image's ENTRYPOINT and CMD unless the chart sets them.
    _docker("run", "-d", "--name", name, "-p", f"127.0.0.1::{port}",
            *run_args(spec["containers"][0]))
    mapped = _docker("port", name, f"{port}/tcp").strip().splitlines()[0]
    return int(mapped.rsplit(":", 1)[1])


def _chown(image: str, path: Path, uid: int, gid: int) -> None:
    _docker("run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "chown",
            "-v", f"{path}:/x", image, f"{uid}:{gid}", "/x")


def _connect(port: int, user: str, password: str) -> amqp.Connection:
    conn = amqp.Connection(f"127.0.0.1:{port}", userid=user, password=password,
                           virtual_host="/", connect_timeout=5)
    conn.connect()
    return conn


def _wait_login(port: int, user: str, password: str, name: str) -> amqp.Connection:
    deadline = time.monotonic() + 120
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return _connect(port, user, password)
        except amqp.exceptions.AccessRefused:
            raise
        except Exception as exc:  # not listening yet
            last = exc
            time.sleep(1)
    logs = subprocess.run(["docker", "logs", "--tail", "40", name], capture_output=True,
                          text=True, check=False)
    pytest.fail(f"RabbitMQ did not accept {user} within 120 s ({last}):\n"
                + (logs.stdout + logs.stderr)[-3000:], pytrace=False)


@pytest.fixture
def workdir() -> Iterator[Path]:
    if shutil.which("docker") is None:
        pytest.fail("docker is required (the test runs the real RabbitMQ image)", pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="qscale-rmq-reinstall-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        # Files written by uid 999: removed from inside a container.
        image = next((p.read_text() for p in [root / "image"] if p.exists()), "")
        if image:
            _docker("run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "sh",
                    "-v", f"{root}:/x", image, "-c", "rm -rf /x/*", check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_new_secret_on_a_kept_volume_logs_in_and_keeps_the_data(workdir: Path) -> None:
    first, second = (_render("rabbitmq", "--set", "broker.type=rabbitmq",
                             "--set", f"rabbitmq.auth.password={pw}")
                     for pw in ("firstpassword1", "secondpassword2"))
    user = first["secrets"]["qscale-rabbitmq"]["username"]
    image = _image(first)
    (workdir / "image").write_text(image)
    data = workdir / "pvc"
    data.mkdir()
    _chown(image, data, 999, 999)
    names = [f"qscale-rmq-{uuid.uuid4().hex[:8]}" for _ in range(2)]

    (workdir / "pod1").mkdir()
    port = _run_pod(first, image, workdir / "pod1", data, names[0], 5672)
    try:
        conn = _wait_login(port, user, "firstpassword1", names[0])
        channel = conn.channel()
        channel.queue_declare(QUEUE, durable=True, auto_delete=False)
        channel.basic_publish(amqp.Message("kept", delivery_mode=2), routing_key=QUEUE)
        conn.close()
    finally:
        _docker("stop", "-t", "30", names[0], check=False)
        _docker("rm", "-f", names[0], check=False)

    (workdir / "pod2").mkdir()
    port = _run_pod(second, image, workdir / "pod2", data, names[1], 5672)
    try:
        conn = _wait_login(port, user, "secondpassword2", names[1])
        channel = conn.channel()
        _, ready, _ = channel.queue_declare(QUEUE, passive=True)
        message = channel.basic_get(QUEUE, no_ack=True)
        conn.close()
        assert ready == 1 and message is not None and message.body in (b"kept", "kept")
        with pytest.raises(amqp.exceptions.AccessRefused):
            _connect(port, user, "firstpassword1")
    finally:
        _docker("rm", "-f", names[1], check=False)


def test_redis_pod_runs_the_image_contract_and_keeps_data_across_restarts(
        workdir: Path) -> None:
    """qscale-redis takes the chart's args like the official image (docker-entrypoint.sh
    prepends nothing to `redis-server ...`): the Secret's password is required, and a
    write survives a new container on the same /data (appendonly)."""
    import redis

    pod = _render("redis", "--set", "redis.auth.password=redispassword1")
    image = _image(pod)
    (workdir / "image").write_text(image)
    data = workdir / "pvc"
    data.mkdir()
    _chown(image, data, 999, 999)
    for run in (1, 2):
        name = f"qscale-redis-{uuid.uuid4().hex[:8]}"
        (workdir / f"pod{run}").mkdir()
        port = _run_pod(pod, image, workdir / f"pod{run}", data, name, 6379)
        try:
            client = redis.Redis(port=port, password="redispassword1", socket_timeout=5)
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            if run == 1:
                client.set("kept", "yes")
            else:
                assert client.get("kept") == b"yes"
            with pytest.raises(redis.AuthenticationError):
                redis.Redis(port=port, password="wrong", socket_timeout=5).ping()
        finally:
            _docker("stop", "-t", "10", name, check=False)
            _docker("rm", "-f", name, check=False)


def test_prometheus_pod_loads_the_rendered_config_and_rules(workdir: Path) -> None:
    """qscale-prometheus takes only flags as args, like prom/prometheus: with the chart's
    ConfigMap it becomes ready and has loaded every alert rule the chart renders."""
    import json
    import urllib.request

    pod = _render("prometheus", "--set", "broker.type=rabbitmq")
    image = _image(pod)
    (workdir / "image").write_text(image)
    name = f"qscale-prom-{uuid.uuid4().hex[:8]}"
    port = _run_pod(pod, image, workdir, None, name, 9090)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    logs = _docker("logs", "--tail", "30", name, check=False)
                    pytest.fail(f"Prometheus not ready in 60 s:\n{logs}", pytrace=False)
                time.sleep(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5) as r:
            groups = json.load(r)["data"]["groups"]
        loaded = {rule["name"] for g in groups for rule in g["rules"]}
        rendered = yaml.safe_load(pod["configmaps"]["qscale-prometheus"]["alerts.yml"])
        assert loaded == {rule["alert"] for g in rendered["groups"] for rule in g["rules"]}
        assert "QscaleControllerNoLeader" in loaded
    finally:
        _docker("rm", "-f", name, check=False)
