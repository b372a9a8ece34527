"""mio: many flow-controlled byte streams over one reliable connection (the MIO protocol).

Public names only; everything else lives in private modules.
"""

from __future__ import annotations

from ._impl import EXTENSIONS_ACTIVE
from ._version import __version__
from .errors import (
    FlowControlError,
    FrameError,
    MioError,
    ProtocolError,
    SessionClosedError,
    StreamClosedError,
    StreamLimitError,
    StreamRefusedError,
    StreamResetError,
)
from .wire import ErrorCode, Flag, FrameKind

__all__ = (
    "__version__",
    "EXTENSIONS_ACTIVE",
    "ErrorCode",
    "Flag",
    "FrameKind",
    "MioError",
    "ProtocolError",
    "FrameError",
    "FlowControlError",
    "StreamResetError",
    "StreamRefusedError",
    "StreamClosedError",
    "SessionClosedError",
    "StreamLimitError",
)
