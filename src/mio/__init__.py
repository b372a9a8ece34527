"""mio: many flow-controlled byte streams over one reliable connection (the MIO protocol).

Public names only; everything else lives in private modules.
"""

from __future__ import annotations

from ._impl import EXTENSIONS_ACTIVE
from ._version import __version__
from .api import (
    Server,
    SessionHandler,
    connect,
    connect_unix,
    pipe,
    serve,
    serve_unix,
    session_from_socket,
    session_from_streams,
)
from .budget import MemoryBudget
from .config import Config
from .errors import (
    FlowControlError,
    FrameError,
    MioError,
    ProtocolError,
    SessionClosedError,
    StreamCancelledError,
    StreamClosedError,
    StreamLimitError,
    StreamRefusedError,
    StreamResetError,
)
from .session import Session, StreamHandler
from .stream import Stream
from .stream_protocol import StreamProtocol
from .wire import ErrorCode, Flag, FrameKind

__all__ = (
    "__version__",
    "EXTENSIONS_ACTIVE",
    "Config",
    "MemoryBudget",
    "Session",
    "Stream",
    "Server",
    "StreamHandler",
    "StreamProtocol",
    "SessionHandler",
    "connect",
    "serve",
    "connect_unix",
    "serve_unix",
    "session_from_socket",
    "session_from_streams",
    "pipe",
    "ErrorCode",
    "Flag",
    "FrameKind",
    "MioError",
    "ProtocolError",
    "FrameError",
    "FlowControlError",
    "StreamResetError",
    "StreamRefusedError",
    "StreamCancelledError",
    "StreamClosedError",
    "SessionClosedError",
    "StreamLimitError",
)
