"""mio's stream API over QUIC: :class:`QuicSession` and :class:`QuicStream` (aioquic).

The optional extra ``mio-mux[quic]`` (``pip install 'mio-mux[quic]'``) installs aioquic. The classes
satisfy :class:`mio.abc.Session` and :class:`mio.abc.Stream`, so an application written
against those protocols runs over MIO (TCP, TLS, :func:`mio.pipe`) or QUIC unchanged::

    server = await mio.quic.serve(handler, "127.0.0.1", 4433, certfile=..., keyfile=...)
    session = await mio.quic.connect("127.0.0.1", 4433, cafile=...)

How the MIO model maps onto QUIC (docs/TRANSPORTS.md has the full table):

* a stream is a client- or server-initiated *bidirectional* QUIC stream; ``write_eof()``
  sends FIN, a received FIN is end of stream;
* ``reset(code)`` sends RESET_STREAM *and* STOP_SENDING with ``code`` (a MIO stream reset
  aborts both directions); a RESET_STREAM or STOP_SENDING received raises
  :class:`~mio.StreamResetError` with its code (:class:`~mio.StreamRefusedError` for
  ``REFUSED``); code ``NO_ERROR`` ends the direction cleanly, as a MIO ``RST NO_ERROR`` does.
  Codes are mio's :class:`~mio.ErrorCode` values, unchanged (QUIC application error codes);
* ``close(code)`` on a session sends CONNECTION_CLOSE (application) with ``code``; the peer's
  :class:`~mio.SessionClosedError` carries it. A transport-level close (QUIC errors, idle
  timeout) ends the session with ``code=None``, as a lost MIO transport does;
* flow control is real in both directions: a stream's receive window is credited
  (MAX_STREAM_DATA) only as the application *reads* (aioquic alone credits as data arrives,
  so a peer that never reads would buffer without bound), and ``drain()`` waits until the
  stream's unacknowledged send buffer is at most ``Config.write_buffer_high`` (aioquic's
  own ``StreamWriter.drain()`` never waits).

:class:`mio.Config` fields used: ``initial_window`` (per-stream receive window, when no
``configuration`` is given), ``max_streams`` (streams the peer may open concurrently;
``open_stream`` also waits for the peer's limit), ``accept_backlog``, ``write_buffer_high``,
``keepalive_interval`` (QUIC PING), ``idle_timeout`` (QUIC idle timeout), ``linger_timeout``,
``close_timeout``. ``max_window`` and the frame sizes do not apply.

This module uses a few private attributes of aioquic's ``QuicConnection`` (stream send
buffers, stream limits, the close frame received); it is tested with aioquic 1.x.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from os import PathLike
from typing import Any, cast

try:
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.asyncio.server import QuicServer as _AioquicServer
    from aioquic.quic import events as _ev
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import (
        MAX_STREAM_DATA_FRAME_CAPACITY,
        QuicConnection,
        QuicConnectionState,
    )
    from aioquic.quic.packet import QuicFrameType
    from aioquic.quic.packet_builder import QuicPacketBuilder
    from aioquic.quic.stream import QuicStream as _QStream
except ImportError as _exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "mio.quic needs aioquic >= 1.0, an optional dependency: "
        f"pip install 'mio-mux[quic]' ({_exc})"
    ) from _exc

from ._core import SessionCore, StreamCore, reset_error_class
from .api import SessionTracker
from .config import Config
from .errors import (
    MioError,
    SessionClosedError,
    StreamClosedError,
    StreamResetError,
)
from .wire import ErrorCode

__all__ = (
    "ALPN",
    "QuicSession",
    "QuicStream",
    "QuicServer",
    "connect",
    "serve",
    "make_configuration",
)

log = logging.getLogger("mio.quic")

#: The ALPN protocol name both sides offer by default.
ALPN = "mio"

QuicStreamHandler = Callable[["QuicStream"], Awaitable[None]]
QuicSessionHandler = Callable[["QuicSession"], Awaitable[None]]
BytesLike = bytes | bytearray | memoryview

_MAX_QUIC_CODE = (1 << 62) - 1
_RETIRED_PRUNE = 1024


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"code {code}"


def _check_code(code: int) -> int:
    code = int(code)
    if not 0 <= code <= _MAX_QUIC_CODE:
        raise ValueError(f"error code {code} is not a QUIC application error code (0..2**62-1)")
    return code


def _is_local(stream_id: int, client: bool) -> bool:
    return (stream_id & 1 == 0) == client


def make_configuration(
    *,
    is_client: bool,
    config: Config | None = None,
    configuration: QuicConfiguration | None = None,
) -> QuicConfiguration:
    """The aioquic configuration of a session: a copy of ``configuration`` or a new one.

    A new configuration takes its per-stream receive window from ``config.initial_window``,
    its idle timeout from ``config.idle_timeout`` (if set) and offers ALPN ``"mio"``.
    """
    cfg = config if config is not None else Config()
    if configuration is None:
        qconf = QuicConfiguration(
            is_client=is_client,
            alpn_protocols=[ALPN],
            max_stream_data=cfg.initial_window,
            max_data=max(1 << 20, 4 * cfg.initial_window),
        )
    else:
        qconf = dataclasses.replace(configuration, is_client=is_client)
    if cfg.idle_timeout is not None:
        qconf.idle_timeout = cfg.idle_timeout
    return qconf


# ---------------------------------------------------------------------- streams
class QuicStream(StreamCore):
    """One bidirectional QUIC stream with the :class:`mio.abc.Stream` interface.

    Obtained from :meth:`QuicSession.open_stream`, :meth:`QuicSession.accept_stream` or a
    ``serve`` handler; never constructed directly.
    """

    # What StreamCore._run_handler reads on every stream (a Session's Stream has them as
    # slots): no task handed over in advance, never a StreamProtocol.
    _handled: asyncio.Task[None] | bool | None = None
    _protocol: None = None

    def __init__(self, session: QuicSession, stream_id: int, outbound: bool) -> None:
        self._session = session
        self._quic = session._quic
        self._id = stream_id
        self._loop = session._loop
        self._outbound = outbound
        self._buf = bytearray()
        self._eof = False  # the peer's direction ended (FIN, reset, or we stopped reading)
        self._error: BaseException | None = None  # raised by reads once the buffer is empty
        self._waiter: asyncio.Future[None] | None = None
        self._eof_sent = False  # write_eof() called, or the sending direction is dead
        self._write_error: BaseException | None = None
        self._local_done = False  # FIN sent (all data sent once), or our direction reset
        self._handler_task: asyncio.Task[None] | None = None  # the handler serving it
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closing = False
        self._finished = False
        self._finished_waiter: asyncio.Future[None] | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._window = int(session._window)
        self._consumed = 0  # bytes read (or discarded) by the application

    # ------------------------------------------------------------------ properties
    @property
    def id(self) -> int:
        """The QUIC stream id (client-opened: 0, 4, 8 …; server-opened: 1, 5, 9 …)."""
        return self._id

    @property
    def session(self) -> QuicSession:
        """The session this stream belongs to."""
        return self._session

    @property
    def buffered(self) -> int:
        """Received bytes not yet read by the application."""
        return len(self._buf)

    @property
    def write_pending(self) -> int:
        """Bytes written and not yet acknowledged by the peer."""
        return self._unacked()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``stream_id``, ``session``, or the session's information (``peername`` …)."""
        if name == "stream_id":
            return self._id
        if name == "session":
            return self._session
        return self._session.get_extra_info(name, default)

    def __repr__(self) -> str:
        state = "finished" if self._finished else "open"
        return f"<mio.quic.QuicStream id={self._id} {state} buffered={len(self._buf)}>"

    # ------------------------------------------------------------------ reading
    # read, readexactly, readuntil, readline, at_eof, async iteration: see ReadSide.
    @property
    def _size(self) -> int:
        return len(self._buf)

    def _find(self, separator: bytes, start: int) -> int:
        return self._buf.find(separator, start)

    def _read_limit(self) -> int:
        return self._window

    def _take(self, n: int) -> bytes:
        buf = self._buf
        if n >= len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:n])
            del buf[:n]
        self._consumed += len(data)
        self._credit()
        return data

    # ------------------------------------------------------------------ receive window
    def _credit(self) -> None:
        """The application consumed data: send MAX_STREAM_DATA if half a window is due."""
        if self._eof:
            return
        qs = self._quic._streams.get(self._id)
        if qs is None or qs.receiver.is_finished:
            return
        if self._credit_target(qs) is not None:
            self._session._transmit_soon()

    def _credit_target(self, qs: _QStream) -> int | None:
        """The new MAX_STREAM_DATA for ``qs``, or None while less than half a window is due."""
        target = self._consumed + self._window
        if target - qs.max_stream_data_local >= max(1, self._window // 2):
            return target
        return None

    # ------------------------------------------------------------------ writing
    def write(self, data: BytesLike) -> None:
        """Queue ``data`` (copied); never blocks. Follow with :meth:`drain`."""
        if self._write_error is not None:
            raise self._write_error
        if self._eof_sent:
            raise StreamClosedError(f"stream {self._id}: write after write_eof() or close()")
        if type(data) is not bytes:
            data = memoryview(data).cast("B")
        if not len(data):
            return
        # aioquic appends to its send buffer (a copy): the snapshot write() promises.
        self._quic.send_stream_data(self._id, cast(bytes, data))
        self._session._transmit_soon()

    def _unacked(self) -> int:
        qs = self._quic._streams.get(self._id)
        if qs is None:
            return 0
        sender = qs.sender
        return int(sender._buffer_stop - sender._buffer_start)

    async def drain(self) -> None:
        """Wait until the unacknowledged send buffer is at most ``write_buffer_high``.

        It waits while the peer's stream or connection window, congestion control or
        the network holds written data back. Cancelling it never loses data.
        """
        high = self._session._write_high
        while True:
            if self._write_error is not None:
                raise self._write_error
            if self._unacked() <= high:
                return
            fut = self._drain_waiter
            if fut is None or fut.done():
                fut = self._drain_waiter = self._loop.create_future()
            self._session._drainers.add(self)
            self._session._transmit_soon()
            await asyncio.shield(fut)

    def _wake_drain(self) -> None:
        fut = self._drain_waiter
        if fut is not None:
            self._drain_waiter = None
            if not fut.done():
                fut.set_result(None)

    def write_eof(self) -> None:
        """Half-close: send FIN after the data already written. Reading continues."""
        if self._eof_sent or self._write_error is not None:
            return
        self._eof_sent = True
        self._quic.send_stream_data(self._id, b"", end_stream=True)
        self._session._fin_watch.add(self)
        self._session._transmit_soon()

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        """Close: FIN our direction after the data written, discard what the peer sends.

        As :meth:`mio.Stream.close`: if the peer is still sending it is told at once that
        nobody reads (STOP_SENDING ``NO_ERROR``: its writes fail with
        :class:`StreamClosedError`); our data still unsent after ``linger_timeout`` is
        abandoned (RESET_STREAM ``CANCEL``). :meth:`wait_closed` returns once our side is
        done.
        """
        if self._closing:
            return
        self._closing = True
        self.write_eof()
        if self._buf:
            self._consumed += len(self._buf)
            self._buf.clear()
            self._credit()
        if self._finished:
            return
        if not self._eof:
            qs = self._quic._streams.get(self._id)
            if qs is not None and not self._session._closed and not qs.receiver.is_finished:
                self._quic.stop_stream(self._id, ErrorCode.NO_ERROR)
                self._session._transmit_soon()
            self._remote_end(None)
        if not self._finished and not self._local_done:
            timeout = self._session._config.linger_timeout
            self._linger = self._loop.call_later(timeout, self._linger_expired)

    def is_closing(self) -> bool:
        """True once :meth:`close` or :meth:`reset` was called, or the stream is finished."""
        return self._closing or self._finished

    def reset(self, code: int = ErrorCode.INTERNAL_ERROR) -> None:
        """Abort: RESET_STREAM and STOP_SENDING with ``code``; drop queued data."""
        code = _check_code(code)
        if self._finished:
            return
        self._closing = True
        error = StreamResetError(self._id, code, remote=False)
        self._fail_read(error)
        self._fail_write(error)
        self._abort_quic(code)
        self._session._transmit_soon()
        self._session._finish(self)

    def _abort_quic(self, code: int) -> None:
        """Reset aioquic's stream in both directions (what is still open of it)."""
        if self._session._closed:
            return
        quic = self._quic
        qs = quic._streams.get(self._id)
        if qs is None:
            return
        if not qs.sender.is_finished:
            quic.reset_stream(self._id, code)
        if not qs.receiver.is_finished:
            quic.stop_stream(self._id, code)

    def _linger_expired(self) -> None:
        """The peer did not end its direction within ``linger_timeout``: give up on it.

        Our own data still held back by the peer is abandoned (RESET_STREAM ``CANCEL``).
        """
        self._linger = None
        if self._finished:
            return
        qs = self._quic._streams.get(self._id)
        if qs is not None and not self._session._closed:
            if not qs.receiver.is_finished:
                self._quic.stop_stream(self._id, ErrorCode.NO_ERROR)
            if not self._local_done and not qs.sender.is_finished:
                self._quic.reset_stream(self._id, ErrorCode.CANCEL)
            self._session._transmit_soon()
        self._local_done = True
        self._remote_end(None)

    # ------------------------------------------------------------------ session side
    def _feed(self, data: bytes, end: bool) -> None:
        if data and not self._eof:
            if self._closing:
                self._consumed += len(data)
                self._credit()
            else:
                self._buf += data
        if end:
            self._remote_end(None)
        else:
            self._wake()

    def _remote_end(self, error: BaseException | None) -> None:
        if not self._eof:
            self._eof = True
            self._error = error
        self._wake()
        if self._local_done:
            self._session._finish(self)

    def _fail_read(self, error: BaseException) -> None:
        self._buf.clear()
        self._eof = True
        self._error = error
        self._wake()

    def _fail_write(self, error: BaseException) -> None:
        if self._write_error is None:
            self._write_error = error
        self._eof_sent = True
        self._local_done = True
        self._wake_drain()

    def _on_reset(self, code: int) -> None:
        """RESET_STREAM from the peer."""
        if code == ErrorCode.NO_ERROR:
            self._remote_end(None)  # what arrived stays readable, then end of stream
            return
        error = reset_error_class(code)(self._id, code, remote=True)
        self._fail_read(error)
        # A MIO reset aborts both directions: stop ours too (a mio.quic peer has sent
        # STOP_SENDING along with RESET_STREAM anyway).
        self._fail_write(error)
        self._abort_quic(code)
        self._session._transmit_soon()
        self._session._finish(self)

    def _on_stop_sending(self, code: int) -> None:
        """STOP_SENDING from the peer (aioquic has already reset our sending side)."""
        error: BaseException
        if code == ErrorCode.NO_ERROR:
            message = (
                f"stream {self._id}: the peer closed it (STOP_SENDING NO_ERROR) and reads no more"
            )
            error = StreamClosedError(message, ErrorCode.NO_ERROR)
        else:
            error = reset_error_class(code)(self._id, code, remote=True)
        self._fail_write(error)
        if self._eof:
            self._session._finish(self)

    def _fin_sent(self) -> bool:
        """True once every byte and the FIN went out at least once (or aioquic is done)."""
        qs = self._quic._streams.get(self._id)
        if qs is None or qs.sender.is_finished:
            return True
        sender = qs.sender
        fin = sender._buffer_fin
        return fin is not None and not sender._pending_eof and sender.highest_offset >= fin

    def _on_fin_sent(self) -> None:
        self._local_done = True
        if self._eof:
            self._session._finish(self)

    def _on_session_closed(self, error: SessionClosedError) -> None:
        if not self._eof:  # a direction the peer never ended is cut short, whatever the code
            self._eof = True
            self._error = error
        self._wake()
        self._fail_write(error)


def _check_handler(handler: QuicStreamHandler | None) -> QuicStreamHandler | None:
    if isinstance(handler, type):
        raise TypeError(
            f"mio.quic runs coroutine stream handlers only, not {handler.__name__} "
            "(a StreamProtocol class works with MIO sessions: mio.serve / mio.connect)"
        )
    return handler


# ---------------------------------------------------------------------- protocol
class _Endpoint(QuicConnectionProtocol):
    """aioquic's asyncio protocol, its events routed to a :class:`QuicSession`."""

    session: QuicSession

    def __init__(
        self,
        quic: QuicConnection,
        make_session: Callable[[_Endpoint], QuicSession],
    ) -> None:
        super().__init__(quic)
        self.session = make_session(self)

    def quic_event_received(self, event: _ev.QuicEvent) -> None:
        # Not the base class's: it would feed asyncio StreamReaders nobody reads.
        self.session._on_event(event)

    def transmit(self) -> None:
        super().transmit()
        self.session._after_io()

    def error_received(self, exc: Exception) -> None:
        # A connected UDP socket reports ICMP errors (port unreachable: ECONNREFUSED).
        waiter = self._connected_waiter
        if waiter is not None and not waiter.done():
            self._connected_waiter = None
            waiter.set_exception(exc)
        self.session._on_transport_lost(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.session._on_transport_lost(exc)


def _install_receive_flow_control(quic: QuicConnection, session: QuicSession) -> None:
    """Credit stream windows as the application reads, not as data arrives.

    Replaces ``QuicConnection._write_stream_limits``: aioquic doubles a stream's
    MAX_STREAM_DATA whenever the peer has sent half of it, whether or not anybody reads.
    Here the limit of a stream of ``session`` is ``consumed + window``, raised once half a
    window is due; lost MAX_STREAM_DATA frames are still resent (aioquic's delivery
    handler zeroes ``max_stream_data_local_sent``).
    """

    def write_stream_limits(builder: QuicPacketBuilder, space: Any, stream: _QStream) -> None:
        sid = stream.stream_id
        st = session._streams.get(sid) if sid is not None else None
        if st is not None and not st._eof:
            target = st._credit_target(stream)
            if target is not None:
                stream.max_stream_data_local = target
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=quic._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(cast(int, sid))
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local
            logger = quic._quic_logger
            if logger is not None and builder.quic_logger_frames is not None:
                builder.quic_logger_frames.append(
                    logger.encode_max_stream_data_frame(
                        maximum=stream.max_stream_data_local, stream_id=cast(int, sid)
                    )
                )

    quic._write_stream_limits = write_stream_limits  # type: ignore[method-assign]


# ---------------------------------------------------------------------- sessions
class QuicSession(SessionCore[QuicStream]):
    """One QUIC connection with the :class:`mio.abc.Session` interface.

    Made by :func:`connect` and :func:`serve`; do not construct it directly.
    """

    _repr_name = "mio.quic.QuicSession"

    def __init__(
        self,
        endpoint: _Endpoint,
        *,
        client: bool,
        config: Config | None = None,
        handler: QuicStreamHandler | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._quic: QuicConnection = endpoint._quic
        self._loop = endpoint._loop
        self._client = client
        self._config = cfg = config if config is not None else Config()
        self._handler = _check_handler(handler)
        self._window = self._quic._local_max_stream_data_bidi_remote
        self._write_high = cfg.write_buffer_high
        self._streams: dict[int, QuicStream] = {}
        self._retired: dict[int, None] = {}  # peer stream ids finished here, maybe not in aioquic
        self._local_count = 0
        self._accept_queue: deque[QuicStream] = deque()
        self._accept_waiter: asyncio.Future[None] | None = None
        self._open_waiter: asyncio.Future[None] | None = None
        self._idle_waiter: asyncio.Future[None] | None = None
        self._acked_waiter: asyncio.Future[None] | None = None
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._handlers_deadline: asyncio.TimerHandle | None = None
        self._drainers: set[QuicStream] = set()
        self._fin_watch: set[QuicStream] = set()
        self._connected = False
        self._closing = False
        self._closed = False
        self._close_error: SessionClosedError | None = None
        self._terminated: asyncio.Future[None] = self._loop.create_future()
        self._keepalive: asyncio.TimerHandle | None = None
        self.on_ready: Callable[[QuicSession], None] | None = None
        # The peer may open config.max_streams streams at a time (aioquic's default: 128);
        # it must be set before the handshake sends our transport parameters.
        # (``sent`` too: aioquic batches MAX_STREAMS on ``sent - used``, and a stale 128
        # there would withhold every update below it.)
        limit = self._quic._local_max_streams_bidi
        limit.value = limit.sent = cfg.max_streams
        _install_receive_flow_control(self._quic, self)

    # ------------------------------------------------------------------ public API
    @property
    def quic(self) -> QuicConnection:
        """aioquic's connection object (for what this API does not cover)."""
        return self._quic

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``peername``, ``sockname``, ``alpn_protocol``, ``quic`` (the QuicConnection) …"""
        if name == "peername":
            addr = self._quic.get_peer_address()
            return default if addr is None else addr
        if name == "alpn_protocol":
            return self._quic.tls.alpn_negotiated
        if name == "quic":
            return self._quic
        transport = self._endpoint._transport
        if transport is None:
            return default
        return transport.get_extra_info(name, default)

    async def open_stream(self) -> QuicStream:
        """Open a bidirectional stream; it reaches the peer with its first byte (or FIN).

        Waits while ``config.max_streams`` streams of this side are open, or while the
        peer's stream limit (MAX_STREAMS) is reached.

        Raises:
            SessionClosedError: the session is closed or closing.
        """
        quic = self._quic
        while True:
            self._check_open()
            sid = quic.get_next_available_stream_id()
            if (
                self._local_count < self._config.max_streams
                and sid // 4 < quic._remote_max_streams_bidi
            ):
                break
            fut = self._open_waiter
            if fut is None or fut.done():
                fut = self._open_waiter = self._loop.create_future()
            await asyncio.shield(fut)
        quic.send_stream_data(sid, b"")  # creates the stream: the next open gets a new id
        stream = QuicStream(self, sid, outbound=True)
        self._streams[sid] = stream
        self._local_count += 1
        return stream

    def close(self, code: int = ErrorCode.NO_ERROR) -> None:
        """Close now: CONNECTION_CLOSE with application error ``code``.

        What QUIC has already sent is delivered; data still held back by flow or
        congestion control is dropped (use :meth:`aclose` to let streams finish).
        """
        code = _check_code(code)
        if self._closed:
            self._cancel_handlers()  # the peer ended it first: their close_timeout ends now
            return
        self._shutdown(SessionClosedError("session closed locally", None), local=True)
        if self._quic._close_event is None:
            self._endpoint.transmit()  # what congestion control lets out goes first
            self._endpoint.close(error_code=code)

    async def aclose(self, code: int = ErrorCode.NO_ERROR, timeout: float | None = None) -> None:
        """Graceful close: refuse new streams, let open ones finish and everything sent be
        acknowledged (up to ``timeout``, default ``config.close_timeout``), then
        :meth:`close` with ``code`` and wait for the connection to terminate."""
        if not self._closed:
            self._closing = True
            self._wake_accept()
            self._wake_open()
            limit = self._config.close_timeout if timeout is None else timeout
            try:
                await asyncio.wait_for(self._quiesce(), limit)
            except TimeoutError:
                log.debug("graceful close timed out with %d streams open", len(self._streams))
            self.close(code)
        await self.wait_closed()

    async def _quiesce(self) -> None:
        """Wait until no stream is open and the peer acknowledged all we sent."""
        if self._streams:
            fut = self._idle_waiter = self._loop.create_future()
            await asyncio.shield(fut)
        if not self._closed and not self._all_acked():
            # CONNECTION_CLOSE discards what is unacknowledged: wait for the ACKs first.
            fut = self._acked_waiter = self._loop.create_future()
            self._transmit_soon()
            await asyncio.shield(fut)

    def _all_acked(self) -> bool:
        return all(qs.sender.is_finished for qs in self._quic._streams.values())

    async def wait_closed(self) -> None:
        """Wait until the connection is terminated (after QUIC's closing period)."""
        await asyncio.shield(self._terminated)

    # ------------------------------------------------------------------ events
    def _on_event(self, event: _ev.QuicEvent) -> None:
        if isinstance(event, _ev.StreamDataReceived):
            stream = self._stream_for(event.stream_id)
            if stream is not None:
                stream._feed(event.data, event.end_stream)
        elif isinstance(event, _ev.StreamReset):
            stream = self._stream_for(event.stream_id)
            if stream is not None:
                stream._on_reset(event.error_code)
                if event.error_code == ErrorCode.CANCEL:
                    self._cancel_handler_of(stream)
        elif isinstance(event, _ev.StopSendingReceived):
            stream = self._stream_for(event.stream_id)
            if stream is not None:
                stream._on_stop_sending(event.error_code)
        elif isinstance(event, _ev.HandshakeCompleted):
            self._connected = True
            if self._config.keepalive_interval is not None:
                self._keepalive = self._loop.call_later(
                    self._config.keepalive_interval, self._keepalive_tick
                )
            if self.on_ready is not None:
                self.on_ready(self)
        elif isinstance(event, _ev.ConnectionTerminated):
            self._on_terminated(event)

    def _stream_for(self, sid: int) -> QuicStream | None:
        """The stream an event is about; a new peer stream is admitted (or refused) here."""
        stream = self._streams.get(sid)
        if stream is not None:
            return stream
        if sid in self._retired or _is_local(sid, self._client) or self._closed:
            return None  # late event for a finished stream
        quic = self._quic
        if sid & 2:  # a unidirectional stream: not part of this API
            if sid in quic._streams:
                quic.stop_stream(sid, ErrorCode.REFUSED)
            self._retire(sid)
            return None
        reason = None
        if self._closing:
            reason = "session is closing"
        elif self._handler is None and len(self._accept_queue) >= self._config.accept_backlog:
            reason = f"accept backlog {self._config.accept_backlog} full"
        if reason is not None:
            log.debug("refusing stream %d: %s", sid, reason)
            if sid in quic._streams:
                quic.reset_stream(sid, ErrorCode.REFUSED)
                quic.stop_stream(sid, ErrorCode.REFUSED)
            self._retire(sid)
            return None
        stream = QuicStream(self, sid, outbound=False)
        self._streams[sid] = stream
        handler = self._handler
        if handler is not None:
            self._start_handler(handler, stream)
        else:
            self._accept_queue.append(stream)
            self._wake_accept()
        return stream

    def _retire(self, sid: int) -> None:
        if not _is_local(sid, self._client):
            retired = self._retired
            retired[sid] = None
            if len(retired) > _RETIRED_PRUNE:
                live = self._quic._streams
                for old in [s for s in retired if s not in live]:
                    del retired[old]

    def _abandon(self, stream: QuicStream, code: int) -> None:
        stream.reset(code)

    def _after_io(self) -> None:
        """After aioquic processed datagrams or a timer: wake what ACKs/limits released."""
        if not self._closed and self._quic._close_event is not None:
            self._on_close_frame()
        if self._drainers:
            high = self._write_high
            for stream in list(self._drainers):
                if stream._write_error is not None or stream._unacked() <= high:
                    self._drainers.discard(stream)
                    stream._wake_drain()
        if self._fin_watch:
            for stream in list(self._fin_watch):
                if stream._local_done or stream._fin_sent():
                    self._fin_watch.discard(stream)
                    stream._on_fin_sent()
        fut = self._acked_waiter
        if fut is not None and not fut.done() and self._all_acked():
            fut.set_result(None)
        self._wake_open()

    def _on_close_frame(self) -> None:
        """aioquic entered its closing/draining period (close received, or a QUIC error)."""
        event = self._quic._close_event
        assert event is not None
        self._shutdown(self._close_reason(event))

    def _close_reason(self, event: _ev.ConnectionTerminated) -> SessionClosedError:
        by_peer = self._quic._state == QuicConnectionState.DRAINING
        if event.frame_type is None:  # APPLICATION_CLOSE: a mio code
            who = "peer" if by_peer else "local side"
            return SessionClosedError(
                f"{who} closed the session with {_code_name(event.error_code)}",
                event.error_code if by_peer else None,
            )
        detail = f"QUIC error 0x{event.error_code:x}"
        if event.reason_phrase:
            detail = f"{detail}: {event.reason_phrase}"
        where = "closed by the peer" if by_peer else "closed"
        return SessionClosedError(f"connection {where} ({detail})")

    def _on_terminated(self, event: _ev.ConnectionTerminated) -> None:
        if not self._closed:
            self._shutdown(self._close_reason(event))
        self._terminate()

    def _on_transport_lost(self, exc: Exception | None) -> None:
        if not self._closed:
            reason = f"connection lost: {exc!r}" if exc else "connection lost"
            self._shutdown(SessionClosedError(reason))
        self._terminate()

    def _terminate(self) -> None:
        if self._client:
            transport = self._endpoint._transport
            if transport is not None and not transport.is_closing():
                transport.close()
        if not self._terminated.done():
            self._terminated.set_result(None)

    # ------------------------------------------------------------------ internals
    def _transmit_soon(self) -> None:
        if not self._closed:
            self._endpoint._transmit_soon()

    def _finish(self, stream: QuicStream) -> None:
        if stream._finished:
            return
        sid = stream._id
        if self._streams.get(sid) is stream:
            del self._streams[sid]
            if stream._outbound:
                self._local_count -= 1
                self._wake_open()
            else:
                self._retire(sid)
        self._drainers.discard(stream)
        self._fin_watch.discard(stream)
        stream._on_finished()
        if not self._streams and self._idle_waiter is not None and not self._idle_waiter.done():
            self._idle_waiter.set_result(None)

    def _shutdown(self, error: SessionClosedError, *, local: bool = False) -> None:
        """End the session: every stream ends with ``error``.

        Handler tasks are cancelled at once when the application closed the session
        (``local``); otherwise they get ``close_timeout`` to read what already arrived.
        """
        self._closed = True
        self._close_error = error
        for stream in list(self._streams.values()):
            stream._on_session_closed(error)
            self._finish(stream)
        self._wake_accept()
        self._wake_open()
        for fut in (self._idle_waiter, self._acked_waiter):
            if fut is not None and not fut.done():
                fut.set_result(None)
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        self._end_handlers(local=local)

    def _keepalive_tick(self) -> None:
        interval = self._config.keepalive_interval
        if self._closed or interval is None:
            return
        self._quic.send_ping(0)
        self._endpoint.transmit()
        self._keepalive = self._loop.call_later(interval, self._keepalive_tick)


# ---------------------------------------------------------------------- entry points
async def connect(
    host: str,
    port: int,
    *,
    config: Config | None = None,
    configuration: QuicConfiguration | None = None,
    verify: bool = True,
    cafile: str | None = None,
    cadata: bytes | None = None,
    server_name: str | None = None,
    handler: QuicStreamHandler | None = None,
) -> QuicSession:
    """Dial ``host:port`` over QUIC (UDP) and return the client-side session.

    Args:
        config: mio parameters (see the module docstring for the fields QUIC uses).
        configuration: aioquic settings (TLS, congestion control …), copied; by default
            :func:`make_configuration`.
        verify: verify the server's certificate (against ``cafile``/``cadata`` or the
            system store). ``False`` is for tests only.
        cafile, cadata: trusted CA certificates (PEM file / PEM or DER data).
        server_name: the name checked in the certificate (SNI); default ``host``.
        handler: ``async def handler(stream)`` for streams the server opens.

    Raises:
        ConnectionRefusedError: nothing listens on the port (ICMP port unreachable).
        SessionClosedError: the handshake failed (certificate, ALPN …) or timed out.
    """
    loop = asyncio.get_running_loop()
    cfg = config if config is not None else Config()
    qconf = make_configuration(is_client=True, config=cfg, configuration=configuration)
    qconf.server_name = server_name or qconf.server_name or host
    if not verify:
        qconf.verify_mode = ssl.CERT_NONE
    if cafile is not None or cadata is not None:
        qconf.load_verify_locations(cafile=cafile, cadata=cadata)
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    error: OSError | None = None
    for family, _, _, _, addr in dict.fromkeys(infos):
        try:
            return await _dial(loop, family, addr, qconf, cfg, handler)
        except MioError:  # the server answered: a failed handshake is final
            raise
        except OSError as exc:  # refused, unreachable: try the next address
            error = exc
    assert error is not None
    raise error


async def _dial(
    loop: asyncio.AbstractEventLoop,
    family: int,
    addr: Any,
    qconf: QuicConfiguration,
    cfg: Config,
    handler: QuicStreamHandler | None,
) -> QuicSession:
    quic = QuicConnection(configuration=dataclasses.replace(qconf))

    def factory() -> _Endpoint:
        return _Endpoint(quic, lambda ep: QuicSession(ep, client=True, config=cfg, handler=handler))

    # A connected UDP socket: ICMP "port unreachable" comes back as ECONNREFUSED.
    transport, endpoint = await loop.create_datagram_endpoint(
        factory, remote_addr=addr, family=family
    )
    session = endpoint.session
    try:
        endpoint.connect(addr)
        await endpoint.wait_connected()
    except ConnectionRefusedError:
        transport.close()
        raise
    except BaseException as exc:
        error = session._close_error
        session.close(ErrorCode.INTERNAL_ERROR)
        transport.close()
        if isinstance(exc, ConnectionError):
            raise SessionClosedError(
                f"QUIC handshake failed: {error or 'connection closed'}"
            ) from None
        raise
    return session


class QuicServer(SessionTracker[QuicSession]):
    """A listening QUIC endpoint whose connections are :class:`QuicSession` objects.

    Use it as an async context manager, or call :meth:`close` and :meth:`wait_closed`.
    """

    def __init__(
        self,
        handler: QuicStreamHandler | None,
        session_handler: QuicSessionHandler | None,
        config: Config | None,
    ) -> None:
        super().__init__(session_handler)
        self._handler = _check_handler(handler)
        self._config = config
        self._server: _AioquicServer | None = None
        self._all: set[QuicSession] = set()

    def _make_session(self, endpoint: _Endpoint) -> QuicSession:
        session = QuicSession(endpoint, client=False, config=self._config, handler=self._handler)
        session.on_ready = self._session_made
        self._all.add(session)
        session._terminated.add_done_callback(lambda _: self._all.discard(session))
        return session

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening UDP socket."""
        transport = self._transport()
        return (transport.get_extra_info("socket"),)

    def _transport(self) -> asyncio.DatagramTransport:
        server = self._server
        if server is None or server._transport is None:
            raise RuntimeError("the server is not listening")
        return server._transport

    @property
    def port(self) -> int:
        """The UDP port (handy with ``port=0``)."""
        return int(self._transport().get_extra_info("sockname")[1])

    def is_serving(self) -> bool:
        """True while accepting connections."""
        transport = None if self._server is None else self._server._transport
        return transport is not None and not transport.is_closing()

    def close(self, code: int = ErrorCode.NO_ERROR) -> None:
        """Close every session with ``code`` and stop listening."""
        for session in [*self._all, *self._lingering]:
            session.close(code)
        if self._server is not None and self.is_serving():
            self._server.close()

    async def aclose(self, timeout: float | None = None) -> None:
        """Close every session gracefully (see :meth:`QuicSession.aclose`), then stop."""
        await asyncio.gather(*(s.aclose(timeout=timeout) for s in list(self._sessions)))
        self.close()
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until every session is terminated."""
        await asyncio.gather(*(s.wait_closed() for s in list(self._all)))
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


async def serve(
    handler: QuicStreamHandler | None = None,
    host: str | None = None,
    port: int = 0,
    *,
    certfile: str | PathLike[str] | None = None,
    keyfile: str | PathLike[str] | None = None,
    password: bytes | str | None = None,
    config: Config | None = None,
    configuration: QuicConfiguration | None = None,
    session_handler: QuicSessionHandler | None = None,
    retry: bool = False,
) -> QuicServer:
    """Listen on UDP ``host:port`` (``host`` None: every IPv4 address).

    Args:
        handler: ``async def handler(stream)`` run for every stream a client opens; the
            stream is closed gracefully when it returns, reset if it raises.
        certfile, keyfile, password: the server's certificate chain and key (PEM); not
            needed when ``configuration`` already holds them.
        config: mio parameters of every session.
        configuration: aioquic settings (copied); by default :func:`make_configuration`.
        session_handler: ``async def session_handler(session)`` run once per connection.
        retry: validate client addresses with a Retry packet first.
    """
    _check_handler(handler)
    loop = asyncio.get_running_loop()
    cfg = config if config is not None else Config()
    qconf = make_configuration(is_client=False, config=cfg, configuration=configuration)
    if certfile is not None:
        qconf.load_cert_chain(certfile, keyfile, password)
    if qconf.certificate is None:
        raise ValueError("a QUIC server needs a certificate: pass certfile= and keyfile=")
    server = QuicServer(handler, session_handler, cfg)

    def create_protocol(quic: QuicConnection, stream_handler: Any = None) -> _Endpoint:
        return _Endpoint(quic, server._make_session)

    _, protocol = await loop.create_datagram_endpoint(
        lambda: _AioquicServer(configuration=qconf, create_protocol=create_protocol, retry=retry),
        local_addr=(host or "0.0.0.0", port),
    )
    server._server = protocol
    return server
