"""Stream: one bidirectional, flow-controlled byte stream of a session.

The read side holds the payloads the session hands it (``_feed``) in a deque of chunks, no
copy on the way in, and wakes a reader only when one is waiting. The write side sends what
the peer's window allows at once (copied into the session's output buffer, so ``write()``
takes a snapshot) and keeps the rest, immutable, until window updates arrive.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, overload

from ._core import FLUSH_THRESHOLD, StreamCore, reset_error_class
from .errors import (
    FlowControlError,
    SessionClosedError,
    StreamClosedError,
    StreamResetError,
)
from .wire import ErrorCode

if TYPE_CHECKING:
    from .session import Session
    from .stream_protocol import StreamProtocol

__all__ = ("Stream",)

log = logging.getLogger("mio.session")

# Received pieces under _SMALL_PIECE bytes are appended to a bytearray tail of at most
# _TAIL_LIMIT bytes instead of being queued one object each.
_SMALL_PIECE = 512
# drain() lets the event loop run other tasks at least once per this many bytes written on
# a stream, even when nothing makes it wait: a bulk writer whose window and transport
# always have room must not hold the loop (and every other stream's task) for megabytes.
_DRAIN_YIELD = 256 * 1024
_TAIL_LIMIT = 64 * 1024
# Writes below this go into the session's output buffer inline (one frame, never the
# zero-copy path: Session._send_data's small-payload case)
_SMALL_WRITE = 4096

# Stream._protocol_state bits (streams served by a StreamProtocol)
_KIND_DATA_HFR = 0x11  # wire.FrameKind.DATA_HFR

_PROTO_PAUSED = 1  # pause_reading(): data stays in the stream
_PROTO_EOF_SENT = 2  # eof_received() was called
_PROTO_FAILED = 4  # a callback raised: nothing more is delivered
_PROTO_BACKLOG = 8  # more than a receive window of replies unsent: input held back


class Stream(StreamCore):
    """A bidirectional byte stream, with the asyncio ``StreamReader``/``StreamWriter`` vocabulary.

    Obtain one from :meth:`Session.open_stream` or :meth:`Session.accept_stream` (or a
    ``serve`` handler); do not construct it directly.
    """

    __slots__ = (
        "__weakref__",
        "_blocked",
        "_bytes_in",
        "_bytes_out",
        "_chunks",
        "_closing",
        "_drain_callback",
        "_drain_waiter",
        "_eof",
        "_eof_queued",
        "_error",
        "_finished",
        "_finished_waiter",
        "_handled",
        "_handler_task",
        "_head",
        "_id",
        "_linger",
        "_local_ended",
        "_loop",
        "_open_window",
        "_outbound",
        "_pending",
        "_pending_size",
        "_protocol",
        "_protocol_error",
        "_protocol_state",
        "_recv",
        "_send",
        "_session",
        "_size",
        "_waiter",
        "_write_error",
        "_yield_mark",
    )

    _size: int  # a slot: buffered bytes (ReadSide reads it)

    def __init__(self, session: Session, stream_id: int, window: int, max_window: int) -> None:
        self._session = session
        self._id = stream_id
        self._loop = session._loop
        self._recv = session._recv_window(window, max_window if max_window > window else window)
        self._send = session._send_window(window)
        # Received payloads, oldest first; the first ``_head`` bytes of ``_chunks[0]`` were
        # already read (an offset instead of a slice: no copy, and no exported view that
        # would pin a bytearray).
        self._chunks: collections.deque[bytes | bytearray] = collections.deque()
        self._head = 0
        self._size = 0
        self._bytes_in = 0  # payload bytes received on this stream
        self._bytes_out = 0  # payload bytes written by the application
        self._yield_mark = 0  # _bytes_out when drain() last let the loop run
        self._eof = False  # the peer's direction has ended (no more data will come)
        self._error: BaseException | None = None  # raised by reads once the buffer is drained
        self._waiter: asyncio.Future[None] | None = None
        # Writes waiting for window or transport, oldest first; made on first use (most
        # streams never queue, and a deque costs as much to make as the rest of a stream).
        self._pending: collections.deque[bytes | memoryview] | None = None
        self._pending_size = 0
        self._eof_queued = False  # write_eof() called (HFR sent or queued behind pending data)
        self._local_ended = False  # our direction has ended on the wire (HFR or RST sent)
        self._write_error: BaseException | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._drain_callback: Callable[[], object] | None = None  # see notify_drained()
        self._closing = False  # close() called: inbound data is discarded
        self._finished = False  # removed from the session's stream table
        self._finished_waiter: asyncio.Future[None] | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._outbound = False  # opened by this side
        self._open_window = window  # the window of the OPEN frame
        self._blocked = False  # in the session's queue of streams waiting for the transport
        # The session's handler task for this stream, from when it is made until it is done
        # (True while an application's task factory makes it: the handler may run inside
        # create_task); _handler_task below is set once the handler runs.
        self._handled: asyncio.Task[None] | bool | None = None
        self._handler_task: asyncio.Task[None] | None = None  # that task, once it runs
        self._protocol: StreamProtocol | None = None  # callbacks instead of reads
        # (_protocol_state, _PROTO_* bits, is set by _attach: only protocol streams use it)

    # ------------------------------------------------------------------ properties
    @property
    def id(self) -> int:
        """The stream id (odd: opened by the client side, even: by the server side)."""
        return self._id

    @property
    def session(self) -> Session:
        """The session this stream belongs to."""
        return self._session

    @property
    def buffered(self) -> int:
        """Received bytes not yet read by the application."""
        return self._size

    @property
    def bytes_received(self) -> int:
        """Payload bytes received on this stream so far (read or not)."""
        return self._bytes_in

    @property
    def bytes_sent(self) -> int:
        """Payload bytes written to this stream so far (sent or still queued)."""
        return self._bytes_out

    @property
    def write_pending(self) -> int:
        """Bytes written but not yet sent, waiting for the peer's window."""
        return self._pending_size

    @property
    def send_window(self) -> int:
        """Bytes the peer's window lets this side send now."""
        return int(self._send.available)

    @property
    def recv_window(self) -> int:
        """Current receive window of this stream (grows with auto-tuning)."""
        return int(self._recv.window)

    @overload
    def get_extra_info(self, name: Literal["stream_id"], default: Any = None) -> int: ...
    @overload
    def get_extra_info(self, name: Literal["session"], default: Any = None) -> Session: ...
    @overload
    def get_extra_info(
        self, name: Literal["ssl_object"], default: Any = None
    ) -> ssl.SSLObject | None: ...
    @overload
    def get_extra_info(
        self, name: Literal["socket"], default: Any = None
    ) -> socket.socket | None: ...
    @overload
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Transport information (``peername``, ``sockname``, ``ssl_object``, ``socket`` …),
        or ``stream_id`` / ``session``."""
        if name == "stream_id":
            return self._id
        if name == "session":
            return self._session
        return self._session.get_extra_info(name, default)

    def __repr__(self) -> str:
        state = "finished" if self._finished else "open"
        return f"<mio.Stream id={self._id} {state} buffered={self._size}>"

    # ------------------------------------------------------------------ reading
    # read, readexactly, readuntil, readline, at_eof, async iteration: see ReadSide.
    def _read_limit(self) -> int:
        return int(self._recv.window)

    def _wait(self, need: int = 1) -> asyncio.Future[None]:
        # ReadSide._wait as a plain function returning the future to await (no coroutine
        # per wait), _before_wait inlined. Whoever completes the future clears _waiter first
        # (_feed, _wake); a done future left there (the read was cancelled) counts as none.
        w = self._waiter
        if w is not None and not w.done():
            raise RuntimeError(f"stream {self._id}: another coroutine is already reading")
        if self._protocol is not None:
            self._before_wait(need)  # raises
        recv = self._recv
        if need > recv.available and recv.pending and not self._eof:
            self._session._send_window_update(self._id, recv.flush())
        if self._session._read_paused:
            self._session._reader_waits()
        fut = self._waiter = self._loop.create_future()
        return fut

    def _before_wait(self, need: int) -> None:
        if self._protocol is not None:
            raise RuntimeError(
                f"stream {self._id} delivers its data to its StreamProtocol: it cannot be read"
            )
        recv = self._recv
        if need > recv.available and recv.pending and not self._eof:
            # The peer cannot send what this reader waits for until the consumed bytes
            # still held back by batching are announced: announce them now.
            self._session._send_window_update(self._id, recv.flush())
        if self._session._read_paused:
            self._session._reader_waits()

    def _find(self, separator: bytes, start: int) -> int:
        chunks = self._chunks
        head = self._head
        first = chunks[0]
        if len(chunks) > 1:
            # Gather into one bytearray; once it is the head chunk, later calls append only
            # what arrived since, so a long line costs linear time overall.
            if type(first) is bytearray:
                chunks.popleft()
            else:
                first = bytearray(memoryview(first)[head:])
                chunks.popleft()
                head = self._head = 0
            for part in chunks:
                first += part
            chunks.clear()
            chunks.append(first)
        i = first.find(separator, head + start)
        return i - head if i >= 0 else -1

    def _take(self, n: int) -> bytes:
        chunks = self._chunks
        first = chunks[0]
        head = self._head
        avail = len(first) - head
        if n < avail:
            taken = n
            end = head + n
            if type(first) is bytes:
                data = first[head:end]
                self._head = end
            else:
                with memoryview(first) as view:
                    data = view[head:end].tobytes()
                if end > 65536 and end > avail - n and isinstance(first, bytearray):
                    del first[:end]  # compact a mostly-read bytearray (amortized)
                    end = 0
                self._head = end
        elif not head and (n == avail or len(chunks) == 1):
            chunks.popleft()  # the whole first chunk, all there is or all that was asked
            data = first if type(first) is bytes else bytes(first)
            taken = avail
        else:
            # Views, not copies: the join below is the one copy (the views die with
            # ``parts``, so a bytearray left at the head is not pinned).
            parts: list[bytes | bytearray | memoryview] = []
            got = 0
            while chunks and got < n:
                part = chunks[0]
                plen = len(part) - head
                if got + plen <= n:
                    chunks.popleft()
                    parts.append(memoryview(part)[head:] if head else part)
                    got += plen
                    head = 0
                else:
                    parts.append(memoryview(part)[head : head + n - got])
                    head += n - got
                    got = n
            self._head = head
            only = parts[0]
            data = only if len(parts) == 1 and type(only) is bytes else b"".join(parts)
            taken = got
        self._size -= taken
        session = self._session
        budget = session._budget
        if not session._read_paused and (budget is None or not budget._paused):
            # Session._release when nobody waits for memory to free up, inlined.
            session._held_in -= taken
            session._released += taken
            if budget is not None:
                session._charged -= taken
                budget._held -= taken
        else:
            session._release(taken)
        inc = self._recv.consume(taken)
        if inc and not self._eof:
            session._send_window_update(self._id, inc)
        return data

    # ------------------------------------------------------------------ writing
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` for sending; never blocks. Follow with :meth:`drain`.

        A snapshot is taken: changing ``data`` after ``write()`` returns changes nothing on
        the wire. Raises :class:`StreamClosedError` after :meth:`write_eof`/:meth:`close`,
        the reset or session error if the stream is dead.
        """
        if self._write_error is not None:
            raise self._write_error
        if self._eof_queued:
            raise StreamClosedError(f"stream {self._id}: write after write_eof() or close()")
        if type(data) is not bytes:
            data = memoryview(data).cast("B")
        n = len(data)
        if not n:
            return
        self._bytes_out += n
        if self._pending:
            self._queue(data, 0)
            return
        if self._session._write_paused:
            # The transport is full: hold the data here (counted by the session) instead
            # of piling every stream's write into the transport's buffer.
            self._queue(data, 0)
            self._block()
            return
        take = self._send.reserve(n)
        if take == n:
            session = self._session
            if n < _SMALL_WRITE and n <= session._max_frame_size:
                # Session._send_data for one small frame, inlined (every RPC write)
                buf = session._wbuf
                pos = len(buf)
                session._append_data(buf, self._id, data, n)
                session.frames_sent += 1
                session._last_data_sid = self._id
                session._last_data_flags = pos + 7
                if len(buf) >= FLUSH_THRESHOLD:
                    session._flush()
                elif session._flush_handle is None:
                    session._schedule_flush()
            else:
                session._send_data(self._id, data)
        else:
            if take:
                self._session._send_data(self._id, memoryview(data)[:take])
            self._queue(data, take)

    def _queue(self, data: bytes | memoryview, start: int) -> None:
        if type(data) is bytes:
            rest: bytes | memoryview = memoryview(data)[start:] if start else data
        else:
            rest = bytes(data[start:])  # snapshot of a mutable buffer
        pending = self._pending
        if pending is None:
            pending = self._pending = collections.deque()
        pending.append(rest)
        n = len(rest)
        self._pending_size += n
        session = self._session
        session._queued += n
        if not self._outbound:
            session._queued_peer += n

    def _unqueue(self, n: int) -> None:
        self._pending_size -= n
        session = self._session
        session._queued -= n
        if not self._outbound:
            session._queued_peer -= n

    def _block(self) -> None:
        if not self._blocked:
            self._blocked = True
            self._session._blocked.append(self)

    def write_eof(self) -> None:
        """Half-close: end this side's direction after the data already written (DATA+HFR).

        The peer reads everything written, then end of stream. Reading continues to work.
        """
        if self._eof_queued or self._write_error is not None:
            return
        self._eof_queued = True
        if not self._pending:
            self._end_local()

    def _end_local(self) -> None:
        self._local_ended = True
        session = self._session
        if session._last_data_sid == self._id:  # Session._send_eof's common case, inlined
            # The last frame in the buffer is this stream's DATA: mark it HFR, no extra frame.
            session._wbuf[session._last_data_flags] = _KIND_DATA_HFR
            session._last_data_sid = 0
        else:
            session._send_eof(self._id)
        if self._eof:
            if self._protocol is not None and self._protocol_holds_end():
                return  # finished once resume_reading() delivered what is held
            self._session._finish(self)
        elif self._closing:
            self._stop_peer()

    async def drain(self) -> None:
        """Wait until written data has been handed to the transport and the transport has room.

        Waits while the peer's window holds data back or the transport is over its
        high-water mark. Cancelling ``drain()`` never loses or corrupts data. Once per
        256 KiB written without a wait it yields to the event loop (as ``asyncio.sleep(0)``
        does), so that a bulk writer never starves the other tasks of its loop.
        """
        while True:
            if self._write_error is not None:
                raise self._write_error
            if self._pending_size:
                pass  # woken by _pump (window update, transport resumed) or _fail
            elif self._session._write_paused:
                self._session._drainers.add(self)  # woken by resume_writing or _fail
            else:
                if self._bytes_out - self._yield_mark >= _DRAIN_YIELD:
                    self._yield_mark = self._bytes_out
                    await asyncio.sleep(0)  # let the loop run the others
                    continue
                return
            self._yield_mark = self._bytes_out
            fut = self._drain_waiter
            if fut is None or fut.done():
                fut = self._drain_waiter = self._loop.create_future()
            # shielded: a cancelled drain() must not cancel other drainers' future
            await asyncio.shield(fut)

    def notify_drained(self, callback: Callable[[], object]) -> bool:
        """The callback form of :meth:`drain`, for code that cannot await (a
        :class:`~mio.StreamProtocol`, an asyncio protocol feeding this stream).

        If ``drain()`` would wait now, arrange for ``callback()`` to be called once, when it
        would return (or the stream fails: the next write raises), and return True; else
        return False and never call it. A later call replaces the callback.
        """
        if self._write_error is not None:
            return False
        if self._pending_size:
            pass  # called from _pump once the queue is sent, or from _fail
        elif self._session._write_paused:
            self._session._drainers.add(self)  # called from resume_writing, or _fail
        else:
            return False
        self._drain_callback = callback
        return True

    def _wake_drain(self) -> None:
        fut = self._drain_waiter
        if fut is not None:
            self._drain_waiter = None
            if not fut.done():
                fut.set_result(None)
        callback = self._drain_callback
        if callback is not None:
            self._drain_callback = None
            try:
                callback()
            except Exception:
                log.exception("notify_drained callback failed on stream %d", self._id)

    def _on_window_update(self, increment: int) -> None:
        self._send.grow(increment)
        if self._pending:
            self._pump()

    def _pump(self, quantum: int = -1) -> None:
        """Send what the window allows (at most ``quantum`` bytes if given) while the
        transport takes more; a stream stopped by a paused transport queues itself."""
        pending = self._pending
        send = self._send
        session = self._session
        while pending:
            if session._write_paused or not quantum:
                self._block()
                return
            avail = send.available
            if not avail:
                return
            head = pending[0]
            size = len(head)
            if 0 < quantum < size:
                size = quantum
            take = send.reserve(size)
            if take == len(head):
                pending.popleft()
                session._send_data(self._id, head)
            else:
                view = memoryview(head)
                session._send_data(self._id, view[:take])
                pending[0] = view[take:]
            self._unqueue(take)
            if quantum > 0:
                quantum -= take
        if self._eof_queued and not self._local_ended:
            self._end_local()
        self._wake_drain()
        if self._protocol is not None and self._protocol_state & _PROTO_BACKLOG:
            self._backlog_drained()

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        """Close: we are done with this stream, in both directions. Never blocks.

        Data written before is still delivered, then our direction ends (DATA+HFR); what
        the peer sends from now on is discarded. If the peer's direction has ended too, that
        is the whole, graceful close: no RST. If the peer is still sending, it is told at
        once that nobody reads: once our data is out, RST ``NO_ERROR`` follows the HFR, so
        its writes fail with :class:`StreamClosedError` (``code`` 0) while everything we
        sent stays readable on its side. With ``Config.send_resets=False`` (a reference
        peer hangs on any RST) the stream goes on discarding until the peer ends, and is
        forgotten silently after ``linger_timeout``. Our data still unsent after
        ``linger_timeout`` (the peer does not read it) is dropped with RST ``CANCEL``.

        :meth:`wait_closed` (and leaving ``async with stream``) returns as soon as our
        side is done: our data handed to the transport, our direction ended.
        """
        if self._closing:
            return
        self._closing = True
        if self._size:
            size = self._size
            self._chunks.clear()
            self._head = 0
            self._size = 0
            self._session._release(size)
            inc = self._recv.consume(size)
            if inc and not self._eof:
                self._session._send_window_update(self._id, inc)
        if self._eof_queued:  # write_eof() came first
            if self._local_ended and not self._finished:
                if not self._eof:
                    self._stop_peer()
                elif self._protocol is not None:
                    # Both directions ended, the end held for a paused protocol
                    # (_protocol_holds_end): close() drops it, so nothing holds it now.
                    self._session._finish(self)
        elif self._write_error is None:  # write_eof(), inlined
            self._eof_queued = True
            if not self._pending:
                self._end_local()
        if not self._finished and self._linger is None and not self._local_ended:
            self._arm_linger()

    def _arm_linger(self) -> None:
        timeout = self._session._config.linger_timeout
        self._linger = self._loop.call_later(timeout, self._linger_expired)

    def _stop_peer(self) -> None:
        """Our direction ended after close() while the peer's is still open."""
        session = self._session
        if session._send_resets:
            session._send_rst(self._id, ErrorCode.NO_ERROR)
            self._eof = True
            session._finish(self)
        else:
            self._resolve_closed()  # our side is done; keep discarding what the peer sends
            if self._linger is None:
                self._arm_linger()

    def is_closing(self) -> bool:
        """True once :meth:`close` or :meth:`reset` was called, or the stream is finished."""
        return self._closing or self._finished

    def _our_side_done(self) -> bool:
        return self._closing and self._local_ended

    def reset(self, code: int = ErrorCode.INTERNAL_ERROR) -> None:
        """Abort the stream: send RST with ``code``, drop queued data in both directions."""
        if self._finished:
            return
        self._closing = True
        error = StreamResetError(self._id, code, remote=False)
        self._fail(error, error)
        self._session._send_rst(self._id, code)
        self._session._finish(self)

    def _linger_expired(self) -> None:
        self._linger = None
        if self._finished:
            return
        session = self._session
        if session._send_resets and not self._local_ended:
            # The peer did not take our data within linger_timeout: give up on it.
            error = StreamResetError(
                self._id, ErrorCode.CANCEL, remote=False, reason="linger_timeout expired"
            )
            self._fail(error, error)
            session._send_rst(self._id, ErrorCode.CANCEL)
        else:
            session._forget(self._id)  # later DATA is dropped unanswered
            self._on_remote_end(None)
            self._local_ended = True
            self._drop_pending()
        session._finish(self)

    # ------------------------------------------------------------------ session side
    def _feed(self, data: bytes, end: bool) -> None:
        """Payload of a DATA frame (or a piece of one) arrived from the peer."""
        if self._protocol is not None:
            self._feed_protocol(data, end)
            return
        n = len(data)
        if n:
            self._bytes_in += n
            if self._eof:
                self._session._stream_protocol_error(self, "DATA after the peer's half-close")
                return
            try:
                self._recv.receive(n)
            except FlowControlError as exc:
                self._session._stream_protocol_error(self, str(exc), ErrorCode.FLOW_CONTROL_ERROR)
                return
            self._session._held_in += n
            if self._closing:
                self._session._held_in -= n  # discarded at once: never held
                inc = self._recv.consume(n)
                if inc and not end:
                    self._session._send_window_update(self._id, inc)
            else:
                chunks = self._chunks
                if n < _SMALL_PIECE and chunks:
                    # The reader is behind: tiny payloads share one bytearray, so a flood of
                    # 2-byte frames does not cost one ~40-byte object per frame on top of
                    # what the window admits. (An empty buffer keeps the zero-copy path.)
                    tail = chunks[-1]
                    if type(tail) is bytearray and len(tail) < _TAIL_LIMIT:
                        tail += data
                    else:
                        chunks.append(bytearray(data))
                else:
                    chunks.append(data)
                self._size += n
        w = self._waiter
        if w is not None:
            self._waiter = None
        if end:
            if not self._eof:  # _on_remote_end(None), inlined
                self._eof = True
                self._error = None
            if w is not None and not w.done():
                wakeups = self._session._wakeups
                if wakeups is None:
                    w.set_result(None)
                else:
                    wakeups.wake(w)
            if self._local_ended:
                self._session._finish(self)
            return
        if w is not None and not w.done():
            wakeups = self._session._wakeups
            if wakeups is None:
                w.set_result(None)
            else:
                wakeups.wake(w)

    # ------------------------------------------------------------------ StreamProtocol
    def _attach(self, protocol: StreamProtocol) -> None:
        """Serve this stream with ``protocol``'s callbacks (see :mod:`mio.stream_protocol`)."""
        self._protocol = protocol
        self._protocol_state = 0
        self._protocol_error: BaseException | None = None
        try:
            protocol.stream_opened(self)
        except Exception as exc:
            self._protocol_failed("stream_opened", exc)

    def set_protocol(self, protocol: StreamProtocol) -> None:
        """Serve this stream with ``protocol``'s callbacks from now on (see
        :mod:`mio.stream_protocol`), e.g. after reading a header with the coroutine API, or
        for a stream this side opened.

        ``protocol.stream_opened(self)`` comes first; then what is already buffered is
        delivered, then the end of stream if it came; a stream already finished (reset,
        session gone) calls ``stream_closed`` at once. A handler that hands its stream to a
        protocol may return: the stream stays open, the protocol owns it. Raises
        ``RuntimeError`` if the stream already has a protocol or a read is waiting on it.
        """
        if self._protocol is not None:
            raise RuntimeError(f"stream {self._id} is already served by a StreamProtocol")
        if self._waiter is not None and not self._waiter.done():
            raise RuntimeError(f"stream {self._id}: a read is waiting on it")
        self._attach(protocol)
        if self._finished:
            self._notify_closed()
        elif self._protocol is not None and not self._protocol_state:
            self._deliver_held()

    def _backlog_pauses(self) -> bool:
        protocol = self._protocol
        return protocol is None or protocol.pause_on_backlog

    def _protocol_failed(self, callback: str, exc: Exception) -> None:
        log.exception("StreamProtocol.%s failed on stream %d", callback, self._id)
        self._protocol_state |= _PROTO_FAILED
        self._protocol_error = exc
        self._session._abandon(self, ErrorCode.INTERNAL_ERROR)

    def _deliver(self, data: bytes) -> bool:
        """``data_received(data)``; False if the callback raised (the stream is abandoned)."""
        try:
            self._protocol.data_received(data)  # type: ignore[union-attr]
        except Exception as exc:
            self._protocol_failed("data_received", exc)
            return False
        return True

    def _feed_protocol(self, data: bytes, end: bool) -> None:
        n = len(data)
        session = self._session
        if n:
            self._bytes_in += n
            if self._eof:
                session._stream_protocol_error(self, "DATA after the peer's half-close")
                return
            try:
                self._recv.receive(n)
            except FlowControlError as exc:
                session._stream_protocol_error(self, str(exc), ErrorCode.FLOW_CONTROL_ERROR)
                return
            if self._closing or self._protocol_state & _PROTO_FAILED:
                inc = self._recv.consume(n)  # discarded at once: the window reopens
                if inc and not end:
                    session._send_window_update(self._id, inc)
            elif (
                self._protocol_state
                or self._size
                or (self._pending_size > self._recv.window and self._backlog_pauses())
            ):
                # paused, or behind held data, or more than a window of replies unsent (a
                # peer that does not read them): hold it, counted, and let the window close
                if self._pending_size > self._recv.window and self._backlog_pauses():
                    self._protocol_state |= _PROTO_BACKLOG
                session._held_in += n
                chunks = self._chunks
                tail = chunks[-1] if chunks else None
                if n < _SMALL_PIECE and type(tail) is bytearray and len(tail) < _TAIL_LIMIT:
                    tail += data  # tiny pieces share one buffer (as _feed does)
                else:
                    chunks.append(bytearray(data) if n < _SMALL_PIECE else data)
                self._size += n
            else:
                inc = self._recv.consume(n)  # delivered at once: the window reopens
                if inc and not end:
                    session._send_window_update(self._id, inc)
                self._deliver(data)
        if end:
            self._on_remote_end(None)
            self._deliver_eof()
            if self._local_ended and not self._protocol_holds_end():
                session._finish(self)

    def _deliver_eof(self) -> None:
        state = self._protocol_state
        if state or self._size or self._closing or self._protocol is None:
            return  # paused, told, failed or backlogged; data still held; or nobody listens
        self._protocol_state = _PROTO_EOF_SENT
        try:
            self._protocol.eof_received()
        except Exception as exc:
            self._protocol_failed("eof_received", exc)

    def pause_reading(self) -> None:
        """For a stream served by a :class:`~mio.StreamProtocol`: stop calling
        ``data_received``; what arrives stays in the stream (counted in the session's
        memory account) and the peer's window closes as it fills."""
        if self._protocol is None:
            raise RuntimeError(f"stream {self._id} is not served by a StreamProtocol")
        self._protocol_state |= _PROTO_PAUSED

    def resume_reading(self) -> None:
        """Deliver what :meth:`pause_reading` held (then the end of stream, if it came) and
        go on delivering as data arrives."""
        if self._protocol is None or not self._protocol_state & _PROTO_PAUSED:
            return
        self._protocol_state &= ~_PROTO_PAUSED
        self._deliver_held()

    def _backlog_drained(self) -> None:
        """Replies went out: below one receive window unsent, input flows again."""
        if self._pending_size <= self._recv.window:
            self._protocol_state &= ~_PROTO_BACKLOG
            self._deliver_held()

    def _deliver_held(self) -> None:
        while (
            self._protocol is not None
            and self._size
            and not self._protocol_state & (_PROTO_PAUSED | _PROTO_FAILED | _PROTO_BACKLOG)
            and not self._closing
        ):
            if not self._deliver(self._take(self._size)):
                return
            if self._pending_size > self._recv.window and self._backlog_pauses():
                self._protocol_state |= _PROTO_BACKLOG
        if self._eof and not self._size and self._error is None and self._protocol is not None:
            self._deliver_eof()
            if self._local_ended and not self._finished and not self._protocol_holds_end():
                self._session._finish(self)

    def _protocol_holds_end(self) -> bool:
        """The peer's direction ended, but the protocol was not told all of it yet: data, or
        the ``eof_received`` itself, is held while it is paused or backlogged (a callback
        that paused on the last frame). The stream must not finish, nor ``stream_closed``
        come, before ``resume_reading()`` delivered it."""
        if self._protocol is None or self._closing or self._error is not None:
            return False  # nobody listens, discarded, or ended by an error: nothing to hold
        if self._size:
            return True
        return not self._protocol_state & (_PROTO_EOF_SENT | _PROTO_FAILED)

    def _notify_closed(self) -> None:
        """The stream is finished: tell its protocol, once. Data still held (the stream was
        reset, or the session ended, while delivery was paused) is dropped and released."""
        protocol, self._protocol = self._protocol, None
        if protocol is None:
            return
        if self._size:
            self._session._release(self._size)
            self._chunks.clear()
            self._head = 0
            self._size = 0
        exc = self._protocol_error  # a callback raised: that is why, not the reset it caused
        if exc is None:
            exc = self._error if self._error is not None else self._write_error
        try:
            protocol.stream_closed(exc)
        except Exception:
            log.exception("StreamProtocol.stream_closed failed on stream %d", self._id)

    def _on_remote_end(self, error: BaseException | None) -> None:
        """The peer's direction ended: readers see the buffered data, then EOF or ``error``."""
        if not self._eof:
            self._eof = True
            self._error = error
        self._wake()

    def _on_reset(self, code: int) -> None:
        """The peer sent RST ``code``."""
        if code == ErrorCode.NO_ERROR:
            # The reference closes streams this way: what arrived stays readable, then EOF.
            self._on_remote_end(None)
            if self._protocol is not None:
                self._deliver_eof()
            message = f"stream {self._id}: the peer closed it (RST NO_ERROR) and reads no more"
            self._fail(None, StreamClosedError(message, ErrorCode.NO_ERROR))
        else:
            error = reset_error_class(code)(self._id, code, remote=True)
            self._fail(error, error)

    def _fail(self, read_error: BaseException | None, write_error: BaseException) -> None:
        """End both directions locally; ``read_error`` (if any) drops buffered data."""
        if read_error is not None:
            if self._size:
                self._session._release(self._size)
            self._chunks.clear()
            self._head = 0
            self._size = 0
            self._eof = True
            self._error = read_error
        elif not self._eof:
            self._eof = True
        self._local_ended = True
        self._eof_queued = True
        if self._write_error is None:
            self._write_error = write_error
        self._drop_pending()

    def _on_session_closed(self, error: SessionClosedError) -> None:
        """The session ended (FIN, local close or transport loss).

        A peer direction that had not ended (no HFR) is cut short whatever the FIN code:
        the buffered data stays readable, then reads raise ``error`` (never a clean EOF, so a
        truncated transfer cannot pass for a complete one).
        """
        if not self._eof:
            self._eof = True
            self._error = error
        self._local_ended = True
        self._eof_queued = True
        if self._write_error is None:
            self._write_error = error
        self._drop_pending()

    def _drop_pending(self) -> None:
        """Writes can never be sent any more: drop them and wake every waiter."""
        if self._pending_size:
            self._unqueue(self._pending_size)
        if self._pending is not None:
            self._pending.clear()
        self._wake()
        self._wake_drain()
