"""Listening with port 0 on several addresses: one port for all of them.

``loop.create_server(host=None, port=0)`` binds one socket per address family (``0.0.0.0``
and ``::``) and the kernel picks a *different* free port for each, so "the" port a caller
reads back (``Server.port``, a readiness line) is wrong for half the addresses. The same
happens with a name that resolves to one address per family. Here a port free on every
address is found first with probe sockets (bound *and* listening, so a clash that only
``listen()`` reports is seen too), then the server is created again on that port.

Addresses that cannot share a port are left as asyncio binds them (one port each): two of
one family (``["0.0.0.0", "127.0.0.1"]``: the wildcard covers the other). A server made
with a listening socket missing (uvloop's way of reporting a failed ``listen()``) is
closed, with ``OSError``.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ("create_on_one_port", "not_listening")

_S = TypeVar("_S", bound=asyncio.AbstractServer)

_ATTEMPTS = 8


def _sockets(server: asyncio.AbstractServer) -> list[Any]:
    return list(getattr(server, "sockets", ()) or ())


def _probe(addresses: list[tuple[int, tuple[Any, ...]]], port: int) -> int:
    """Bind and listen on every address with ``port`` (0: the first address picks one);
    return the port, or 0 if some address has it taken. Probe sockets are closed."""
    probes: list[socket.socket] = []
    try:
        for family, address in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            probes.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((address[0], port, *address[2:]))
                sock.listen(1)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return 0
                raise
            if not port:
                port = int(sock.getsockname()[1])
        return port
    finally:
        for sock in probes:
            sock.close()


def not_listening(server: asyncio.AbstractServer) -> bool:
    """True if a listening socket of ``server`` failed: uvloop reports a failed ``listen()``
    (an address in use) as ``None`` in ``server.sockets`` or a socket without a file
    descriptor, where asyncio's own loop raises."""
    return any(s is None or s.fileno() < 0 for s in _sockets(server))


def _close(server: asyncio.AbstractServer) -> None:
    # close() stops listening at once; not waiting for wait_closed(): on Python 3.12+ it also
    # waits for connections the discarded server accepted meanwhile (none is expected: its
    # port was never announced), which must not hold up the server that replaces it.
    server.close()


async def create_on_one_port(create: Callable[[Any], Awaitable[_S]], port: int | None) -> _S:
    """``await create(port)``; with port 0, every listening socket of the result shares one
    port when the addresses allow it (one per address family). Raises ``OSError``
    (EADDRINUSE) if no port is free on every address after a few picks."""
    server = await create(port)
    if not_listening(server):
        _close(server)
        raise OSError(errno.EADDRINUSE, "cannot listen on every address: an address is in use")
    if port != 0:  # a fixed port, or None (``sock=`` given, or asyncio's own default)
        return server
    sockets = _sockets(server)
    families = [s.family for s in sockets]
    if len(set(s.getsockname()[1] for s in sockets)) <= 1 or len(set(families)) < len(families):
        return server  # one port already, or addresses that cannot share one
    addresses = [(s.family, s.getsockname()) for s in sockets]
    for _ in range(_ATTEMPTS):
        # A fresh pick on every address (the server still holds its ports meanwhile)
        try:
            chosen = _probe(addresses, 0)
        except BaseException:  # no socket to probe with (EMFILE), an address gone, ...
            _close(server)
            raise
        if not chosen:
            continue
        _close(server)
        try:
            server = await create(chosen)
        except OSError as exc:  # taken between the probe and the bind: pick again
            if exc.errno != errno.EADDRINUSE:
                raise
            server = await create(0)
            continue
        sockets = _sockets(server)
        if not not_listening(server) and len(set(s.getsockname()[1] for s in sockets)) == 1:
            return server
    _close(server)
    raise OSError(
        errno.EADDRINUSE, f"no port free on every listening address after {_ATTEMPTS} picks"
    )
