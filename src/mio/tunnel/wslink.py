"""The relay link over WebSocket (``ws://``/``wss://``), optionally through an HTTP proxy.

The dialer (:func:`dial`) opens the WebSocket with ``websockets`` (its ``proxy=`` does the
HTTP CONNECT, with Basic credentials from the proxy URL; TLS to the relay runs end to end
through the tunnel the proxy opened) and runs a mio session over it (:mod:`mio._ws`); the
tunnel's authentication then runs on that session exactly as over TCP, bound to the
relay's certificate with ``wss://``. Every failure is turned into one line naming the
culprit (:class:`LinkError`): the proxy, its answer, the relay's HTTP answer, TLS.

The relay (:func:`accept`) takes sockets its own accept loop admitted (so the limits on
connections not yet authenticated hold before any TLS or HTTP state exists), runs TLS if it
has a certificate, then the WebSocket opening handshake for ``--ws-path`` only.

Needs ``websockets``: ``pip install 'mio-mux[ws]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import urllib.parse
from collections.abc import Callable
from typing import Any

try:
    from websockets.asyncio.client import connect as ws_connect
    from websockets.asyncio.server import Server, ServerConnection
    from websockets.datastructures import Headers
    from websockets.exceptions import (
        InvalidHandshake,
        InvalidMessage,
        InvalidProxyMessage,
        InvalidProxyStatus,
        InvalidStatus,
        WebSocketException,
    )
    from websockets.http11 import Request, Response
    from websockets.protocol import State
    from websockets.server import ServerProtocol
except ImportError as _exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "WebSocket relay links need websockets >= 17, an optional dependency: "
        f"pip install 'mio-mux[ws]' ({_exc})"
    ) from _exc

from .. import _ws
from .._version import __version__
from ..session import Session
from .admission import TLS_HANDSHAKE, first_octet, refuse_tls, reset
from .auth import Mismatch
from .wsaddr import Proxy, ProxyCertificateError, RelayURL

__all__ = ("LinkError", "dial", "accept", "TLS_REQUIRED_WS", "USER_AGENT")

log = logging.getLogger("mio.tunnel.relay")

USER_AGENT = f"mio-tunnel/{__version__}"
#: What a wss:// relay answers (HTTP 400, in plain text) to a plain HTTP request.
TLS_REQUIRED_WS = "this relay speaks TLS on its WebSocket port: use wss://"
#: Seconds a rejected WebSocket request may take to leave before the socket is dropped.
_REJECT_LINGER = 1.0


class LinkError(OSError):
    """A WebSocket link could not be opened; the message says where it failed."""


def _options(close_timeout: float) -> dict[str, Any]:
    """websockets' settings on both sides: mio does keepalives and compression-free framing."""
    return {
        "ping_interval": None,
        "close_timeout": close_timeout,
        "max_queue": _ws.MAX_QUEUE,
        "write_limit": _ws.WRITE_LIMIT,
    }


# ---------------------------------------------------------------------- dialer
async def dial(
    relay: RelayURL,
    proxy: Proxy | None,
    context: ssl.SSLContext | None,
    server_name: str | None,
    make_session: Callable[[], Session],
    close_timeout: float = 5.0,
    proxy_ssl: ssl.SSLContext | None = None,
) -> Session:
    """Open the WebSocket to ``relay`` (through ``proxy``; over TLS with ``proxy_ssl``, by
    default the system's CAs, for an ``https://`` one) and return the mio session over
    it, made by ``make_session``. Raises :class:`LinkError` (or :class:`~.auth.Mismatch`
    for TLS on one side only, :class:`ssl.SSLCertVerificationError` for an untrusted
    relay, :class:`~.wsaddr.ProxyCertificateError` for an untrusted proxy) with the
    culprit named; the caller bounds the time."""
    kwargs: dict[str, Any] = {}
    if relay.secure:
        kwargs["ssl"] = context if context is not None else ssl.create_default_context()
        kwargs["server_hostname"] = server_name or relay.host
    if proxy is not None and proxy.secure:
        proxy_ssl = proxy_ssl if proxy_ssl is not None else ssl.create_default_context()
        kwargs["proxy_ssl"] = proxy_ssl
    try:
        return await _dial(relay, proxy, make_session, close_timeout, kwargs)
    except (ssl.SSLError, LinkError) as exc:
        cause = exc if isinstance(exc, ssl.SSLError) else exc.__cause__
        if proxy is None or not proxy.secure or proxy_ssl is None:
            raise
        if not isinstance(cause, ssl.SSLError | ConnectionResetError):
            raise
        # TLS failed with the proxy or with the relay behind it: try the proxy alone.
        culprit = await _proxy_tls_problem(proxy, proxy_ssl)
        if culprit is not None:
            raise culprit from exc
        raise


