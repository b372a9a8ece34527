"""A source install without a C compiler fails with an error that says what to do.

``setup.py`` turns the compiler's failure into a message naming the compiler that is missing
or failed and the pure-Python install (``MIO_NO_EXTENSIONS=1``). The unit tests call its
message function; the build test runs ``setup.py build_ext`` on a copy of the sources with
``CC=/nonexistent`` (POSIX compilers read ``CC``; MSVC does not, so it skips on Windows).
Both need ``setup.py`` next to ``tests/`` (a checkout or the unpacked sdist).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "setup.py"


@pytest.fixture(scope="module")
def setup_module() -> types.ModuleType:
    if not SETUP.is_file():
        pytest.skip(f"no setup.py at {ROOT} (tests copied out of the source tree)")
    spec = importlib.util.spec_from_file_location("mio_setup_script", SETUP)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not __main__: defines, does not build
    return module


def test_missing_compiler_message(setup_module: types.ModuleType) -> None:
    exc = FileNotFoundError(2, "No such file or directory")
    text = setup_module.build_failure_message(exc, "/nonexistent/cc")
    assert "the C compiler '/nonexistent/cc' was not found" in text
    assert "MIO_NO_EXTENSIONS=1 pip install mio-mux" in text
    assert "FileNotFoundError" in text


def test_failing_compiler_message(setup_module: types.ModuleType) -> None:
    # A compiler that exists but fails (e.g. no Python.h) is named as failing, not missing.
    text = setup_module.build_failure_message(RuntimeError("exit 1"), sys.executable)
    assert f"the C compiler {sys.executable!r} failed" in text
    assert "MIO_NO_EXTENSIONS=1" in text
    assert setup_module.build_failure_message(RuntimeError("x"), None).count(
        "no C compiler was found"
    )


def test_compiler_command(setup_module: types.ModuleType) -> None:
    unix = types.SimpleNamespace(compiler_so=["/usr/bin/cc", "-O2"])
    assert setup_module.compiler_command(unix) == "/usr/bin/cc"
    assert setup_module.compiler_command(types.SimpleNamespace()) is None


@pytest.mark.skipif(os.name != "posix", reason="CC selects the compiler on POSIX only")
def test_build_without_compiler_says_how_to_install_pure(
    setup_module: types.ModuleType, tmp_path: Path
) -> None:
    pytest.importorskip("Cython", reason="the C build needs Cython (in the test extra)")
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, tmp_path / name)
    shutil.copytree(
        ROOT / "src" / "mio",
        tmp_path / "src" / "mio",
        ignore=shutil.ignore_patterns("*.so", "*.pyd", "*.html", "__pycache__", "tunnel"),
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MIO_NO_EXTENSIONS", "CFLAGS")}
    env["CC"] = "/nonexistent/cc"
    proc = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode != 0, proc.stdout
    last = proc.stderr.strip().splitlines()
    assert any("the C compiler '/nonexistent/cc' was not found" in line for line in last), (
        proc.stderr
    )
    assert any("MIO_NO_EXTENSIONS=1 pip install mio-mux" in line for line in last)
    assert "Traceback" not in proc.stderr  # the message, not a stack, is what the user sees
