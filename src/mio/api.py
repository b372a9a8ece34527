"""Entry points: connect, serve, and sessions over any asyncio transport or socket."""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
import ssl as _ssl
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

from ._oneport import create_on_one_port, not_listening
from ._summarylog import SummaryLog
from .budget import MemoryBudget
from .config import Config
from .session import Session, StreamHandler
from .wire import ErrorCode

__all__ = (
    "connect",
    "serve",
    "connect_unix",
    "serve_unix",
    "Server",
    "session_from_socket",
    "session_from_streams",
    "pipe",
)

SessionHandler = Callable[[Session], Awaitable[None]]

log = logging.getLogger("mio.server")

#: Default of ``serve(max_sessions=...)``: connections beyond it are refused (FIN REFUSED).
DEFAULT_MAX_SESSIONS = 4096
#: Seconds between two log lines about refused connections, or about failing accepts.
LOG_INTERVAL = 10.0
#: Seconds the accept loop pauses when ``accept()`` fails for lack of resources (EMFILE ...).
ACCEPT_RETRY_DELAY = 0.5


#: OpenSSL's reasons when the other end does not speak TLS at all.
_NOT_TLS_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST"}
)


def _not_tls(exc: BaseException) -> bool:
    if isinstance(exc, _ssl.SSLCertVerificationError):
        return False
    if isinstance(exc, _ssl.SSLError):
        return getattr(exc, "reason", None) in _NOT_TLS_REASONS
    return True  # reset during the handshake


async def connect(
    host: str,
    port: int,
    *,
    ssl: _ssl.SSLContext | bool | None = None,
    config: Config | None = None,
    handler: StreamHandler | None = None,
    budget: MemoryBudget | None = None,
    **kwargs: Any,
) -> Session:
    """Dial ``host:port`` over TCP (TLS with ``ssl``) and return the client-side session.

    ``handler``, if given, serves the streams the server opens to this client (the NAT
    traversal case). ``budget`` caps the unread data held over every session sharing it
    (see :class:`MemoryBudget`). Extra keyword arguments go to ``loop.create_connection``.

    There is no handshake: a server over its ``max_sessions`` answers with FIN ``REFUSED``,
    which the first operation that waits on the session (or a later one) raises as
    :class:`~mio.SessionClosedError` with ``code == ErrorCode.REFUSED``.
    """
    loop = asyncio.get_running_loop()
    try:
        _, session = await loop.create_connection(
            lambda: Session(client=True, config=config, handler=handler, budget=budget),
            host,
            port,
            ssl=ssl,
            **kwargs,
        )
    except (ConnectionResetError, _ssl.SSLError) as exc:
        if not ssl or not _not_tls(exc):
            raise
        # What asyncio raises when the server does not speak TLS says nothing useful
        # (often an empty ConnectionResetError): say what probably happened.
        detail = str(exc) or type(exc).__name__
        raise ConnectionResetError(
            f"TLS handshake with {host}:{port} failed ({detail}): "
            "does the server speak TLS (is TLS enabled on one side only)?"
        ) from exc
    return session


async def connect_unix(
    path: str,
    *,
    ssl: _ssl.SSLContext | bool | None = None,
    config: Config | None = None,
    handler: StreamHandler | None = None,
    budget: MemoryBudget | None = None,
    **kwargs: Any,
) -> Session:
    """Like :func:`connect`, over a Unix domain socket."""
    loop = asyncio.get_running_loop()
    _, session = await loop.create_unix_connection(
        lambda: Session(client=True, config=config, handler=handler, budget=budget),
        path,
        ssl=ssl,
        **kwargs,
    )
    return session


class _ClosableSession(Protocol):
    def close(self, code: int = ...) -> None: ...

    async def wait_closed(self) -> None: ...

    async def _handlers_finished(self) -> None: ...


S = TypeVar("S", bound=_ClosableSession)
T = TypeVar("T")


