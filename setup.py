"""Build script: cythonizes the frame codec and window accounting.

Switches (environment variables):
  MIO_NO_EXTENSIONS=1     pure-Python build: no C compiler needed, the twins are used.
  MIO_CYTHON_ANNOTATE=1   write the annotated HTML (src/mio/_frame.html, _window.html).
  MIO_CYTHON_TRACE=1      compile with line tracing (for profilers; slower).

A failed compilation fails the install loudly: there is no silent pure-Python wheel. The
error says which compiler failed or is missing and how to get the pure-Python install
(tests/test_build_errors.py checks it).
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

#: The distribution name (as in pyproject.toml); ``import mio`` is the import name.
DISTRIBUTION = "mio-mux"

#: How to get a compiler, per platform (``sys.platform`` prefix).
COMPILER_HINTS = {
    "linux": "on Debian/Ubuntu `apt-get install gcc python3-dev`, on Fedora/RHEL "
    "`dnf install gcc python3-devel`, on Alpine `apk add gcc musl-dev python3-dev`",
    "darwin": "the Xcode command line tools: `xcode-select --install`",
    "win32": 'Microsoft C++ Build Tools ("Desktop development with C++")',
}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def compiler_command(compiler: Any) -> str | None:
    """The executable the distutils ``compiler`` object runs, if it names one."""
    for attr in ("compiler_so", "compiler"):
        argv = getattr(compiler, attr, None)
        if isinstance(argv, (list, tuple)) and argv:
            return str(argv[0])
    return None


def build_failure_message(exc: BaseException, command: str | None) -> str:
    """The error a user sees when the C extensions cannot be built."""
    if command is None:
        what = "no C compiler was found"
    elif shutil.which(command) is None:
        what = f"the C compiler {command!r} was not found"
    else:
        what = f"the C compiler {command!r} failed"
    hint = next(
        (text for prefix, text in COMPILER_HINTS.items() if sys.platform.startswith(prefix)),
        "a C compiler and the Python development headers",
    )
    return (
        f"{DISTRIBUTION}: building the C extensions mio._frame and mio._window failed: "
        f"{what} ({type(exc).__name__}: {exc}).\n"
        f"  Either install a C compiler and the Python headers ({hint}) and retry,\n"
        "  or install the pure-Python build, which needs no compiler and behaves the same "
        "(slower):\n"
        f"      MIO_NO_EXTENSIONS=1 pip install {DISTRIBUTION}\n"
        "  (PowerShell: $env:MIO_NO_EXTENSIONS=1; pip install "
        f"{DISTRIBUTION}; from a checkout: MIO_NO_EXTENSIONS=1 pip install .)"
    )


class BuildFailed(SystemExit):
    """Raised with :func:`build_failure_message`; setuptools prints it as the error."""


class BuildExt(build_ext):
    """``build_ext`` whose compiler errors say what is missing and how to do without it."""

    def build_extension(self, ext: Extension) -> None:
        # CompileError, LinkError and a missing compiler (DistutilsExecError, OSError) all
        # end here; DistutilsPlatformError is what MSVC detection raises on Windows.
        try:
            super().build_extension(ext)
        except Exception as exc:
            if not _is_compiler_error(exc):
                raise
            raise BuildFailed(build_failure_message(exc, compiler_command(self.compiler))) from exc


def _is_compiler_error(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(
        names
        & {
            "CCompilerError",
            "CompileError",
            "LinkError",
            "DistutilsExecError",
            "DistutilsPlatformError",
            "OSError",
        }
    )


def main() -> None:
    no_extensions = _flag("MIO_NO_EXTENSIONS") or sys.implementation.name != "cpython"
    if no_extensions:
        print("*********************\n* Pure Python build *\n*********************")
        setup()
        return
    try:
        from Cython.Build import cythonize
    except ImportError as exc:  # a direct `python setup.py` without the build requirements
        raise BuildFailed(
            f"{DISTRIBUTION}: the C build needs Cython>=3.1 ({exc}); `pip install .` "
            "installs it for the build, or MIO_NO_EXTENSIONS=1 makes a pure-Python build"
        ) from exc

    trace = _flag("MIO_CYTHON_TRACE")
    macros = [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")] if trace else []
    extensions = [
        Extension(f"mio.{name}", [f"src/mio/{name}.pyx"], define_macros=macros)
        for name in ("_frame", "_window")
    ]
    print("**********************\n* Accelerated build *\n**********************")
    setup(
        cmdclass={"build_ext": BuildExt},
        ext_modules=cythonize(
            extensions,
            annotate=_flag("MIO_CYTHON_ANNOTATE"),
            compiler_directives={"language_level": "3", "linetrace": trace, "embedsignature": True},
        ),
    )


if __name__ == "__main__":  # setuptools' build backend runs this file as __main__
    main()
