"""mio.quic specifics: the optional import, TLS, entry points, code mapping, QUIC-only paths.

The stream behaviour shared with MIO is in tests/conformance/ (run over QUIC there too).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import mio

pytestmark = pytest.mark.timeout(30)

HOST = "127.0.0.1"
T = 10.0


def test_import_without_aioquic_names_the_extra() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["aioquic"] = None  # as if it were not installed
        try:
            import mio.quic
        except ImportError as exc:
            print(exc)
        else:
            print("imported")
        import mio, mio.abc  # the core and the protocols do not need it
        print("core ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert "pip install 'mio-mux[quic]'" in first
    assert second == "core ok"


try:
    from mio import quic
except ImportError:  # no aioquic: only the import test above runs
    quic = None  # type: ignore[assignment]

needs_quic = pytest.mark.skipif(quic is None, reason="aioquic is not installed (mio-mux[quic])")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """``(certfile, keyfile, cafile)`` of a throwaway trustme CA."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", HOST)
    d: Path = tmp_path_factory.mktemp("quic")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    with (d / "cert.pem").open("wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    return str(d / "cert.pem"), str(d / "key.pem"), str(d / "ca.pem")


@contextlib.asynccontextmanager
async def listening(
    certs: tuple[str, str, str], handler: Any = None, **kwargs: Any
) -> AsyncIterator[Any]:
    certfile, keyfile, _ = certs
    server = await quic.serve(handler, HOST, 0, certfile=certfile, keyfile=keyfile, **kwargs)
    try:
        yield server
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), T)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@needs_quic
async def test_connect_to_a_closed_port_is_refused() -> None:
    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(quic.connect(HOST, free_udp_port(), verify=False), T)


@needs_quic
async def test_untrusted_certificate_fails_the_handshake(certs: tuple[str, str, str]) -> None:
    async with listening(certs) as server:
        with pytest.raises(mio.SessionClosedError, match="handshake failed"):
            await asyncio.wait_for(quic.connect(HOST, server.port), T)
        # without verification (tests only) the same server is reachable
        session = await asyncio.wait_for(quic.connect(HOST, server.port, verify=False), T)
        session.close()
        await session.wait_closed()


@needs_quic
async def test_wrong_server_name_fails_the_handshake(certs: tuple[str, str, str]) -> None:
    async with listening(certs) as server:
        with pytest.raises(mio.SessionClosedError):
            await asyncio.wait_for(
                quic.connect(HOST, server.port, cafile=certs[2], server_name="example.org"), T
            )


@needs_quic
async def test_serve_needs_a_certificate() -> None:
    with pytest.raises(ValueError, match="certificate"):
        await quic.serve(None, HOST, 0)


@needs_quic
async def test_handler_entry_points_and_extra_info(certs: tuple[str, str, str]) -> None:
    async def handler(stream: quic.QuicStream) -> None:
        data = await stream.read()
        if data == b"fail":
            raise RuntimeError("handler bug")
        stream.write(data.upper())

    async with listening(certs, handler) as server:
        session = await quic.connect(HOST, server.port, cafile=certs[2])
        async with session:
            assert session.is_client
            assert session.get_extra_info("alpn_protocol") == quic.ALPN
            assert session.get_extra_info("peername")[1] == server.port
            assert session.get_extra_info("sockname") is not None
            assert session.get_extra_info("quic") is session.quic
            stream = await session.open_stream()
            assert stream.id % 4 == 0  # client-initiated bidirectional
            assert stream.session is session
            stream.write(b"hello")
            stream.write_eof()
            assert await asyncio.wait_for(stream.read(), T) == b"HELLO"
            await asyncio.wait_for(stream.wait_closed(), T)
            assert stream.is_closed
            # a handler that raises resets its stream with INTERNAL_ERROR
            failing = await session.open_stream()
            failing.write(b"fail")
            failing.write_eof()
            with pytest.raises(mio.StreamResetError) as info:
                await asyncio.wait_for(failing.read(), T)
            assert info.value.code == mio.ErrorCode.INTERNAL_ERROR
            assert len(server.sessions) == 1
        assert session.is_closed


