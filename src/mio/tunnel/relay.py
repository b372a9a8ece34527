"""The relay: accepts agent sessions and exposes their services on public ports.

Each TCP connection to a public port becomes a stream the relay opens to the agent that
registered the port's service name (a server-side open: the agent dialed, so NATs and
firewalls in front of it do not matter). The relay sends an ``open`` header, waits for the
agent's ``opened`` (the agent connected to its local service), then pipes bytes both ways.
Forwarders, authenticated like agents, open streams to the relay naming a service; the
relay opens a stream to the agent and splices the two streams together.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import ssl
from collections.abc import Iterator, Sequence
from typing import Any

from ..api import Server, serve
from ..config import Config
from ..errors import MioError
from ..session import Session
from ..stream import Stream
from ..wire import ErrorCode
from .addr import format_address
from .auth import AuthError, AuthFailed, relay_handshake
from .lifecycle import Tracker, announce
from .pipe import StreamEnd, TcpEnd, close_writer, pipe
from .protocol import TunnelProtocolError, error_message, get_str, read_message, write_message

__all__ = ("RelayOptions", "Relay", "OpenError")

log = logging.getLogger("mio.tunnel.relay")


@dataclasses.dataclass
class RelayOptions:
    """Configuration of a :class:`Relay` (see ``mio tunnel relay --help``)."""

    host: str | None
    port: int
    publics: Sequence[tuple[str, str | None, int]]
    secret: bytes
    ssl: ssl.SSLContext | None = None
    binding: bytes = b""
    auth_timeout: float = 10.0
    max_connections: int = 256
    open_timeout: float = 15.0
    idle_timeout: float | None = None
    keepalive: float | None = 15.0


class OpenError(Exception):
    """A tunneled connection could not be opened. ``code`` goes into the error message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Peer:
    """A session on the agent listener: an agent or forwarder, authenticated or not."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._address: str | None = None
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.control_seen = False
        self.role = ""
        self.name = ""
        self.services: tuple[str, ...] = ()
        self.active = 0

    @property
    def address(self) -> str:
        """The peer's ``HOST:PORT`` (known once the transport is connected)."""
        if self._address is None:
            peername = self.session.get_extra_info("peername")
            if peername is None:
                return "?"
            self._address = format_address(peername)
        return self._address

    def __str__(self) -> str:
        if self.role:
            return f"{self.role} {self.name!r} ({self.address})"
        return self.address


