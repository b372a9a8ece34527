"""Admission helpers of the relay's agent listener: TLS or plain, told apart by the first
octet; answers to a peer on the wrong one; resets; binding errors that name the address.

The relay (:mod:`.relay`) accepts agent connections itself so that it can refuse them
before any TLS state exists and hold one deadline from TCP connect to authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Awaitable, Callable

from .._oneport import create_on_one_port
from ..config import Config
from ..session import Session
from ..stream import Stream
from ..wire import ErrorCode
from .addr import format_address
from .protocol import error_message, write_message

__all__ = (
    "ListenError",
    "TLS_HANDSHAKE",
    "NOT_TLS_ANSWER",
    "TLS_REQUIRED",
    "BACKLOG",
    "reset",
    "peek",
    "listen",
    "tell_tls_required",
)


class ListenError(OSError):
    """A listening socket could not be bound; the message names the option and address."""


#: The first octet of a TLS handshake record (a MIO frame starts with a stream id < 2**31,
#: in practice 0x00).
log = logging.getLogger("mio.tunnel.relay")  # the relay's log: it admits its agents

TLS_HANDSHAKE = 0x16
#: Listen backlog of the agent listener.
BACKLOG = 128
#: What a plain relay answers to a TLS handshake.
NOT_TLS_ANSWER = b"MIO-TUNNEL PLAIN TCP\r\n"
TLS_REQUIRED = "the relay speaks TLS: add --tls-ca or --tls-fingerprint (or --tls)"


def reset(sock: socket.socket) -> None:
    """Close an accepted socket with RST (nothing was said on it)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def tell_tls_required(sock: socket.socket, config: Config, deadline: float) -> None:
    """A plain mio peer on a TLS relay: answer its first stream, in plain mio, with an
    ``error`` saying so, then close."""
    loop = asyncio.get_running_loop()
    told = loop.create_future()

    async def answer(stream: Stream) -> None:
        if not told.done():
            told.set_result(None)
            write_message(stream, error_message("tls-required", TLS_REQUIRED))
            stream.write_eof()
        else:
            stream.reset(ErrorCode.REFUSED)

    try:
        _, session = await loop.connect_accepted_socket(
            lambda: Session(client=False, config=config, handler=answer), sock
        )
    except OSError:
        sock.close()
        return
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(told, max(0.001, deadline - loop.time()))
    session.close(ErrorCode.REFUSED)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(session.wait_closed(), 1.0)


async def listen(
    what: str,
    host: str | None,
    port: int,
    create: Callable[[int], Awaitable[asyncio.Server]],
) -> asyncio.Server:
    """``create(port)``, its ``OSError`` turned into a :class:`ListenError` naming ``what``
    and the address; port 0 gives every listening socket the same port."""
    try:
        return await create_on_one_port(create, port)
    except OSError as exc:
        where = format_address((host or "", port))
        raise ListenError(
            exc.errno, f"{what} {where}: cannot listen: {exc.strerror or exc}"
        ) from exc


async def peek(sock: socket.socket, timeout: float) -> bytes:
    """The first octet the peer sent, left in the socket (b"" at EOF); raises
    :class:`asyncio.TimeoutError` when nothing came within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            return b""
        readable: asyncio.Future[None] = loop.create_future()
        fd = sock.fileno()
        loop.add_reader(fd, _set_done, readable)
        try:
            await asyncio.wait_for(readable, max(0.0, deadline - loop.time()))
        finally:
            loop.remove_reader(fd)


async def first_octet(
    sock: socket.socket, origin: str, timeout: float, auth_timeout: float
) -> bytes | None:
    """The first octet an accepted peer sent (left in the socket, to tell TLS from plain),
    or None, the socket closed and the reason logged: nothing came within ``timeout``
    (reset; ``auth_timeout`` is the limit the log line names) or the peer went away."""
    try:
        first = await peek(sock, timeout)
    except TimeoutError:
        log.warning("%s: no authentication within %g s: dropping it", origin, auth_timeout)
        reset(sock)
        return None
    if not first:
        log.debug("%s: disconnected before authenticating", origin)
        sock.close()
        return None
    return first


def refuse_tls(sock: socket.socket) -> None:
    """A TLS ClientHello on a plain listener: answer with something that is not a TLS
    record, so the peer's TLS library reports a protocol error at once (rather than a
    reset, which the relay's limits also cause), and close."""
    with contextlib.suppress(OSError):
        sock.send(NOT_TLS_ANSWER)
    sock.close()


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
