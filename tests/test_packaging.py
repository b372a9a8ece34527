"""Packaging guards: a wrong version, extra, entry point or wheel setting fails the suite.

Nothing is built here. The metadata tests read ``pyproject.toml``, ``CHANGES.md`` and the CI
workflow from the tree the tests came from (a checkout, or the unpacked sdist cibuildwheel
tests a wheel with) and compare them with the installed package; without a
``pyproject.toml`` next to ``tests/`` they skip. The import guards run a fresh interpreter
to check which implementation ``MIO_NO_EXTENSIONS`` selects.
"""

from __future__ import annotations

import ast
import importlib.metadata
import itertools
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import mio
from mio._version import DISTRIBUTION

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
CI_WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"

#: The Python versions the project says it supports and tests (classifiers, wheels, CI).
#: 3.10 was dropped at its end of life (October 2026); 3.15 is built by cibuildwheel >= 4.2.
TESTED = {"3.11", "3.12", "3.13", "3.14", "3.15"}


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    if not PYPROJECT.is_file():
        pytest.skip(f"no pyproject.toml at {ROOT} (tests copied out of the source tree)")
    with PYPROJECT.open("rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def project(pyproject: dict[str, Any]) -> dict[str, Any]:
    table: dict[str, Any] = pyproject["project"]
    return table


@pytest.fixture(scope="module")
def cibuildwheel(pyproject: dict[str, Any]) -> dict[str, Any]:
    table: dict[str, Any] = pyproject["tool"]["cibuildwheel"]
    return table


@pytest.fixture(scope="module")
def metadata() -> importlib.metadata.PackageMetadata:
    return importlib.metadata.metadata(DISTRIBUTION)


def _source_version() -> str:
    """The ``__version__`` literal of ``src/mio/_version.py``, read without importing it."""
    tree = ast.parse((ROOT / "src" / "mio" / "_version.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__version__"]
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    raise AssertionError("src/mio/_version.py assigns no __version__ string literal")


def test_name(project: dict[str, Any], metadata: importlib.metadata.PackageMetadata) -> None:
    # The distribution is mio-mux (the index name "mio" is another project's); the import
    # name stays mio, and the installed distribution provides exactly that package.
    assert DISTRIBUTION == "mio-mux"
    assert project["name"] == DISTRIBUTION
    assert metadata["Name"] == DISTRIBUTION
    assert DISTRIBUTION in importlib.metadata.packages_distributions()["mio"]
    top_level = importlib.metadata.distribution(DISTRIBUTION).read_text("top_level.txt")
    assert top_level is not None
    assert top_level.split() == ["mio"]


def test_version_has_one_source(
    project: dict[str, Any], pyproject: dict[str, Any], metadata: importlib.metadata.PackageMetadata
) -> None:
    assert "version" not in project, "the version must not be written in pyproject.toml"
    assert "version" in project["dynamic"]
    dynamic = pyproject["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "mio._version.__version__"}
    version = _source_version()
    assert Version(version) == Version(mio.__version__)
    assert version == mio.__version__ == metadata["Version"]


def test_changelog_has_an_entry_for_the_version(pyproject: dict[str, Any]) -> None:
    changes = (ROOT / "CHANGES.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (\S+)", changes, flags=re.MULTILINE)
    assert mio.__version__ in headings, f"CHANGES.md has no '## {mio.__version__}' entry"


def test_requires_python(
    project: dict[str, Any], metadata: importlib.metadata.PackageMetadata
) -> None:
    assert project["requires-python"] == ">=3.11"
    assert metadata["Requires-Python"] == ">=3.11"


def test_license(project: dict[str, Any], metadata: importlib.metadata.PackageMetadata) -> None:
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    assert metadata["License-Expression"] == "MIT"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 The mio developers" in text
    # PEP 639: a license expression replaces the License :: classifiers.
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]


def test_classifiers_wheels_and_ci_name_the_same_versions(
    project: dict[str, Any], cibuildwheel: dict[str, Any]
) -> None:
    prefix = "Programming Language :: Python :: "
    classified = {
        c.removeprefix(prefix) for c in project["classifiers"] if re.fullmatch(r".*3\.\d+", c)
    }
    assert classified == TESTED
    assert "Programming Language :: Python :: Implementation :: CPython" in project["classifiers"]
    assert "Typing :: Typed" in project["classifiers"]

    spec = SpecifierSet(project["requires-python"])
    assert all(v in spec for v in TESTED)
    assert f"{min(TESTED, key=Version)}" == project["requires-python"].removeprefix(">=")

    built = set()
    for selector in cibuildwheel["build"]:
        match = re.fullmatch(r"cp3(\d+)-\*", selector)
        assert match, f"unexpected cibuildwheel build selector {selector!r}"
        built.add(f"3.{match.group(1)}")
    assert built == TESTED

    if not CI_WORKFLOW.is_file():
        return  # an sdist does not ship .github/
    matrices = re.findall(r"python-version:\s*\[([^\]]*)\]", CI_WORKFLOW.read_text("utf-8"))
    assert matrices, "no python-version matrix in ci.yml"
    for matrix in matrices:
        assert set(re.findall(r"[\"']?(3\.\d+)[\"']?", matrix)) == TESTED


def test_entry_point(project: dict[str, Any]) -> None:
    assert project["scripts"] == {"mio": "mio.cli:main"}
    (entry_point,) = importlib.metadata.entry_points(group="console_scripts", name="mio")
    assert entry_point.value == "mio.cli:main"


def test_extras(project: dict[str, Any], metadata: importlib.metadata.PackageMetadata) -> None:
    extras = project["optional-dependencies"]
    assert {"test", "bench", "quic", "ws", "docs", "dev"} <= set(extras)
    assert {"test", "bench", "docs"} <= set(metadata.get_all("Provides-Extra") or [])
    test_reqs = {Requirement(r).name: Requirement(r) for r in extras["test"]}
    assert {"pytest", "hypothesis", "pytest-benchmark", "Cython", "setuptools"} <= set(test_reqs)
    # CI installs only [test]: the WebSocket tunnel tests need what [ws] brings.
    ws_reqs = {Requirement(r).name for r in extras["ws"]}
    assert ws_reqs == {"websockets"}
    assert ws_reqs <= set(test_reqs)
    # requires-python >= 3.11: tomllib is in the standard library, tomli is not needed.
    assert "tomli" not in test_reqs
    docs_reqs = {Requirement(r).name for r in extras["docs"]}
    assert docs_reqs == {"sphinx", "furo", "myst-parser"}
    # The extras that name the project itself use the distribution name.
    for extra, reqs in extras.items():
        for req in map(Requirement, reqs):
            assert req.name != "mio", f"extra {extra!r} requires the unrelated index name mio"


def test_cibuildwheel_config(pyproject: dict[str, Any], cibuildwheel: dict[str, Any]) -> None:
    skip = cibuildwheel["skip"]
    assert "cp31?t-*" in skip, "free-threaded builds must be skipped until audited"
    assert "pp*" in skip
    assert cibuildwheel["test-extras"] == ["test"]
    # The wheel is tested as installed, from a temporary directory, with the sdist's tests.
    assert re.fullmatch(r"pytest \{project\}/tests( .*)?", cibuildwheel["test-command"])
    # Every skip carries the reason on the comment line above it.
    section = PYPROJECT.read_text("utf-8").split("[tool.cibuildwheel]", 1)[1]
    lines = section.split("skip = [", 1)[1].split("]", 1)[0].splitlines()
    for previous, line in itertools.pairwise(["skip = [", *lines]):
        if line.strip().startswith('"'):
            assert previous.strip().startswith("#"), f"no reason given for the skip {line}"


def test_sdist_manifest() -> None:
    manifest = ROOT / "MANIFEST.in"
    if not manifest.is_file():
        pytest.skip("no MANIFEST.in (tests copied out of the source tree)")
    text = manifest.read_text("utf-8")
    for directive in ("graft tests", "graft fuzz", "graft docs", "graft benchmarks"):
        assert directive in text
    assert re.search(r"recursive-include src/mio .*\*\.pyx.*\*\.pyi.*py\.typed", text)
    excluded = re.search(r"^global-exclude (.*)$", text, flags=re.MULTILINE)
    assert excluded
    assert {"*.c", "*.html", "*.so"} <= set(excluded.group(1).split())


# -- which implementation an import selects ------------------------------------------------

PROBE = (
    "import mio, mio._impl; "
    "print(mio.EXTENSIONS_ACTIVE, mio._impl.frame.__name__, mio._impl.window.__name__, "
    "mio.__file__)"
)


def _import_mio(value: str | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Import mio in a fresh interpreter with ``MIO_NO_EXTENSIONS`` unset or set to value."""
    env = dict(os.environ)
    env.pop("MIO_NO_EXTENSIONS", None)
    if value is not None:
        env["MIO_NO_EXTENSIONS"] = value
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _selected(value: str | None, cwd: Path) -> list[str]:
    proc = _import_mio(value, cwd)
    assert proc.returncode == 0, proc.stderr
    active, frame, window, path = proc.stdout.split()
    assert path == mio.__file__, "the subprocess imported another copy of mio"
    return [active, frame, window]


@pytest.mark.c_extension
@pytest.mark.parametrize("value", [None, "", "0", "false", "no", "off"])
def test_default_install_loads_the_compiled_modules(value: str | None, tmp_path: Path) -> None:
    """The guard against a silent fallback: a compiled install must use _frame/_window."""
    assert _selected(value, tmp_path) == ["True", "mio._frame", "mio._window"]


@pytest.mark.parametrize("value", ["1", "true", "yes", "on", " ON "])
def test_no_extensions_selects_the_twins(value: str, tmp_path: Path) -> None:
    assert _selected(value, tmp_path) == ["False", "mio._frame_py", "mio._window_py"]


@pytest.mark.parametrize("value", ["garbage", "2", "enable"])
def test_invalid_no_extensions_value_fails_the_import(value: str, tmp_path: Path) -> None:
    proc = _import_mio(value, tmp_path)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError: MIO_NO_EXTENSIONS=")
    assert repr(value.strip().lower()) in last
