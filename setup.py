"""Build script: cythonizes the frame codec and window accounting.

Switches (environment variables):
  MIO_NO_EXTENSIONS=1     pure-Python build: no C compiler needed, the twins are used.
  MIO_CYTHON_ANNOTATE=1   write the annotated HTML (src/mio/_frame.html, _window.html).
  MIO_CYTHON_TRACE=1      compile with line tracing (for profilers; slower).

A failed compilation fails the install loudly: there is no silent pure-Python wheel.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


NO_EXTENSIONS = _flag("MIO_NO_EXTENSIONS")
if sys.implementation.name != "cpython":
    NO_EXTENSIONS = True

if NO_EXTENSIONS:
    print("*********************\n* Pure Python build *\n*********************")
    setup()
else:
    from Cython.Build import cythonize

    trace = _flag("MIO_CYTHON_TRACE")
    macros = [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")] if trace else []
    extensions = [
        Extension(f"mio.{name}", [f"src/mio/{name}.pyx"], define_macros=macros)
        for name in ("_frame", "_window")
    ]
    print("**********************\n* Accelerated build *\n**********************")
    setup(
        ext_modules=cythonize(
            extensions,
            annotate=_flag("MIO_CYTHON_ANNOTATE"),
            compiler_directives={"language_level": "3", "linetrace": trace, "embedsignature": True},
        )
    )
