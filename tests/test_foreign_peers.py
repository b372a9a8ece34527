"""Errors that say what happened when the peer does not speak MIO (TLS on one side only,
an HTTP client), on loopback TCP."""

from __future__ import annotations

import asyncio
import logging
import ssl

import pytest
import trustme
from session_util import Accepted, echo

import mio
from mio.session import _foreign_protocol


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


async def test_tls_client_against_a_plain_server_is_named(
    tls: tuple[ssl.SSLContext, ssl.SSLContext], caplog: pytest.LogCaptureFixture
) -> None:
    accepted = Accepted()
    async with await mio.serve(echo, "127.0.0.1", 0, session_handler=accepted) as server:
        with pytest.raises(ConnectionResetError) as info:
            await asyncio.wait_for(
                mio.connect("127.0.0.1", server.port, ssl=tls[1], server_hostname="127.0.0.1"),
                5,
            )
        assert "TLS handshake with 127.0.0.1:" in str(info.value)
        assert "does the server speak TLS" in str(info.value)
        session = await accepted.get()
        await asyncio.wait_for(session.wait_closed(), 5)
        error = session.close_error
        assert error is not None
        assert "the peer sent TLS, not MIO: is TLS enabled on one side only?" in str(error)
        assert any(
            "127.0.0.1:" in r.getMessage() and "sent TLS" in r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING
        )


async def test_plain_client_against_a_tls_server_gets_a_hint(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    async with await mio.serve(echo, "127.0.0.1", 0, ssl=tls[0]) as server:
        session = await mio.connect("127.0.0.1", server.port)
        stream = await session.open_stream()
        stream.write(b"hello")
        with pytest.raises(mio.SessionClosedError) as info:
            await asyncio.wait_for(stream.read(), 10)
        assert "before sending anything" in str(info.value)
        assert "TLS" in str(info.value)
        session.close()
        await session.wait_closed()


async def test_http_client_is_named() -> None:
    accepted = Accepted()
    async with await mio.serve(echo, "127.0.0.1", 0, session_handler=accepted) as server:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        session = await accepted.get()
        await asyncio.wait_for(session.wait_closed(), 5)
        assert "the peer sent HTTP, not MIO" in str(session.close_error)
        writer.close()


@pytest.mark.parametrize(
    ("first", "name"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01", "TLS"),
        (b"POST /x ", "HTTP"),
        (b"HTTP/1.1", "HTTP"),
        (b"PRI * HT", "HTTP/2"),
        (b"SSH-2.0-", "SSH"),
        (b"\x00\x00\x00\x01\x00\x00\x00\x0c", None),  # a MIO OPEN
        (b"", None),
    ],
)
def test_foreign_protocol_detection(first: bytes, name: str | None) -> None:
    assert _foreign_protocol(first) == name
