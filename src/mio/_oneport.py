"""Listening with port 0 on several addresses: one port for all of them.

``loop.create_server(host=None, port=0)`` binds one socket per address family (``0.0.0.0``
and ``::``) and the kernel picks a *different* free port for each, so "the" port a caller
reads back (``Server.port``, a readiness line) is wrong for half the addresses. The same
happens with a name that resolves to several addresses. Here the first socket's port is
taken and the server is bound again on that port everywhere.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ("create_on_one_port",)

_S = TypeVar("_S", bound=asyncio.AbstractServer)

_ATTEMPTS = 8


def _ports(server: asyncio.AbstractServer) -> list[int]:
    return [int(s.getsockname()[1]) for s in getattr(server, "sockets", ())]


async def create_on_one_port(create: Callable[[int], Awaitable[_S]], port: int | None) -> _S:
    """``await create(port)``; with port 0 (or None), every listening socket of the result
    shares one port (the first socket's, or a fresh pick when the other families already use
    it). Raises ``OSError`` (EADDRINUSE) if no port is free on every address after a few
    picks."""
    server = await create(port or 0)
    if port:
        return server
    for _ in range(_ATTEMPTS):
        ports = _ports(server)
        if len(set(ports)) <= 1:
            return server
        chosen = ports[0]
        server.close()
        await server.wait_closed()
        try:
            return await create(chosen)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
        server = await create(0)  # that port is taken on another address: pick again
    server.close()
    raise OSError(
        errno.EADDRINUSE, f"no port free on every listening address after {_ATTEMPTS} picks"
    )
