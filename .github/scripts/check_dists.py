"""Check the release artifacts before they are uploaded.

    python .github/scripts/check_dists.py sdist DIR
        the one sdist in DIR ships the sources, stubs, tests and docs, and no build output
    python .github/scripts/check_dists.py all DIR
        the same, and DIR also holds the pure-Python wheel and exactly one compiled wheel
        per CPython version and platform

Exits non-zero with a list of problems. Standard library only.
"""

from __future__ import annotations

import fnmatch
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
)
#: Build output that must never be shipped in the sdist.
GENERATED = ("*.c", "*.html", "*.so", "*.pyd", "*.dylib", "*.dll", "*.pyc", "*/__pycache__/*")
#: The CPython versions wheels are built for ([tool.cibuildwheel] build).
PYTHONS = ("cp310", "cp311", "cp312", "cp313")
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
            pattern = f"mio-*-{python}-{python}-{platform}.whl"
            found = fnmatch.filter(wheels, pattern)
            if len(found) != 1:
                problems.append(f"expected one wheel matching {pattern}, found {found}")
    expected = 1 + len(PYTHONS) * len(PLATFORMS)
    if len(wheels) != expected:
        problems.append(f"expected {expected} wheels, found {len(wheels)}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("sdist", "all"):
        print(__doc__, file=sys.stderr)
        return 2
    directory = Path(argv[2])
    problems = check_sdist(directory) if argv[1] == "sdist" else check_all(directory)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
