"""The dialer's side of the relay link: one authenticated session, redialed when it drops.

Agents and forwarders both keep exactly one session to the relay. :class:`Link` dials (TCP,
optionally TLS with a CA and/or a pinned fingerprint), runs the handshake of :mod:`.auth`,
announces ``<role> connected to HOST:PORT`` and, when the session ends, dials again after an
exponential, capped and jittered backoff. Authentication failures are not retried.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hmac
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Sequence
from ssl import SSLContext
from typing import Any

from ..api import connect
from ..config import Config
from ..errors import MioError
from ..session import Session
from ..stream import Stream
from ..wire import ErrorCode
from .addr import format_address
from .auth import (
    BINDING_CERT,
    AuthError,
    AuthFailed,
    AuthTimeout,
    Mismatch,
    dialer_handshake,
)
from .lifecycle import announce
from .protocol import TunnelProtocolError
from .tls import format_fingerprint, peer_certificate_digest
from .wsaddr import Proxy, ProxyCertificateError, RelayURL

__all__ = ("Backoff", "LinkOptions", "Link", "EXIT_AUTH", "EXIT_CONFIG")

log = logging.getLogger("mio.tunnel.link")

#: Exit status of an agent or forwarder whose authentication failed.
EXIT_AUTH = 3
#: Exit status of an agent or forwarder configured for the wrong transport (TLS vs plain).
EXIT_CONFIG = 2
#: A session that stayed up this long resets the backoff to its initial delay.
STABLE_AFTER = 10.0


#: Session parameters of every tunnel link (relay and agent): mio's defaults but a receive
#: window that grows to 1 MiB. ``Config``'s 512 KiB keeps small messages quick beside a bulk
#: stream; a tunneled connection forwards what it reads to a socket, a longer way round per
#: window, and one connection over TLS measured 628 MB/s at 1 MiB against 367 at 512 KiB.
LINK_CONFIG = Config(max_window=1024 * 1024)


class Backoff:
    """Exponential backoff with a cap and "equal jitter": the n-th delay is uniformly
    random in ``[d/2, d]`` with ``d = min(maximum, initial * 2**n)``."""

    def __init__(
        self, initial: float, maximum: float, *, rng: Callable[[], float] = random.random
    ) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("backoff needs 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self.failures = 0
        self._rng = rng

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the base (up to the cap)."""
        base = min(self.maximum, self.initial * 2.0 ** min(self.failures, 62))
        self.failures += 1
        return base / 2 + self._rng() * base / 2

    def reset(self) -> None:
        self.failures = 0


@dataclasses.dataclass
class LinkOptions:
    """How to reach and authenticate to the relay."""

    host: str
    port: int
    secret: bytes
    role: str
    name: str
    services: Sequence[str] = ()
    ssl: ssl.SSLContext | None = None
    server_name: str | None = None
    pinned: bytes | None = None
    auth_timeout: float = 10.0
    keepalive: float | None = 15.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    #: Reach the relay over WebSocket at this URL (its ``--ws-listen``) instead of TCP.
    websocket: RelayURL | None = None
    #: The HTTP proxy of a WebSocket link (see :func:`.wsaddr.choose_proxy`).
    proxy: Proxy | None = None
    #: TLS context for an ``https://`` proxy (:func:`.tls.proxy_context`).
    proxy_ssl: SSLContext | None = None  # (``ssl`` above is a field here)

    @property
    def address(self) -> str:
        if self.websocket is not None:
            return self.websocket.url
        return format_address((self.host, self.port))

    @property
    def transport(self) -> str:
        """``tcp``, ``tls``, ``ws`` or ``wss``: how the link reaches the relay."""
        if self.websocket is not None:
            return "wss" if self.websocket.secure else "ws"
        return "tls" if self.ssl is not None else "tcp"

    def session_config(self) -> Config:
        if self.keepalive:
            return LINK_CONFIG.replace(
                keepalive_interval=self.keepalive, idle_timeout=3 * self.keepalive
            )
        return LINK_CONFIG


