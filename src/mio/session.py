"""Session: the MIO protocol over one reliable byte stream, as an asyncio ``Protocol``.

Data path: ``data_received`` → one ``FrameDecoder.feed`` per transport read → one callback
per frame (``_on_data`` / ``_on_frame``) → the stream's buffer → a waiting reader.
Write path: frames are appended to one output ``bytearray``; it is handed to the transport
once per event-loop iteration (or as soon as it holds 64 KiB), so many frames cost one
``transport.write``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, Literal, cast, overload

from . import _impl
from ._core import FLUSH_THRESHOLD, SessionCore
from ._wakeup_batch import WakeupBatch
from .budget import MemoryBudget
from .config import Config
from .errors import (
    FlowControlError,
    FrameError,
    SessionClosedError,
    StreamLimitError,
    StreamResetError,
)
from .stream import Stream
from .stream_protocol import StreamProtocol
from .wire import MAX_STREAM_ID, MAX_VALUE, ErrorCode

__all__ = ("Session", "StreamHandler")

log = logging.getLogger("mio.session")

#: What serves the streams a peer opens: ``async def handler(stream)`` (a task per stream),
#: or a :class:`~mio.StreamProtocol` subclass (one instance per stream, callbacks, no task).
StreamHandler = Callable[[Stream], Awaitable[None]] | type[StreamProtocol]

_FLUSH_THRESHOLD = FLUSH_THRESHOLD
# DATA payloads up to this size that straddle transport reads are assembled whole by the
# decoder and read straight into (see FrameDecoder): one copy per byte instead of two.
# Every mio peer's frames (Config.max_frame_size, 64 KiB by default) fit.
_ASSEMBLE_MAX = 256 * 1024
_ZERO_COPY_MIN = 32 * 1024
_Task = asyncio.Task
_READ_BUFFER_SIZE = 256 * 1024
_EOF_LINGER = 1.0
_RECENT_RESETS = 4096
#: RST answers (bytes) queued while the transport is paused before the session stops
#: reading from a peer that does not read its own input.
_ANSWER_LIMIT = 64 * 1024
#: Seconds a paused session lets a waiting application make progress (read anything)
#: before it sheds a stream: a handler task just scheduled gets to run first.
_RELIEVE_DELAY = 0.2
#: Quantum a blocked stream may send per turn when the transport resumes (round-robin).
_PUMP_QUANTUM = 64 * 1024

# Why reading from the transport is paused (bits of Session._read_paused).
_PAUSED_MEMORY = 1  # unread inbound data (+ queued responses) reached max_session_memory
_PAUSED_BUDGET = 2  # the shared MemoryBudget is full
_PAUSED_ANSWERS = 4  # the peer does not read, and answers to it pile up

_KIND_OPEN = 0x0C
_KIND_DATA = 0x01
_KIND_DATA_HFR = 0x11
_KIND_WINDOW_UPDATE = 0x09
_KIND_RST = 0x04
_KIND_SESSION_WINDOW_UPDATE = 0x08
_KIND_FIN = 0x02


class _ReadBuffer(threading.local):
    """One receive buffer per thread, shared by every session of its event loop.

    ``BufferedProtocol`` reads happen synchronously (``get_buffer``, ``recv_into``,
    ``buffer_updated`` in one callback, also under TLS and uvloop) and the decoder copies
    what it keeps, so sessions never need a buffer of their own between reads: an idle
    session holds no read buffer, whatever it received before.
    """

    def __init__(self) -> None:
        self.view = memoryview(bytearray(_READ_BUFFER_SIZE))


_read_buffer = _ReadBuffer()


_HTTP_METHODS = (b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC")


def _foreign_protocol(first: bytes) -> str | None:
    """Name the protocol whose first bytes ``first`` are, when it is plainly not MIO."""
    if len(first) >= 3 and first[0] == 0x16 and first[1] == 0x03 and first[2] <= 0x04:
        return "TLS"  # a handshake record: a ClientHello
    if first[:4] in _HTTP_METHODS or first.startswith(b"HTTP/"):
        return "HTTP"
    if first.startswith(b"PRI * HTTP/2"[:8]):
        return "HTTP/2"
    if first.startswith(b"SSH-"):
        return "SSH"
    return None


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"code {code}"


class Session(SessionCore[Stream], asyncio.BufferedProtocol):
    """One MIO session: many streams over one transport.

    Usually made by :func:`mio.connect`, :func:`mio.serve`, :func:`mio.pipe` or the other
    helpers of :mod:`mio`; as an asyncio protocol it also works with any transport
    (``loop.create_connection(lambda: Session(client=True), ...)``, TLS, Unix sockets,
    socket pairs). It is a ``BufferedProtocol`` (the transport reads straight into one
    reusable buffer) and also accepts ``data_received`` from transports that push bytes.

    Args:
        client: True on the side that dialed the transport (it opens odd stream ids), False
            on the side that accepted it (even ids).
        config: protocol parameters; :class:`Config` defaults when omitted.
        handler: optional ``async def handler(stream)`` run (as a task) for every stream the
            peer opens, or a :class:`~mio.StreamProtocol` subclass instantiated for each
            (callbacks, no task); without it, the application takes streams with
            :meth:`accept_stream` or ``async for stream in session``.
        budget: a :class:`MemoryBudget` shared with other sessions (a process-wide cap on
            the unread data they hold), on top of ``config.max_session_memory``.
    """

    def __init__(
        self,
        *,
        client: bool,
        config: Config | None = None,
        handler: StreamHandler | None = None,
        budget: MemoryBudget | None = None,
        _codec: Any = None,
    ) -> None:
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = asyncio.get_event_loop_policy().get_event_loop()
        # Reads completed and handler tasks started: their callbacks batched (see _wakeup_batch).
        self._wakeups = WakeupBatch(self._loop) if WakeupBatch.usable(self._loop) else None
        # asyncio's own loop (not uvloop's): handler tasks are made as its create_task
        # makes them, without the call (see _on_open).
        self._plain_loop = isinstance(self._loop, asyncio.BaseEventLoop) and hasattr(
            self._loop, "_task_factory"
        )
        self._config = config = config if config is not None else Config()
        self._client = client
        self._protocol_factory: type[StreamProtocol] | None = None
        self._handler: Callable[[Stream], Awaitable[None]] | None = None
        if isinstance(handler, type) and issubclass(handler, StreamProtocol):
            self._protocol_factory = handler  # callbacks, no task per stream
        else:
            self._handler = cast("Callable[[Stream], Awaitable[None]] | None", handler)
        self._codec: ModuleType = _codec if _codec is not None else _impl
        frame = self._codec.frame
        # the window classes every Stream makes (one lookup here, not two per stream)
        self._recv_window = self._codec.window.RecvWindow
        self._send_window = self._codec.window.SendWindow
        self._streams: dict[int, Stream] = {}
        # DATA for a stream in the table goes straight to Stream._feed (see FrameDecoder)
        self._decoder = frame.FrameDecoder(
            self._on_data,
            self._on_frame,
            config.max_recv_frame_size,
            _ASSEMBLE_MAX,
            sinks=self._streams,
        )
        self._into_payload = False  # the last get_buffer() gave the decoder's payload buffer
        self._joining_writelines = False  # set by connection_made
        self._assembled = 0  # size of the decoder's partial payload, counted in _held_in
        self._append_frame = frame.append_frame
        self._append_data = frame.append_data
        self._max_frame_size = config.max_frame_size
        self._next_id = 1 if client else 2
        self._local_count = 0
        self._remote_count = 0
        # Memory held for the peer (see mio.budget): unread inbound bytes, and data queued
        # in streams (all of them; those the peer opened, separately: responses).
        self._held_in = 0
        self._queued = 0
        self._queued_peer = 0
        self._mem_limit = config.max_session_memory
        self._resume_mark = (config.max_session_memory * 3) >> 2
        self._budget = budget
        self._charged = 0  # part of _held_in charged to the budget
        self._released = 0  # inbound bytes released so far (progress of the application)
        self._relieve_handle: asyncio.TimerHandle | None = None
        self._relieve_mark = 0
        self._read_paused = 0  # _PAUSED_* bits
        self._answers = 0  # RST answers queued since the transport paused
        self._blocked: deque[Stream] = deque()  # streams holding data for a paused transport
        self._drainers: set[Stream] = set()  # streams whose drain() waits for the transport
        self._send_resets = config.send_resets
        self.resets_sent = 0
        self.resets_received = 0
        self._resets_out: dict[int, int] = {}
        self._resets_in: dict[int, int] = {}
        self.streams_refused = 0
        self.streams_shed = 0
        self.read_pauses = 0
        self._recent_resets: dict[int, None] = {}
        self._accept_queue: deque[Stream] = deque()
        self._accept_waiter: asyncio.Future[None] | None = None
        self._open_waiter: asyncio.Future[None] | None = None
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._handlers_deadline: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._wbuf = bytearray()
        self._flush_handle: asyncio.Handle | None = None
        self._last_data_sid = 0
        self._last_data_flags = -1
        self._write_paused = False
        self._closing = False  # graceful close in progress: no new streams
        self._closed = False  # FIN sent or received, or transport gone
        self._close_error: SessionClosedError | None = None
        self._closed_waiter: asyncio.Future[None] = self._loop.create_future()
        self._on_connection_made: Callable[[Session], None] | None = None
        self._idle_waiter: asyncio.Future[None] | None = None
        self._keepalive_handle: asyncio.TimerHandle | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._last_recv = 0.0
        self._eof_seen = False
        self._linger_handle: asyncio.TimerHandle | None = None
        self._abort_handle: asyncio.TimerHandle | None = None
        self._sent_since_tick = False
        self.bytes_sent = 0
        self.bytes_received = 0
        self.frames_sent = 0

    # ------------------------------------------------------------------ public API
    @property
    def memory(self) -> dict[str, int]:
        """What this session holds for its peer now, in bytes.

        ``inbound``: received, not yet read by the application; ``queued``: written by the
        application, held in streams (window exhausted or transport paused); ``output``:
        in the session's output buffer and the transport's write buffer; ``limit``:
        ``config.max_session_memory``.
        """
        transport = self._transport
        output = len(self._wbuf)
        if transport is not None:
            try:
                output += transport.get_write_buffer_size()
            except (AttributeError, NotImplementedError):
                pass
        return {
            "inbound": self._held_in,
            "queued": self._queued,
            "output": output,
            "limit": self._mem_limit,
        }

    @property
    def resets_sent_by_code(self) -> dict[int, int]:
        """RST frames sent, by error code (:class:`ErrorCode` values)."""
        return dict(self._resets_out)

    @property
    def resets_received_by_code(self) -> dict[int, int]:
        """RST frames received, by error code (for known and unknown streams)."""
        return dict(self._resets_in)

    @property
    def is_reading_paused(self) -> bool:
        """True while the session does not read from its transport (memory backpressure)."""
        return bool(self._read_paused)

    @property
    def stats(self) -> dict[str, int]:
        """Counters: bytes and frames in each direction, open streams, resets sent and
        received, refused and shed streams, read pauses, and :attr:`memory` (prefixed
        ``memory_``)."""
        stats = {
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "frames_sent": self.frames_sent,
            "frames_received": int(self._decoder.frames),
            "streams": len(self._streams),
            "resets_sent": self.resets_sent,
            "resets_received": self.resets_received,
            "streams_refused": self.streams_refused,
            "streams_shed": self.streams_shed,
            "read_pauses": self.read_pauses,
        }
        for key, value in self.memory.items():
            stats[f"memory_{key}"] = value
        return stats

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
        """Information from the underlying transport (``peername``, ``sockname``,
        ``ssl_object``, ``socket`` …), as ``asyncio.BaseTransport.get_extra_info``."""
        if self._transport is None:
            return default
        return self._transport.get_extra_info(name, default)

    async def open_stream(self) -> Stream:
        """Open a new stream to the peer. No round trip: data may be written at once.

        Waits while this side already has ``config.max_streams`` streams open.

        Raises:
            SessionClosedError: the session is closed or closing.
            StreamLimitError: stream ids are exhausted.
        """
        while True:
            if self._closed or self._closing:
                self._check_open()
            if self._local_count < self._config.max_streams:
                break
            fut = self._open_waiter
            if fut is None or fut.done():
                fut = self._open_waiter = self._loop.create_future()
            await asyncio.shield(fut)
        sid = self._next_id
        streams = self._streams
        while sid in streams:
            sid += 2
        if sid > MAX_STREAM_ID:
            raise StreamLimitError(f"stream ids exhausted (next id {sid} > {MAX_STREAM_ID})")
        self._next_id = sid + 2
        window = self._config.initial_window
        stream = Stream(self, sid, window, self._config.max_window)
        stream._outbound = True
        streams[sid] = stream
        self._local_count += 1
        self._send_frame(sid, window, _KIND_OPEN)
        return stream

    def close(self, code: int = ErrorCode.NO_ERROR) -> None:
        """Close now: send FIN with ``code`` after what is queued, then close the transport.

        Every stream ends: data already received stays readable, then reads raise
        :class:`SessionClosedError`; writes raise it at once. Handler tasks are cancelled,
        also those still reading what arrived before the peer ended the session.
        """
        if self._closed:
            self._cancel_handlers()  # the peer ended it first: their close_timeout ends now
            return
        self._send_frame(0, code, _KIND_FIN)
        self._shutdown(SessionClosedError("session closed locally", None), abort=False, local=True)

    async def aclose(self, code: int = ErrorCode.NO_ERROR, timeout: float | None = None) -> None:
        """Graceful close: refuse new streams, let open ones finish (up to ``timeout``,
        default ``config.close_timeout``), then :meth:`close` and wait for the transport."""
        limit = self._config.close_timeout if timeout is None else timeout
        if not self._closed:
            self._closing = True
            self._wake_accept()
            self._wake_open()
            if self._streams:
                fut = self._idle_waiter = self._loop.create_future()
                try:
                    await asyncio.wait_for(asyncio.shield(fut), limit)
                except TimeoutError:
                    log.debug("graceful close timed out with %d streams open", len(self._streams))
            self.close(code)
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the transport is closed.

        After FIN, mio half-closes the transport and reads until the peer's EOF (up to
        one second) so that the kernel never answers unread input with a TCP RST that
        could destroy the FIN; a peer that does not read is aborted after
        ``config.close_timeout``. So this always returns within that bound.
        """
        await asyncio.shield(self._closed_waiter)

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        # asyncio's socket transport before 3.12 has no scatter write: its writelines joins
        # (a copy) and then copies again into its buffer when the socket is full.
        # (Only where get_write_buffer_size is implemented: _flush asks it.)
        cls = type(transport)
        self._joining_writelines = (
            getattr(cls, "writelines", None) is asyncio.WriteTransport.writelines
            and getattr(cls, "get_write_buffer_size", None)
            is not asyncio.WriteTransport.get_write_buffer_size
        )
        if self._budget is not None:
            # Joined only once connected: a connection whose TLS handshake fails never
            # gets here (nor closes its session), and must not stay counted.
            self._budget._attach(self)
        set_limits = getattr(transport, "set_write_buffer_limits", None)
        if set_limits is not None:
            try:
                set_limits(high=self._config.write_buffer_high)
            except NotImplementedError:  # asyncio.Transport's default (e.g. mio.pipe())
                pass
        cfg = self._config
        if cfg.keepalive_interval is not None:
            self._keepalive_handle = self._loop.call_later(
                cfg.keepalive_interval, self._keepalive_tick
            )
        if cfg.idle_timeout is not None:
            self._last_recv = self._loop.time()
            self._idle_handle = self._loop.call_later(cfg.idle_timeout, self._idle_tick)
        if self._wbuf:
            self._schedule_flush()
        if self._on_connection_made is not None:
            self._on_connection_made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._assembled and not self._closed:
            # In the middle of a large DATA payload: the kernel copies the rest of it
            # straight into the payload (no second copy, and it reaches the reader whole).
            tail = self._decoder.payload_buffer()
            if tail is not None:
                self._into_payload = True
                return tail  # type: ignore[no-any-return]
        return _read_buffer.view

    def buffer_updated(self, nbytes: int) -> None:
        self.bytes_received += nbytes
        if self._closed:
            self._into_payload = False
            return  # draining the peer's last bytes before closing the transport
        if self._idle_handle is not None:
            self._last_recv = self._loop.time()
        decoder = self._decoder
        if self._into_payload:
            self._into_payload = False
            decoder.payload_filled(nbytes)
        else:
            view = _read_buffer.view
            if self.bytes_received == nbytes and self._foreign(view[:nbytes]):
                return
            try:
                decoder.feed(view[:nbytes] if nbytes < len(view) else view)
            except FrameError as exc:
                self._protocol_error(f"protocol error: {exc}", exc.error_code)
                return
        assembled = decoder.assembling
        if assembled != self._assembled and not self._closed:
            # The partial payload is memory this session holds for its peer: counted (a
            # closed session reads no more: _shutdown dropped it from the account).
            self._held_in += assembled - self._assembled
            self._assembled = assembled
        if self._held_in >= self._mem_limit or self._budget is not None or self._queued_peer:
            self._account()

    def data_received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        if self._closed:
            return
        if self._idle_handle is not None:
            self._last_recv = self._loop.time()
        if self.bytes_received == len(data) and self._foreign(data):
            return
        decoder = self._decoder
        try:
            decoder.feed(data)
        except FrameError as exc:
            self._protocol_error(f"protocol error: {exc}", exc.error_code)
            return
        assembled = decoder.assembling
        if assembled != self._assembled and not self._closed:
            self._held_in += assembled - self._assembled
            self._assembled = assembled
        if self._held_in >= self._mem_limit or self._budget is not None or self._queued_peer:
            self._account()

    def eof_received(self) -> bool:
        self._eof_seen = True
        self._flush()
        if not self._closed:
            reason = f"connection closed by the peer {self._peer_name()} (EOF)"
            if self._decoder.in_frame:
                reason = f"{reason} in the middle of a frame (after byte {self._decoder.offset})"
            elif not self.bytes_received and self._transport is not None:
                tls = self._transport.get_extra_info("ssl_object") is not None
                reason = f"{reason} before sending anything: " + (
                    "does it speak TLS?"
                    if tls
                    else "is TLS enabled on one side only (the peer may expect TLS)?"
                )
            self._shutdown(SessionClosedError(reason), abort=False)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed:
            reason = f"connection lost: {exc!r}" if exc else "connection closed by the peer"
            self._shutdown(SessionClosedError(reason), abort=False)
        self._transport = None
        for handle in (self._linger_handle, self._abort_handle):
            if handle is not None:
                handle.cancel()
        self._linger_handle = self._abort_handle = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._write_paused = False  # no transport, nothing to wait for: drain() must not hang
        self._wake_drainers()
        if not self._closed_waiter.done():
            self._closed_waiter.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._answers = 0
        self._resume_reading(_PAUSED_ANSWERS)
        # Streams that held data back while the transport was paused, round-robin by
        # quantum, until the transport is full again.
        blocked = self._blocked
        while blocked and not self._write_paused:
            stream = blocked.popleft()
            stream._blocked = False
            stream._pump(_PUMP_QUANTUM)
        if not self._write_paused:
            self._wake_drainers()
            if self._read_paused & _PAUSED_MEMORY:
                self._account()

    # ------------------------------------------------------------------ memory account
    def _account(self) -> None:
        """After a transport read (or a change of what is held): charge the shared budget
        and pause reading while over a limit; never leave a waiting reader stuck."""
        held = self._held_in
        budget = self._budget
        if budget is not None:
            delta = held - self._charged
            if delta:
                self._charged = held
                if delta > 0:  # Budget._adjust's growing case, inlined (once per read)
                    total = budget._held = budget._held + delta
                    if total > budget._peak:
                        budget._peak = total
                else:
                    budget._adjust(delta)
                if (
                    budget._held >= budget._limit
                    and held - self._assembled >= budget._fair_share  # (see below)
                    and not self._read_paused & _PAUSED_BUDGET
                ):
                    # Only the sessions holding more than their share stop: one session
                    # filling the budget must not stall the others.
                    budget._pause(self)
                    self._pause_reading(_PAUSED_BUDGET)
        # Responses queued for a peer that does not read its own input count too: reading
        # more from it only makes the application produce more of them.
        if self._write_paused:
            held += self._queued_peer
        # A partial payload (M9) is counted but never pauses reading: only reading its rest
        # frees it (paused over it, with nothing else to read, the session would stall).
        held -= self._assembled
        if held >= self._mem_limit:
            self._pause_reading(_PAUSED_MEMORY)
        elif self._read_paused & _PAUSED_MEMORY and held <= self._resume_mark:
            self._resume_reading(_PAUSED_MEMORY)
        if self._read_paused & (_PAUSED_MEMORY | _PAUSED_BUDGET) and self._input_wanted():
            self._reader_waits()

    def _release(self, n: int) -> None:
        """``n`` unread inbound bytes left the account (read, discarded or dropped)."""
        self._held_in -= n
        self._released += n
        budget = self._budget
        if budget is not None:
            self._charged -= n
            budget._adjust(-n)
        if self._read_paused & _PAUSED_MEMORY:
            held = self._held_in - self._assembled
            if self._write_paused:
                held += self._queued_peer
            if held <= self._resume_mark:
                self._resume_reading(_PAUSED_MEMORY)

    def _budget_resumed(self) -> None:
        self._resume_reading(_PAUSED_BUDGET)

    def _pause_reading(self, reason: int) -> None:
        if not self._read_paused:
            self.read_pauses += 1
            transport = self._transport
            if transport is not None and not self._closed:
                try:
                    transport.pause_reading()
                except (AttributeError, NotImplementedError, RuntimeError):
                    pass
        self._read_paused |= reason

    def _resume_reading(self, reason: int) -> None:
        if not self._read_paused & reason:
            return
        self._read_paused &= ~reason
        transport = self._transport
        if not self._read_paused and transport is not None and not self._closed:
            try:
                transport.resume_reading()
            except (AttributeError, NotImplementedError, RuntimeError):
                pass

    def _input_wanted(self) -> bool:
        """True when the application waits for input (a reader, or accept_stream)."""
        fut = self._accept_waiter
        if fut is not None and not fut.done():
            return True
        for stream in self._streams.values():
            w = stream._waiter
            if w is not None and not w.done():
                return True
        return False

    def _largest_unread(self) -> Stream | None:
        """The stream holding the most unread bytes that no reader is waiting on."""
        best = None
        most = 0
        for stream in self._streams.values():
            size = stream._size
            if size > most:
                w = stream._waiter
                if w is None or w.done():
                    best, most = stream, size
        return best

    def _reader_waits(self) -> None:
        """The application waits for input: if reading stays paused over memory while it
        makes no progress for ``_RELIEVE_DELAY``, :meth:`_relieve`."""
        if self._read_paused & (_PAUSED_MEMORY | _PAUSED_BUDGET) and self._relieve_handle is None:
            self._relieve_mark = self._released
            self._relieve_handle = self._loop.call_later(_RELIEVE_DELAY, self._relieve_tick)

    def _relieve_tick(self) -> None:
        self._relieve_handle = None
        if self._closed or not self._read_paused & (_PAUSED_MEMORY | _PAUSED_BUDGET):
            return
        if not self._input_wanted():
            return
        if self._released != self._relieve_mark:  # the application is reading: wait on
            self._reader_waits()
            return
        self._relieve()

    def _relieve(self) -> None:
        """Reading is paused over memory while the application waits for input: without
        new bytes it may never make progress, so make room by resetting the unread streams
        that hold the most (``RESOURCE_LIMIT``). Memory that waiting readers asked for
        (``readexactly``/``readuntil``) is never shed: then reading resumes instead."""
        while self._read_paused & (_PAUSED_MEMORY | _PAUSED_BUDGET) and not self._closed:
            if self._read_paused & _PAUSED_MEMORY:
                victim = self._largest_unread()
                if victim is None:
                    self._resume_reading(_PAUSED_MEMORY)
                    continue
                self._shed_stream(victim)
            else:
                budget = self._budget
                if budget is None or not budget._shed():
                    self._resume_reading(_PAUSED_BUDGET)

    def _shed_stream(self, stream: Stream) -> None:
        self.streams_shed += 1
        held = self._held_in
        reason = (
            f"memory limit: {stream._size} bytes unread on this stream while the session "
            f"held {held} (max_session_memory {self._mem_limit}) and a reader waited"
        )
        log.warning("%s: resetting stream %d (%s)", self._peer_label(), stream._id, reason)
        self._stream_protocol_error(stream, reason, ErrorCode.RESOURCE_LIMIT)

    def _peer_name(self) -> str:
        peer = self.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            return f"{peer[0]}:{peer[1]}"
        return str(peer) if peer else "(unknown address)"

    def _peer_label(self) -> str:
        return f"session with {self._peer_name()}"

    # ------------------------------------------------------------------ inbound frames
    def _on_data(self, sid: int, data: bytes, end: bool) -> None:
        stream = self._streams.get(sid)
        if stream is not None:
            stream._feed(data, end)
        elif sid not in self._recent_resets:
            # Unknown stream: RST CLOSED once; the payload was already skipped by the decoder.
            log.debug("DATA for unknown stream %d: answering RST CLOSED", sid)
            self._answer_rst(sid, ErrorCode.CLOSED)

    def _on_frame(self, kind: int, sid: int, value: int) -> None:
        if kind == _KIND_WINDOW_UPDATE:
            stream = self._streams.get(sid)
            if stream is not None:
                try:
                    stream._on_window_update(value)
                except FlowControlError as exc:
                    self._stream_protocol_error(stream, str(exc), ErrorCode.FLOW_CONTROL_ERROR)
            # unknown stream: a late update for a finished stream is normal; ignore it
        elif kind == _KIND_OPEN:
            self._on_open(sid, value)
        elif kind == _KIND_RST:
            self.resets_received += 1
            self._resets_in[value] = self._resets_in.get(value, 0) + 1
            stream = self._streams.get(sid)
            if stream is not None:
                stream._on_reset(value)
                if not (
                    value == ErrorCode.NO_ERROR
                    and stream._protocol is not None
                    and stream._protocol_holds_end()
                ):
                    self._finish(stream)
                # else: the peer's graceful close, its end held for a paused protocol: what
                # it sent stays deliverable (as for a reader), resume_reading() finishes it
                if value == ErrorCode.CANCEL:
                    self._cancel_handler_of(stream)
            # never answer an RST with an RST
        elif kind == _KIND_FIN:
            self._on_fin(value)
        # _KIND_SESSION_WINDOW_UPDATE: accepted, no action (keepalive)

    def _on_open(self, sid: int, window: int) -> None:
        cfg = self._config
        if sid >= self._next_id and (sid ^ self._next_id) & 1 == 0:
            # The peer used an id of our parity (a reference peer does): open_stream() must
            # never allocate it, even after that stream finished, so our ids move past it.
            self._next_id = sid + 2
        existing = self._streams.get(sid)
        if existing is not None:
            self._stream_protocol_error(existing, "peer sent OPEN for a stream id already open")
            return
        reason = None
        if self._closing or self._closed:
            reason = "session is closing"
        elif window == 0:
            reason = "OPEN with a zero window"
        elif window > cfg.max_open_window:
            reason = f"OPEN window {window} above max_open_window {cfg.max_open_window}"
        elif self._remote_count >= cfg.max_streams:
            reason = f"stream limit {cfg.max_streams} reached"
        elif (
            self._handler is None
            and self._protocol_factory is None
            and len(self._accept_queue) >= cfg.accept_backlog
        ):
            reason = f"accept backlog {cfg.accept_backlog} full"
        if reason is not None:
            log.debug("refusing stream %d: %s", sid, reason)
            self.streams_refused += 1
            self._answer_rst(sid, ErrorCode.REFUSED)
            return
        if self._recent_resets:
            self._recent_resets.pop(sid, None)
        stream = Stream(self, sid, window, cfg.max_window)
        self._streams[sid] = stream
        self._remote_count += 1
        handler = self._handler
        if handler is not None:
            # The stream counts against max_streams until its handler is done too, so a
            # peer that opens and resets in a loop cannot pile up handler tasks.
            loop = self._loop
            if self._plain_loop and loop._task_factory is None:  # type: ignore[attr-defined]
                # loop.create_task's own work, less its closed-loop check (this loop runs)
                coro = self._run_handler(handler, stream)
                wakeups = self._wakeups
                task = _Task(coro, loop=loop) if wakeups is None else wakeups.task(coro)
                stream._handled = task
                self._handler_tasks.add(task)
            else:
                # A task factory may run the handler inside create_task, before it returns
                # (asyncio.eager_task_factory): the stream counts as handled from now on,
                # and a handler done by then (_handler_finished ran) leaves nothing behind.
                stream._handled = True
                task = loop.create_task(self._run_handler(handler, stream))
                if not task.done():
                    if stream._handled is True:
                        stream._handled = task
                    self._handler_tasks.add(task)
        elif self._protocol_factory is not None:
            try:
                protocol = self._protocol_factory()
            except Exception:
                log.exception("StreamProtocol factory failed for stream %d", sid)
                self._abandon(stream, ErrorCode.INTERNAL_ERROR)
                return
            stream._attach(protocol)
        else:
            self._accept_queue.append(stream)
            self._wake_accept()

    def _on_fin(self, code: int) -> None:
        if self._closed:
            return
        if code == ErrorCode.REFUSED:
            message = "peer closed the session with REFUSED (it refused it: a session limit?)"
        else:
            message = f"peer closed the session with {_code_name(code)}"
        error = SessionClosedError(message, code)
        self._shutdown(error, abort=False)

    def _foreign(self, first: bytes | memoryview) -> bool:
        """The first bytes of the connection are another protocol's: close, saying so."""
        other = _foreign_protocol(bytes(first[:8]))
        if other is None:
            return False
        hint = "is TLS enabled on one side only?" if other == "TLS" else "wrong port?"
        self._protocol_error(f"the peer sent {other}, not MIO: {hint}")
        return True

    def _protocol_error(self, message: str, code: int = ErrorCode.PROTOCOL_ERROR) -> None:
        log.warning("%s: %s; closing the session", self._peer_label(), message)
        if self._closed:
            return
        self._send_frame(0, code, _KIND_FIN)
        self._shutdown(SessionClosedError(message), abort=False)

    def _stream_protocol_error(
        self, stream: Stream, reason: str, code: int = ErrorCode.PROTOCOL_ERROR
    ) -> None:
        log.debug("stream %d: %s: answering RST %s", stream._id, reason, _code_name(code))
        error = StreamResetError(stream._id, code, remote=False, reason=reason)
        stream._fail(error, error)
        self._answer_rst(stream._id, code)
        self._finish(stream)

    def _handler_finished(self, stream: Stream) -> None:
        stream._handled = None
        if stream._finished:
            self._remote_count -= 1

    def _abandon(self, stream: Stream, code: int) -> None:
        """End a stream given up on (a failed or cancelled handler, a cancelled
        ``async with stream``): RST ``code``, or with ``send_resets=False`` a half-close (the
        peer reads what was written, then EOF: the least bad outcome for a reference peer,
        which hangs on any RST)."""
        if self._send_resets:
            stream.reset(code)
        else:
            stream.close()

    # ------------------------------------------------------------------ stream table
    def _finish(self, stream: Stream) -> None:
        if stream._finished:
            return
        sid = stream._id
        if self._streams.get(sid) is stream:
            del self._streams[sid]
            if stream._outbound:
                self._local_count -= 1
                fut = self._open_waiter
                if fut is not None and not fut.done():
                    fut.set_result(None)
            elif not stream._handled:
                self._remote_count -= 1
        # StreamCore._on_finished, inlined (once per stream)
        stream._finished = True
        if stream._linger is not None:
            stream._linger.cancel()
            stream._linger = None
        fut = stream._finished_waiter
        if fut is not None and not fut.done():
            fut.set_result(None)
        if stream._protocol is not None:
            stream._notify_closed()
        if not self._streams and self._idle_waiter is not None and not self._idle_waiter.done():
            self._idle_waiter.set_result(None)

    def _shutdown(self, error: SessionClosedError, *, abort: bool, local: bool = False) -> None:
        """End the session: every stream ends with ``error``, the transport is closed.

        Handler tasks are cancelled at once when the application closed the session
        (``local``); otherwise they get ``close_timeout`` to read what already arrived.
        """
        self._closed = True
        self._close_error = error
        if self._assembled:
            # The decoder's partial payload will never be completed nor delivered.
            self._held_in -= self._assembled
            self._assembled = 0
        budget = self._budget
        if budget is not None:
            self._budget = None
            budget._detach(self, self._charged)
            self._charged = 0
        self._blocked.clear()
        streams = list(self._streams.values())
        for stream in streams:  # every stream first: a callback below cannot write anywhere
            stream._on_session_closed(error)
        for stream in streams:
            self._finish(stream)
        self._wake_accept()
        self._wake_open()
        for handle in (self._keepalive_handle, self._idle_handle, self._relieve_handle):
            if handle is not None:
                handle.cancel()
        self._keepalive_handle = self._idle_handle = self._relieve_handle = None
        self._end_handlers(local=local)
        transport = self._transport
        if transport is None:
            if not self._closed_waiter.done():
                self._closed_waiter.set_result(None)
        elif abort:
            transport.abort()
        else:
            self._close_transport(transport)

    def _close_transport(self, transport: asyncio.Transport) -> None:
        self._flush()
        # Half-close and read until the peer's EOF: closing a socket that has unread input
        # makes the kernel send a TCP RST, which can destroy our FIN still in flight.
        try:
            half_close = transport.can_write_eof() and not self._eof_seen
        except (AttributeError, NotImplementedError):
            half_close = False
        if half_close:
            try:
                transport.write_eof()
            except OSError:  # the connection is already gone
                transport.abort()
                return
            self._linger_handle = self._loop.call_later(
                min(_EOF_LINGER, self._config.close_timeout), self._close_now
            )
        else:
            transport.close()
        # A peer that never reads would keep our output (and the close) pending forever.
        self._abort_handle = self._loop.call_later(self._config.close_timeout, self._abort_now)

    def _close_now(self) -> None:
        self._linger_handle = None
        if self._transport is not None:
            self._transport.close()

    def _abort_now(self) -> None:
        self._abort_handle = None
        if self._transport is not None:
            log.debug("transport not closed within close_timeout: aborting it")
            self._transport.abort()

    # ------------------------------------------------------------------ outbound frames
    def _send_frame(self, sid: int, value: int, flags: int) -> None:
        self._append_frame(self._wbuf, sid, value, flags)
        self._last_data_sid = 0
        self.frames_sent += 1
        if self._flush_handle is None:
            self._schedule_flush()

    def _send_data(self, sid: int, data: bytes | memoryview) -> None:
        buf = self._wbuf
        pos = len(buf)
        mfs = self._max_frame_size
        n = len(data)
        if (
            n >= _ZERO_COPY_MIN
            and n <= mfs
            and type(data) is bytes
            and self._transport is not None
            and not self._transport.is_closing()
        ):
            # Large immutable payload: header into the buffer, payload handed to the
            # transport as is (writelines: no copy where the loop supports scatter writes).
            self._append_frame(buf, sid, n, _KIND_DATA)
            self.frames_sent += 1
            self._flush(data)
            return
        self._append_data(buf, sid, data, mfs)
        frames = (n - 1) // mfs + 1
        self.frames_sent += frames
        self._last_data_sid = sid
        self._last_data_flags = pos + (frames - 1) * (mfs + 8) + 7
        if len(buf) >= _FLUSH_THRESHOLD:
            self._flush()
        elif self._flush_handle is None:
            self._schedule_flush()

    def _send_eof(self, sid: int) -> None:
        if self._last_data_sid == sid:
            # The last frame in the buffer is this stream's DATA: mark it HFR, no extra frame.
            self._wbuf[self._last_data_flags] = _KIND_DATA_HFR
            self._last_data_sid = 0
        else:
            self._send_frame(sid, 0, _KIND_DATA_HFR)

    def _send_window_update(self, sid: int, increment: int) -> None:
        if self._closed:
            return
        while increment > MAX_VALUE:
            self._send_frame(sid, MAX_VALUE, _KIND_WINDOW_UPDATE)
            increment -= MAX_VALUE
        self._send_frame(sid, increment, _KIND_WINDOW_UPDATE)

    def _send_rst(self, sid: int, code: int) -> None:
        if self._closed:
            return
        self._forget(sid)
        self.resets_sent += 1
        self._resets_out[code] = self._resets_out.get(code, 0) + 1
        self._send_frame(sid, code, _KIND_RST)

    def _forget(self, sid: int) -> None:
        """Late frames for ``sid`` are dropped without an answer (no RST ping-pong)."""
        recent = self._recent_resets
        recent[sid] = None
        if len(recent) > _RECENT_RESETS:
            del recent[next(iter(recent))]

    def _answer_rst(self, sid: int, code: int) -> None:
        """An RST the peer's frames made necessary. While the transport is paused (the
        peer does not read), answers are bounded: past ``_ANSWER_LIMIT`` bytes the session
        stops reading until the transport drains."""
        self._send_rst(sid, code)
        if self._write_paused:
            self._answers += 8
            if self._answers > _ANSWER_LIMIT:
                self._pause_reading(_PAUSED_ANSWERS)

    def _schedule_flush(self) -> None:
        if self._transport is not None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self, payload: bytes | None = None) -> None:
        self._flush_handle = None
        self._last_data_sid = 0
        buf = self._wbuf
        if not buf:
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        # The transport may keep a reference to ``buf``: hand it over and start a new one.
        self._wbuf = bytearray()
        self._sent_since_tick = True
        if payload is None:
            self.bytes_sent += len(buf)
            transport.write(buf)
        else:
            self.bytes_sent += len(buf) + len(payload)
            if self._joining_writelines and transport.get_write_buffer_size():
                # Both land in the transport's buffer anyway: one copy instead of two.
                transport.write(buf)
                transport.write(payload)
            else:
                transport.writelines((buf, payload))

    def _wake_drainers(self) -> None:
        drainers = self._drainers
        if drainers:
            self._drainers = set()
            for stream in drainers:
                stream._wake_drain()

    # ------------------------------------------------------------------ liveness
    def _keepalive_tick(self) -> None:
        interval = self._config.keepalive_interval
        if self._closed or interval is None:
            return
        if not self._sent_since_tick:
            self._send_frame(0, 0, _KIND_SESSION_WINDOW_UPDATE)
            # Out now, so that the keepalive itself does not count as traffic at the next
            # tick (that would halve the keepalive rate and let the peer's idle timer expire).
            self._flush()
        self._sent_since_tick = False
        self._keepalive_handle = self._loop.call_later(interval, self._keepalive_tick)

    def _idle_tick(self) -> None:
        timeout = self._config.idle_timeout
        if self._closed or timeout is None:
            return
        now = self._loop.time()
        if self._read_paused & (_PAUSED_MEMORY | _PAUSED_BUDGET):
            self._last_recv = now  # we stopped reading, the peer is not silent
        silent = now - self._last_recv
        if silent >= timeout:
            log.warning(
                "%s: no data from the peer for %.1f s: closing the session",
                self._peer_label(),
                silent,
            )
            self._shutdown(
                SessionClosedError(f"idle timeout: no data from the peer for {timeout:g} s"),
                abort=True,
            )
            return
        self._idle_handle = self._loop.call_later(timeout - silent, self._idle_tick)
