"""The chart README's example values, read from the README and rendered: they are valid,
and they do what the text around them says (two pools, the reports pool's grace period,
its autoscaling range, the user's module imported next to the demo tasks `helm test`
needs). Running them needs an image with `myapp` in it, which the README's deploy
section builds and runs (tests/e2e/test_newcomer_install.py); this renders them.
"""

from __future__ import annotations

from pathlib import Path

from tests.chart.conftest import CHART, Render, by_kind
from tests.chart.test_workers import env_of, workers
from tests.docs.markdown import section


def test_adding_your_own_tasks_values_render_as_described(render: Render,
                                                          tmp_path: Path) -> None:
    examples = [b for b in section(CHART / "README.md", "Adding your own tasks")
                if b.file == "values-pools.yaml"]
    assert len(examples) == 1, "the example values-pools.yaml block is gone (update me)"
    values = tmp_path / "values-pools.yaml"
    values.write_text(examples[0].text)
    docs = render(values=[values])

    pools = workers(docs)
    assert set(pools) == {"default", "reports"}
    for deployment in pools.values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == "registry.example.com/myapp-workers:1.4.2"
        imports = env_of(deployment)["QSCALE_IMPORTS"].split(",")
        assert "myapp.tasks" in imports
        assert "worker.demo_tasks" in imports  # kept: `helm test` sends qscale.demo.add
    reports = pools["reports"]
    assert env_of(reports)["QSCALE_QUEUES"] == "reports"
    assert env_of(reports)["QSCALE_CONCURRENCY"] == "1"
    # "drainSeconds: 300  # long tasks: the grace period follows (310 s)"
    assert "(310 s)" in examples[0].text
    assert reports["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 310
    wps = {w["spec"]["targetRef"]["name"]: w["spec"] for w in by_kind(docs, "WorkerPool")}
    assert wps[reports["metadata"]["name"]]["minReplicas"] == 0
    assert wps[reports["metadata"]["name"]]["maxReplicas"] == 5
    # "its own Deployment, PDB and WorkerPool"
    assert len(by_kind(docs, "PodDisruptionBudget")) == 2
    assert len(by_kind(docs, "WorkerPool")) == 2
    tests = [d for d in docs if d["kind"] == "Pod"
             and d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    assert tests, "no helm test pod rendered with the README's values"
