"""`python -m bench.keda`: real KEDA vs qscale on a kind cluster (`make bench-keda`).

    python -m bench.keda run                      # every trace, both brokers, 4 scalers
    python -m bench.keda run --only burst --brokers redis --rounds 2
    python -m bench.keda run --scaler keda-tuned --scaler k5=keda:poll=5,cooldown=60 ...
    python -m bench.keda report DIR               # re-render RESULTS.md and PNGs
    python -m bench.keda manifests                # the KEDA objects a run applies (YAML)
    python -m bench.keda sim DIR                  # the same traces in controller.sim

A bad argument or trace file exits 2 with one line naming it.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.keda.scalers import DEFAULT_SCALERS, Scaler, parse_scaler
from controller.sim.tracefile import TraceFileError, load_traces

DEFAULT_TRACES = Path(__file__).parent / "traces.yaml"
DEFAULT_OUT = Path("bench/results/keda")
SHARED_CLUSTER = "qscale"   # hack/cluster.sh's default: everyone's tests run there
log = logging.getLogger("bench.keda")


def _scalers(specs: Sequence[str] | None) -> tuple[Scaler, ...]:
    scalers = tuple(parse_scaler(s) for s in (specs or DEFAULT_SCALERS))
    names = [s.name for s in scalers]
    if len(set(names)) != len(names):
        raise ValueError(f"--scaler: names must be unique, got {names}")
    return scalers


def _git() -> str:
    def out(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()
    dirty = "+dirty" if out("git", "status", "--porcelain", "--untracked-files=no") else ""
    return out("git", "rev-parse", "--short", "HEAD") + dirty


def cmd_run(args: argparse.Namespace) -> int:
    from bench.keda import prepare
    from bench.keda.kube import Kube
    from bench.keda.release import PoolShape, Release
    from bench.keda.report import markdown
    from bench.keda.run import LoadMonitor, run_trace

    if args.cluster == SHARED_CLUSTER:
        raise ValueError(f"--cluster: {SHARED_CLUSTER} is the shared test cluster; KEDA is "
                         "cluster-wide and would stay installed there (use a cluster of "
                         "its own, e.g. qscale-bench)")
    traces = load_traces(args.traces)
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - {t.name for t in traces})
        if unknown:
            raise ValueError(f"--only: {unknown} not in {args.traces}")
        traces = [t for t in traces if t.name in wanted]
    brokers = args.brokers.split(",")
    if not set(brokers) <= {"redis", "rabbitmq"}:
        raise ValueError(f"--brokers: redis and/or rabbitmq, got {args.brokers!r}")
    scalers = _scalers(args.scaler)
    shape = PoolShape(concurrency=args.concurrency, max_replicas=args.max_replicas)
    kube = Kube(args.cluster)
    created = prepare.ensure_cluster(kube)
    load = LoadMonitor()
    load.start()
    try:
        image = prepare.build_images(kube, rebuild=not args.no_build)
        prepare.load_images(kube, image, brokers)
        keda = prepare.install_keda(kube) if any(s.kind == "keda" for s in scalers) else "-"
        k8s = json.loads(kube.kubectl("version", "-o", "json"))["serverVersion"]["gitVersion"]
        api = kube.api_client()
        results = []
        for broker in brokers:
            release = Release(kube, broker, scalers, shape)
            release.install(image)
            for rnd in range(args.rounds):
                for trace in traces:
                    tr = run_trace(release, trace, api, max_extra=args.max_extra,
                                   out_dir=args.raw, speed=args.speed)
                    for r in tr.results:
                        row = r.to_json()
                        row["round"] = rnd
                        results.append(row)
                        log.info("%s/%s/%s: %.0f pod-s, p95 %.1f s, interrupted %d",
                                 trace.name, broker, r.scaler, r.pod_seconds, r.wait_p95,
                                 r.interrupted)
        doc = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "command": " ".join(["python -m bench.keda", *sys.argv[1:]]),
               "git": _git(), "keda": keda, "kubernetes": k8s, "image": image,
               "image_facts": prepare.image_facts(kube, image),
               "pool": f"{shape.concurrency} processes per pod, 0-{shape.max_replicas} "
                       f"replicas, requests cpu {shape.cpu_request} / memory "
                       f"{shape.memory_request}, chart defaults otherwise",
               "load": load.summary(), "rounds": args.rounds, "speed": args.speed,
               "scalers": {s.name: s.describe() for s in scalers},
               "traces": {t.name: t.description for t in traces}, "results": results}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(doc, indent=1))
        print(markdown(doc, args.out))
    finally:
        load.stopped.set()
        if created and not args.keep_cluster:
            prepare.delete_cluster(kube)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench.keda.report import markdown
    doc = json.loads((args.dir / "results.json").read_text())
    print(markdown(doc, args.dir))
    return 0


def cmd_manifests(args: argparse.Namespace) -> int:
    import yaml  # type: ignore[import-untyped]

    from bench.keda.kube import Kube
    from bench.keda.release import PoolShape, Release
    scalers = _scalers(args.scaler)
    docs = []
    for broker in args.brokers.split(","):
        release = Release(Kube("none"), broker, scalers, PoolShape())
        for d in release.keda_objects():
            d["metadata"]["namespace"] = release.ns
            docs.append(d)
    print(yaml.safe_dump_all(docs, sort_keys=False), end="")
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from bench.keda.calibrate import calibrate
    print(calibrate(args.dir, args.traces))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.keda", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="replay the traces on a kind cluster")
    run.add_argument("--traces", type=Path, default=DEFAULT_TRACES, help="trace file")
    run.add_argument("--only", default="", help="comma-separated trace names")
    run.add_argument("--brokers", default="redis,rabbitmq")
    run.add_argument("--scaler", action="append", help="preset or NAME=KIND:opts (repeat)")
    run.add_argument("--cluster", default="qscale-bench",
                     help="kind cluster (created if missing, deleted after unless kept)")
    run.add_argument("--keep-cluster", action="store_true")
    run.add_argument("--no-build", action="store_true", help="reuse the qscale:bench image")
    run.add_argument("--rounds", type=int, default=1, help="repeat every trace")
    run.add_argument("--concurrency", type=int, default=4)
    run.add_argument("--max-replicas", type=int, default=10)
    run.add_argument("--max-extra", type=float, default=600.0,
                     help="seconds past a trace's end to wait for scale-in")
    run.add_argument("--speed", type=float, default=1.0, help="replay faster (smoke only)")
    run.add_argument("--out", type=Path, default=DEFAULT_OUT)
    run.add_argument("--raw", type=Path, default=Path("artifacts/bench-keda/raw"),
                     help="where every run's raw records go (JSON per trace and broker)")
    run.set_defaults(func=cmd_run)
    rep = sub.add_parser("report", help="re-render a results directory")
    rep.add_argument("dir", type=Path, nargs="?", default=DEFAULT_OUT)
    rep.set_defaults(func=cmd_report)
    man = sub.add_parser("manifests", help="print the KEDA objects a run applies")
    man.add_argument("--brokers", default="redis,rabbitmq")
    man.add_argument("--scaler", action="append")
    man.set_defaults(func=cmd_manifests)
    sim = sub.add_parser("sim", help="the same traces in controller.sim, vs a real run")
    sim.add_argument("dir", type=Path, nargs="?", default=DEFAULT_OUT)
    sim.add_argument("--traces", type=Path, default=DEFAULT_TRACES)
    sim.set_defaults(func=cmd_sim)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except (ValueError, TraceFileError) as exc:
        print(f"python -m bench.keda: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
