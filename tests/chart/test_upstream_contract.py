"""The chart speaks the official images' contracts, and the qscale-* images speak them too.

No registry is reachable here, so the official images cannot run in this repo's tests.
Instead each contract is written down once (CONTRACTS, with where it comes from) and
checked twice: every render of the chart (defaults, each ci/*-values.yaml, the official
images of ci/upstream-images-values.yaml) uses nothing but it, and the Dockerfiles of
hack/images/qscale-* declare it. The e2e suite then runs the qscale-* images on kind
through exactly these manifests, so switching to the official images is only
`image.repository`/`tag`.

Sources (upstream files and docs the contract is taken from):
- redis: docker-library/redis, `docker-entrypoint.sh` (a first argument that is an
  option or a *.conf file runs `redis-server` with them; umask 0077) and the Dockerfile
  (ENTRYPOINT docker-entrypoint.sh, CMD redis-server, user redis uid 999 in the Debian
  variant, WORKDIR/VOLUME /data); redis-cli reads REDISCLI_AUTH.
- rabbitmq: docker-library/rabbitmq 3.13 `docker-entrypoint.sh` (configures nothing,
  refuses the variables dropped in 3.9) and Dockerfile (ENTRYPOINT docker-entrypoint.sh,
  CMD rabbitmq-server, uid 999 in the Ubuntu variant, HOME=/var/lib/rabbitmq with the
  Erlang cookie there, /etc/rabbitmq/conf.d, rabbitmq_prometheus enabled; the
  -management variant adds rabbitmq_management); RabbitMQ 3.9.4 release notes
  (RABBITMQ_DEFAULT_USER/RABBITMQ_DEFAULT_PASS read by the server itself, a local cookie
  file recommended over RABBITMQ_ERLANG_COOKIE); rabbitmq.com/docs/definitions
  (load_definitions, import at every boot) and rabbit_auth_backend_internal:put_user
  (a definitions user may carry a plain `password`); rabbitmq.com/docs/configure
  (RABBITMQ_NODENAME; the node's data directory is named after it).
- prometheus: prometheus/prometheus Dockerfile (ENTRYPOINT /bin/prometheus, flags as
  CMD: --config.file=/etc/prometheus/prometheus.yml --storage.tsdb.path=/prometheus,
  USER nobody = 65534, WORKDIR/VOLUME /prometheus); Prometheus 3 ships no console
  templates, so no --web.console.* flags.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.chart.conftest import CHART, CI_VALUES, REPO_ROOT, Render, by_kind

IMAGES_DIR = REPO_ROOT / "hack" / "images"
UPSTREAM_VALUES = CHART / "ci" / "upstream-images-values.yaml"

# What the chart may use of each image, and what the image must declare.
CONTRACTS: dict[str, dict[str, Any]] = {
    "redis": {
        "entrypoint": ["docker-entrypoint.sh"], "cmd": ["redis-server"], "uid": 999,
        "workdir": "/data",
        "env": {"REDISCLI_AUTH"},          # read by redis-cli (the readiness probe)
        "args_env": {"REDIS_PASSWORD"},     # expanded by the kubelet into args only
        "mounts": {"/data", "/tmp"},
        "first_arg": "redis-server",
    },
    "rabbitmq": {
        "entrypoint": ["docker-entrypoint.sh"], "cmd": ["rabbitmq-server"], "uid": 999,
        "workdir": "/var/lib/rabbitmq",
        "env": {"RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS", "RABBITMQ_NODENAME"},
        "args_env": set(),
        "mounts": {"/var/lib/rabbitmq", "/etc/rabbitmq/conf.d", "/etc/rabbitmq/definitions",
                   "/var/log/rabbitmq", "/tmp"},
        "first_arg": None,                  # no args: the image's CMD runs rabbitmq-server
    },
    "prometheus": {
        "entrypoint": ["prometheus"], "cmd": ["--config.file=/etc/prometheus/prometheus.yml",
                                              "--storage.tsdb.path=/prometheus"],
        "uid": 65534, "workdir": "/prometheus",
        "env": set(), "args_env": set(),
        "mounts": {"/etc/prometheus", "/prometheus", "/tmp"},
        "first_arg": None,
    },
}
# Dropped by the official image's entrypoint in 3.9 (it refuses to start with them), and
# the qscale-only variables the chart passed before (the official image ignores them,
# creating the loopback-only `guest` instead of the chart's user).
RABBITMQ_REFUSED_ENV = {
    "RABBITMQ_DEFAULT_PASS_FILE", "RABBITMQ_DEFAULT_USER_FILE", "RABBITMQ_VM_MEMORY_HIGH_WATERMARK",
    "RABBITMQ_SSL_CERTFILE", "RABBITMQ_SSL_KEYFILE", "RABBITMQ_SSL_CACERTFILE",
    "RABBITMQ_MANAGEMENT_SSL_CERTFILE", "RABBITMQ_ERLANG_COOKIE",
    "RABBITMQ_USER", "RABBITMQ_PASSWORD", "RABBITMQ_MEMORY_HIGH_WATERMARK",
    "RABBITMQ_CONSUMER_TIMEOUT_MS", "RABBITMQ_TOTAL_MEMORY",
}
# rabbitmq.conf keys the chart writes, each a documented core or plugin setting.
RABBITMQ_CONF_KEYS = {
    "listeners.tcp.default", "management.tcp.port", "prometheus.tcp.port", "log.console",
    "log.console.level", "log.file", "load_definitions", "vm_memory_high_watermark.relative",
    "consumer_timeout", "total_memory_available_override_value",
}
PROMETHEUS_FLAGS = {"--config.file", "--storage.tsdb.path", "--storage.tsdb.retention.time",
                    "--web.listen-address"}

RENDERS = [pytest.param((), ("--set", "broker.type=rabbitmq"), id="defaults-rabbitmq"),
           pytest.param((), (), id="defaults-redis"),
           *[pytest.param((path,), (), id=path.stem) for path in CI_VALUES]]


def _component_containers(docs: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any],
                                                                      dict[str, Any]]]:
    """component -> (pod spec, main container) for the redis, rabbitmq, prometheus pods."""
    found = {}
    for doc in by_kind(docs, "StatefulSet") + by_kind(docs, "Deployment"):
        component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
        if component in CONTRACTS:
            spec = doc["spec"]["template"]["spec"]
            found[component] = (spec, spec["containers"][0])
    return found


@pytest.mark.parametrize(("values", "args"), RENDERS)
def test_rendered_pods_use_only_the_documented_contract(
        render: Render, values: tuple[Path, ...], args: tuple[str, ...]) -> None:
    docs = render(*args, values=values)
    for component, (spec, container) in _component_containers(docs).items():
        contract = CONTRACTS[component]
        where = f"{component} ({values or args})"
        assert "command" not in container, f"{where}: replaces the image's ENTRYPOINT"
        container_args = container.get("args", [])
        if contract["first_arg"]:
            assert container_args[0] == contract["first_arg"], where
        elif component == "rabbitmq":
            assert not container_args, f"{where}: the image's CMD must run"
        env = {e["name"] for e in container.get("env", [])}
        assert env <= contract["env"] | contract["args_env"], (where, env)
        for name in contract["args_env"]:
            assert f"$({name})" in " ".join(container_args), (where, name)
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert mounts <= contract["mounts"], (where, mounts - contract["mounts"])
        assert spec["securityContext"]["runAsUser"] == contract["uid"], where


@pytest.mark.parametrize(("values", "args"), RENDERS)
def test_rabbitmq_gets_the_official_variables_and_a_conf_d_file(
        render: Render, values: tuple[Path, ...], args: tuple[str, ...]) -> None:
    docs = render(*args, values=values)
    rabbit = _component_containers(docs).get("rabbitmq")
    if rabbit is None:
        return
    spec, container = rabbit
    env = {e["name"]: e for e in container["env"]}
    assert not RABBITMQ_REFUSED_ENV & set(env)
    assert env["RABBITMQ_DEFAULT_PASS"]["valueFrom"]["secretKeyRef"]
    assert env["RABBITMQ_NODENAME"]["value"] == "rabbit@localhost"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    # conf.d comes from a ConfigMap; /etc/rabbitmq itself (enabled_plugins) stays the image's
    config_map = volumes[mounts["/etc/rabbitmq/conf.d"]]["configMap"]["name"]
    assert "/etc/rabbitmq" not in mounts
    conf = next(d for d in by_kind(docs, "ConfigMap")
                if d["metadata"]["name"] == config_map)["data"]
    assert list(conf) == ["10-qscale.conf"]
    keys = {line.split("=", 1)[0].strip() for line in conf["10-qscale.conf"].splitlines()
            if line.strip() and not line.startswith("#")}
    assert keys <= RABBITMQ_CONF_KEYS, keys - RABBITMQ_CONF_KEYS
    assert "load_definitions" in keys
    # The init container writes the definitions and the cookie file with POSIX sh tools
    # any of the images has, and nothing else.
    init = spec["initContainers"][0]
    assert init["image"] == container["image"]
    assert init["command"] == ["sh", "-c"]
    script = init["args"][0]
    assert "/etc/rabbitmq/definitions/definitions.json" in script
    assert "/var/lib/rabbitmq/.erlang.cookie" in script
    used = set(re.findall(r"(?m)(?:^|[|;(]|\$\()\s*([a-z][a-z0-9_-]*)", script))
    assert used <= {"set", "for", "if", "printf", "grep", "echo", "exit", "fi", "done",
                    "esc", "sed", "user", "pass", "umask", "rm", "chmod", "then", "do"}, used


@pytest.mark.parametrize(("values", "args"), RENDERS)
def test_prometheus_gets_only_documented_flags(render: Render, values: tuple[Path, ...],
                                               args: tuple[str, ...]) -> None:
    prom = _component_containers(render(*args, values=values)).get("prometheus")
    if prom is None:
        return
    flags = dict(arg.split("=", 1) for arg in prom[1]["args"])
    assert set(flags) <= PROMETHEUS_FLAGS, set(flags) - PROMETHEUS_FLAGS
    assert flags["--config.file"] == "/etc/prometheus/prometheus.yml"
    assert flags["--storage.tsdb.path"] == "/prometheus"


def test_upstream_values_switch_only_the_image(render: Render) -> None:
    """ci/upstream-images-values.yaml: the official images, the same pods otherwise."""
    upstream = _component_containers(render(values=[UPSTREAM_VALUES]))
    ours = _component_containers(render("--set", "broker.type=rabbitmq", "--set",
                                        "monitoring.prometheus.discovery=kubernetes"))
    assert {c: s[1]["image"] for c, s in upstream.items()} == {
        "redis": "docker.io/library/redis:7.4",
        "rabbitmq": "docker.io/library/rabbitmq:3.13-management",
        "prometheus": "docker.io/prom/prometheus:v2.55.1"}
    for component, (spec, container) in upstream.items():
        other_spec, other = ours[component]
        assert {k: v for k, v in container.items() if k != "image"} == \
            {k: v for k, v in other.items() if k != "image"}, component
        assert spec["securityContext"] == other_spec["securityContext"], component


def _dockerfile(name: str) -> dict[str, Any]:
    """ENTRYPOINT, CMD (JSON form), USER and WORKDIR of hack/images/<name>/Dockerfile."""
    text = (IMAGES_DIR / name / "Dockerfile").read_text()
    out: dict[str, Any] = {}
    for key in ("ENTRYPOINT", "CMD"):
        match = re.search(rf"^{key}\s+(\[.*?\])\s*$", text, re.M | re.S)
        assert match, f"{name}: no JSON-form {key}"
        out[key] = json.loads(match.group(1).replace("\\\n", ""))
    out["USER"] = re.search(r"^USER\s+(\S+)", text, re.M).group(1)  # type: ignore[union-attr]
    out["WORKDIR"] = re.search(r"^WORKDIR\s+(\S+)", text, re.M).group(1)  # type: ignore[union-attr]
    return out


@pytest.mark.parametrize("component", sorted(CONTRACTS))
def test_qscale_images_declare_the_same_contract(component: str) -> None:
    contract, image = CONTRACTS[component], _dockerfile(f"qscale-{component}")
    assert image["ENTRYPOINT"] == contract["entrypoint"]
    assert image["CMD"] == contract["cmd"]
    assert image["USER"] == f"{contract['uid']}:{contract['uid']}"
    assert image["WORKDIR"] == contract["workdir"]


def test_qscale_rabbitmq_reads_its_config_from_conf_d_not_an_entrypoint() -> None:
    """The old image's entrypoint wrote rabbitmq.conf from RABBITMQ_USER/RABBITMQ_PASSWORD;
    the official image has no such step, so neither may ours."""
    entrypoint = (IMAGES_DIR / "qscale-rabbitmq" / "docker-entrypoint.sh").read_text()
    code = "\n".join(line for line in entrypoint.splitlines() if not line.startswith("#"))
    assert "rabbitmq.conf" not in code and "RABBITMQ_PASSWORD" not in code
    dockerfile = (IMAGES_DIR / "qscale-rabbitmq" / "Dockerfile").read_text()
    assert "RABBITMQ_CONFIG_FILE" not in dockerfile
    assert "/etc/rabbitmq/conf.d" in dockerfile
