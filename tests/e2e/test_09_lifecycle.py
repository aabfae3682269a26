"""`helm test`, `helm upgrade` with a changed value, `helm uninstall` leaving only PVCs and
the generated broker Secrets.

Runs last for each broker: it uninstalls the shared release.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.release import CHART, CONCURRENCY, RELEASE_NAME, Release, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.k8s, pytest.mark.slow]

NEW_CONCURRENCY = CONCURRENCY - 1
# Present in every namespace, or written by the API server itself.
BACKGROUND = {("ConfigMap", "kube-root-ca.crt"), ("ServiceAccount", "default")}
IGNORED_KINDS = {"events", "events.events.k8s.io"}


def _state(release: Release, pod: str) -> dict[str, object]:
    out = release.kubectl("exec", pod, "--", "python", "-c",
                          "import urllib.request; print(urllib.request.urlopen("
                          "'http://127.0.0.1:8080/state', timeout=5).read().decode())")
    result: dict[str, object] = json.loads(out)
    return result


def test_helm_test_upgrade_uninstall(release: Release) -> None:
    # No --logs: the chart deletes the test pod once it succeeded (hook-succeeded).
    out = release.cluster.helm("test", RELEASE_NAME, "-n", release.namespace,
                               "--timeout", "3m", timeout=240).stdout
    assert "Phase:          Succeeded" in out, out
    print(f"\n[{release.broker}] helm test: succeeded")

    selector = f"app.kubernetes.io/instance={RELEASE_NAME},app.kubernetes.io/component=worker"
    old_sets = {rs["metadata"]["name"] for rs in
                release.get_json("replicasets", "-l", selector)["items"]}
    release.cluster.helm("upgrade", RELEASE_NAME, str(CHART), "-n",
                         release.namespace, "-f", release.values_file, "--set",
                         f"worker.concurrency={NEW_CONCURRENCY}", "--wait", "--timeout", "5m",
                         timeout=360)

    def rolled_out() -> list[str] | None:
        sets = release.get_json("replicasets", "-l", selector)["items"]
        new = [rs for rs in sets if rs["metadata"]["name"] not in old_sets
               and (rs["status"].get("readyReplicas") or 0) >= 1]
        if not new:
            return None
        pods = [p for p in release.worker_pods()
                if not p["metadata"].get("deletionTimestamp")]
        owners = {p["metadata"]["ownerReferences"][0]["name"] for p in pods}
        if owners != {new[0]["metadata"]["name"]}:
            return None
        return [p["metadata"]["name"] for p in pods]

    pods = wait_until(rolled_out, timeout=240, interval=3, what="the upgraded ReplicaSet")
    for pod in pods:
        state = _state(release, pod)
        assert state.get("concurrency") == NEW_CONCURRENCY, state
    pool = release.get_json("workerpool", release.workerpool)
    assert pool["spec"]["concurrency"] == NEW_CONCURRENCY, pool["spec"]
    print(f"[{release.broker}] upgrade: new ReplicaSet, pods {pods} run concurrency "
          f"{NEW_CONCURRENCY}")

    release.delete_probe()
    release.cluster.helm("uninstall", RELEASE_NAME, "-n", release.namespace, "--wait",
                         "--timeout", "3m", timeout=240)
    release.installed = False
    wait_until(lambda: _no_pods_left(release), timeout=120, interval=3,
               what="every pod of the release to terminate")
    leftovers = _leftovers(release)
    print(f"[{release.broker}] after uninstall: {sorted(leftovers)}")
    # The brokers' data and generated credentials outlive the release (documented), so
    # a reinstall logs in to the kept data; nothing else may stay.
    brokers = ["redis", "rabbitmq"] if release.broker == "rabbitmq" else ["redis"]
    kept_secrets = {("Secret", f"{RELEASE_NAME}-qscale-{b}") for b in brokers}
    unexpected = {(kind, name) for kind, name in leftovers
                  if kind != "PersistentVolumeClaim" and (kind, name) not in kept_secrets}
    assert any(kind == "PersistentVolumeClaim" for kind, _ in leftovers), \
        "the broker's PVC should outlive the release (documented)"
    assert kept_secrets <= leftovers, f"generated broker Secrets not kept: {sorted(leftovers)}"
    assert not unexpected, f"left behind after helm uninstall: {sorted(unexpected)}"


def _leftovers(release: Release) -> set[tuple[str, str]]:
    kinds = release.cluster.kubectl("api-resources", "--verbs=list", "--namespaced",
                                    "-o", "name").stdout.split()
    kinds = [k for k in kinds if k not in IGNORED_KINDS]
    out = release.kubectl("get", ",".join(kinds), "-o",
                          "jsonpath={range .items[*]}{.kind}/{.metadata.name}{'\\n'}{end}",
                          timeout=120)
    found = {tuple(line.split("/", 1)) for line in out.splitlines() if "/" in line}
    return {(kind, name) for kind, name in found} - BACKGROUND


def _no_pods_left(release: Release) -> bool:
    """Uninstall does not wait for pods to finish terminating; the check does."""
    return not release.get_json("pods")["items"]
