"""Issue #11 item 4 against the real qscale-rabbitmq image: a kept volume, a new Secret.

`helm uninstall` keeps the RabbitMQ PVC. If the Secret is lost as well (deleted by hand,
or a chart before 0.2.0, whose Secret went with the release), the next install has a new
password while RabbitMQ keeps its users on the volume, and chart 0.1.0 created the user
on the first boot only: every worker then failed to log in.

Here the pod the chart renders (its init and main containers, env, mounts, user,
read-only root) runs under `docker run`, twice on the same data directory, with the
password of two different renders. After the second start the new password logs in,
the old one is refused, and a persistent message published before is still queued.
Docker and the image are required: a missing one fails, nothing skips.
"""

from __future__ import annotations

import base64
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


def _render(password: str) -> dict[str, Any]:
    """The chart's RabbitMQ pod: its StatefulSet, ConfigMap and Secret data."""
    out = helm_template(find_helm(), "--set", "broker.type=rabbitmq",
                        "--set", f"rabbitmq.auth.password={password}").stdout
    docs = [d for d in yaml.safe_load_all(out) if d]

    def one(kind: str) -> dict[str, Any]:
        found = [d for d in docs
                 if d["kind"] == kind and d["metadata"]["name"] == "qscale-rabbitmq"]
        assert len(found) <= 1, kind
        doc: dict[str, Any] = found[0] if found else {}
        return doc

    secret = {k: base64.b64decode(v).decode() for k, v in one("Secret")["data"].items()}
    return {"sts": one("StatefulSet"), "config": one("ConfigMap").get("data", {}),
            "secret": secret}


def _image(pod: dict[str, Any]) -> str:
    image: str = pod["sts"]["spec"]["template"]["spec"]["containers"][0]["image"]
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True,
                      check=False).returncode != 0:
        name = image.split(":", maxsplit=1)[0]
        built = subprocess.run(["bash", str(REPO / "hack" / "build-image.sh"), name],
                               capture_output=True, text=True, timeout=1800, check=False)
        if built.returncode != 0:
            pytest.fail(f"{image} missing and hack/build-image.sh {name} failed:\n"
                        + built.stderr[-2000:], pytrace=False)
    return image


def _env(container: dict[str, Any], secret: dict[str, str]) -> list[str]:
    args = []
    for entry in container.get("env", []):
        source = entry.get("valueFrom", {})
        if "value" in entry:
            value = entry["value"]
        elif "secretKeyRef" in source:
            value = secret[source["secretKeyRef"]["key"]]
        elif source.get("resourceFieldRef", {}).get("resource") == "limits.memory":
            value = str(512 * 1024 * 1024)  # as the kubelet gives it: bytes (512Mi here)
        else:
            pytest.fail(f"env {entry['name']}: no value this test can give", pytrace=False)
        args += ["-e", f"{entry['name']}={value}"]
    return args


def _mounts(container: dict[str, Any], dirs: dict[str, Path]) -> list[str]:
    args = []
    for mount in container.get("volumeMounts", []):
        spec = f"{dirs[mount['name']]}:{mount['mountPath']}"
        args += ["-v", spec + (":ro" if mount.get("readOnly") else "")]
    return args


def _run_pod(pod: dict[str, Any], image: str, root: Path, data: Path, name: str) -> int:
    """Init containers to completion, then the main container; returns the AMQP host port."""
    spec = pod["sts"]["spec"]["template"]["spec"]
    uid, gid = spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]
    dirs: dict[str, Path] = {"data": data}
    for volume in spec["volumes"]:
        path = root / volume["name"]
        path.mkdir()
        if "configMap" in volume:
            for key, text in pod["config"].items():
                (path / key).write_text(text)
            path.chmod(0o755)
        else:  # an emptyDir: fresh per pod, writable by the pod's user
            _chown(image, path, uid, gid)
        dirs[volume["name"]] = path

    def base(container: dict[str, Any]) -> list[str]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        return ["--user", f"{uid}:{gid}", "--read-only", "--cap-drop", "ALL",
                *_env(container, pod["secret"]), *_mounts(container, dirs)]

    for init in spec.get("initContainers", []):
        entry = ["--entrypoint", init["command"][0]] if init.get("command") else []
        _docker("run", "--rm", "--network", "none", *base(init), *entry, image,
                *init["command"][1:], *init.get("args", []))
    main = spec["containers"][0]  # the image's ENTRYPOINT and CMD unless the chart sets them
    entry = ["--entrypoint", main["command"][0]] if main.get("command") else []
    _docker("run", "-d", "--name", name, "-p", "127.0.0.1::5672", *base(main), *entry, image,
            *main.get("command", [])[1:], *main.get("args", []))
    port = _docker("port", name, "5672/tcp").strip().splitlines()[0].rsplit(":", 1)[1]
    return int(port)


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
    first, second = _render("firstpassword1"), _render("secondpassword2")
    user = first["secret"]["username"]
    image = _image(first)
    (workdir / "image").write_text(image)
    data = workdir / "pvc"
    data.mkdir()
    _chown(image, data, 999, 999)
    names = [f"qscale-rmq-{uuid.uuid4().hex[:8]}" for _ in range(2)]

    (workdir / "pod1").mkdir()
    port = _run_pod(first, image, workdir / "pod1", data, names[0])
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
    port = _run_pod(second, image, workdir / "pod2", data, names[1])
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
