"""Fixtures of the codec micro benchmarks (``pytest benchmarks``; not in ``testpaths``).

``impl`` hands each benchmark the compiled modules and the pure-Python twins in turn, so
pytest-benchmark prints both numbers side by side in the benchmark's group.
"""

from __future__ import annotations

import dataclasses
import importlib
import types

import pytest


@dataclasses.dataclass(frozen=True)
class Impl:
    """One implementation of the codec and the window accounting."""

    name: str
    frame: types.ModuleType
    window: types.ModuleType


def _load(name: str) -> Impl:
    suffix = "" if name == "c" else "_py"
    try:
        frame = importlib.import_module(f"mio._frame{suffix}")
        window = importlib.import_module(f"mio._window{suffix}")
    except ImportError as exc:  # a pure-Python install: say so, do not fall back silently
        pytest.skip(f"compiled modules not built: {exc}")
    return Impl(name, frame, window)


@pytest.fixture(
    scope="session",
    params=[pytest.param("c", id="c", marks=pytest.mark.c_extension), pytest.param("py", id="py")],
)
def impl(request: pytest.FixtureRequest) -> Impl:
    """The implementation under benchmark (compiled, then pure-Python)."""
    return _load(request.param)