class SessionTracker(Generic[S]):
    """What every server does with its connected sessions (mio's and ``mio.quic``'s).

    ``_session_made(session)`` is called once a session is connected; the session handler
    (if any) runs as a task, and the session is forgotten when it is closed.
    """

    def __init__(self, session_handler: Callable[[S], Awaitable[None]] | None) -> None:
        self._session_handler = session_handler
        self._sessions: set[S] = set()
        # Closed by the peer, with stream handlers still in their close_timeout.
        self._lingering: set[S] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def _session_made(self, session: S) -> None:
        self._sessions.add(session)
        task = asyncio.get_running_loop().create_task(self._track(session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _track(self, session: S) -> None:
        try:
            if self._session_handler is not None:
                try:
                    await self._session_handler(session)
                except Exception:
                    log.exception("session handler failed")
                    session.close(ErrorCode.INTERNAL_ERROR)
            await session.wait_closed()
        finally:
            self._sessions.discard(session)
        # A session the peer ended leaves its stream handlers ``close_timeout`` to read what
        # arrived: the server answers for them until they are done (close() cancels them,
        # wait_closed() waits for them).
        self._lingering.add(session)
        try:
            await session._handlers_finished()
        finally:
            self._lingering.discard(session)

    @property
    def sessions(self) -> frozenset[S]:
        """The sessions currently connected."""
        return frozenset(self._sessions)

    def close(self) -> None:
        raise NotImplementedError

    async def wait_closed(self) -> None:
        raise NotImplementedError

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Leaving ``async with server``: :meth:`close`, then wait until every session is
        terminated."""
        self.close()
        await self.wait_closed()


class _RateLimitedLog(SummaryLog):
    """The server's :class:`~mio._summarylog.SummaryLog` on the ``mio`` logger, every
    ``LOG_INTERVAL`` seconds unless told otherwise."""

    def __init__(self, first: str, repeat: str, interval: float | None = None) -> None:
        super().__init__(log, first, repeat, LOG_INTERVAL if interval is None else interval)


def _errnos(*names: str) -> frozenset[int]:
    return frozenset(getattr(errno, name) for name in names if hasattr(errno, name))


#: accept() errors that concern one pending connection only (Linux reports the pending
#: network errors of the new socket through accept()): try the next one at once.
_ACCEPT_SKIP = _errnos(
    "ECONNABORTED",
    "EPROTO",
    "ENETDOWN",
    "ENOPROTOOPT",
    "EHOSTDOWN",
    "ENONET",
    "EHOSTUNREACH",
    "EOPNOTSUPP",
    "ENETUNREACH",
    "EPERM",
)


class _Acceptor:
    """mio's accept loop for one listening socket of a selector event loop.

    asyncio's own loop (3.10-3.13) does not stop after an EMFILE: it goes on calling
    ``accept()`` up to ``backlog`` times in the same callback, logging an ERROR with a
    traceback and scheduling one more retry each time, so the log lines (and retries)
    multiply every second while descriptors stay exhausted (with backlog 1024: ~1000
    lines in the first second, ~14000 per second six seconds later). This one pauses
    ``ACCEPT_RETRY_DELAY`` seconds after any failure that is not about the pending
    connection alone, and the server logs such failures at most once per ``LOG_INTERVAL``.
    Pending clients wait in the kernel's backlog and are served once descriptors are free.
    """

    def __init__(
        self,
        server: Server,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        ssl: _ssl.SSLContext | None,
        tls_options: dict[str, Any],
        backlog: int,
    ) -> None:
        self._server = server
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._ssl = ssl
        self._tls_options = tls_options
        self._backlog = max(1, backlog)
        self._listening = False
        self._reading = False
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if not self._closed and not self._reading and self._retry is None:
            if not self._listening:  # asyncio.Server listens in its own start_serving
                self._sock.listen(self._backlog)
                self._listening = True
            self._loop.add_reader(self._fd, self._on_readable)
            self._reading = True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stop()
        self._sock.close()
        for task in list(self._tasks):
            task.cancel()

    def _on_readable(self) -> None:
        for _ in range(self._backlog):
            try:
                conn, _addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_SKIP:
                    continue
                self._pause()
                self._server._accept_failed(exc)
                return
            try:
                conn.setblocking(False)
            except OSError:  # pragma: no cover - the connection died already
                conn.close()
                continue
            task = self._loop.create_task(self._connect(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(
                self._server._make_session, conn, ssl=self._ssl, **self._tls_options
            )
        except (TimeoutError, OSError, _ssl.SSLError) as exc:
            # A TLS handshake that failed or timed out, a client gone meanwhile: asyncio's
            # own accept loop does not log these either (outside debug mode).
            log.debug("incoming connection failed: %r", exc)

    def stop(self) -> None:
        """Stop accepting (the socket stays open: start() again resumes)."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def _pause(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False
        if self._retry is None:
            self._retry = self._loop.call_later(ACCEPT_RETRY_DELAY, self._resume)

    def _resume(self) -> None:
        self._retry = None
        self._server._accept_resumes += 1
        self.start()


def _check_listening(server: asyncio.Server) -> None:
    """A listening socket failed its ``listen()`` and uvloop said so only in
    ``server.sockets`` (see ``not_listening``): close the server and raise, as asyncio's
    own loop would."""
    if not_listening(server):
        server.close()
        raise OSError(errno.EADDRINUSE, "cannot listen on every address: an address is in use")


def _format_peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer) if peer else "?"


def _own_accept_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """True where mio runs its own accept loop (see :class:`_Acceptor`): asyncio's selector
    loops. uvloop needs none: libuv never spins on EMFILE (it closes the pending
    connections with a descriptor it keeps in reserve, so those clients see the connection
    closed at once)."""
    return isinstance(loop, asyncio.SelectorEventLoop)


class Server(SessionTracker[Session]):
    """A listening MIO server: an ``asyncio.Server`` whose connections are sessions.

    Use it as an async context manager or call :meth:`close` and :meth:`wait_closed`.

    Limits (see :func:`serve`): at most ``max_sessions`` sessions at a time (a connection
    over it gets FIN ``REFUSED`` and is closed at once, with no session handler); the
    unread data of all its sessions capped by one shared :attr:`budget`. Refusals and
    failing accepts (out of file descriptors) are logged on ``mio.server`` at most once
    per ``LOG_INTERVAL`` seconds, each line with the count since the previous one.
    """

    def __init__(
        self,
        handler: StreamHandler | None,
        session_handler: SessionHandler | None,
        config: Config | None,
        budget: MemoryBudget | None = None,
        max_sessions: int | None = DEFAULT_MAX_SESSIONS,
    ) -> None:
        if max_sessions is not None and max_sessions < 1:
            raise ValueError("max_sessions must be positive or None")
        super().__init__(session_handler)
        self._handler = handler
        self._config = config
        self._budget = budget if budget is not None else MemoryBudget()
        self._max_sessions = max_sessions
        self._server: asyncio.Server | None = None
        self._acceptors: list[_Acceptor] = []
        self._serving = False  # with acceptors only
        self._forever: asyncio.Future[None] | None = None
        self._refusing: set[Session] = set()  # refused, their close still in progress
        self._refusals = _RateLimitedLog(
            "refused a connection from %s: %d sessions open (max_sessions %d)",
            "refused %d more connections in the last %g s (max_sessions reached)",
        )
        self._accept_resumes = 0  # listeners restarted after a pause
        self._accept_errors = _RateLimitedLog(
            "accept() failed: %s; pausing accepts (retrying every %g s, %d connections open)",
            "accept() failed %d more times in the last %g s",
        )

    async def _listen(
        self,
        create: Callable[..., Awaitable[asyncio.Server]],
        *args: Any,
        ssl: _ssl.SSLContext | None,
        **kwargs: Any,
    ) -> None:
        loop = asyncio.get_running_loop()
        start = kwargs.pop("start_serving", True)
        if not _own_accept_loop(loop):
            self._server = await create(
                self._make_session, *args, ssl=ssl, start_serving=start, **kwargs
            )
            return  # (create_on_one_port checked that every socket listens)
        # asyncio keeps the listening sockets (and closes them); mio accepts on duplicates.
        server = self._server = await create(
            self._make_session, *args, ssl=ssl, start_serving=False, **kwargs
        )
        tls_options: dict[str, Any] = {
            name: kwargs[name]
            for name in ("ssl_handshake_timeout", "ssl_shutdown_timeout")
            if name in kwargs
        }
        backlog = int(kwargs.get("backlog", 100))
        try:
            for listening in server.sockets:
                sock = listening.dup()
                sock.setblocking(False)
                self._acceptors.append(_Acceptor(self, loop, sock, ssl, tls_options, backlog))
            if start:
                self._start_accepting()  # listen() on each: may fail (an address in use)
        except BaseException:
            self._stop_accepting()
            server.close()
            raise

    def _start_accepting(self) -> None:
        self._serving = True
        for acceptor in self._acceptors:
            try:
                acceptor.start()
            except OSError as exc:  # listen() failed (an address in use): accept nowhere
                self._serving = False
                for started in self._acceptors:
                    started.stop()
                address = _format_peer(acceptor._sock.getsockname())
                raise OSError(exc.errno, f"cannot listen on {address}: {exc.strerror}") from exc

    def _stop_accepting(self) -> None:
        self._serving = False
        for acceptor in self._acceptors:
            acceptor.close()
        if self._forever is not None and not self._forever.done():
            self._forever.cancel()

    def _make_session(self) -> Session:
        budget = self._budget
        session = Session(client=False, config=self._config, handler=self._handler, budget=budget)
        # Tracked from connection_made on (as the budget counts it): a connection whose
        # TLS handshake fails never gets there, and must not leave a task waiting for it.
        session._on_connection_made = self._connected
        return session

    def _connected(self, session: Session) -> None:
        limit = self._max_sessions
        if limit is None or len(self._sessions) < limit:
            self._session_made(session)
            return
        # Over the limit: FIN REFUSED and close (mio's close half-closes and drains the
        # client's input first, so the FIN is not lost to a TCP RST). No handler, no task.
        self._refusing.add(session)
        session._closed_waiter.add_done_callback(lambda _: self._refusing.discard(session))
        peer = _format_peer(session.get_extra_info("peername"))
        session.close(ErrorCode.REFUSED)
        self._refusals.hit(peer, len(self._sessions), limit)

    def _accept_failed(self, exc: OSError) -> None:
        connecting = sum(len(acceptor._tasks) for acceptor in self._acceptors)
        self._accept_errors.hit(
            exc, ACCEPT_RETRY_DELAY, len(self._sessions) + len(self._refusing) + connecting
        )

    @property
    def budget(self) -> MemoryBudget:
        """The memory budget shared by every session of this server (``serve(budget=)``, or
        one of :data:`~mio.budget.DEFAULT_SERVER_MEMORY` made for it)."""
        return self._budget

    @property
    def max_sessions(self) -> int | None:
        """Most sessions at a time (None: unlimited); connections over it are refused."""
        return self._max_sessions

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``sessions`` open now, connections ``refused`` over ``max_sessions``,
        ``accept_errors`` (accepts that failed and paused the listener, e.g. EMFILE; mio
        sees them on asyncio's selector loops only), ``accept_resumes`` (listeners restarted
        after such a pause), and the shared budget's
        ``memory_held``, ``memory_peak`` and ``memory_limit``."""
        return {
            "sessions": len(self._sessions),
            "refused": self._refusals.total,
            "accept_errors": self._accept_errors.total,
            "accept_resumes": self._accept_resumes,
            "memory_held": self._budget.held,
            "memory_peak": self._budget.peak,
            "memory_limit": self._budget.limit,
        }

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets."""
        assert self._server is not None
        return tuple(getattr(self._server, "sockets", ()))

    @property
    def port(self) -> int:
        """The TCP port of the first listening socket (handy with ``port=0``)."""
        return int(self.sockets[0].getsockname()[1])

    def is_serving(self) -> bool:
        """True while accepting connections."""
        if self._acceptors:
            return self._serving
        return self._server is not None and self._server.is_serving()

    def _stop_listening(self) -> None:
        self._stop_accepting()
        if self._server is not None:
            self._server.close()
        self._refusals.close()
        self._accept_errors.close()

    def stop_listening(self) -> None:
        """Stop accepting connections; the sessions already connected go on."""
        self._stop_listening()

    def close(self, code: int = 0) -> None:
        """Stop listening and close every session with FIN ``code``."""
        self._stop_listening()
        for session in [*self._sessions, *self._lingering]:
            session.close(code)

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop listening, close every session gracefully (see :meth:`Session.aclose`)."""
        self._stop_listening()
        await asyncio.gather(*(s.aclose(timeout=timeout) for s in list(self._sessions)))
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the listener and every session are closed."""
        await asyncio.gather(*(s.wait_closed() for s in list(self._sessions)))
        await asyncio.gather(*(s.wait_closed() for s in list(self._refusing)))
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def start_serving(self) -> None:
        """Start accepting connections (after ``serve(..., start_serving=False)``)."""
        assert self._server is not None
        if self._acceptors:
            self._start_accepting()
        else:
            await self._server.start_serving()
            _check_listening(self._server)

    async def serve_forever(self) -> None:
        """Accept connections until cancelled, then stop listening (the sessions already
        connected go on, as with ``asyncio.Server``)."""
        assert self._server is not None
        if not self._acceptors:
            await self._server.serve_forever()
            return
        if self._forever is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if not self._acceptors[0]._closed:
            self._start_accepting()
        else:
            raise RuntimeError(f"server {self!r} is closed")
        self._forever = asyncio.get_running_loop().create_future()
        try:
            await self._forever
        except asyncio.CancelledError:
            try:
                self._stop_listening()
                await self._server.wait_closed()
            finally:
                raise
        finally:
            self._forever = None


async def _create_server(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], asyncio.BaseProtocol],
    host: str | Sequence[str] | None,
    port: int | None,
    **kwargs: Any,
) -> asyncio.Server:
    if kwargs.get("sock") is not None and host is None and not port:
        port = None  # serve(handler, sock=listening_socket): the socket has its address
    # port 0 on several addresses (host None, a name with several): one port for all
    return await create_on_one_port(lambda p: loop.create_server(factory, host, p, **kwargs), port)


