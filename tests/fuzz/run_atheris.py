"""Coverage-guided fuzzing (libFuzzer through atheris) of a target in tests/fuzz/targets.py.

    python -m tests.fuzz.run_atheris decode --seconds 60     # `make fuzz` runs longer

Starts from the seeds in tests/fuzz/corpus/<target> and a working corpus under
artifacts/fuzz/ (grown with new coverage, not committed); writes any input that
makes the target fail to tests/fuzz/crashers/, where tests/fuzz/test_crashers.py
keeps it as a regression test. Exits non-zero on a crash.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent

with atheris.instrument_imports():
    import worker.envelope  # noqa: F401 - instrumented for coverage
    from tests.fuzz.targets import TARGETS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--runs", type=int, default=-1)
    args, rest = parser.parse_known_args()
    seeds = HERE / "corpus" / args.target
    seeds.mkdir(parents=True, exist_ok=True)
    corpus = HERE.parents[1] / "artifacts" / "fuzz" / args.target
    corpus.mkdir(parents=True, exist_ok=True)
    crashers = HERE / "crashers"
    crashers.mkdir(exist_ok=True)
    target = TARGETS[args.target]
    libfuzzer_args = [sys.argv[0], f"-max_total_time={args.seconds}", f"-runs={args.runs}",
                      f"-artifact_prefix={crashers}/{args.target}-", "-max_len=8192",
                      "-print_final_stats=1", *rest, str(corpus), str(seeds)]
    atheris.Setup(libfuzzer_args, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
