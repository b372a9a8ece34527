"""Entry points: connect, serve, and sessions over any asyncio transport or socket."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl as _ssl
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

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


async def connect(
    host: str,
    port: int,
    *,
    ssl: _ssl.SSLContext | bool | None = None,
    config: Config | None = None,
    handler: StreamHandler | None = None,
    **kwargs: Any,
) -> Session:
    """Dial ``host:port`` over TCP (TLS with ``ssl``) and return the client-side session.

    ``handler``, if given, serves the streams the server opens to this client (the NAT
    traversal case). Extra keyword arguments go to ``loop.create_connection``.
    """
    loop = asyncio.get_running_loop()
    _, session = await loop.create_connection(
        lambda: Session(client=True, config=config, handler=handler),
        host,
        port,
        ssl=ssl,
        **kwargs,
    )
    return session


async def connect_unix(
    path: str,
    *,
    ssl: _ssl.SSLContext | bool | None = None,
    config: Config | None = None,
    handler: StreamHandler | None = None,
    **kwargs: Any,
) -> Session:
    """Like :func:`connect`, over a Unix domain socket."""
    loop = asyncio.get_running_loop()
    _, session = await loop.create_unix_connection(
        lambda: Session(client=True, config=config, handler=handler), path, ssl=ssl, **kwargs
    )
    return session


class _ClosableSession(Protocol):
    def close(self, code: int = ...) -> None: ...

    async def wait_closed(self) -> None: ...


S = TypeVar("S", bound=_ClosableSession)


class SessionTracker(Generic[S]):
    """What every server does with its connected sessions (mio's and ``mio.quic``'s).

    ``_session_made(session)`` is called once a session is connected; the session handler
    (if any) runs as a task, and the session is forgotten when it is closed.
    """

    def __init__(self, session_handler: Callable[[S], Awaitable[None]] | None) -> None:
        self._session_handler = session_handler
        self._sessions: set[S] = set()
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

    @property
    def sessions(self) -> frozenset[S]:
        """The sessions currently connected."""
        return frozenset(self._sessions)


class Server(SessionTracker[Session]):
    """A listening MIO server: an ``asyncio.Server`` whose connections are sessions.

    Use it as an async context manager or call :meth:`close` and :meth:`wait_closed`.
    """

    def __init__(
        self,
        handler: StreamHandler | None,
        session_handler: SessionHandler | None,
        config: Config | None,
    ) -> None:
        super().__init__(session_handler)
        self._handler = handler
        self._config = config
        self._server: asyncio.AbstractServer | None = None

    def _make_session(self) -> Session:
        session = Session(client=False, config=self._config, handler=self._handler)
        # Tracked from connection_made on: a connection whose TLS handshake fails never
        # gets there, and must not leave a task waiting for it.
        session._on_connection_made = self._session_made
        return session

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
        return self._server is not None and self._server.is_serving()

    def stop_listening(self) -> None:
        """Stop accepting connections; the sessions already connected go on."""
        if self._server is not None:
            self._server.close()

    def close(self, code: int = 0) -> None:
        """Stop listening and close every session with FIN ``code``."""
        if self._server is not None:
            self._server.close()
        for session in list(self._sessions):
            session.close(code)

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop listening, close every session gracefully (see :meth:`Session.aclose`)."""
        if self._server is not None:
            self._server.close()
        await asyncio.gather(*(s.aclose(timeout=timeout) for s in list(self._sessions)))
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the listener and every session are closed."""
        await asyncio.gather(*(s.wait_closed() for s in list(self._sessions)))
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def serve_forever(self) -> None:
        """Serve until cancelled."""
        assert self._server is not None
        await self._server.serve_forever()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()


async def serve(
    handler: StreamHandler | None = None,
    host: str | Sequence[str] | None = None,
    port: int = 0,
    *,
    ssl: _ssl.SSLContext | None = None,
    config: Config | None = None,
    session_handler: SessionHandler | None = None,
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
        kwargs: passed to ``loop.create_server`` (``reuse_port``, ``backlog`` …).
    """
    loop = asyncio.get_running_loop()
    server = Server(handler, session_handler, config)
    server._server = await loop.create_server(server._make_session, host, port, ssl=ssl, **kwargs)
    return server


async def serve_unix(
    handler: StreamHandler | None = None,
    path: str | None = None,
    *,
    ssl: _ssl.SSLContext | None = None,
    config: Config | None = None,
    session_handler: SessionHandler | None = None,
    **kwargs: Any,
) -> Server:
    """Like :func:`serve`, on a Unix domain socket at ``path``."""
    loop = asyncio.get_running_loop()
    server = Server(handler, session_handler, config)
    server._server = await loop.create_unix_server(server._make_session, path, ssl=ssl, **kwargs)
    return server


async def session_from_socket(
    sock: socket.socket,
    *,
    client: bool,
    config: Config | None = None,
    handler: StreamHandler | None = None,
    ssl: _ssl.SSLContext | None = None,
) -> Session:
    """Run a session over an already connected socket (TCP, Unix, ``socketpair()`` …)."""
    loop = asyncio.get_running_loop()
    factory = lambda: Session(client=client, config=config, handler=handler)  # noqa: E731
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
) -> Session:
    """Take over the transport of an asyncio ``(StreamReader, StreamWriter)`` pair.

    Bytes the reader already buffered are decoded first; do not use ``reader`` or
    ``writer`` afterwards.
    """
    transport = writer.transport
    session = Session(client=client, config=config, handler=handler)
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
        self._extra = {"peername": ("memory", 0), "sockname": ("memory", 0)}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._peer is None:
            return
        self._loop.call_soon(self._peer._deliver, bytes(data))

    def _deliver(self, data: bytes) -> None:
        if not self._closing:
            self._protocol.data_received(data)

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
) -> tuple[Session, Session]:
    """Two sessions connected in memory: ``(client, server)``. Must run inside a loop.

    For unit tests; real connections go through :func:`connect` / :func:`serve`.
    """
    loop = asyncio.get_running_loop()
    client = Session(client=True, config=config, handler=client_handler)
    server = Session(client=False, config=config, handler=server_handler)
    a = _MemoryTransport(loop, client)
    b = _MemoryTransport(loop, server)
    a._peer, b._peer = b, a
    client.connection_made(a)
    server.connection_made(b)
    return client, server