async def serve(
    handler: StreamHandler | None = None,
    host: str | Sequence[str] | None = None,
    port: int = 0,
    *,
    ssl: _ssl.SSLContext | None = None,
    config: Config | None = None,
    session_handler: SessionHandler | None = None,
    budget: MemoryBudget | None = None,
    max_sessions: int | None = DEFAULT_MAX_SESSIONS,
    **kwargs: Any,
) -> Server:
    """Listen on ``host:port``; every accepted connection becomes a server-side session.

    Args:
        handler: ``async def handler(stream)``, run for every stream a client opens; the
            stream is closed gracefully when it returns, reset if it raises.
        session_handler: ``async def session_handler(session)``, run once per connection;
            use it to accept streams yourself or to open streams to the client.
        ssl: TLS context for the listener.
        config: protocol parameters of every session.
        budget: the :class:`MemoryBudget` shared by every session (several servers may
            share one); by default the server makes its own of
            :data:`~mio.budget.DEFAULT_SERVER_MEMORY` (1 GiB). See :attr:`Server.budget`.
        max_sessions: most sessions at a time (``None``: unlimited). A connection over it
            gets FIN ``REFUSED`` and is closed at once, without a session handler; the
            client sees :class:`~mio.SessionClosedError` with ``code == ErrorCode.REFUSED``.
        kwargs: passed to ``loop.create_server`` (``backlog``, ``reuse_address``,
            ``sock`` for a socket already bound: leave ``host`` and ``port`` out …).
            ``reuse_port=True`` (``SO_REUSEPORT``) lets several processes listen on the
            same port, the kernel spreading connections over them: one process per core,
            each session living in the process that accepted it (its streams never cross
            processes). ``mio echo --workers N`` runs such pre-forked workers.
    """
    loop = asyncio.get_running_loop()
    server = Server(handler, session_handler, config, budget=budget, max_sessions=max_sessions)
    await server._listen(functools.partial(_create_server, loop), host, port, ssl=ssl, **kwargs)
    return server


