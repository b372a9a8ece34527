"""The exception hierarchy of mio.

Every exception derives from :class:`MioError` and also from the built-in that fits, so
code that already handles ``ConnectionResetError`` or ``ValueError`` keeps working.
Both codec implementations raise exactly these classes.
"""

from __future__ import annotations

from .wire import ErrorCode

__all__ = (
    "MioError",
    "ProtocolError",
    "FrameError",
    "FlowControlError",
    "StreamResetError",
    "StreamClosedError",
    "StreamRefusedError",
    "StreamCancelledError",
    "SessionClosedError",
    "StreamLimitError",
)


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"UNKNOWN({code})"


class MioError(Exception):
    """Base class of every error mio raises."""


class ProtocolError(MioError):
    """The peer broke the protocol. ``error_code`` is the code mio answers with."""

    error_code: int = ErrorCode.PROTOCOL_ERROR


class FrameError(ProtocolError, ValueError):
    """A frame that cannot be decoded: bad flags, bad stream id, oversized VALUE.

    Attributes:
        offset: byte offset of the frame's header in the session's inbound byte stream.
        flags: the flags octet of the offending frame.
        stream_id: the stream id of the offending frame.
    """

    error_code = ErrorCode.PROTOCOL_ERROR

    def __init__(
        self, message: str, offset: int = -1, flags: int = -1, stream_id: int = -1
    ) -> None:
        self.offset = offset
        self.flags = flags
        self.stream_id = stream_id
        if offset >= 0:
            message = (
                f"{message} (frame at offset {offset}, flags 0x{flags:02x}, stream {stream_id})"
            )
        super().__init__(message)


class FlowControlError(ProtocolError):
    """A window was violated: data beyond the receive window, or a window overflow."""

    error_code = ErrorCode.FLOW_CONTROL_ERROR


class StreamResetError(MioError, ConnectionResetError):
    """The stream was reset. ``code`` is the error code; ``remote`` says who reset it."""

    def __init__(
        self, stream_id: int, code: int, *, remote: bool = True, reason: str | None = None
    ) -> None:
        self.stream_id = stream_id
        self.code = code
        self.remote = remote
        self.reason = reason
        who = "peer" if remote else "local side"
        message = f"stream {stream_id} reset by {who} with {_code_name(code)}"
        if reason:
            message = f"{message}: {reason}"
        super().__init__(message)


class StreamRefusedError(StreamResetError):
    """The peer refused a stream we opened (RST REFUSED): it is over a limit."""


class StreamCancelledError(StreamResetError):
    """The stream was reset with ``CANCEL``: the other side gave up on it (a cancelled task,
    a deadline). Not an error of either side; a server handler serving it is cancelled."""


class StreamClosedError(MioError, BrokenPipeError):
    """Writing to a stream whose sending direction is closed.

    ``code`` is the peer's RST code when the peer closed the stream (``NO_ERROR``: it reads
    no more), else ``None`` (this side closed it).
    """

    def __init__(self, message: str = "stream is closed", code: int | None = None) -> None:
        self.code = code
        super().__init__(message)


class SessionClosedError(MioError, ConnectionError):
    """The session is closed (locally, by the peer's FIN, or because the transport died).

    ``code`` is the FIN code when the session ended by a FIN, else ``None``.
    """

    def __init__(self, message: str = "session is closed", code: int | None = None) -> None:
        self.code = code
        super().__init__(message)


class StreamLimitError(MioError):
    """No more stream ids are available on this session (EXHAUSTED)."""
