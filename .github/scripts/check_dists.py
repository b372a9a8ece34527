"""Check the release artifacts before they are uploaded.

    python .github/scripts/check_dists.py sdist DIR
        the one sdist in DIR ships the sources, stubs, tests and docs, and no build output
    python .github/scripts/check_dists.py all DIR
        the same, and DIR also holds the pure-Python wheel and exactly one compiled wheel
        per CPython version and platform; every Linux wheel passes `auditwheel show`
    python .github/scripts/check_dists.py audit DIR
        only the `auditwheel show` check of the Linux wheels in DIR

The audit of a Linux wheel: auditwheel (from PyPI, `pip install auditwheel`) must find it
consistent with a manylinux/musllinux policy, every platform tag in its file name must be
that policy or a newer one of the same family (a wheel must not claim an older glibc or
musl than it needs), it must need no shared library outside the policy (`external_libs`
empty) and must not vendor any (no `*.libs/` directory): the extensions link libc only.

Exits non-zero with a list of problems. Standard library only (auditwheel runs as a
subprocess).
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

#: Files the sdist must ship (relative to its top directory).
SDIST_REQUIRED = (
    "pyproject.toml",
    "setup.py",
    "README.md",
    "CHANGES.md",
    "LICENSE",
    "src/mio/__init__.py",
    "src/mio/_frame.pyx",
    "src/mio/_frame.pyi",
    "src/mio/_frame_py.py",
    "src/mio/_window.pyx",
    "src/mio/_window.pyi",
    "src/mio/_window_py.py",
    "src/mio/py.typed",
    "tests/conftest.py",
    "fuzz/fuzz_decoder.py",
    "docs/PROTOCOL.md",
    "docs/conf.py",
    "docs/index.md",
)
#: Build output that must never be shipped in the sdist.
GENERATED = ("*.c", "*.html", "*.so", "*.pyd", "*.dylib", "*.dll", "*.pyc", "*/__pycache__/*")
#: The distribution's file-name prefix (``mio-mux`` normalized; the import name is ``mio``).
DIST = "mio_mux"
#: The CPython versions wheels are built for ([tool.cibuildwheel] build).
PYTHONS = ("cp311", "cp312", "cp313", "cp314", "cp315")
#: One compiled wheel per CPython version for each of these platform tags.
PLATFORMS = (
    "manylinux*_x86_64",
    "musllinux*_x86_64",
    "manylinux*_aarch64",
    "musllinux*_aarch64",
    "macosx_*_x86_64",
    "macosx_*_arm64",
    "win_amd64",
)


def check_sdist(directory: Path) -> list[str]:
    sdists = sorted(directory.glob("*.tar.gz"))
    if len(sdists) != 1:
        return [f"expected one sdist in {directory}, found {[p.name for p in sdists]}"]
    with tarfile.open(sdists[0]) as tar:
        names = [name.split("/", 1)[1] for name in tar.getnames() if "/" in name]
    problems = [f"sdist lacks {required}" for required in SDIST_REQUIRED if required not in names]
    problems += [
        f"sdist ships generated file {name}"
        for name in names
        if any(fnmatch.fnmatch(name, pattern) for pattern in GENERATED)
    ]
    print(f"{sdists[0].name}: {len(names)} entries")
    return problems


def check_all(directory: Path) -> list[str]:
    problems = check_sdist(directory)
    wheels = sorted(p.name for p in directory.glob("*.whl"))
    print("\n".join(wheels))
    pure = [w for w in wheels if w.endswith("-py3-none-any.whl")]
    if len(pure) != 1:
        problems.append(f"expected one py3-none-any wheel, found {pure}")
    else:
        with zipfile.ZipFile(directory / pure[0]) as whl:
            binaries = [n for n in whl.namelist() if n.endswith((".so", ".pyd"))]
        if binaries:
            problems.append(f"the pure wheel contains compiled modules {binaries}")
    for python in PYTHONS:
        for platform in PLATFORMS:
            pattern = f"{DIST}-*-{python}-{python}-{platform}.whl"
            found = fnmatch.filter(wheels, pattern)
            if len(found) != 1:
                problems.append(f"expected one wheel matching {pattern}, found {found}")
    expected = 1 + len(PYTHONS) * len(PLATFORMS)
    if len(wheels) != expected:
        problems.append(f"expected {expected} wheels, found {len(wheels)}")
    return problems + check_audit(directory)


# -- auditwheel ------------------------------------------------------------------------------

#: The legacy manylinux aliases and the glibc version each stands for (PEP 600).
LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_TAG = re.compile(r"(manylinux|musllinux)_(\d+)_(\d+)_(\w+)")


def parse_platform_tag(tag: str) -> tuple[str, tuple[int, int], str] | None:
    """``manylinux_2_17_x86_64`` -> ``("manylinux", (2, 17), "x86_64")``; None if not one."""
    for alias, version in LEGACY.items():
        if tag.startswith(alias + "_"):
            return "manylinux", version, tag.removeprefix(alias + "_")
    match = _TAG.fullmatch(tag)
    if not match:
        return None
    return match.group(1), (int(match.group(2)), int(match.group(3))), match.group(4)


def audit_problems(wheel: str, report: dict[str, object], members: list[str]) -> list[str]:
    """What is wrong with a Linux wheel, from ``auditwheel show --json`` and its file list."""
    problems = []
    if report.get("pure"):
        problems.append(f"{wheel}: auditwheel sees no compiled module in it")
    policy = parse_platform_tag(str(report.get("overall_tag", "")))
    if policy is None:
        problems.append(
            f"{wheel}: auditwheel finds it consistent with no manylinux/musllinux policy "
            f"(overall tag {report.get('overall_tag')!r})"
        )
    platform_tags = wheel.removesuffix(".whl").split("-")[-1].split(".")
    for tag in platform_tags:
        claimed = parse_platform_tag(tag)
        if claimed is None:
            problems.append(f"{wheel}: platform tag {tag!r} is not manylinux or musllinux")
        elif policy is not None and (claimed[0] != policy[0] or claimed[1] < policy[1]):
            problems.append(
                f"{wheel}: claims {tag} but needs {report.get('overall_tag')} "
                "(it would install on systems too old for it)"
            )
    external = report.get("external_libs") or {}
    if external:
        problems.append(f"{wheel}: needs external shared libraries {sorted(external)}")
    vendored = sorted({m.split("/", 1)[0] for m in members if m.split("/", 1)[0].endswith(".libs")})
    if vendored:
        problems.append(f"{wheel}: vendors shared libraries in {vendored}")
    return problems


def check_audit(directory: Path) -> list[str]:
    """Run ``auditwheel show --json`` on every Linux wheel in ``directory``."""
    wheels = sorted(p for p in directory.glob("*.whl") if "linux" in p.name.split("-")[-1])
    problems: list[str] = []
    for path in wheels:
        proc = subprocess.run(
            [sys.executable, "-m", "auditwheel", "show", "--json", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            problems.append(
                f"{path.name}: auditwheel show failed ({proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]} "
                "(is auditwheel installed? pip install auditwheel)"
            )
            continue
        report = json.loads(proc.stdout)
        with zipfile.ZipFile(path) as whl:
            members = whl.namelist()
        found = audit_problems(path.name, report, members)
        print(
            f"{path.name}: auditwheel: {report.get('overall_tag')}, "
            f"external libraries {sorted(report.get('external_libs') or {})}"
            f"{'' if found else ', ok'}"
        )
        problems += found
    return problems


def main(argv: list[str]) -> int:
    checks = {"sdist": check_sdist, "all": check_all, "audit": check_audit}
    if len(argv) != 3 or argv[1] not in checks:
        print(__doc__, file=sys.stderr)
        return 2
    problems = checks[argv[1]](Path(argv[2]))
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