async def serve_unix(
    handler: StreamHandler | None = None,
    path: str | None = None,
    *,
    ssl: _ssl.SSLContext | None = None,
    config: Config | None = None,
    session_handler: SessionHandler | None = None,
    budget: MemoryBudget | None = None,
    max_sessions: int | None = DEFAULT_MAX_SESSIONS,
    **kwargs: Any,
) -> Server:
    """Like :func:`serve`, on a Unix domain socket at ``path``."""
    loop = asyncio.get_running_loop()
    server = Server(handler, session_handler, config, budget=budget, max_sessions=max_sessions)
    await server._listen(loop.create_unix_server, path, ssl=ssl, **kwargs)
    return server


async def session_from_socket(
    sock: socket.socket,
    *,
    client: bool,
    config: Config | None = None,
    handler: StreamHandler | None = None,
    ssl: _ssl.SSLContext | None = None,
    budget: MemoryBudget | None = None,
) -> Session:
    """Run a session over an already connected socket (TCP, Unix, ``socketpair()`` …)."""
    loop = asyncio.get_running_loop()

    def factory() -> Session:
        return Session(client=client, config=config, handler=handler, budget=budget)

    if client:
        _, session = await loop.create_connection(factory, sock=sock, ssl=ssl)
    else:
        _, session = await loop.connect_accepted_socket(factory, sock, ssl=ssl)
    return session


