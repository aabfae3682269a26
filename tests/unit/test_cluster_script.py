"""hack/cluster.sh against fake kind/docker binaries: a failed cluster listing is unknown,
never "no cluster" (CI died "cluster qscale does not exist" on a live cluster at a1e62b4)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _fake_tools(cache: Path, listing_failures: int, clusters: str) -> Path:
    bin_dir = cache / "bin"
    bin_dir.mkdir(parents=True)
    calls = cache / "kind-calls"
    (bin_dir / "kind").write_text(f"""#!/bin/bash
echo "$*" >> {calls}
if [ "$1 $2" = "get clusters" ]; then
  n=$(grep -c '^get clusters' {calls})
  if [ "$n" -le {listing_failures} ]; then
    echo "ERROR: failed to list clusters: command \\"docker ps\\" failed" >&2; exit 1
  fi
  printf '{clusters}'
  exit 0
fi
exit 0
""")
    (bin_dir / "docker").write_text("#!/bin/bash\nexit 0\n")
    for tool in ("kind", "docker"):
        (bin_dir / tool).chmod(0o755)
    return calls


def _load(cache: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, QSCALE_CACHE=str(cache), QSCALE_CLUSTER_NAME="qscale",
               QSCALE_RETRY_UNIT_S="0")
    return subprocess.run(["bash", str(REPO / "hack" / "cluster.sh"), "load", "img:1"],
                          env=env, capture_output=True, text=True, timeout=60, check=False)


def test_a_listing_that_fails_twice_is_retried(tmp_path: Path) -> None:
    calls = _fake_tools(tmp_path, listing_failures=2, clusters="qscale\\n")
    proc = _load(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "load docker-image --name qscale img:1" in calls.read_text()


def test_a_listing_that_never_answers_fails_with_the_reason(tmp_path: Path) -> None:
    calls = _fake_tools(tmp_path, listing_failures=99, clusters="qscale\\n")
    proc = _load(tmp_path)
    assert proc.returncode == 1
    assert "cannot list kind clusters" in proc.stderr and "docker ps" in proc.stderr
    assert "does not exist" not in proc.stderr
    assert "load docker-image" not in calls.read_text()


def test_an_absent_cluster_is_reported_absent(tmp_path: Path) -> None:
    _fake_tools(tmp_path, listing_failures=0, clusters="other\\n")
    proc = _load(tmp_path)
    assert proc.returncode == 1
    assert "cluster qscale does not exist" in proc.stderr
