"""The switch between the compiled codec/window modules and their pure-Python twins.

All or nothing: either both ``_frame`` and ``_window`` are compiled, or both twins are used.
``MIO_NO_EXTENSIONS`` (1/true/yes/on) selects the twins; so do non-CPython interpreters and
type checking. A missing compiled module falls back to the twins without a crash; the test
suite guards that a default install loads the compiled ones.
"""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING


def _env_flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name}={value!r}: expected one of 1/true/yes/on or 0/false/no/off")


NO_EXTENSIONS = _env_flag("MIO_NO_EXTENSIONS") or platform.python_implementation() != "CPython"

if TYPE_CHECKING or NO_EXTENSIONS:
    from . import _frame_py as frame
    from . import _window_py as window

    EXTENSIONS_ACTIVE = False
else:
    try:
        from . import _frame as frame  # type: ignore[no-redef]
        from . import _window as window  # type: ignore[no-redef]
    except ImportError:  # pragma: no cover - exercised by the pure-install CI leg
        from . import _frame_py as frame
        from . import _window_py as window

        EXTENSIONS_ACTIVE = False
    else:
        EXTENSIONS_ACTIVE = True

__all__ = (
    "EXTENSIONS_ACTIVE",
    "NO_EXTENSIONS",
    "frame",
    "window",
)

del platform  # os stays: _env_flag reads the environment