def session_from_streams(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    client: bool,
    config: Config | None = None,
    handler: StreamHandler | None = None,
    budget: MemoryBudget | None = None,
) -> Session:
    """Take over the transport of an asyncio ``(StreamReader, StreamWriter)`` pair.

    Bytes the reader already buffered are decoded first; do not use ``reader`` or
    ``writer`` afterwards.
    """
    transport = writer.transport
    session = Session(client=client, config=config, handler=handler, budget=budget)
    buffered = bytes(getattr(reader, "_buffer", b""))
    transport.set_protocol(session)
    session.connection_made(transport)
    if buffered:
        session.data_received(buffered)
    if reader.at_eof():
        session.eof_received()
    return session


class _MemoryTransport(asyncio.Transport):
    """One end of an in-memory connection (for tests): delivers writes on the next loop turn."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: Session) -> None:
        super().__init__()
        self._loop = loop
        self._protocol = protocol
        self._peer: _MemoryTransport | None = None
        self._closing = False
        self._paused = False
        self._backlog: list[bytes] = []
        self._extra = {"peername": ("memory", 0), "sockname": ("memory", 0)}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._peer is None:
            return
        self._loop.call_soon(self._peer._deliver, bytes(data))

    def _deliver(self, data: bytes) -> None:
        if self._paused:
            self._backlog.append(data)
        elif not self._closing:
            self._protocol.data_received(data)

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        if not self._paused:
            return
        self._paused = False
        backlog, self._backlog = self._backlog, []
        for data in backlog:
            self._deliver(data)

    def is_reading(self) -> bool:
        return not self._paused

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.call_soon(self._protocol.connection_lost, None)
        peer = self._peer
        if peer is not None and not peer._closing:
            self._loop.call_soon(peer._peer_closed)

    def _peer_closed(self) -> None:
        if not self._closing:
            self._closing = True
            self._protocol.connection_lost(None)

    def abort(self) -> None:
        self.close()

    def get_write_buffer_size(self) -> int:
        return 0


def pipe(
    config: Config | None = None,
    *,
    client_handler: StreamHandler | None = None,
    server_handler: StreamHandler | None = None,
    budget: MemoryBudget | None = None,
) -> tuple[Session, Session]:
    """Two sessions connected in memory: ``(client, server)``. Must run inside a loop.

    For unit tests; real connections go through :func:`connect` / :func:`serve`.
    ``budget``, if given, is shared by both sessions.
    """
    loop = asyncio.get_running_loop()
    client = Session(client=True, config=config, handler=client_handler, budget=budget)
    server = Session(client=False, config=config, handler=server_handler, budget=budget)
    a = _MemoryTransport(loop, client)
    b = _MemoryTransport(loop, server)
    a._peer, b._peer = b, a
    client.connection_made(a)
    server.connection_made(b)
    return client, server