async def _proxy_tls_problem(proxy: Proxy, context: ssl.SSLContext) -> Exception | None:
    """What is wrong with TLS to ``proxy`` on its own (None if a handshake works)."""
    try:
        async with asyncio.timeout(5.0):
            _, writer = await asyncio.open_connection(proxy.host, proxy.port, ssl=context)
    except ssl.SSLCertVerificationError as exc:
        return ProxyCertificateError(
            f"the proxy {proxy} has an untrusted TLS certificate: "
            f"{exc.verify_message or exc}: give --proxy-ca FILE (its CA) or use the proxy's "
            "http:// address"
        )
    except ssl.SSLError as exc:
        return LinkError(
            f"TLS with the proxy {proxy} failed ({exc.reason or exc}): is it an https:// "
            "proxy (give --proxy http://... if it is a plain HTTP proxy)?"
        )
    except (OSError, TimeoutError):
        return None  # (not a TLS problem: the first error said what happened)
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return None


async def _dial(
    relay: RelayURL,
    proxy: Proxy | None,
    make_session: Callable[[], Session],
    close_timeout: float,
    kwargs: dict[str, Any],
) -> Session:
    try:
        connection = await ws_connect(
            relay.url,
            proxy=proxy.url if proxy is not None else None,
            open_timeout=None,
            compression=None,
            max_size=_ws.MAX_MESSAGE,
            user_agent_header=USER_AGENT,
            **_options(close_timeout),
            **kwargs,
        )
    except ssl.SSLCertVerificationError:
        raise
    except InvalidProxyStatus as exc:
        raise LinkError(_proxy_refused(proxy, relay, exc.response)) from exc
    except InvalidProxyMessage as exc:
        raise LinkError(
            f"the proxy {proxy} did not answer the CONNECT with HTTP: is it an HTTP proxy?"
        ) from exc
    except InvalidStatus as exc:
        response = exc.response
        body = _body(response)
        if response.status_code == 400 and TLS_REQUIRED_WS in body:
            raise Mismatch(TLS_REQUIRED_WS) from exc
        if response.status_code == 404:
            said = f": it says {body!r}" if body else ""
            raise LinkError(
                f"the relay has no WebSocket endpoint at {relay.path} (HTTP 404{said}): "
                "give --relay the path of the relay's --ws-path"
            ) from exc
        raise LinkError(
            "the WebSocket upgrade was refused with HTTP "
            f"{response.status_code} {response.reason_phrase}" + (f" ({body})" if body else "")
        ) from exc
    except InvalidMessage as exc:
        raise LinkError(
            "the answer to the WebSocket upgrade is not HTTP: is that the relay's "
            "--ws-listen port (not --listen)?"
        ) from exc
    except InvalidHandshake as exc:
        raise LinkError(f"WebSocket handshake failed: {exc}") from exc
    except WebSocketException as exc:  # anything else websockets may say: still one line
        raise LinkError(f"WebSocket connection failed: {exc}") from exc
    except ssl.SSLError as exc:
        if getattr(exc, "reason", None) in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE"):
            raise LinkError(
                "the relay does not speak TLS on that port (its answer is no TLS record): "
                "use ws://, or give the relay --tls-cert"
            ) from exc
        raise LinkError(f"TLS handshake failed: {exc.reason or exc}") from exc
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
        if isinstance(exc, ConnectionResetError) and relay.secure:
            raise LinkError(
                "reset during the TLS handshake: does the relay speak TLS on that port "
                "(use ws:// if not)?"
            ) from exc
        if proxy is not None:
            raise LinkError(f"cannot reach the proxy {proxy}: {why}") from exc
        raise LinkError(why) from exc
    session = make_session()
    _ws.attach(connection, session)
    return session


def _proxy_refused(proxy: Proxy | None, relay: RelayURL, response: Response) -> str:
    status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
    target = f"{relay.host}:{relay.port}"
    if response.status_code == 407:
        if proxy is not None and proxy.username is None:
            hint = "it wants credentials: --proxy http://USER:PASSWORD@HOST:PORT"
        else:
            hint = "it did not accept the user name and password of --proxy"
        return f"the proxy {proxy} refused the CONNECT to {target} with {status}: {hint}"
    return f"the proxy {proxy} refused the CONNECT to {target} with {status}"


def _body(response: Response) -> str:
    try:
        return bytes(response.body or b"").decode("utf-8", "replace").strip()[:200]
    except (TypeError, ValueError):  # pragma: no cover - not bytes
        return ""


