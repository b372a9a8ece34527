"""Static conformance of mio's transports to :mod:`mio.abc` (checked by ``mypy --strict``).

Not a test module: ``tests/test_abc.py`` runs mypy on this file. Every assignment below
fails type checking if :class:`mio.Session`/:class:`mio.Stream` or
:class:`mio.quic.QuicSession`/:class:`mio.quic.QuicStream` stop satisfying the protocols.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import mio
import mio.abc
import mio.quic


def mio_session(session: mio.Session) -> mio.abc.Session:
    return session


def mio_stream(stream: mio.Stream) -> mio.abc.Stream:
    return stream


def quic_session(session: mio.quic.QuicSession) -> mio.abc.Session:
    return session


def quic_stream(stream: mio.quic.QuicStream) -> mio.abc.Stream:
    return stream


async def call(session: mio.abc.Session, request: bytes) -> bytes:
    """An application written once against the protocols."""
    async with await session.open_stream() as stream:
        await stream.send(request)
        stream.write_eof()
        return await stream.read()


async def echo(stream: mio.abc.Stream) -> None:
    async for chunk in stream:
        stream.write(chunk)
        await stream.drain()


async def uses_both() -> None:
    # A handler typed against the protocol serves either transport.
    handler: Callable[[mio.abc.Stream], Awaitable[None]] = echo
    server = await mio.serve(handler, "127.0.0.1", 0)
    quic_server = await mio.quic.serve(handler, "127.0.0.1", 0, certfile="c.pem")
    sessions: list[mio.abc.Session] = [
        await mio.connect("127.0.0.1", server.port),
        await mio.quic.connect("127.0.0.1", quic_server.port),
        *mio.pipe(),
    ]
    for session in sessions:
        await call(session, b"ping")
        async for stream in session:
            stream.reset(mio.ErrorCode.INTERNAL_ERROR)
        session.close(mio.ErrorCode.NO_ERROR)
        await session.aclose()
        await session.wait_closed()
        assert session.is_closed
    await asyncio.sleep(0)
