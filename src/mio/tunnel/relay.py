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
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ..budget import MemoryBudget
from ..errors import MioError
from ..session import Session
from ..stream import Stream
from ..wire import ErrorCode
from .addr import format_address, validate_name
from .admission import (
    BACKLOG,
    TLS_HANDSHAKE,
    TLS_REQUIRED,
    ListenError,
    first_octet,
    listen,
    refuse_tls,
    reset,
    tell_tls_required,
)
from .auth import MAX_SERVICES, AuthError, AuthFailed, Hello, relay_handshake
from .lifecycle import Tracker, announce
from .limits import Counter, FailureLimiter, SummaryLog
from .link import LINK_CONFIG
from .metrics import Metric
from .pipe import PipeResult, Pipes, StreamEnd, TcpEnd
from .protocol import TunnelProtocolError, error_message, get_str, read_message, write_message
from .registry import Registry
from .wsaddr import DEFAULT_PATH

__all__ = ("RelayOptions", "Relay", "OpenError", "ListenError", "TLS_REQUIRED")

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
    idle_timeout: float | None = 300.0
    idle_min_bytes: int = 1024
    keepalive: float | None = 15.0
    max_pending: int = 64
    max_pending_per_source: int = 8
    max_port_connections: int | None = 1024
    max_source_connections: int | None = 64
    auth_failures: int = 5
    auth_failure_window: float = 60.0
    service_secrets: Mapping[str, bytes] = dataclasses.field(default_factory=dict)
    #: ``--ws-listen``: also accept agents and forwarders over WebSocket (TLS with ``ssl``).
    ws_host: str | None = None
    ws_port: int | None = None
    ws_path: str = DEFAULT_PATH


