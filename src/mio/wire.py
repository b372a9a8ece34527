"""Wire constants of the MIO protocol: the one Python source of flags, codes and limits.

Both the compiled codec and its pure-Python twin take their numbers from here (the
``.pyx`` repeats them as C constants; a test checks that they agree).
"""

from __future__ import annotations

import enum

__all__ = (
    "HEADER_SIZE",
    "MAX_VALUE",
    "MAX_STREAM_ID",
    "MAX_WINDOW",
    "REFERENCE_MAX_FRAME_SIZE",
    "Flag",
    "ErrorCode",
    "FrameKind",
)

#: Every frame starts with an 8-octet header.
HEADER_SIZE = 8
#: The VALUE field is 24 bits: payload length, window increment or error code.
MAX_VALUE = 0xFFFFFF
#: Stream ids are 31 bits; id 0 addresses the session.
MAX_STREAM_ID = 0x7FFFFFFF
#: Largest send window a stream may accumulate through window updates.
MAX_WINDOW = 0x7FFFFFFF
#: Largest DATA payload an unconfigured reference (Go) peer accepts.
REFERENCE_MAX_FRAME_SIZE = 128


class Flag(enum.IntFlag):
    """The flags octet (octet 7 of the header). Bits 0xE0 are reserved."""

    SYN = 0x01
    FIN = 0x02
    RST = 0x04
    WND = 0x08
    HFR = 0x10


#: Mask of the flag bits that mean something; the others are reserved and ignored.
FLAG_MASK = 0x1F


class FrameKind(enum.IntEnum):
    """The frame kinds of the wire table; each value is its exact flags octet."""

    OPEN = 0x0C  #: RST|WND, VALUE = the opener's window
    DATA = 0x01  #: SYN, VALUE = payload length
    DATA_HFR = 0x11  #: SYN|HFR, last data of this direction (half-close)
    WINDOW_UPDATE = 0x09  #: SYN|WND, VALUE = increment
    RST = 0x04  #: RST, VALUE = error code
    SESSION_WINDOW_UPDATE = 0x08  #: WND on stream 0, VALUE = increment
    FIN = 0x02  #: FIN on stream 0, VALUE = error code


class ErrorCode(enum.IntEnum):
    """Error codes carried by RST and FIN frames."""

    NO_ERROR = 0
    INTERNAL_ERROR = 1
    FLOW_CONTROL_ERROR = 2
    CLOSED = 3
    REFUSED = 4
    EXHAUSTED = 5
    TRANSPORT_CLOSED = 6
    #: mio extension: the peer broke the framing rules. A reference peer ignores
    #: codes it does not know, so sending it is harmless.
    PROTOCOL_ERROR = 7
    #: mio extension: the stream was reset because the receiver's memory account was full
    #: while nobody read this stream (docs/PROTOCOL.md, "Memory").
    RESOURCE_LIMIT = 8
    #: mio extension: the sender gave up on the stream (a cancelled task, a deadline); the
    #: receiver raises :class:`~mio.StreamCancelledError` and a handler serving the stream
    #: is cancelled. Not a failure of either side.
    CANCEL = 9
