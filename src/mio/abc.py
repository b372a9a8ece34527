"""The stream and session interfaces an application codes against, whatever the transport.

:class:`mio.Session`/:class:`mio.Stream` (the MIO protocol over TCP, TLS, Unix sockets or
:func:`mio.pipe`) and :class:`mio.quic.QuicSession`/:class:`mio.quic.QuicStream` (QUIC
streams, the ``mio-mux[quic]`` extra) both satisfy these protocols, so code typed against
:class:`Session` and :class:`Stream` runs unchanged over either::

    import mio.abc

    async def call(session: mio.abc.Session, request: bytes) -> bytes:
        async with await session.open_stream() as stream:
            await stream.send(request)
            stream.write_eof()
            return await stream.read()

The protocols are :func:`typing.runtime_checkable`: ``isinstance(x, mio.abc.Stream)`` checks
that the methods exist (not their signatures; a type checker does that).

Errors (the :mod:`mio.errors` classes; each also derives from the built-in that fits):

* :class:`~mio.StreamResetError` (a ``ConnectionResetError``): the stream was reset, by the
  peer (``remote=True``) or locally; ``code`` is the error code (an :class:`~mio.ErrorCode`
  value for codes mio sends). :class:`~mio.StreamRefusedError` is the reset with code
  ``REFUSED``: the peer did not admit the stream (over its limit, or closing).
* :class:`~mio.StreamClosedError` (a ``BrokenPipeError``): writing after :meth:`Stream.write_eof`
  or :meth:`Stream.close`, or after the peer ended the stream with code ``NO_ERROR``.
* :class:`~mio.SessionClosedError` (a ``ConnectionError``): the session ended (closed locally,
  by the peer with ``code``, or the connection was lost). A session closed by the peer with
  ``NO_ERROR`` ends its streams' reads with a clean end of stream after the buffered data;
  any other ending makes those reads raise it.
* ``asyncio.IncompleteReadError`` / ``asyncio.LimitOverrunError``: as for an asyncio
  ``StreamReader``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any, Protocol, TypeAlias, runtime_checkable

from .wire import ErrorCode

__all__ = ("Stream", "Session", "BytesLike")

#: What :meth:`Stream.write` accepts.
BytesLike: TypeAlias = "bytes | bytearray | memoryview"


@runtime_checkable
class Stream(Protocol):
    """One bidirectional, flow-controlled byte stream of a :class:`Session`.

    The vocabulary of asyncio's ``StreamReader`` and ``StreamWriter`` on one object, plus
    :meth:`reset` and the half-close :meth:`write_eof`. One coroutine reads at a time.
    """

    @property
    def id(self) -> int:
        """The stream id (its numbering is the transport's: see docs/TRANSPORTS.md)."""
        ...

    # ------------------------------------------------------------------ reading
    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (``n < 0``: everything until end of stream); ``b""`` at EOF.

        Raises:
            StreamResetError: the stream was reset (buffered data is dropped).
            SessionClosedError: the session ended before the peer ended this direction.
        """
        ...

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes.

        Raises:
            asyncio.IncompleteReadError: end of stream first (``partial`` holds what came).
            StreamResetError, SessionClosedError: as :meth:`read`.
        """
        ...

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Bytes up to and including ``separator``.

        Raises:
            asyncio.IncompleteReadError: end of stream before the separator.
            asyncio.LimitOverrunError: the receive window filled without a separator.
            StreamResetError, SessionClosedError: as :meth:`read`.
        """
        ...

    async def readline(self) -> bytes:
        """One line ending in ``\\n``; at end of stream the partial line or ``b""``.

        Raises:
            StreamResetError, SessionClosedError: as :meth:`read`.
        """
        ...

    def at_eof(self) -> bool:
        """True when the peer's direction ended and every byte was read."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]:
        """Chunks as they arrive, until end of stream (errors as :meth:`read`)."""
        ...

    # ------------------------------------------------------------------ writing
    def write(self, data: BytesLike) -> None:
        """Queue ``data`` (a snapshot is taken); never blocks. Follow with :meth:`drain`.

        Raises:
            StreamClosedError: after :meth:`write_eof`/:meth:`close`, or the peer ended
                the stream with ``NO_ERROR``.
            StreamResetError: the stream was reset (either side, or the peer asked to
                stop sending).
            SessionClosedError: the session ended.
        """
        ...

    def writelines(self, data: Iterable[BytesLike]) -> None:
        """:meth:`write` every buffer of ``data`` in order (same errors)."""
        ...

    async def drain(self) -> None:
        """Wait until the stream's send buffer is below its high-water mark.

        This is the backpressure point: it waits while the peer's flow-control window or
        the connection holds written data back. Cancelling it loses no data.

        Raises:
            StreamResetError, SessionClosedError: the stream or session died with data
                still queued (also raised if it died earlier).
        """
        ...

    async def send(self, data: BytesLike) -> None:
        """:meth:`write` then :meth:`drain` (errors of both)."""
        ...

    def write_eof(self) -> None:
        """Half-close: end this direction after the data already written.

        The peer reads everything, then end of stream; this side can still read.
        Idempotent; never raises.
        """
        ...

    def can_write_eof(self) -> bool:
        """True: streams support half-close."""
        ...

    # ------------------------------------------------------------------ ending
    def close(self) -> None:
        """Graceful close: :meth:`write_eof` and discard what the peer still sends.

        Never raises; the stream is finished when the peer ends its direction too (or,
        after the session's linger timeout, it is ended without an error code).
        """
        ...

    async def wait_closed(self) -> None:
        """Wait until the stream is finished (both directions ended, or reset)."""
        ...

    def is_closing(self) -> bool:
        """True once :meth:`close` or :meth:`reset` was called or the stream finished."""
        ...

    def reset(self, code: int = ErrorCode.INTERNAL_ERROR) -> None:
        """Abort both directions with ``code``; queued data is dropped.

        The peer's reads and writes then raise :class:`~mio.StreamResetError` with
        ``code`` (``REFUSED``: :class:`~mio.StreamRefusedError`); this side's raise it
        with ``remote=False``. A no-op on a finished stream.
        """
        ...

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Transport information: ``stream_id``, ``session``, ``peername``, ``sockname`` …"""
        ...

    async def __aenter__(self) -> Stream:
        """The stream itself."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """:meth:`close` and :meth:`wait_closed`; on an exception that is not a
        :class:`~mio.MioError`, :meth:`reset` with ``INTERNAL_ERROR``."""
        ...


@runtime_checkable
class Session(Protocol):
    """Many streams over one connection."""

    async def open_stream(self) -> Stream:
        """Open a new stream to the peer; it may be written at once.

        Waits while this side has as many streams open as the peer (or the session's
        configuration) allows.

        Raises:
            SessionClosedError: the session is closed or closing.
            StreamLimitError: stream ids are exhausted.
        """
        ...

    async def accept_stream(self) -> Stream:
        """Wait for the next stream the peer opens.

        Raises:
            SessionClosedError: the session ended (or is closing) and none is queued.
        """
        ...

    def __aiter__(self) -> AsyncIterator[Stream]:
        """The streams the peer opens, until the session ends (no error at the end)."""
        ...

    def close(self, code: int = ErrorCode.NO_ERROR) -> None:
        """Close now with ``code`` (the peer's :class:`~mio.SessionClosedError` carries it).

        Every stream ends: received data stays readable, then reads raise
        :class:`~mio.SessionClosedError`; writes raise it at once. Never raises.
        """
        ...

    async def aclose(self, code: int = ErrorCode.NO_ERROR, timeout: float | None = None) -> None:
        """Graceful close: refuse new streams, let open ones finish (up to ``timeout``),
        then :meth:`close` with ``code`` and :meth:`wait_closed`."""
        ...

    async def wait_closed(self) -> None:
        """Wait until the connection is closed."""
        ...

    @property
    def is_closed(self) -> bool:
        """True once the session ended."""
        ...

    async def __aenter__(self) -> Session:
        """The session itself."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """:meth:`close` (``NO_ERROR``, or ``INTERNAL_ERROR`` on an exception) and
        :meth:`wait_closed`."""
        ...
