"""Copy bytes both ways between two connection ends, carrying half-close and resets.

An *end* is a TCP connection (:class:`TcpEnd`, the connection's asyncio protocol) or a mio
stream (:class:`StreamEnd`, the stream's :class:`mio.StreamProtocol`). A :class:`Pipe`
joins two ends with callbacks only: no task, no future, no per-chunk copy of its own.

* bytes read from one end are written to the other at once (a TCP end reads with
  ``recv_into`` into one buffer its :class:`Pipes` shares between all its pipes; the stream
  copies them into its session's output). When the other end cannot take more (the
  stream's ``drain()`` would wait, the TCP transport's write buffer is over its high-water
  mark), the reading end is paused until it can: memory per pipe is bounded both ways;
* end of data on one side (TCP FIN, stream DATA+HFR) becomes a half-close of the other
  (``write_eof``), and the opposite direction keeps flowing;
* an error on either side (TCP reset, stream RST, session loss), the idle timeout, or a
  shutdown aborts both: the TCP connection is reset (RST, ``SO_LINGER`` 0) and the stream
  reset, so a truncated transfer never looks like a complete one;
* the idle timeout ``T`` with a minimum of ``B`` bytes: one timer per :class:`Pipes` checks
  every pipe every ``T`` seconds and aborts those that moved fewer than ``B`` bytes (both
  directions together) since the previous check. A quiet connection is reset between ``T``
  and ``2T`` after it went quiet, and a trickle of fewer than ``B`` bytes per ``T`` cannot
  keep it alive;
* when both directions ended cleanly, both ends are closed gracefully; the pipe is done
  (its ``on_done`` callback gets the :class:`PipeResult`) once both ends are closed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

from ..stream import Stream
from ..stream_protocol import StreamProtocol
from ..wire import ErrorCode

__all__ = ("TcpEnd", "StreamEnd", "Pipe", "Pipes", "IdleTimeout", "PipeAborted", "PipeResult")

log = logging.getLogger("mio.tunnel")

#: Size of the read buffer shared by the TCP ends of one :class:`Pipes` (one ``recv_into``).
CHUNK_SIZE = 256 * 1024


class IdleTimeout(Exception):
    """Fewer than the minimum of bytes moved in an idle-timeout interval."""


class PipeAborted(Exception):
    """The pipe was aborted from outside (shutdown after the grace period)."""


@dataclasses.dataclass
class PipeResult:
    """Bytes copied ``a -> b`` (``sent``) and ``b -> a`` (``received``), and the error that
    aborted the pipe (None when both directions ended cleanly)."""

    sent: int = 0
    received: int = 0
    error: BaseException | None = None

    def log_done(
        self,
        logger: logging.Logger,
        origin: str,
        name: str,
        sent: str = "in",
        received: str = "out",
    ) -> None:
        """One DEBUG line for the end of a tunneled connection: ``origin -> 'name': done,
        N bytes <sent>, M <received>`` and the error that aborted it, if any."""
        logger.debug(
            "%s -> %r: done, %d bytes %s, %d %s%s",
            origin,
            name,
            self.sent,
            sent,
            self.received,
            received,
            f", aborted: {self.error!r}" if self.error else "",
        )


def abort_transport(transport: asyncio.Transport) -> None:
    """Reset a TCP connection: ``SO_LINGER`` 0, so that closing sends RST instead of FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