# ---------------------------------------------------------------------- relay
class _Accepting(Server):
    """The ``Server`` websockets' server connections need; the relay accepts the
    sockets itself (see :func:`accept`)."""

    def __init__(self) -> None:
        super().__init__(_no_listener, _no_handler, log)

    def is_serving(self) -> bool:
        return True


async def _no_listener() -> asyncio.Server:  # pragma: no cover - never called
    raise RuntimeError("the relay accepts WebSocket connections itself")


async def _no_handler(connection: ServerConnection) -> None:
    """Run by websockets for every connection: the relay drives it (:func:`accept`)."""
    task = asyncio.current_task()
    if task is not None:
        connection.server.handler_tasks.discard(task)


async def accept(
    sock: socket.socket,
    origin: str,
    *,
    path: str,
    context: ssl.SSLContext | None,
    timeout: float,
    close_timeout: float = 5.0,
) -> ServerConnection | None:
    """The open WebSocket on an accepted socket, TLS (with ``context``) and the opening
    handshake for ``path`` done within ``timeout``; None (the socket closed, the reason
    logged) when the peer went away, was too slow, or asked for something else."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    first = await first_octet(sock, origin, timeout, timeout)
    if first is None:
        return None
    speaks_tls = first[0] == TLS_HANDSHAKE
    if speaks_tls and context is None:
        log.warning(
            "%s speaks TLS (wss://) but this relay's WebSocket port is plain (ws://): "
            "give the relay --tls-cert and --tls-key, or use ws:// on that peer",
            origin,
        )
        refuse_tls(sock)
        return None
    if context is not None and not speaks_tls:
        log.warning(
            "%s speaks plain HTTP (ws://) but this relay's WebSocket port speaks TLS: use "
            "wss:// on that peer",
            origin,
        )
        await _answer_plain(sock, 400, "Bad Request", TLS_REQUIRED_WS)
        return None

    server = _Accepting()
    connection = ServerConnection(
        ServerProtocol(max_size=_ws.MAX_MESSAGE), server, **_options(close_timeout)
    )
    kwargs: dict[str, Any] = {}
    if context is not None:
        kwargs = {"ssl": context, "ssl_handshake_timeout": max(0.001, timeout)}
    try:
        await asyncio.wait_for(
            loop.connect_accepted_socket(lambda: connection, sock, **kwargs),
            max(0.001, deadline - loop.time()),
        )
    except TimeoutError:
        log.warning("%s: no authentication within %g s: dropping it", origin, timeout)
        reset(sock)
        return None
    except (OSError, ssl.SSLError) as exc:
        log.warning("%s: TLS handshake failed: %s", origin, exc)
        reset(sock)
        return None
    refused: list[str] = []

    def check(conn: ServerConnection, request: Request) -> Response | None:
        wanted = urllib.parse.urlsplit(request.path).path
        if wanted != urllib.parse.urlsplit(path).path:
            refused.append(f"asked for {wanted!r}, not --ws-path {path!r}")
            return conn.respond(404, f"no mio tunnel at {wanted}: this relay serves {path}")
        return None

    try:
        await asyncio.wait_for(
            connection.handshake(check, None, server_header=USER_AGENT),
            max(0.001, deadline - loop.time()),
        )
    except TimeoutError:
        log.warning("%s: no authentication within %g s: dropping it", origin, timeout)
        connection.transport.abort()
        return None
    if connection.protocol.state is not State.OPEN:
        why = refused[0] if refused else _handshake_error(connection)
        log.warning("%s: WebSocket request refused: %s", origin, why)
        connection.transport.close()  # after the HTTP answer
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(connection.wait_closed(), _REJECT_LINGER)
        connection.transport.abort()
        return None
    return connection


def _handshake_error(connection: ServerConnection) -> str:
    exc = connection.protocol.handshake_exc
    return str(exc) if exc is not None else "not a WebSocket upgrade"


async def _answer_plain(sock: socket.socket, status: int, reason: str, text: str) -> None:
    """An HTTP answer on a raw socket, then close (for a plain request on a TLS port)."""
    body = (text + "\n").encode()
    headers = Headers(
        {"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body))}
    )
    headers["Connection"] = "close"
    data = f"HTTP/1.1 {status} {reason}\r\n".encode() + headers.serialize() + body
    loop = asyncio.get_running_loop()
    with contextlib.suppress(OSError, asyncio.TimeoutError):
        await asyncio.wait_for(loop.sock_sendall(sock, data), _REJECT_LINGER)
        sock.shutdown(socket.SHUT_WR)
        # Read the request away (a close with unread input would reset the answer).
        while await asyncio.wait_for(loop.sock_recv(sock, 65536), _REJECT_LINGER):
            pass
    sock.close()