class OpenError(Exception):
    """A tunneled connection could not be opened. ``code`` goes into the error message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Peer:
    """A session on the agent listener: an agent or forwarder, authenticated or not."""

    def __init__(
        self, session: Session, address: str | None = None, transport: str = "tcp"
    ) -> None:
        self.session = session
        self._address = address
        #: ``tcp`` (``--listen``) or ``websocket`` (``--ws-listen``).
        self.transport = transport
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.control_seen = False
        self.role = ""
        self.name = ""
        self.services: tuple[str, ...] = ()
        self.hello: Hello | None = None
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
    """See the module docstring. ``await start()``, later ``await shutdown(grace)``.

    Admission (agent listener): at most ``max_pending`` connections (``max_pending_per_source``
    per source address) between accept and authentication, all of it -- TLS handshake
    included -- within one ``auth_timeout``; a source address with ``auth_failures`` failed
    authentications is refused for the rest of its ``auth_failure_window``. Public ports: at
    most ``max_port_connections`` per port and ``max_source_connections`` per source
    address (over all public ports), each reset when fewer than ``idle_min_bytes`` moved in
    an ``idle_timeout`` interval. Connections over a limit are reset at once.
    """

    def __init__(self, options: RelayOptions) -> None:
        self.options = options
        config = LINK_CONFIG
        if options.keepalive:
            config = LINK_CONFIG.replace(
                keepalive_interval=options.keepalive, idle_timeout=3 * options.keepalive
            )
        self._config = config
        self._budget = MemoryBudget()
        self._listeners: list[asyncio.Server] = []
        self._accept_socks: list[socket.socket] = []
        self._accept_tasks: set[asyncio.Task[None]] = set()
        self._admitting: set[asyncio.Task[None]] = set()
        self._publics: list[asyncio.Server] = []
        self._public_ports: dict[str, asyncio.Server] = {}
        self._peers: dict[Session, _Peer] = {}
        self._services: Registry[_Peer] = Registry()
        self._tracker = Tracker(Pipes(options.idle_timeout, options.idle_min_bytes))
        self._stopping = False
        #: Readiness lines printed first by :meth:`start`, once everything is bound.
        self.early_lines: list[str] = []
        self._pending = 0
        self._pending_sources = Counter(options.max_pending_per_source)
        self._port_counts = Counter(options.max_port_connections)
        self._source_counts = Counter(options.max_source_connections)
        self._failures = FailureLimiter(options.auth_failures, options.auth_failure_window)
        self._auth_log = SummaryLog(
            log,
            "%s: authentication failed: %s",
            "%d more failed authentications in the last %g s",
        )
        self._refusal_log = SummaryLog(
            log, "refused a connection from %s: %s", "refused %d more connections in the last %g s"
        )
        #: Counters (see :meth:`stats`).
        self.counts: dict[str, int] = dict.fromkeys(
            (
                "connections_total",
                "bytes_in",
                "bytes_out",
                "auth_failures",
                "refused_pending",
                "refused_auth_rate",
                "refused_port_limit",
                "refused_source_limit",
                "refused_agent_limit",
                "refused_no_agent",
            ),
            0,
        )

    # ------------------------------------------------------------------ lifecycle
    @staticmethod
    def _create_public(
        loop: asyncio.AbstractEventLoop,
        factory: Callable[[], asyncio.BaseProtocol],
        host: str | None,
        port: int,
    ) -> Awaitable[asyncio.Server]:
        return loop.create_server(factory, host, port)

    async def start(self) -> None:
        """Bind the agent listener and every public port, then print the readiness lines
        (none if a bind fails: :class:`ListenError` names the address)."""
        opts = self.options
        loop = asyncio.get_running_loop()
        lines = list(self.early_lines)
        listener = await listen(
            "--listen",
            opts.host,
            opts.port,
            lambda p: loop.create_server(asyncio.Protocol, opts.host, p, start_serving=False),
        )
        self._listeners.append(listener)
        for sock in listener.sockets:
            lines.append(f"relay listening on {format_address(sock.getsockname())}")
        for name, host, port in opts.publics:
            server = await listen(
                f"--public {name}",
                host,
                port,
                functools.partial(
                    self._create_public, loop, functools.partial(self._public_end, name), host
                ),
            )
            self._publics.append(server)
            self._public_ports[name] = server
            for sock in server.sockets:
                lines.append(f"public {name} on {format_address(sock.getsockname())}")
        accepting = [(sock, False) for sock in listener.sockets]
        ws_port = opts.ws_port
        if ws_port is not None:
            from . import wslink  # noqa: F401  (needs websockets: fail before binding)

            ws_listener = await listen(
                "--ws-listen",
                opts.ws_host,
                ws_port,
                lambda p: loop.create_server(
                    asyncio.Protocol, opts.ws_host, p, start_serving=False
                ),
            )
            self._listeners.append(ws_listener)
            scheme = "wss" if opts.ssl is not None else "ws"
            for sock in ws_listener.sockets:
                where = format_address(sock.getsockname())
                lines.append(f"relay websocket on {scheme}://{where}{opts.ws_path}")
                accepting.append((sock, True))
        for sock, websocket in accepting:
            dup = sock.dup()
            dup.setblocking(False)
            dup.listen(BACKLOG)  # start_serving=False: asyncio has not called listen()
            self._accept_socks.append(dup)
            task = loop.create_task(self._accept_loop(dup, websocket))
            self._accept_tasks.add(task)
        for line in lines:
            announce(line)

    def port(self, public: str | None = None) -> int:
        """The port agents connect to, or with ``public`` that of the public port of that
        service (after :meth:`start`; handy with port 0)."""
        server = self._listeners[0] if public is None else self._public_ports[public]
        return int(server.sockets[0].getsockname()[1])

    def ws_port(self) -> int:
        """The port of ``--ws-listen`` (after :meth:`start`)."""
        if self.options.ws_port is None:
            raise ValueError("the relay has no WebSocket listener")
        return int(self._listeners[1].sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        """Tunneled connections being served."""
        return len(self._tracker)

    def stats(self) -> dict[str, int]:
        """Counters and gauges: ``agents``, ``forwarders``, ``services``, ``pending``
        (connections not yet authenticated), ``active`` (tunneled connections) and
        :attr:`counts`."""
        peers = [p for p in self._peers.values() if p.ready.done() and p.ready.result()]
        return {
            "agents": sum(1 for p in peers if p.role == "agent"),
            "forwarders": sum(1 for p in peers if p.role == "forward"),
            "services": len(self._services),
            "pending": self._pending,
            "active": len(self._tracker),
            **self.counts,
        }

    def metrics(self) -> list[Metric]:
        """The relay's state and counters for :func:`.metrics.render` (``--metrics``)."""
        stats = self.stats()
        c = self.counts
        per_service: dict[tuple[tuple[str, str], ...], float] = {
            (("service", name),): float(len(peers)) for name, peers in self._services.items()
        }
        refusals: dict[tuple[tuple[str, str], ...], float] = {
            (("reason", key[len("refused_") :]),): float(value)
            for key, value in c.items()
            if key.startswith("refused_")
        }
        links: dict[tuple[tuple[str, str], ...], float] = {
            (("transport", "tcp"),): 0.0,
            (("transport", "websocket"),): 0.0,
        }
        for peer in self._peers.values():
            if peer.ready.done() and peer.ready.result():
                links[(("transport", peer.transport),)] += 1
        return [
            (
                "mio_tunnel_agents",
                "gauge",
                "Authenticated agents connected.",
                {(): stats["agents"]},
            ),
            (
                "mio_tunnel_forwarders",
                "gauge",
                "Authenticated forwarders connected.",
                {(): stats["forwarders"]},
            ),
            (
                "mio_tunnel_services",
                "gauge",
                "Service names served by at least one agent.",
                {(): stats["services"]},
            ),
            ("mio_tunnel_service_agents", "gauge", "Agents serving each service.", per_service),
            (
                "mio_tunnel_links",
                "gauge",
                "Authenticated agents and forwarders by link: --listen (tcp) or --ws-listen.",
                links,
            ),
            (
                "mio_tunnel_pending",
                "gauge",
                "Connections on --listen not yet authenticated.",
                {(): stats["pending"]},
            ),
            (
                "mio_tunnel_connections_active",
                "gauge",
                "Tunneled connections open now.",
                {(): stats["active"]},
            ),
            (
                "mio_tunnel_connections_total",
                "counter",
                "Tunneled connections opened.",
                {(): c["connections_total"]},
            ),
            (
                "mio_tunnel_bytes_total",
                "counter",
                "Bytes carried by tunneled connections that ended (in: towards the services).",
                {(("direction", "in"),): c["bytes_in"], (("direction", "out"),): c["bytes_out"]},
            ),
            (
                "mio_tunnel_auth_failures_total",
                "counter",
                "Failed authentications.",
                {(): c["auth_failures"]},
            ),
            ("mio_tunnel_refused_total", "counter", "Connections refused, by reason.", refusals),
        ]

    def _stop_accepting(self) -> None:
        for task in self._accept_tasks:
            task.cancel()
        for sock in self._accept_socks:
            sock.close()
        self._accept_socks.clear()
        for server in self._listeners:
            server.close()
        for server in self._publics:
            server.close()

    async def shutdown(self, grace: float, hurry: asyncio.Event | None = None) -> None:
        """Stop accepting, let tunneled connections finish for up to ``grace`` seconds,
        reset the rest, then close every session with FIN."""
        self._stopping = True
        self._stop_accepting()
        await asyncio.gather(*self._accept_tasks, return_exceptions=True)
        if len(self._tracker):
            log.info("waiting up to %g s for %d connections", grace, len(self._tracker))
        cancelled = await self._tracker.drain(grace, hurry)
        if cancelled:
            log.warning("reset %d connections still open after the grace period", cancelled)
        for session in list(self._peers):
            session.close(ErrorCode.NO_ERROR)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(s.wait_closed() for s in list(self._peers))), 5.0
            )
        for task in list(self._admitting):
            task.cancel()
        await asyncio.gather(*self._admitting, return_exceptions=True)
        self._auth_log.close()
        self._refusal_log.close()
        for server in (*self._listeners, *self._publics):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    # ------------------------------------------------------------------ admission
    async def _accept_loop(self, sock: socket.socket, websocket: bool = False) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, address = await loop.sock_accept(sock)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            except OSError as exc:  # EMFILE and friends: pause instead of spinning
                if sock.fileno() < 0:
                    return
                self._refusal_log.hit("the listener", f"accept() failed: {exc}")
                await asyncio.sleep(0.5)
                continue
            conn.setblocking(False)
            task = loop.create_task(self._admit(conn, address, websocket))
            self._admitting.add(task)
            task.add_done_callback(self._admitting.discard)

    def _refuse(self, sock: socket.socket, origin: str, counter: str, why: str) -> None:
        self.counts[counter] += 1
        self._refusal_log.hit(origin, why)
        reset(sock)

    async def _admit(self, sock: socket.socket, address: Any, websocket: bool = False) -> None:
        """Accepted on the agent listener (``--ws-listen`` with ``websocket``): limits, TLS,
        (the WebSocket handshake,) authentication, then serve the session until it closes.
        One deadline covers everything up to authentication."""
        opts = self.options
        loop = asyncio.get_running_loop()
        deadline = loop.time() + opts.auth_timeout
        origin = format_address(address)
        source = str(address[0]) if isinstance(address, tuple) else origin
        if self._stopping:
            reset(sock)
            return
        if self._failures.blocked(source):
            self._refuse(sock, origin, "refused_auth_rate", "too many failed authentications")
            return
        if self._pending >= opts.max_pending:
            self._refuse(
                sock, origin, "refused_pending", f"{opts.max_pending} connections authenticating"
            )
            return
        if not self._pending_sources.acquire(source):
            self._refuse(
                sock,
                origin,
                "refused_pending",
                f"{opts.max_pending_per_source} connections of {source} authenticating",
            )
            return
        self._pending += 1
        pending = True
        session: Session | None = None
        try:
            opening = self._open_ws_session if websocket else self._open_session
            session = await opening(sock, origin, deadline)
            if session is None:
                return
            peer = self._peers[session]
            closed = loop.create_task(session.wait_closed())
            try:
                waiting: set[asyncio.Future[Any]] = {peer.ready, closed}
                await asyncio.wait(
                    waiting,
                    timeout=max(0.0, deadline - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not peer.ready.done():
                    if closed.done():
                        log.debug("%s: disconnected before authenticating", peer)
                    else:
                        log.warning(
                            "%s: no authentication within %g s: dropping it",
                            peer,
                            opts.auth_timeout,
                        )
                    session.close(ErrorCode.REFUSED)
                    return
                if not peer.ready.result():
                    session.close(ErrorCode.REFUSED)
                    return
                self._pending -= 1
                self._pending_sources.release(source)
                pending = False
                await closed
                log.info("%s: disconnected (%s)", peer, session.close_error)
            finally:
                closed.cancel()
        except asyncio.CancelledError:
            if session is not None:
                session.close(ErrorCode.NO_ERROR)
            else:
                reset(sock)
        finally:
            if pending:
                self._pending -= 1
                self._pending_sources.release(source)
            if session is not None:
                self._unregister(self._peer(session))

    async def _open_session(
        self, sock: socket.socket, origin: str, deadline: float
    ) -> Session | None:
        """The mio session on an accepted socket, TLS (if configured) done before
        ``deadline``; None when the peer went away, timed out or speaks the wrong protocol."""
        opts = self.options
        loop = asyncio.get_running_loop()
        first = await first_octet(sock, origin, max(0.0, deadline - loop.time()), opts.auth_timeout)
        if first is None:
            return None
        speaks_tls = first[0] == TLS_HANDSHAKE
        if speaks_tls and opts.ssl is None:
            log.warning(
                "%s speaks TLS but this relay is plain TCP: give the relay --tls-cert and "
                "--tls-key, or drop --tls/--tls-ca/--tls-fingerprint on that peer",
                origin,
            )
            refuse_tls(sock)
            return None
        if opts.ssl is not None and not speaks_tls:
            log.warning(
                "%s speaks plain TCP but this relay speaks TLS: give that peer --tls-ca or "
                "--tls-fingerprint",
                origin,
            )
            await tell_tls_required(sock, self._config, deadline)
            return None

        made: list[Session] = []

        def factory() -> Session:
            session = Session(
                client=False, config=self._config, handler=self._on_stream, budget=self._budget
            )
            self._peers[session] = _Peer(session, origin)
            made.append(session)
            return session

        remaining = max(0.001, deadline - loop.time())
        kwargs: dict[str, Any] = {}
        if opts.ssl is not None:
            kwargs = {"ssl": opts.ssl, "ssl_handshake_timeout": remaining}
        connected = False
        try:
            _, session = await asyncio.wait_for(
                loop.connect_accepted_socket(factory, sock, **kwargs), remaining
            )
            connected = True
        except TimeoutError:
            log.warning("%s: no authentication within %g s: dropping it", origin, opts.auth_timeout)
            reset(sock)
            return None
        except (OSError, ssl.SSLError) as exc:
            log.warning("%s: TLS handshake failed: %s", origin, exc)
            reset(sock)
            return None
        finally:
            if not connected:  # the session never got its transport: forget it
                for unborn in made:
                    self._peers.pop(unborn, None)
        return session

    async def _open_ws_session(
        self, sock: socket.socket, origin: str, deadline: float
    ) -> Session | None:
        """Like :meth:`_open_session`, for ``--ws-listen``: TLS, the WebSocket handshake,
        then the mio session over it (see :mod:`.wslink`)."""
        from .._ws import attach
        from . import wslink

        loop = asyncio.get_running_loop()
        connection = await wslink.accept(
            sock,
            origin,
            path=self.options.ws_path,
            context=self.options.ssl,
            timeout=max(0.0, deadline - loop.time()),
            close_timeout=self._config.close_timeout,
        )
        if connection is None:
            return None
        session = Session(
            client=False, config=self._config, handler=self._on_stream, budget=self._budget
        )
        self._peers[session] = _Peer(session, origin, "websocket")
        attach(connection, session)
        return session

    # ------------------------------------------------------------------ agent sessions
    def _peer(self, session: Session) -> _Peer:
        peer = self._peers.get(session)
        if peer is None:
            peer = self._peers[session] = _Peer(session)
        return peer

    async def _on_stream(self, stream: Stream) -> None:
        peer = self._peer(stream.session)
        if not peer.control_seen:
            peer.control_seen = True
            log.debug("%s: connected, authenticating", peer)
            await self._authenticate(peer, stream)
            return
        if not (peer.ready.done() and peer.ready.result()):
            log.debug("%s: refusing a stream it may not open", peer)
            stream.reset(ErrorCode.REFUSED)
            return
        if peer.role == "agent":
            await self._serve_register(peer, stream)
            return
        with self._tracker.track():
            await self._serve_forwarder(peer, stream)

    def _auth_failed(self, peer: _Peer, why: object) -> None:
        self.counts["auth_failures"] += 1
        address = peer.address
        self._failures.failed(address.rpartition(":")[0].strip("[]") or address)
        self._auth_log.hit(peer, why)
        if not peer.ready.done():
            peer.ready.set_result(False)

    async def _authenticate(self, peer: _Peer, stream: Stream) -> None:
        opts = self.options
        try:
            hello = await relay_handshake(
                stream,
                opts.secret,
                binding=opts.binding,
                keepalive=opts.keepalive,
                available=lambda: not self._stopping,
                service_secrets=opts.service_secrets,
            )
        except AuthFailed as exc:
            self._auth_failed(peer, exc)
            return
        except TunnelProtocolError as exc:
            self._auth_failed(peer, f"bad handshake: {exc}")
            return
        except (AuthError, MioError) as exc:
            log.warning("%s: handshake failed: %s", peer, exc)
            peer.ready.set_result(False)
            return
        if peer.session.is_closed or peer.ready.done():  # timed out meanwhile
            return
        peer.role, peer.name, peer.hello = hello.role, hello.name, hello
        self._register(peer, hello.services)
        if hello.role == "agent":
            log.info("%s: authenticated, services: %s", peer, ", ".join(hello.services) or "none")
        else:
            log.info("%s: authenticated", peer)
        peer.ready.set_result(True)

    def _register(self, peer: _Peer, services: Sequence[str]) -> None:
        """Make ``peer`` serve exactly ``services`` (replacing what it served before)."""
        for name in set(peer.services) - set(services):
            self._leave(peer, name)
        for name in services:
            if name in peer.services:
                continue
            others = self._services.join(peer, name)
            if others:
                log.info("%s: joins %d other agent(s) serving %r", peer, others, name)
        peer.services = tuple(services)

    def _leave(self, peer: _Peer, name: str) -> None:
        left = self._services.leave(peer, name)
        if left:
            log.info("%s: left; %d agent(s) still serve %r", peer, left, name)

    async def _serve_register(self, peer: _Peer, stream: Stream) -> None:
        """An authenticated agent changes the names it serves (after its SIGHUP)."""
        try:
            request = await asyncio.wait_for(
                read_message(stream, "register"), self.options.open_timeout
            )
            raw = request.get("services")
            if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
                raise TunnelProtocolError("field 'services' must be a list of names")
            if len(raw) > MAX_SERVICES:
                raise TunnelProtocolError(f"more than {MAX_SERVICES} services")
            try:
                names = [validate_name(x) for x in raw]
            except ValueError as exc:
                raise TunnelProtocolError(str(exc)) from None
        except (TimeoutError, TunnelProtocolError, MioError) as exc:
            log.warning("%s: bad register request: %s", peer, exc or "timed out")
            stream.reset(ErrorCode.PROTOCOL_ERROR)
            return
        assert peer.hello is not None
        refused = [n for n in names if not peer.hello.may_use(n)]
        if refused:
            log.warning("%s: may not serve %r with its secret", peer, refused[0])
            write_message(
                stream, error_message("auth", f"this secret does not cover {refused[0]!r}")
            )
            stream.close()
            return
        self._register(peer, names)
        log.info("%s: now serves %s", peer, ", ".join(names) or "nothing")
        write_message(stream, {"type": "registered", "services": names})
        stream.close()

    async def reload(
        self,
        publics: Sequence[tuple[str, str | None, int]],
        service_secrets: Mapping[str, bytes],
    ) -> None:
        """Apply a new set of public ports and per-service secrets (SIGHUP).

        New and moved ports are bound first (on a failure nothing changes and
        :class:`ListenError` is raised); then the ports of removed or moved services stop
        listening. No connection is dropped: those of a removed service end on their own.
        Secrets apply to authentications from now on.
        """
        old = {name: (host, port) for name, host, port in self.options.publics}
        new = {name: (host, port) for name, host, port in publics}
        started: dict[str, asyncio.Server] = {}
        try:
            for name, (host, port) in new.items():
                if old.get(name) == (host, port):
                    continue
                started[name] = await listen(
                    f"--public {name}",
                    host,
                    port,
                    functools.partial(
                        self._create_public,
                        asyncio.get_running_loop(),
                        functools.partial(self._public_end, name),
                        host,
                    ),
                )
        except OSError:
            for server in started.values():
                server.close()
            raise
        for name in old:
            if name not in new or name in started:
                server = self._public_ports.pop(name)
                server.close()
                self._publics.remove(server)
                log.info("public %s: no longer listening", name)
        for name, server in started.items():
            self._public_ports[name] = server
            self._publics.append(server)
            for sock in server.sockets:
                announce(f"public {name} on {format_address(sock.getsockname())}")
        self.options = dataclasses.replace(
            self.options, publics=list(publics), service_secrets=dict(service_secrets)
        )
        log.info(
            "configuration reloaded: public %s; own secrets for %s",
            ", ".join(new) or "none",
            ", ".join(service_secrets) or "none",
        )

    def _unregister(self, peer: _Peer) -> None:
        self._peers.pop(peer.session, None)
        for name in peer.services:
            self._leave(peer, name)

    # ------------------------------------------------------------------ tunnels
    def _pick(self, name: str) -> _Peer:
        """The next live agent serving ``name`` (round-robin), skipping those at their
        connection limit."""
        limit = self.options.max_connections
        peer, serving = self._services.pick(
            name, lambda p: not p.session.is_closed, lambda p: p.active < limit
        )
        if peer is not None:
            return peer
        if not serving:
            self.counts["refused_no_agent"] += 1
            raise OpenError("unknown-service", f"no agent serves {name!r}")
        self.counts["refused_agent_limit"] += 1
        if len(serving) == 1:
            raise OpenError(
                "limit",
                f"{serving[0]} is at its limit of {self.options.max_connections} connections",
            )
        raise OpenError(
            "limit",
            f"all {len(serving)} agents serving {name!r} are at their limit of "
            f"{self.options.max_connections} connections",
        )

    def _acquire(self, name: str) -> _Peer:
        """An agent serving ``name``, counting one more connection against its limit (the
        caller gives it back: ``peer.active -= 1``)."""
        if self._stopping:
            raise OpenError("unavailable", "the relay is shutting down")
        peer = self._pick(name)
        peer.active += 1
        return peer

    async def _open(self, peer: _Peer, name: str, origin: str) -> Stream:
        """Open a stream to ``peer`` for service ``name``; return it once the agent has
        connected to the service."""
        try:
            stream = await peer.session.open_stream()
        except MioError as exc:
            raise OpenError("unavailable", f"{peer}: {exc}") from None
        try:
            write_message(stream, {"type": "open", "service": name, "peer": origin})
            async with asyncio.timeout(self.options.open_timeout):  # (no task, as wait_for)
                reply = await read_message(stream, "opened", "error")
        except TimeoutError:
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

    def _count(self, result: PipeResult) -> None:
        self.counts["bytes_in"] += result.sent
        self.counts["bytes_out"] += result.received

    def _public_end(self, name: str) -> TcpEnd:
        """The protocol of a new connection to public port ``name``."""
        return TcpEnd(self._tracker.pipes, functools.partial(self._on_public, name))

    def _on_public(self, name: str, end: TcpEnd) -> None:
        """A connection to a public port (``connection_made``): limits, then a task opens
        the tunnel; once it is open, the pipe's callbacks carry it (no task)."""
        assert end.transport is not None
        peername = end.transport.get_extra_info("peername")
        origin = format_address(peername)
        source = str(peername[0]) if isinstance(peername, tuple) else origin
        opts = self.options
        if not self._port_counts.acquire(name):
            self.counts["refused_port_limit"] += 1
            self._refusal_log.hit(
                origin, f"public {name} has {opts.max_port_connections} connections"
            )
            end.abort()
            return
        if not self._source_counts.acquire(source):
            self._port_counts.release(name)
            self.counts["refused_source_limit"] += 1
            self._refusal_log.hit(
                origin, f"{source} has {opts.max_source_connections} public connections"
            )
            end.abort()
            return
        asyncio.get_running_loop().create_task(self._serve_public(name, origin, source, end))

    def _release_public(self, name: str, source: str, peer: _Peer | None) -> None:
        self._port_counts.release(name)
        self._source_counts.release(source)
        if peer is not None:
            peer.active -= 1

    async def _serve_public(self, name: str, origin: str, source: str, end: TcpEnd) -> None:
        peer: _Peer | None = None
        piped = False
        try:
            with self._tracker.track():
                try:
                    peer = self._acquire(name)
                    stream = await self._open(peer, name, origin)
                except OpenError as exc:
                    log.warning("public %s: connection from %s closed: %s", name, origin, exc)
                    end.close()
                    return
                self.counts["connections_total"] += 1
                log.debug("%s -> %s %r: open", origin, peer, name)
                piped = True
                done = functools.partial(self._public_done, name, origin, source, peer)
                self._tracker.pipes.start(end, StreamEnd(stream), done)
        except Exception:
            log.exception("public %s: connection from %s failed", name, origin)
            end.abort()
        except asyncio.CancelledError:
            # Shutdown after the grace period. Not re-raised: nobody awaits this task, and
            # a cancelled connection task would be logged as an error.
            end.abort()
        finally:
            if not piped:
                self._release_public(name, source, peer)

    def _public_done(
        self, name: str, origin: str, source: str, peer: _Peer, result: PipeResult
    ) -> None:
        self._release_public(name, source, peer)
        self._count(result)
        result.log_done(log, origin, name)

    async def _serve_forwarder(self, forwarder: _Peer, stream: Stream) -> None:
        try:
            async with asyncio.timeout(self.options.open_timeout):
                request = await read_message(stream, "open")
            name = get_str(request, "service", max_length=64)
        except (TimeoutError, TunnelProtocolError, MioError) as exc:
            log.warning("%s: bad open request: %s", forwarder, exc or "timed out")
            stream.reset(ErrorCode.PROTOCOL_ERROR)
            return
        origin = f"forward {forwarder.name!r} ({forwarder.address})"
        if forwarder.hello is not None and not forwarder.hello.may_use(name):
            log.warning("%s: may not reach %r with its secret", origin, name)
            write_message(stream, error_message("auth", f"this secret does not cover {name!r}"))
            return
        try:
            peer = self._acquire(name)
            try:
                upstream = await self._open(peer, name, origin)
            except BaseException:
                peer.active -= 1
                raise
        except OpenError as exc:
            log.warning("%s: cannot open %r: %s", origin, name, exc)
            write_message(stream, error_message(exc.code, str(exc)))
            return
        write_message(stream, {"type": "opened"})
        self.counts["connections_total"] += 1
        log.debug("%s -> %s %r: open", origin, peer, name)
        # The pipe's callbacks carry it from here: this handler returns, the streams stay.
        done = functools.partial(self._forward_done, origin, name, peer)
        self._tracker.pipes.start(StreamEnd(stream), StreamEnd(upstream), done)

    def _forward_done(self, origin: str, name: str, peer: _Peer, result: PipeResult) -> None:
        peer.active -= 1
        self._count(result)
        result.log_done(log, origin, name)