StreamHandler = Callable[[Stream], Awaitable[None]]


class Link:
    """Keeps one authenticated session to the relay; see the module docstring.

    Args:
        options: where and how to connect.
        handler: serves the streams the relay opens (agents); None refuses them.
    """

    def __init__(self, options: LinkOptions, handler: StreamHandler | None = None) -> None:
        self.options = options
        self._handler = handler
        self._session: Session | None = None
        self._ready = asyncio.Event()
        self.connections = 0

    @property
    def session(self) -> Session | None:
        """The current authenticated session, or None while (re)connecting."""
        session = self._session
        return session if session is not None and not session.is_closed else None

    async def wait_ready(self, timeout: float | None) -> Session:
        """The authenticated session, waiting up to ``timeout`` seconds for one."""
        while True:
            session = self.session
            if session is not None:
                return session
            self._ready.clear()
            await asyncio.wait_for(self._ready.wait(), timeout)

    async def run(self, stop: asyncio.Event) -> int:
        """Connect, and reconnect whenever the session drops, until ``stop`` is set.

        Returns 0 after ``stop`` (the session, if any, is left open for a graceful close:
        see :meth:`close`) or :data:`EXIT_AUTH` when authentication failed.
        """
        opts = self.options
        backoff = Backoff(opts.backoff_initial, opts.backoff_max)
        loop = asyncio.get_running_loop()
        stop_task = loop.create_task(stop.wait())
        try:
            while not stop.is_set():
                attempt = loop.create_task(self._connect())
                await asyncio.wait({attempt, stop_task}, return_when=asyncio.FIRST_COMPLETED)
                if not attempt.done():
                    attempt.cancel()
                    await asyncio.gather(attempt, return_exceptions=True)
                    break
                try:
                    session = attempt.result()
                except AuthFailed as exc:
                    log.error("authentication with the relay %s failed: %s", opts.address, exc)
                    return EXIT_AUTH
                except Mismatch as exc:
                    log.error("%s (relay %s)", exc, opts.address)
                    return EXIT_CONFIG
                except ProxyCertificateError as exc:
                    log.error("%s", exc)
                    return EXIT_AUTH
                except ssl.SSLCertVerificationError as exc:
                    log.error(
                        "the relay %s has an untrusted TLS certificate: %s",
                        opts.address,
                        exc.verify_message or exc,
                    )
                    return EXIT_AUTH
                except (TimeoutError, OSError, MioError, AuthError, TunnelProtocolError) as exc:
                    delay = backoff.next_delay()
                    log.warning(
                        "cannot connect to the relay %s: %s; retrying in %.1f s (attempt %d)",
                        opts.address,
                        self._why(exc),
                        delay,
                        backoff.failures,
                    )
                    await _sleep_unless(stop, delay)
                    continue
                self._session = session
                self.connections += 1
                self._ready.set()
                via = f" via the proxy {opts.proxy}" if opts.proxy is not None else ""
                announce(f"{opts.role} connected to {opts.address}{via}")
                up_since = loop.time()
                closed = loop.create_task(session.wait_closed())
                await asyncio.wait({closed, stop_task}, return_when=asyncio.FIRST_COMPLETED)
                if not closed.done():
                    closed.cancel()
                    await asyncio.gather(closed, return_exceptions=True)
                    break
                self._ready.clear()
                if loop.time() - up_since >= STABLE_AFTER:
                    backoff.reset()
                delay = backoff.next_delay()
                why = session.close_error
                log.warning(
                    "lost the relay %s (%s); reconnecting in %.1f s",
                    opts.address,
                    why if why is not None else "closed",
                    delay,
                )
                await _sleep_unless(stop, delay)
            return 0
        finally:
            stop_task.cancel()
            await asyncio.gather(stop_task, return_exceptions=True)

    async def close(self) -> None:
        """Close the session with FIN NO_ERROR and wait for the transport."""
        session = self._session
        if session is not None:
            session.close(ErrorCode.NO_ERROR)
            await session.wait_closed()

    async def _connect(self) -> Session:
        opts = self.options
        loop = asyncio.get_running_loop()
        deadline = loop.time() + opts.auth_timeout  # one timer: connect, TLS, authentication
        verdict: asyncio.Future[bool] = loop.create_future()
        handler = functools.partial(self._serve, verdict) if self._handler is not None else None
        try:
            session = await asyncio.wait_for(
                self._dial(handler if handler is not None else _refuse), opts.auth_timeout
            )
        except BaseException:
            verdict.cancel()
            raise
        try:
            digest = peer_certificate_digest(session)
            if opts.pinned is not None and (
                digest is None or not hmac.compare_digest(digest, opts.pinned)
            ):
                got = format_fingerprint(digest) if digest is not None else "none"
                raise AuthFailed(
                    f"relay certificate fingerprint {got} does not match the pinned "
                    f"{format_fingerprint(opts.pinned)}"
                )

            def binding(kind: str) -> bytes:
                if kind != BINDING_CERT:
                    return b""
                if digest is None:
                    raise AuthFailed("the relay binds to a TLS certificate but the link is plain")
                return digest

            control = await session.open_stream()
            welcome = await dialer_handshake(
                control,
                opts.secret,
                role=opts.role,
                name=opts.name,
                services=opts.services,
                binding=binding,
                timeout=max(0.001, deadline - loop.time()),
            )
            control.close()
        except BaseException:
            if not verdict.done():
                verdict.set_result(False)
            session.close(ErrorCode.NO_ERROR)
            raise
        verdict.set_result(True)
        if digest is not None and welcome.binding != BINDING_CERT:
            log.debug("the relay does not bind authentication to its certificate")
        if welcome.keepalive is not None and opts.keepalive and opts.keepalive > welcome.keepalive:
            log.warning(
                "--keepalive %g is longer than the relay's %g: the relay may drop this "
                "session as idle",
                opts.keepalive,
                welcome.keepalive,
            )
        return session

    async def _dial(self, handler: StreamHandler) -> Session:
        """The session to the relay, over TCP (TLS) or WebSocket, not yet authenticated."""
        opts = self.options
        config = opts.session_config()
        if opts.websocket is not None:
            from . import wslink  # needs websockets: checked at startup by the command line

            return await wslink.dial(
                opts.websocket,
                opts.proxy,
                opts.ssl,
                opts.server_name,
                lambda: Session(client=True, config=config, handler=handler),
                close_timeout=config.close_timeout,
                proxy_ssl=opts.proxy_ssl,
            )
        kwargs: dict[str, Any] = {}
        if opts.ssl is not None:
            kwargs["ssl_handshake_timeout"] = opts.auth_timeout
            if opts.server_name:
                kwargs["server_hostname"] = opts.server_name
        return await connect(
            opts.host, opts.port, ssl=opts.ssl, config=config, handler=handler, **kwargs
        )

    def _why(self, exc: BaseException) -> str:
        cause = exc.__cause__
        if self.options.ssl is not None and isinstance(exc, ConnectionError) and cause:
            if isinstance(cause, ssl.SSLError):
                return (
                    "the relay does not speak TLS (its answer is no TLS record): drop "
                    "--tls/--tls-ca/--tls-fingerprint, or give the relay --tls-cert"
                )
            return f"reset during the TLS handshake ({_describe(cause)})"
        return _describe(exc)

    async def _serve(self, verdict: asyncio.Future[bool], stream: Stream) -> None:
        # Streams may arrive before this side has checked the relay's proof: wait for it.
        if not await asyncio.shield(verdict):
            stream.reset(ErrorCode.REFUSED)
            return
        assert self._handler is not None
        await self._handler(stream)


async def _refuse(stream: Stream) -> None:
    stream.reset(ErrorCode.REFUSED)


async def _sleep_unless(stop: asyncio.Event, delay: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), delay)
    except TimeoutError:
        pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, AuthTimeout)) and not str(exc):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
