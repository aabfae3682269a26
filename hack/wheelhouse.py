"""The offline image's wheelhouse, for the image's Python whatever Python runs this.

hack/build-image.sh asks the image itself (its runtime stage) for its Python and
C library (`target` prints the code it runs there), then uses this on the host:

  wheelhouse.py pip-args TARGET_JSON           pip download flags for that target
  wheelhouse.py describe TARGET_JSON           one line: its Python, ABI and newest platform
  wheelhouse.py missing WHEELHOUSE TARGET_JSON what the target still needs (one per line)
  wheelhouse.py prune WHEELHOUSE TARGET_JSON   drop wheels the target does not need, and
                                               fail naming any needed wheel it cannot use

pip resolves environment markers for the Python that runs it, never for
--python-version, so `missing` re-evaluates every Requires-Dist of the wheelhouse
with the image's marker environment. Only pip's vendored `packaging` is used, so
any host Python with pip (3.8+) will do.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

from pip._vendor.packaging import tags
from pip._vendor.packaging.markers import Marker
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename

# Run by python3 inside the image (stdlib only): what wheels it can install.
TARGET_PROBE = r"""
import json, os, platform, sys
v = sys.implementation.version
env = {
    "implementation_name": sys.implementation.name,
    "implementation_version": f"{v.major}.{v.minor}.{v.micro}",
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_python_implementation": platform.python_implementation(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}
libc, _, libc_version = (os.confstr("CS_GNU_LIBC_VERSION") or "").partition(" ")
print(json.dumps({"env": env, "python": list(sys.version_info[:3]),
                  "implementation": sys.implementation.name,
                  "libc": libc, "libc_version": libc_version,
                  "machine": platform.machine()}))
"""

# manylinux's lowest glibc per architecture (PEP 600); the legacy aliases of PEP 599.
_MIN_GLIBC_MINOR = {"x86_64": 5, "i686": 5}
_LEGACY = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}


def load_target(path: str) -> dict:
    target = json.loads(Path(path).read_text())
    if target.get("implementation") != "cpython" or target.get("libc") != "glibc":
        raise SystemExit(f"wheelhouse: the image's Python is {target.get('implementation')} "
                         f"on {target.get('libc') or 'no glibc'}; the offline build knows "
                         "CPython on glibc only (use the builder stage: docker build .)")
    return target


def platforms(target: dict) -> list[str]:
    """Every manylinux platform tag the image's glibc accepts, newest first."""
    machine = target["machine"]
    major, minor = (int(x) for x in target["libc_version"].split(".")[:2])
    if major != 2:
        raise SystemExit(f"wheelhouse: glibc {target['libc_version']} is not 2.x")
    out = []
    for m in range(minor, _MIN_GLIBC_MINOR.get(machine, 17) - 1, -1):
        out.append(f"manylinux_2_{m}_{machine}")
        if m in _LEGACY and (m == 17 or machine in ("x86_64", "i686")):
            out.append(f"{_LEGACY[m]}_{machine}")
    return out


def abi(target: dict) -> str:
    major, minor = target["python"][:2]
    return f"cp{major}{minor}"


def pip_args(target: dict) -> list[str]:
    args = ["--only-binary=:all:", "--implementation", "cp",
            "--python-version", ".".join(str(p) for p in target["python"]),
            "--abi", abi(target), "--abi", "abi3", "--abi", "none"]
    for plat in platforms(target):
        args += ["--platform", plat]
    return args


def supported(target: dict) -> set[tags.Tag]:
    version = tuple(target["python"][:2])
    plats = platforms(target)
    return set(tags.cpython_tags(version, [abi(target), "abi3", "none"], plats)) | set(
        tags.compatible_tags(version, abi(target), plats))


def _requires(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist()
                    if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    return [Requirement(line.split(":", 1)[1].strip()) for line in lines
            if line.startswith("Requires-Dist:")]


def _applies(req: Requirement, env: dict, extras: set[str]) -> bool:
    marker: Marker | None = req.marker
    if marker is None:
        return True
    return any(marker.evaluate({**env, "extra": extra}) for extra in (extras or {""}))


def closure(wheelhouse: Path, target: dict) -> tuple[set[str], set[str], list[str]]:
    """(needed names, wheels present for them, requirements with no wheel present)."""
    env = target["env"]
    by_name: dict[str, list[Path]] = {}
    for wheel in wheelhouse.glob("*.whl"):
        by_name.setdefault(canonicalize_name(parse_wheel_filename(wheel.name)[0]), []).append(wheel)
    needed: dict[str, set[str]] = {}
    missing: list[str] = []
    todo: list[tuple[str, set[str]]] = [("qscale", set())]
    while todo:
        name, extras = todo.pop()
        seen = needed.get(name)
        if seen is not None and extras <= seen:
            continue
        needed[name] = (seen or set()) | extras
        if name not in by_name:
            continue
        for req in _requires(sorted(by_name[name])[-1]):
            if not _applies(req, env, needed[name]):
                continue
            dep = canonicalize_name(req.name)
            if dep not in by_name:
                spec = f"{req.name}{'[' + ','.join(sorted(req.extras)) + ']' if req.extras else ''}"
                missing.append(f"{spec}{req.specifier}")
            todo.append((dep, set(req.extras)))
    present = {str(w) for name in needed for w in by_name.get(name, [])}
    return set(needed), present, sorted(set(missing))


def main(argv: list[str]) -> int:
    if argv[:1] == ["target"]:
        print(TARGET_PROBE)
        return 0
    if len(argv) == 2 and argv[0] == "pip-args":
        print("\n".join(pip_args(load_target(argv[1]))))
        return 0
    if len(argv) == 2 and argv[0] == "describe":
        target = load_target(argv[1])
        print(f"Python {target['env']['python_full_version']} ({abi(target)}, "
              f"{platforms(target)[0]})")
        return 0
    if len(argv) != 3 or argv[0] not in ("missing", "prune"):
        print(__doc__, file=sys.stderr)
        return 2
    wheelhouse, target = Path(argv[1]), load_target(argv[2])
    _, present, missing = closure(wheelhouse, target)
    if argv[0] == "missing":
        print("\n".join(missing))
        return 0
    if missing:
        print(f"wheelhouse: still missing for the image: {' '.join(missing)}", file=sys.stderr)
        return 1
    ok = supported(target)
    unusable = [Path(w).name for w in sorted(present)
                if not parse_wheel_filename(Path(w).name)[3] & ok]
    if unusable:
        print(f"wheelhouse: the image's Python cannot install {' '.join(unusable)}",
              file=sys.stderr)
        return 1
    for wheel in wheelhouse.glob("*.whl"):
        if str(wheel) not in present:
            wheel.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
