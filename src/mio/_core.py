"""What every transport's sessions and streams share, written once.

:class:`mio.Session` (MIO frames over a byte stream) and :class:`mio.quic.QuicSession`
(aioquic) inherit their lifecycle from :class:`SessionCore`; :class:`mio.Stream` and
:class:`mio.quic.QuicStream` inherit from :class:`StreamCore` (which adds the write-side
vocabulary and the ``async with`` outcome to the shared :class:`~mio._readside.ReadSide`).
The transport keeps only what differs: how frames or QUIC events reach a stream, how a
stream's bytes leave, and how the connection closes.

The interface a transport session implements for the core (attributes and methods the core
reads, all private):

* state: ``_loop``, ``_client``, ``_config``, ``_closed``, ``_closing``, ``_close_error``,
  ``_streams`` (id -> stream), ``_accept_queue``, ``_accept_waiter``, ``_open_waiter``,
  ``_handler_tasks``, ``_handlers_deadline``;
* ``close(code)``, ``aclose(code, timeout)``, ``wait_closed()``: the transport's way to end;
* ``_abandon(stream, code)``: end a stream given up on (reset, or what the transport does
  instead), used for failed and cancelled handlers and ``async with stream``;
* ``_handler_finished(stream)``: bookkeeping once a stream's handler returned (optional);
* ``_reader_waits()``: the application is about to wait for input (optional; MIO's memory
  account uses it).

A transport stream implements ``write``, ``drain``, ``write_eof``, ``close``, ``reset`` and
the :class:`~mio._readside.ReadSide` buffer hooks, and has ``_session`` and ``_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Generic, TypeVar

from ._readside import ReadSide
from .config import Config
from .errors import (
    MioError,
    SessionClosedError,
    StreamCancelledError,
    StreamRefusedError,
    StreamResetError,
)
from .wire import ErrorCode

__all__ = ("FLUSH_THRESHOLD", "SessionCore", "StreamCore", "reset_error_class")

#: Bytes in a session's output buffer at which it writes to its transport at once instead of
#: at the end of the loop iteration (so a burst of writes reaches the transport's flow
#: control instead of piling up in the buffer)
FLUSH_THRESHOLD = 64 * 1024

log = logging.getLogger("mio.session")

S = TypeVar("S", bound="StreamCore")
T = TypeVar("T")


def reset_error_class(code: int) -> type[StreamResetError]:
    """The exception a stream reset with ``code`` by the peer raises."""
    if code == ErrorCode.REFUSED:
        return StreamRefusedError
    if code == ErrorCode.CANCEL:
        return StreamCancelledError
    return StreamResetError


def outcome_code(exc: BaseException) -> int:
    """The code a stream or session left because of ``exc`` ends with: ``CANCEL`` for a
    cancellation or a deadline, ``INTERNAL_ERROR`` for anything else."""
    if isinstance(exc, (asyncio.CancelledError, TimeoutError)):
        return ErrorCode.CANCEL
    return ErrorCode.INTERNAL_ERROR


class StreamCore(ReadSide):
    """The stream API every transport shares beyond reading (see the module docstring).

    The lifecycle state lives in the transport's slots: ``_id``, ``_finished`` (removed from
    the session's table), ``_finished_waiter``, ``_linger`` (the transport's linger timer,
    if any). A transport whose ``close()`` may finish our side before the stream is
    finished says so in :meth:`_our_side_done`.
    """

    __slots__ = ()

    _id: int
    _finished: bool
    _finished_waiter: asyncio.Future[None] | None
    _linger: asyncio.TimerHandle | None

    @property
    def id(self) -> int:
        """The stream id (see the transport's numbering)."""
        return self._id

    @property
    def is_closed(self) -> bool:
        """True once the stream is finished (both directions ended, or reset)."""
        return self._finished

    def write(self, data: Any) -> None:
        raise NotImplementedError

    async def drain(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _our_side_done(self) -> bool:
        """After ``close()``: our data is out and our direction ended, so
        :meth:`wait_closed` need not wait for the peer."""
        return False

    async def wait_closed(self) -> None:
        """Wait until the stream is finished, or, after :meth:`close`, until our side is
        done (our data handed to the transport and our direction ended): it never waits
        for a peer that keeps sending to a stream we stopped reading."""
        if self._finished or self._our_side_done():
            return
        if self._finished_waiter is None:
            self._finished_waiter = self._loop.create_future()  # type: ignore[misc]  # a slot
        await asyncio.shield(self._finished_waiter)

    def _resolve_closed(self) -> None:
        """Wake :meth:`wait_closed`."""
        fut = self._finished_waiter
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _on_finished(self) -> None:
        """The session removed the stream from its table: it is finished."""
        self._finished = True  # type: ignore[misc]  # a slot of the transport's class
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None  # type: ignore[misc]
        self._resolve_closed()

    def writelines(self, data: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write every buffer of ``data`` in order."""
        for item in data:
            self.write(item)

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """``write(data)`` then ``drain()``."""
        self.write(data)
        await self.drain()

    def can_write_eof(self) -> bool:
        """Always true: streams support half-close."""
        return True

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Normal exit: :meth:`close` and wait until our side is done. A cancellation or a
        deadline ends the stream with ``CANCEL``, another exception (not mio's own) with
        ``INTERNAL_ERROR``; after a :class:`MioError` the stream is closed, not waited for."""
        if exc is not None and not isinstance(exc, MioError):
            session: Any = self._session  # type: ignore[attr-defined]
            session._abandon(self, outcome_code(exc))
            return
        self.close()
        if exc is None:
            await self.wait_closed()


class SessionCore(Generic[S]):
    """The session lifecycle every transport shares (see the module docstring)."""

    _repr_name = "mio.Session"
    _loop: asyncio.AbstractEventLoop
    _client: bool
    _config: Config
    _closed: bool
    _closing: bool
    _close_error: SessionClosedError | None
    _streams: dict[int, S]
    _accept_queue: deque[S]
    _accept_waiter: asyncio.Future[None] | None
    _open_waiter: asyncio.Future[None] | None
    _handler_tasks: set[asyncio.Task[None]]
    _handlers_deadline: asyncio.TimerHandle | None

    # -- provided by the transport
    def close(self, code: int = ErrorCode.NO_ERROR) -> None:
        raise NotImplementedError

    async def aclose(self, code: int = ErrorCode.NO_ERROR, timeout: float | None = None) -> None:
        raise NotImplementedError

    async def wait_closed(self) -> None:
        raise NotImplementedError

    def _abandon(self, stream: S, code: int) -> None:
        raise NotImplementedError

    def _handler_finished(self, stream: S) -> None:
        """A stream's handler returned (or failed): transport bookkeeping."""

    def _reader_waits(self) -> None:
        """The application is about to wait for input."""

    # -- the public lifecycle
    @property
    def is_client(self) -> bool:
        """True on the side that dialed the connection."""
        return self._client

    @property
    def config(self) -> Config:
        """The session's protocol parameters."""
        return self._config

    @property
    def is_closed(self) -> bool:
        """True once the session ended (closed locally or by the peer, or the connection is
        gone)."""
        return self._closed

    @property
    def close_error(self) -> SessionClosedError | None:
        """Why the session ended, or None while it is open."""
        return self._close_error

    @property
    def stream_count(self) -> int:
        """Streams currently open on this session (in the stream table)."""
        return len(self._streams)

    @property
    def streams(self) -> tuple[S, ...]:
        """The streams currently open on this session (in the stream table)."""
        return tuple(self._streams.values())

    async def accept_stream(self) -> S:
        """Wait for the next stream the peer opens.

        Raises:
            SessionClosedError: the session ended (or is closing) and no stream is queued.
        """
        queue = self._accept_queue
        while not queue:
            self._check_open()
            fut = self._accept_waiter
            if fut is None or fut.done():
                fut = self._accept_waiter = self._loop.create_future()
            self._reader_waits()
            await asyncio.shield(fut)
        return queue.popleft()

    def __aiter__(self) -> AsyncIterator[S]:
        return self._iter_streams()

    async def _iter_streams(self) -> AsyncIterator[S]:
        while True:
            try:
                stream = await self.accept_stream()
            except SessionClosedError:
                return
            yield stream

    @contextlib.asynccontextmanager
    async def graceful(self: T, timeout: float | None = None) -> AsyncIterator[T]:
        """``async with session.graceful():`` closes gracefully on a normal exit
        (:meth:`aclose`: no new streams, open ones get ``timeout``, default
        ``config.close_timeout``, to finish, then the session closes) and at once on an
        exception (``CANCEL`` when cancelled, ``INTERNAL_ERROR`` otherwise).

        Plain ``async with session:`` always closes at once, with ``NO_ERROR`` (or
        ``INTERNAL_ERROR`` on an exception); streams still open end with
        :class:`SessionClosedError`.
        """
        core: SessionCore[Any] = self  # type: ignore[assignment]
        try:
            yield self
        except BaseException as exc:
            core.close(outcome_code(exc))
            raise
        await core.aclose(timeout=timeout)

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(ErrorCode.NO_ERROR if exc is None else ErrorCode.INTERNAL_ERROR)
        await self.wait_closed()

    def __repr__(self) -> str:
        side = "client" if self._client else "server"
        state = "closed" if self._closed else "open"
        return f"<{self._repr_name} {side} {state} streams={len(self._streams)}>"

    # -- shared machinery
    def _check_open(self) -> None:
        if self._closed:
            raise self._close_error or SessionClosedError()
        if self._closing:
            raise SessionClosedError("session is closing")

    def _wake_accept(self) -> None:
        fut = self._accept_waiter
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _wake_open(self) -> None:
        fut = self._open_waiter
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _start_handler(self, handler: Callable[[S], Awaitable[None]], stream: S) -> None:
        self._handler_tasks.add(self._loop.create_task(self._run_handler(handler, stream)))

    async def _run_handler(self, handler: Callable[[S], Awaitable[None]], stream: S) -> None:
        """Run a stream handler: returning closes the stream (unless the handler handed it to
        a protocol: ``Stream.set_protocol``), raising resets it with ``INTERNAL_ERROR``, a
        cancellation with ``CANCEL``."""
        # The task made for this coroutine (Session: stream._handled; others ask asyncio, as
        # does a Session whose task factory runs the coroutine inside create_task: True).
        task = stream._handled  # type: ignore[attr-defined]
        if task is None or task is True:
            task = asyncio.current_task()
        stream._handler_task = task  # type: ignore[attr-defined]
        try:
            await handler(stream)
        except asyncio.CancelledError:
            if not self._closed:
                self._abandon(stream, ErrorCode.CANCEL)
            raise
        except MioError as exc:  # the stream or session died under the handler: not a bug
            log.debug("stream handler on stream %d ended by %s", stream._id, repr(exc))
            self._abandon(stream, ErrorCode.INTERNAL_ERROR)
        except Exception:
            log.exception("stream handler failed on stream %d", stream._id)
            self._abandon(stream, ErrorCode.INTERNAL_ERROR)
        else:
            if stream._protocol is None:  # type: ignore[attr-defined]  # else a StreamProtocol has it
                stream.close()
        finally:
            stream._handler_task = None  # type: ignore[attr-defined]
            self._handler_finished(stream)
            tasks = self._handler_tasks  # _handler_done, inlined (once per stream)
            tasks.discard(task)
            if not tasks and self._handlers_deadline is not None:
                self._handler_done(task)

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self._handler_tasks.discard(task)
        if not self._handler_tasks and self._handlers_deadline is not None:
            # The last handler is done: the timer must not keep the closed session alive.
            self._handlers_deadline.cancel()
            self._handlers_deadline = None

    def _end_handlers(self, *, local: bool) -> None:
        """The session ended: handlers are cancelled at once when the application closed
        it (``local``); otherwise they get ``close_timeout`` to read what already arrived."""
        if local:
            self._cancel_handlers()
        elif self._handler_tasks:
            self._handlers_deadline = self._loop.call_later(
                self._config.close_timeout, self._cancel_handlers
            )

    def _cancel_handlers(self) -> None:
        if self._handlers_deadline is not None:
            self._handlers_deadline.cancel()
            self._handlers_deadline = None
        tasks, self._handler_tasks = self._handler_tasks, set()
        for task in tasks:
            task.cancel()  # (one that never started never reaches _run_handler's finally)

    async def _handlers_finished(self) -> None:
        """Wait (without cancelling them) until no handler task of this session runs."""
        while self._handler_tasks:
            await asyncio.wait(set(self._handler_tasks))

    def _cancel_handler_of(self, stream: S) -> None:
        """The peer gave up on ``stream`` (``CANCEL``): so does the handler serving it."""
        task = stream._handler_task  # type: ignore[attr-defined]
        if task is not None:
            task.cancel()