class TcpEnd(asyncio.BufferedProtocol):
    """The TCP end of a pipe, as the connection's protocol (``create_server`` /
    ``create_connection`` factory).

    It does not read until a pipe is attached (:meth:`Pipes.start`): the setup (opening
    the tunnel) may take a while, and what the client sends meanwhile waits in the kernel.
    ``on_made(end)``, if given, is called from ``connection_made``.
    """

    __slots__ = ("_early", "_full", "_on_made", "_pipe", "_pipes", "transport")

    def __init__(self, pipes: Pipes, on_made: Callable[[TcpEnd], None] | None = None) -> None:
        self._pipes = pipes
        self._pipe: Pipe | None = None
        self._on_made = on_made
        self._full = False  # the transport called pause_writing()
        self._early: list[Any] | None = None  # data (uvloop), EOF, loss before a pipe
        self.transport: asyncio.Transport | None = None

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (no isinstance check: uvloop's transports are no asyncio.Transport subclasses)
        self.transport = transport  # type: ignore[assignment]
        transport.pause_reading()  # type: ignore[attr-defined]
        on_made, self._on_made = self._on_made, None
        if on_made is not None:
            on_made(self)

    def get_buffer(self, sizehint: int) -> bytearray:
        return self._pipes.buffer

    def buffer_updated(self, nbytes: int) -> None:
        pipe = self._pipe
        if pipe is not None:
            pipe._data(self, self._pipes.view[:nbytes])
        else:
            # Read although paused: uvloop starts reading after connection_made whatever
            # it did. Keep it, and pause again (so one read at most waits for the pipe).
            self._remember(bytes(self._pipes.view[:nbytes]))
            if self.transport is not None:
                self.transport.pause_reading()

    def eof_received(self) -> bool:
        pipe = self._pipe
        if pipe is None:
            self._remember(True)
            if self.transport is not None:
                self.transport.pause_reading()  # (uvloop would report it again and again)
        else:
            pipe._eof(self)
        return True  # half-close: keep the transport open for the other direction

    def connection_lost(self, exc: Exception | None) -> None:
        pipe = self._pipe
        if pipe is None:
            self._remember(exc if exc is not None else ConnectionError("connection closed"))
        else:
            pipe._closed(self, exc)

    def pause_writing(self) -> None:
        self._full = True

    def resume_writing(self) -> None:
        self._full = False
        pipe = self._pipe
        if pipe is not None:
            pipe._writable(self)

    def _remember(self, event: Any) -> None:
        if self._early is None:
            self._early = []
        self._early.append(event)

    # -- used by the pipe
    def _attach(self, pipe: Pipe) -> None:
        self._pipe = pipe
        early, self._early = self._early or [], None
        ended = any(not isinstance(event, bytes) for event in early)  # EOF or loss
        if self.transport is not None and not ended:
            # First: replaying data below may pause reading again (nothing is read
            # before this callback returns).
            self.transport.resume_reading()
        for event in early:
            if pipe._state & _OVER:
                break
            if event is True:
                pipe._eof(self)
            elif isinstance(event, bytes):
                pipe._data(self, event)
            else:
                pipe._closed(self, event)

    def write(self, data: bytes | memoryview) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def blocked(self) -> bool:
        return self._full

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def write_eof(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()

    def close(self) -> None:
        """Close gracefully (FIN after what is buffered)."""
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Reset the connection (RST)."""
        if self.transport is not None:
            abort_transport(self.transport)


class StreamEnd(StreamProtocol):
    """The mio-stream end of a pipe: the stream's protocol from :meth:`Pipes.start` on."""

    __slots__ = ("_pipe", "stream")

    pause_on_backlog = False  # the pipe pauses the source of this stream's writes itself

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self._pipe: Pipe | None = None

    # -- StreamProtocol callbacks
    def data_received(self, data: bytes) -> None:
        if self._pipe is not None:
            self._pipe._data(self, data)

    def eof_received(self) -> None:
        if self._pipe is not None:
            self._pipe._eof(self)

    def stream_closed(self, exc: BaseException | None) -> None:
        if self._pipe is not None:
            self._pipe._closed(self, exc)

    # -- used by the pipe
    def _attach(self, pipe: Pipe) -> None:
        self._pipe = pipe
        self.stream.set_protocol(self)

    def _drained(self) -> None:
        pipe = self._pipe
        if pipe is not None:
            pipe._writable(self)

    def write(self, data: bytes | memoryview) -> None:
        self.stream.write(data)

    def blocked(self) -> bool:
        return self.stream.notify_drained(self._drained)

    def pause_reading(self) -> None:
        self.stream.pause_reading()

    def resume_reading(self) -> None:
        self.stream.resume_reading()

    def write_eof(self) -> None:
        self.stream.write_eof()

    def close(self) -> None:
        self.stream.close()

    def abort(self) -> None:
        self.stream.reset(ErrorCode.INTERNAL_ERROR)


End = TcpEnd | StreamEnd

# Pipe._state bits
_A_EOF = 1  # a's direction ended (copied to b as write_eof)
_B_EOF = 2
_A_CLOSED = 4  # a reported itself closed
_B_CLOSED = 8
_CLOSING = 16  # both directions ended: both ends asked to close gracefully
_OVER = 32  # aborted or done: on_done called, nothing more happens


class Pipe:
    """Two ends joined by callbacks (see the module docstring). Made by :meth:`Pipes.start`."""

    __slots__ = ("_last", "_on_done", "_pipes", "_state", "a", "b", "error", "received", "sent")

    def __init__(
        self, pipes: Pipes, a: End, b: End, on_done: Callable[[PipeResult], None] | None
    ) -> None:
        self.a = a
        self.b = b
        self.sent = 0  # bytes a -> b
        self.received = 0  # bytes b -> a
        self.error: BaseException | None = None
        self._state = 0
        self._last = -1  # bytes moved at the previous idle check (-1: not checked yet)
        self._pipes = pipes
        self._on_done = on_done

    @property
    def result(self) -> PipeResult:
        """What the pipe copied so far, and the error that aborted it."""
        return PipeResult(self.sent, self.received, self.error)

    def _data(self, src: End, data: bytes | memoryview) -> None:
        if self._state & _OVER:
            return
        if src is self.a:
            self.sent += len(data)
            dst = self.b
        else:
            self.received += len(data)
            dst = self.a
        try:
            dst.write(data)
        except Exception as exc:  # the other end is dead (its close callback may follow)
            self.abort(exc)
            return
        if dst.blocked():
            src.pause_reading()  # until dst calls _writable

    def _writable(self, dst: End) -> None:
        if not self._state & _OVER:
            (self.b if dst is self.a else self.a).resume_reading()

    def _eof(self, src: End) -> None:
        if self._state & _OVER:
            return
        bit = _A_EOF if src is self.a else _B_EOF
        if self._state & bit:
            return
        self._state |= bit
        dst = self.b if src is self.a else self.a
        try:
            dst.write_eof()
        except Exception as exc:
            self.abort(exc)
            return
        if self._state & (_A_EOF | _B_EOF) == _A_EOF | _B_EOF and not self._state & _CLOSING:
            self._state |= _CLOSING
            self.a.close()
            self.b.close()

    def _closed(self, end: End, exc: BaseException | None) -> None:
        self._state |= _A_CLOSED if end is self.a else _B_CLOSED
        if self._state & _OVER:
            return
        # Both directions ended is a graceful end even before _CLOSING is set: a stream
        # whose peer had ended finishes inside the write_eof() that _eof() makes.
        if exc is None and self._state & (_A_EOF | _B_EOF) != _A_EOF | _B_EOF:
            exc = ConnectionError("closed before both directions ended")
        if exc is not None:
            self.abort(exc)
        elif self._state & (_A_CLOSED | _B_CLOSED) == _A_CLOSED | _B_CLOSED:
            self._done()

    def abort(self, error: BaseException) -> None:
        """Reset both ends (TCP RST, stream RST) and finish with ``error``."""
        if self._state & _OVER:
            return
        self._state |= _OVER
        self.error = error
        self.a.abort()
        self.b.abort()
        self._report()

    def _done(self) -> None:
        self._state |= _OVER
        self._report()

    def _report(self) -> None:
        self._pipes._discard(self)
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            try:
                on_done(self.result)
            except Exception:
                log.exception("pipe: on_done callback failed")


class Pipes:
    """The live pipes of one relay, agent or forwarder: one read buffer shared by their TCP
    ends (a pipe uses it only inside one callback) and one idle sweeper for all of them.

    Args:
        idle_timeout: reset pipes that moved fewer than ``idle_min_bytes`` in an interval
            of this many seconds (None or 0: never).
        idle_min_bytes: see above (at least 1).
    """

    def __init__(self, idle_timeout: float | None = None, idle_min_bytes: int = 1) -> None:
        self.idle_timeout = idle_timeout or None
        self.idle_min_bytes = max(1, idle_min_bytes)
        self.buffer = bytearray(CHUNK_SIZE)
        self.view = memoryview(self.buffer)
        self._live: dict[Pipe, None] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._empty: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._live)

    def start(self, a: End, b: End, on_done: Callable[[PipeResult], None] | None = None) -> Pipe:
        """Join ``a`` and ``b``; ``on_done(result)`` comes once, when the pipe is over (it
        may come before this returns, if an end was already dead)."""
        pipe = Pipe(self, a, b, on_done)
        self._live[pipe] = None
        if self.idle_timeout and self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self.idle_timeout, self._sweep)
        a._pipe = b._pipe = pipe
        a._attach(pipe)
        if not pipe._state & _OVER:
            b._attach(pipe)
        return pipe

    def abort_all(self, error: BaseException) -> int:
        """Abort every live pipe with ``error``; returns how many."""
        pipes = list(self._live)
        for pipe in pipes:
            pipe.abort(error)
        return len(pipes)

    def wait_empty(self) -> asyncio.Future[None]:
        """A future done when no pipe is live (now, or as soon as the last one is over)."""
        fut = self._empty
        if fut is None or fut.done():
            fut = self._empty = asyncio.get_running_loop().create_future()
        if not self._live:
            fut.set_result(None)
        return fut

    def _discard(self, pipe: Pipe) -> None:
        self._live.pop(pipe, None)
        if not self._live:
            if self._sweeper is not None:
                self._sweeper.cancel()
                self._sweeper = None
            fut = self._empty
            if fut is not None and not fut.done():
                fut.set_result(None)

    def _sweep(self) -> None:
        self._sweeper = None
        timeout = self.idle_timeout
        if not timeout:
            return
        minimum = self.idle_min_bytes
        quiet = []
        for pipe in self._live:
            moved = pipe.sent + pipe.received
            if pipe._last >= 0 and moved - pipe._last < minimum:
                quiet.append(pipe)
            pipe._last = moved  # a new pipe: its first interval starts now
        if quiet:
            if minimum <= 1:
                why = f"no data in either direction for {timeout:g} s"
            else:
                why = f"fewer than {minimum} bytes moved in {timeout:g} s"
            for pipe in quiet:
                pipe.abort(IdleTimeout(why))
        if self._live:
            self._sweeper = asyncio.get_running_loop().call_later(timeout, self._sweep)