@needs_quic
async def test_server_close_code_reaches_the_client(certs: tuple[str, str, str]) -> None:
    async with listening(certs) as server:
        session = await quic.connect(HOST, server.port, cafile=certs[2])
        stream = await session.open_stream()
        await stream.send(b"x")
        for _ in range(100):
            if server.sessions:
                break
            await asyncio.sleep(0.01)
        server.close(mio.ErrorCode.EXHAUSTED)
        with pytest.raises(mio.SessionClosedError) as info:
            await asyncio.wait_for(stream.read(), T)
        assert info.value.code == mio.ErrorCode.EXHAUSTED
        await asyncio.wait_for(session.wait_closed(), T)
        assert session.close_error is not None
        assert session.close_error.code == mio.ErrorCode.EXHAUSTED


@needs_quic
async def test_codes_outside_the_quic_range_are_rejected(certs: tuple[str, str, str]) -> None:
    async with listening(certs) as server:
        session = await quic.connect(HOST, server.port, cafile=certs[2])
        async with session:
            stream = await session.open_stream()
            with pytest.raises(ValueError, match="QUIC application error code"):
                stream.reset(-1)
            with pytest.raises(ValueError, match="QUIC application error code"):
                session.close(1 << 62)
            stream.reset(mio.ErrorCode.NO_ERROR)


@needs_quic
async def test_peer_unidirectional_streams_are_not_accepted(certs: tuple[str, str, str]) -> None:
    accepted: asyncio.Queue[quic.QuicSession] = asyncio.Queue()
    async with listening(certs, session_handler=accepted.put) as server:
        session = await quic.connect(HOST, server.port, cafile=certs[2])
        async with session:
            peer = await asyncio.wait_for(accepted.get(), T)
            conn = session.quic
            uni = conn.get_next_available_stream_id(is_unidirectional=True)
            conn.send_stream_data(uni, b"not for the stream API")
            stream = await session.open_stream()
            await stream.send(b"after")
            got = await asyncio.wait_for(peer.accept_stream(), T)
            assert got.id == stream.id
            assert peer.stream_count == 1


@needs_quic
async def test_write_pending_and_buffered_report_the_windows(certs: tuple[str, str, str]) -> None:
    window = 64 * 1024
    config = mio.Config(initial_window=window, max_window=window, write_buffer_high=window)
    accepted: asyncio.Queue[quic.QuicSession] = asyncio.Queue()
    async with listening(certs, config=config, session_handler=accepted.put) as server:
        session = await quic.connect(HOST, server.port, cafile=certs[2], config=config)
        async with session:
            peer_session = await asyncio.wait_for(accepted.get(), T)
            stream = await session.open_stream()
            payload = os.urandom(10 * window)
            stream.write(payload)
            peer = await asyncio.wait_for(peer_session.accept_stream(), T)
            drain = asyncio.ensure_future(stream.drain())
            done, _ = await asyncio.wait({drain}, timeout=0.2)
            assert not done
            assert stream.write_pending > window
            assert peer.buffered <= window
            assert await asyncio.wait_for(peer.readexactly(len(payload)), T) == payload
            await asyncio.wait_for(drain, T)


@needs_quic
async def test_idle_timeout_ends_a_silent_session(certs: tuple[str, str, str]) -> None:
    async with listening(certs) as server:
        config = mio.Config(idle_timeout=0.3)
        session = await quic.connect(HOST, server.port, cafile=certs[2], config=config)
        await asyncio.wait_for(session.wait_closed(), T)
        assert session.close_error is not None
        assert session.close_error.code is None  # a transport-level end, not a peer's code
        assert "Idle timeout" in str(session.close_error)


@needs_quic
async def test_keepalive_keeps_an_idle_session_open(certs: tuple[str, str, str]) -> None:
    config = mio.Config(idle_timeout=1.5, keepalive_interval=0.1)
    async with listening(certs, config=config) as server:
        session = await quic.connect(HOST, server.port, cafile=certs[2], config=config)
        async with session:
            await asyncio.sleep(3.0)  # twice the idle timeout, without application data
            assert not session.is_closed
            stream = await session.open_stream()
            await stream.send(b"still here")