class Relay:
    """See the module docstring. ``await start()``, later ``await shutdown(grace)``."""

    def __init__(self, options: RelayOptions) -> None:
        self.options = options
        self._server: Server | None = None
        self._publics: list[asyncio.AbstractServer] = []
        self._peers: dict[Session, _Peer] = {}
        self._services: dict[str, _Peer] = {}
        self._tracker = Tracker()
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Listen for agents and on every public port; print the readiness lines."""
        opts = self.options
        config = Config()
        if opts.keepalive:
            config = Config(keepalive_interval=opts.keepalive, idle_timeout=3 * opts.keepalive)
        kwargs: dict[str, Any] = {}
        if opts.ssl is not None:
            kwargs["ssl_handshake_timeout"] = opts.auth_timeout
        self._server = await serve(
            self._on_stream,
            opts.host,
            opts.port,
            ssl=opts.ssl,
            config=config,
            session_handler=self._on_session,
            **kwargs,
        )
        for sock in self._server.sockets:
            announce(f"relay listening on {format_address(sock.getsockname())}")
        for name, host, port in opts.publics:
            server = await asyncio.start_server(
                functools.partial(self._on_public, name), host, port
            )
            self._publics.append(server)
            for sock in server.sockets:
                announce(f"public {name} on {format_address(sock.getsockname())}")

    @property
    def connections(self) -> int:
        """Tunneled connections being served."""
        return len(self._tracker)

    async def shutdown(self, grace: float, hurry: asyncio.Event | None = None) -> None:
        """Stop accepting, let tunneled connections finish for up to ``grace`` seconds,
        reset the rest, then close every session with FIN."""
        self._stopping = True
        for server in self._publics:
            server.close()
        if len(self._tracker):
            log.info("waiting up to %g s for %d connections", grace, len(self._tracker))
        cancelled = await self._tracker.drain(grace, hurry)
        if cancelled:
            log.warning("reset %d connections still open after the grace period", cancelled)
        if self._server is not None:
            self._server.close(ErrorCode.NO_ERROR)
            await self._server.wait_closed()
        for server in self._publics:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    # ------------------------------------------------------------------ agent sessions
    def _peer(self, session: Session) -> _Peer:
        peer = self._peers.get(session)
        if peer is None:
            peer = self._peers[session] = _Peer(session)
        return peer

    async def _on_session(self, session: Session) -> None:
        peer = self._peer(session)
        loop = asyncio.get_running_loop()
        closed = loop.create_task(session.wait_closed())
        try:
            timeout = self.options.auth_timeout
            waiting: set[asyncio.Future[Any]] = {peer.ready, closed}
            await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not peer.ready.done():
                if closed.done():
                    log.debug("%s: disconnected before authenticating", peer)
                else:
                    log.warning("%s: no authentication within %g s: dropping it", peer, timeout)
                session.close(ErrorCode.REFUSED)
                return
            if not peer.ready.result():
                session.close(ErrorCode.REFUSED)
                return
            await closed
            log.info("%s: disconnected (%s)", peer, session.close_error)
        finally:
            closed.cancel()
            self._unregister(peer)

    async def _on_stream(self, stream: Stream) -> None:
        peer = self._peer(stream.session)
        if not peer.control_seen:
            peer.control_seen = True
            log.debug("%s: connected, authenticating", peer)
            await self._authenticate(peer, stream)
            return
        if not (peer.ready.done() and peer.ready.result()) or peer.role != "forward":
            log.debug("%s: refusing a stream it may not open", peer)
            stream.reset(ErrorCode.REFUSED)
            return
        with self._tracker.track():
            await self._serve_forwarder(peer, stream)

    async def _authenticate(self, peer: _Peer, stream: Stream) -> None:
        opts = self.options
        try:
            hello = await relay_handshake(
                stream,
                opts.secret,
                binding=opts.binding,
                keepalive=opts.keepalive,
                available=lambda: not self._stopping,
            )
        except AuthFailed as exc:
            log.warning("%s: authentication failed: %s", peer, exc)
            peer.ready.set_result(False)
            return
        except (AuthError, TunnelProtocolError, MioError) as exc:
            log.warning("%s: handshake failed: %s", peer, exc)
            peer.ready.set_result(False)
            return
        if peer.session.is_closed:  # timed out meanwhile
            return
        peer.role, peer.name, peer.services = hello.role, hello.name, hello.services
        for name in hello.services:
            previous = self._services.get(name)
            if previous is not None and previous is not peer:
                log.warning("%s: takes service %r over from %s", peer, name, previous)
            self._services[name] = peer
        if hello.role == "agent":
            log.info("%s: authenticated, services: %s", peer, ", ".join(hello.services) or "none")
        else:
            log.info("%s: authenticated", peer)
        peer.ready.set_result(True)

    def _unregister(self, peer: _Peer) -> None:
        self._peers.pop(peer.session, None)
        for name in peer.services:
            if self._services.get(name) is peer:
                del self._services[name]

    # ------------------------------------------------------------------ tunnels
    @contextlib.contextmanager
    def _slot(self, name: str) -> Iterator[_Peer]:
        """The agent serving ``name``, counting one more connection against its limit."""
        if self._stopping:
            raise OpenError("unavailable", "the relay is shutting down")
        peer = self._services.get(name)
        if peer is None or peer.session.is_closed:
            raise OpenError("unknown-service", f"no agent serves {name!r}")
        if peer.active >= self.options.max_connections:
            raise OpenError(
                "limit", f"{peer} is at its limit of {self.options.max_connections} connections"
            )
        peer.active += 1
        try:
            yield peer
        finally:
            peer.active -= 1

    async def _open(self, peer: _Peer, name: str, origin: str) -> Stream:
        """Open a stream to ``peer`` for service ``name``; return it once the agent has
        connected to the service."""
        try:
            stream = await peer.session.open_stream()
        except MioError as exc:
            raise OpenError("unavailable", f"{peer}: {exc}") from None
        try:
            write_message(stream, {"type": "open", "service": name, "peer": origin})
            reply = await asyncio.wait_for(
                read_message(stream, "opened", "error"), self.options.open_timeout
            )
        except asyncio.TimeoutError:
            stream.reset(ErrorCode.INTERNAL_ERROR)
            raise OpenError(
                "connect", f"{peer} did not open {name!r} within {self.options.open_timeout:g} s"
            ) from None
        except (TunnelProtocolError, MioError, OSError) as exc:
            stream.reset(ErrorCode.INTERNAL_ERROR)
            raise OpenError("connect", f"{peer}: {exc}") from None
        if reply["type"] == "error":
            stream.close()
            raise OpenError(
                str(reply.get("code", "connect")), f"{peer}: {reply.get('error', 'refused')}"
            )
        return stream

    async def _on_public(
        self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        origin = format_address(writer.get_extra_info("peername"))
        with self._tracker.track():
            try:
                with self._slot(name) as peer:
                    stream = await self._open(peer, name, origin)
                    log.debug("%s -> %s %r: open", origin, peer, name)
                    result = await pipe(
                        TcpEnd(reader, writer),
                        StreamEnd(stream),
                        idle_timeout=self.options.idle_timeout,
                    )
                    log.debug(
                        "%s -> %r: done, %d bytes in, %d out%s",
                        origin,
                        name,
                        result.sent,
                        result.received,
                        f", aborted: {result.error!r}" if result.error else "",
                    )
            except OpenError as exc:
                log.warning("public %s: connection from %s closed: %s", name, origin, exc)
                await close_writer(writer)
            except Exception:
                log.exception("public %s: connection from %s failed", name, origin)
                TcpEnd(reader, writer).abort()
            except asyncio.CancelledError:
                # Shutdown after the grace period; the pipe has reset both ends. Not
                # re-raised: asyncio's start_server callback of Python 3.11 logs a
                # cancelled connection task as an error.
                TcpEnd(reader, writer).abort()

    async def _serve_forwarder(self, forwarder: _Peer, stream: Stream) -> None:
        try:
            request = await asyncio.wait_for(
                read_message(stream, "open"), self.options.open_timeout
            )
            name = get_str(request, "service", max_length=64)
        except (asyncio.TimeoutError, TunnelProtocolError, MioError) as exc:
            log.warning("%s: bad open request: %s", forwarder, exc or "timed out")
            stream.reset(ErrorCode.PROTOCOL_ERROR)
            return
        origin = f"forward {forwarder.name!r} ({forwarder.address})"
        try:
            with self._slot(name) as peer:
                upstream = await self._open(peer, name, origin)
                write_message(stream, {"type": "opened"})
                log.debug("%s -> %s %r: open", origin, peer, name)
                result = await pipe(
                    StreamEnd(stream),
                    StreamEnd(upstream),
                    idle_timeout=self.options.idle_timeout,
                )
                log.debug(
                    "%s -> %r: done, %d bytes in, %d out",
                    origin,
                    name,
                    result.sent,
                    result.received,
                )
        except OpenError as exc:
            log.warning("%s: cannot open %r: %s", origin, name, exc)
            write_message(stream, error_message(exc.code, str(exc)))
