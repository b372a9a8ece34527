"""The low-level, callback-based stream API: one object per stream, no task, no future.

``asyncio`` offers two layers, Protocols (callbacks) under Streams (coroutines); mio does
the same. A handler coroutine costs a task per stream and a future per read; a server that
answers tiny requests at the highest rate can hand :func:`mio.serve` (or any entry point
taking a stream handler) a :class:`StreamProtocol` *subclass* instead: mio makes one
instance per stream the peer opens and calls it from the session's read callback::

    class Echo(mio.StreamProtocol):
        def stream_opened(self, stream):
            self.stream = stream

        def data_received(self, data):
            self.stream.write(data)

        def eof_received(self):
            self.stream.close()  # half-close after the echo: graceful, no RST

    server = await mio.serve(Echo, "127.0.0.1", 7000)

Rules (the coroutine API's, moved to callbacks):

- Data handed to :meth:`data_received` is consumed at once: the peer's window reopens as
  the callback returns, and mio holds nothing. To stop it, call
  :meth:`mio.Stream.pause_reading`: data then stays in the stream (counted in the session's
  memory account, tiny frames sharing buffers) and the window closes;
  :meth:`mio.Stream.resume_reading` delivers what was held, then the end of stream if it
  came. A stream is not finished while it holds data for its protocol; one reset, or whose
  session ends, while paused drops what it held.
- Writes never block: ``stream.write`` sends what the peer's window allows and queues the
  rest in the stream (``stream.write_pending``). While more than one receive window of
  replies is unsent (a peer that does not read them), input is held back as if paused, so
  the peer's own window closes: nothing grows without bound. Delivery resumes as the
  replies go out.
- :meth:`eof_received` is the peer's half-close (also when the peer closed the stream with
  RST ``NO_ERROR``); the stream stays open for writing until the protocol calls
  ``close()`` (or ``write_eof()``).
- :meth:`stream_closed` comes once, when the stream is finished: ``None`` after a graceful
  close, else the error (reset by either side, session closed, the peer stopped reading,
  or the exception a callback raised).
- A callback that raises resets the stream with ``INTERNAL_ERROR`` (logged), as a failing
  handler does, and nothing more is delivered to it. The stream cannot be read: a
  ``read()`` that would wait raises ``RuntimeError`` (the data goes to the protocol).

:meth:`mio.Stream.set_protocol` hands any stream to a protocol: one this side opened, or
one a handler has read a header from (the handler may then return; the stream stays open).
:meth:`mio.Stream.notify_drained` is the callback form of ``drain()``: a proxy writing
into a stream stops its source when it returns True and restarts it from the callback.

Only MIO sessions take protocols (``mio.quic`` runs coroutine handlers only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .stream import Stream

__all__ = ("StreamProtocol",)


class StreamProtocol:
    """Callbacks for one stream (subclass it; every method is optional): one the peer
    opened (a ``serve`` handler), or any stream handed over with
    :meth:`mio.Stream.set_protocol`."""

    __slots__ = ()

    #: Hold input back while more than a receive window of writes is unsent (the rule
    #: above). A protocol with flow control of its own -- one that stops its source when
    #: :meth:`mio.Stream.notify_drained` says the stream is full, as a proxy does -- sets it
    #: False: its writes are not replies to this stream's input.
    pause_on_backlog: bool = True

    def stream_opened(self, stream: Stream) -> None:
        """The peer opened ``stream``; keep it to write and close."""

    def data_received(self, data: bytes) -> None:
        """Payload arrived (already consumed from the window)."""

    def eof_received(self) -> None:
        """The peer half-closed: no more data will come."""

    def stream_closed(self, exc: BaseException | None) -> None:
        """The stream is finished: ``None`` if it ended gracefully, else why."""
