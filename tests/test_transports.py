"""Sessions over every kind of transport: TLS, Unix sockets, ``socketpair()``, an asyncio
stream pair taken over, on the default loop and on uvloop."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import tempfile
from collections.abc import Iterator

import pytest
from session_util import echo, eventually, roundtrip

import mio


@pytest.fixture
def unix_path() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="mio-") as tmp:  # short: sun_path is limited
        yield os.path.join(tmp, "s.sock")


async def exercise(client: mio.Session, streams: int = 5) -> None:
    """Echo traffic on several streams, small and beyond one window."""
    payloads = [b"%d" % i * (1 + 60_000 * (i % 2)) for i in range(streams)]
    opened = [await client.open_stream() for _ in payloads]
    results = await asyncio.gather(
        *(roundtrip(s, p) for s, p in zip(opened, payloads, strict=True))
    )
    assert results == payloads
    await eventually(lambda: client.stream_count == 0)


async def test_tls(loop_kind: str, tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = tls
    async with await mio.serve(echo, "127.0.0.1", 0, ssl=server_ctx) as server:
        client = await mio.connect("127.0.0.1", server.port, ssl=client_ctx)
        async with client:
            assert client.get_extra_info("ssl_object") is not None
            await exercise(client)


async def test_tls_rejects_an_untrusted_certificate(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, _ = tls
    async with await mio.serve(echo, "127.0.0.1", 0, ssl=server_ctx) as server:
        with pytest.raises(ssl.SSLError):
            await mio.connect("127.0.0.1", server.port, ssl=ssl.create_default_context())


async def test_unix_socket(loop_kind: str, unix_path: str) -> None:
    async with await mio.serve_unix(echo, unix_path) as server:
        assert server.is_serving()
        client = await mio.connect_unix(unix_path)
        async with client:
            await exercise(client)


async def test_session_from_socketpair(loop_kind: str) -> None:
    a, b = socket.socketpair()
    client = await mio.session_from_socket(a, client=True)
    server = await mio.session_from_socket(b, client=False, handler=echo)
    await exercise(client)
    pushed = await server.open_stream()  # and the other way round
    assert pushed.id == 2
    pushed.write(b"from the server")
    pushed.write_eof()
    incoming = await client.accept_stream()
    assert await incoming.read() == b"from the server"
    incoming.close()
    await pushed.wait_closed()
    client.close()
    await client.wait_closed()
    await server.wait_closed()


async def test_session_from_streams(loop_kind: str) -> None:
    """Bytes the StreamReader already buffered are not lost in the take-over."""
    ready = asyncio.Event()

    async def session_handler(session: mio.Session) -> None:
        stream = await session.open_stream()  # pushes bytes before the client takes over
        stream.write(b"early bytes")
        stream.write_eof()
        ready.set()

    async with await mio.serve(echo, "127.0.0.1", 0, session_handler=session_handler) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await ready.wait()
        await eventually(lambda: len(reader._buffer) >= 8)  # type: ignore[attr-defined]
        client = mio.session_from_streams(reader, writer, client=True)
        async with client:
            pushed = await asyncio.wait_for(client.accept_stream(), 5)
            assert await pushed.read() == b"early bytes"
            pushed.close()
            await exercise(client)


async def test_session_as_protocol_with_create_connection(loop_kind: str) -> None:
    loop = asyncio.get_running_loop()
    async with await mio.serve(echo, "127.0.0.1", 0) as server:
        _, client = await loop.create_connection(
            lambda: mio.Session(client=True), "127.0.0.1", server.port
        )
        async with client:
            assert client.get_extra_info("peername")[1] == server.port
            await exercise(client)
