"""Ending streams and sessions: half-close in each direction, graceful close, resets with every
code, RST NO_ERROR as "closed", linger, session FIN, transport death, aclose vs close."""

from __future__ import annotations

import asyncio

import pytest
from session_util import (
    DATA,
    DATA_HFR,
    RST,
    Accepted,
    RawPeer,
    eventually,
    mio_pair,
    no_new_tasks,
    pending_tasks,
    raw_server,
)

import mio
from mio.wire import ErrorCode


async def test_half_close_client_side_first(loop_kind: str) -> None:
    async def handler(stream: mio.Stream) -> None:
        request = await stream.read()  # until the client's half-close
        stream.write(b"got " + request)  # our direction is still open

    async with mio_pair(handler) as (client, server):
        stream = await client.open_stream()
        stream.write(b"question")
        stream.write_eof()
        with pytest.raises(mio.StreamClosedError):
            stream.write(b"more")
        assert await stream.read() == b"got question"
        await stream.wait_closed()
        assert stream.is_closed
        await eventually(lambda: client.stream_count == 0 and server.stream_count == 0)


async def test_half_close_server_side_first() -> None:
    async with mio_pair(None) as (client, server):
        stream = await client.open_stream()
        stream.write(b"hi")
        peer = await server.accept_stream()
        peer.write(b"announcement")
        peer.write_eof()
        assert await stream.read() == b"announcement"
        assert stream.at_eof()
        assert not stream.is_closed
        stream.write(b" and a reply")  # the client's direction still works
        stream.write_eof()
        assert await peer.read() == b"hi and a reply"
        await stream.wait_closed()
        await peer.wait_closed()
        assert client.stream_count == 0
        assert server.stream_count == 0


async def test_graceful_close_both_sides_forgets_the_stream() -> None:
    async with mio_pair(None) as (client, server):
        streams = [await client.open_stream() for _ in range(10)]
        for s in streams:
            s.write(b"x")
            s.write_eof()
        assert client.stream_count == 10
        for _ in streams:
            peer = await server.accept_stream()
            assert await peer.read() == b"x"
            peer.close()
            await peer.wait_closed()
        for s in streams:
            assert await s.read() == b""
            await s.wait_closed()
        assert client.stream_count == 0
        assert server.stream_count == 0


ABORT_CODES = [c for c in ErrorCode if c != ErrorCode.NO_ERROR]


@pytest.mark.parametrize("code", ABORT_CODES, ids=[c.name for c in ABORT_CODES])
async def test_reset_code_reaches_the_peer(code: ErrorCode) -> None:
    expected = {
        ErrorCode.REFUSED: mio.StreamRefusedError,
        ErrorCode.CANCEL: mio.StreamCancelledError,
    }.get(code, mio.StreamResetError)
    async with mio_pair(None) as (client, server):
        stream = await client.open_stream()
        stream.write(b"before")
        peer = await server.accept_stream()
        assert await peer.readexactly(6) == b"before"
        pending_read = asyncio.ensure_future(peer.read())
        await asyncio.sleep(0)
        stream.reset(code)
        with pytest.raises(expected) as info:
            await pending_read
        assert type(info.value) is expected
        assert info.value.code == code
        assert info.value.remote
        assert info.value.stream_id == stream.id
        with pytest.raises(expected):
            peer.write(b"x")
        with pytest.raises(mio.StreamResetError) as local:
            await stream.read()
        assert not local.value.remote
        await eventually(lambda: client.stream_count == 0 and server.stream_count == 0)
        # The session is unharmed.
        other = await client.open_stream()
        other.write(b"ok")
        other.write_eof()
        assert await (await server.accept_stream()).read() == b"ok"


async def test_rst_no_error_means_closed() -> None:
    async with mio_pair(None) as (client, server):
        stream = await client.open_stream()
        stream.write(b"open")
        peer = await server.accept_stream()
        peer.write(b"last words")
        peer.reset(ErrorCode.NO_ERROR)
        await eventually(lambda: client.stream_count == 0)
        assert await stream.read() == b"last words"  # what arrived stays readable
        assert await stream.read() == b""  # then end of stream
        with pytest.raises(mio.StreamClosedError):
            stream.write(b"x")


async def test_rst_no_error_wakes_a_blocked_reader() -> None:
    async with mio_pair(None) as (client, server):
        stream = await client.open_stream()
        stream.write(b"open")
        peer = await server.accept_stream()
        reading = asyncio.ensure_future(stream.read(100))
        await asyncio.sleep(0.01)
        assert not reading.done()
        peer.reset(ErrorCode.NO_ERROR)
        assert await asyncio.wait_for(reading, 5) == b""


async def test_close_never_sends_rst_in_the_graceful_path() -> None:
    """The peer ended its direction first: the handler's return half-closes, no RST."""

    async def handler(stream: mio.Stream) -> None:
        assert await stream.read() == b"request"
        stream.write(b"bye")  # then the handler returns: Stream.close()

    accepted = Accepted()
    async with await mio.serve(handler, "127.0.0.1", 0, session_handler=accepted) as server:
        raw = await RawPeer.connect(server.port)
        session = await accepted.get()
        raw.open(2)
        raw.data(2, b"request", hfr=True)
        data = await raw.expect([DATA, DATA_HFR], 2)
        assert (data.kind, data.payload) == (DATA_HFR, b"bye")  # HFR on the data frame
        await eventually(lambda: session.stream_count == 0)
        session.close()
        await raw.read_to_eof()
        assert not raw.frames(RST)
        await raw.close()


async def test_close_while_the_peer_sends_says_nobody_reads() -> None:
    """The handler returns while the peer still sends: HFR (after the data), then at once
    RST NO_ERROR: the peer keeps what it got and learns that nobody reads."""

    async def handler(stream: mio.Stream) -> None:
        await stream.readexactly(5)
        stream.write(b"bye")

    accepted = Accepted()
    async with await mio.serve(handler, "127.0.0.1", 0, session_handler=accepted) as server:
        raw = await RawPeer.connect(server.port)
        session = await accepted.get()
        raw.open(2)
        raw.data(2, b"start and more to come")
        data = await raw.expect([DATA, DATA_HFR], 2)
        assert (data.kind, data.payload) == (DATA_HFR, b"bye")
        rst = await raw.expect([RST], 2)
        assert rst.value == ErrorCode.NO_ERROR
        await eventually(lambda: session.stream_count == 0)
        raw.data(2, b"late: dropped, not answered")
        raw.open(4)
        raw.data(4, b"hello", hfr=True)
        await raw.expect([DATA_HFR], 4)
        assert len(raw.frames(RST)) == 1
        await raw.close()


async def test_linger_timeout_gives_up_on_data_the_peer_never_takes() -> None:
    """close() with our data held back by the peer's window: after linger_timeout the
    data is dropped with RST CANCEL (never a clean end that would pass for complete)."""

    async def handler(stream: mio.Stream) -> None:
        stream.write(b"a reply longer than the peer's window")

    accepted = Accepted()
    config = mio.Config(linger_timeout=0.2)
    async with await mio.serve(
        handler, "127.0.0.1", 0, config=config, session_handler=accepted
    ) as server:
        raw = await RawPeer.connect(server.port)
        session = await accepted.get()
        raw.open(2, window=4)
        raw.data(2, b"", hfr=True)
        assert (await raw.expect([DATA], 2)).payload == b"a re"
        rst = await raw.expect([RST], 2)
        assert rst.value == ErrorCode.CANCEL
        assert not raw.frames(DATA_HFR)
        await eventually(lambda: session.stream_count == 0)
        await raw.close()


@pytest.mark.parametrize("code", [ErrorCode.NO_ERROR, ErrorCode.INTERNAL_ERROR])
async def test_session_close_flushes_then_sends_fin(code: ErrorCode) -> None:
    payload = b"p" * 100_000  # within the window: already queued when close() is called
    async with mio_pair(None) as (client, server):
        streams = [await client.open_stream() for _ in range(3)]
        for s in streams:
            s.write(payload)
        client.close(code)
        with pytest.raises(mio.SessionClosedError):
            streams[0].write(b"late")
        await client.wait_closed()
        await server.wait_closed()
        assert server.is_closed
        assert server.close_error is not None
        assert server.close_error.code == code
        for _ in streams:
            peer = await server.accept_stream()  # queued streams stay available
            assert await peer.readexactly(len(payload)) == payload
            # never half-closed: cut short, even by FIN NO_ERROR (no clean EOF)
            with pytest.raises(mio.SessionClosedError) as info:
                await peer.read()
            assert info.value.code == code
        with pytest.raises(mio.SessionClosedError):
            await server.accept_stream()


async def test_transport_abort_fails_every_stream_at_once(loop_kind: str) -> None:
    before = pending_tasks()
    async with mio_pair() as (client, server):
        streams = [await client.open_stream() for _ in range(5)]
        for s in streams:
            s.write(b"ping")
        for s in streams:
            assert await s.readexactly(4) == b"ping"
        reads = [asyncio.ensure_future(s.read(100)) for s in streams]
        await eventually(lambda: server.stream_count == 5)
        server._transport.abort()  # the peer's connection dies without FIN
        results = await asyncio.wait_for(asyncio.gather(*reads, return_exceptions=True), 5)
        assert all(isinstance(r, mio.SessionClosedError) for r in results), results
        assert client.is_closed
        assert client.stream_count == 0
        with pytest.raises(mio.SessionClosedError):
            await client.open_stream()
        with pytest.raises(mio.SessionClosedError):
            streams[0].write(b"x")
        with pytest.raises(mio.SessionClosedError):
            await client.accept_stream()
        await server.wait_closed()
        assert server.stream_count == 0
    await no_new_tasks(before)


async def test_peer_socket_reset_fails_readers_and_drainers() -> None:
    before = pending_tasks()
    async with raw_server() as (port, peers):
        client = await mio.connect("127.0.0.1", port)
        raw = await asyncio.wait_for(peers.get(), 10)
        streams = [await client.open_stream() for _ in range(3)]
        reads = [asyncio.ensure_future(s.read(10)) for s in streams[:2]]
        streams[2].write(b"w" * (client.config.initial_window + 1))  # beyond the window
        drain = asyncio.ensure_future(streams[2].drain())
        await raw.expect([DATA], streams[2].id)
        assert not drain.done()
        raw.kill()  # TCP RST
        results = await asyncio.wait_for(asyncio.gather(*reads, drain, return_exceptions=True), 5)
        assert all(isinstance(r, mio.SessionClosedError) for r in results), results
        await client.wait_closed()
        assert client.is_closed
        assert client.stream_count == 0
    await no_new_tasks(before)


async def test_aclose_lets_open_streams_finish() -> None:
    async with mio_pair(None) as (client, server):
        stream = await client.open_stream()
        stream.write(b"request")
        peer = await server.accept_stream()
        closing = asyncio.ensure_future(client.aclose(timeout=10))
        await asyncio.sleep(0.01)
        assert not closing.done()
        with pytest.raises(mio.SessionClosedError):
            await client.open_stream()
        # The open stream still works in both directions until it finishes.
        assert await peer.readexactly(7) == b"request"
        peer.write(b"response")
        peer.write_eof()
        assert await stream.read() == b"response"
        stream.write_eof()
        await asyncio.wait_for(closing, 5)
        assert client.is_closed
        await server.wait_closed()
        assert server.close_error is not None
        assert server.close_error.code == 0


async def test_aclose_timeout_then_close() -> None:
    async with mio_pair(None) as (client, server):
        stream = await client.open_stream()
        stream.write(b"x")
        peer = await server.accept_stream()
        await client.aclose(timeout=0.1)  # the stream never finishes
        assert client.is_closed
        with pytest.raises(mio.SessionClosedError):
            await stream.read()
        await server.wait_closed()
        assert await peer.read(10) == b"x"  # FIN NO_ERROR: the data, then ...
        with pytest.raises(mio.SessionClosedError):  # ... cut short: never half-closed
            await peer.read()


async def test_close_is_immediate() -> None:
    async with mio_pair(None) as (client, server):
        stream = await client.open_stream()
        stream.write(b"x")
        await server.accept_stream()
        reading = asyncio.ensure_future(stream.read())
        await asyncio.sleep(0)
        client.close()
        with pytest.raises(mio.SessionClosedError):
            await asyncio.wait_for(reading, 1)
        assert client.is_closed
        assert client.stream_count == 0
        await client.wait_closed()
        await server.wait_closed()


async def stalled_raw_session(
    accepted: Accepted, port: int
) -> tuple[RawPeer, mio.Session, mio.Stream]:
    """A raw peer that stops reading while mio's transport is over its high-water mark."""
    raw = await RawPeer.connect(port, rcvbuf=64 * 1024)
    session = await accepted.get()
    raw.open(2)
    stream = await session.accept_stream()
    stream.write(bytes(12 * 1024 * 1024))  # within the 16 MiB window, far beyond the socket
    await eventually(lambda: session._write_paused)
    return raw, session, stream


async def test_drain_of_a_finished_stream_returns_when_the_transport_dies() -> None:
    accepted = Accepted()
    async with await mio.serve(None, "127.0.0.1", 0, session_handler=accepted) as server:
        raw, session, _ = await stalled_raw_session(accepted, server.port)
        raw.open(4)
        raw.data(4, b"", hfr=True)
        finished = await session.accept_stream()
        assert await finished.read() == b""
        finished.write_eof()
        assert finished.is_closed
        drain = asyncio.ensure_future(finished.drain())
        await asyncio.sleep(0.05)
        assert not drain.done()  # the transport is paused
        raw.kill()
        await asyncio.wait_for(drain, 5)
        await session.wait_closed()


async def test_aclose_aborts_a_peer_that_does_not_read() -> None:
    """aclose() gives the transport close_timeout to flush, then aborts it."""
    accepted = Accepted()
    config = mio.Config(close_timeout=0.2)
    async with await mio.serve(
        None, "127.0.0.1", 0, config=config, session_handler=accepted
    ) as server:
        raw, session, _ = await stalled_raw_session(accepted, server.port)
        await asyncio.wait_for(session.aclose(timeout=0), 5)
        assert session.is_closed
        await raw.close()


async def test_session_graceful_lets_open_streams_finish() -> None:
    done = asyncio.Event()

    async def slow(stream: mio.Stream) -> None:
        request = await stream.read()
        await asyncio.sleep(0.1)
        await stream.send(request)
        done.set()

    async with mio_pair(slow) as (client, _server):
        stream = await client.open_stream()
        stream.write(b"in flight")
        stream.write_eof()
        reply = asyncio.ensure_future(stream.read())
        async with client.graceful(timeout=5):
            pass  # leaving waits for the stream in flight, then FIN
        assert done.is_set()
        assert await reply == b"in flight"
        assert client.is_closed


async def test_session_graceful_closes_at_once_on_an_exception() -> None:
    async with mio_pair(None) as (client, server):
        stream = await client.open_stream()
        stream.write(b"x")
        with pytest.raises(RuntimeError):
            async with client.graceful(timeout=30):
                raise RuntimeError("boom")
        assert client.is_closed
        with pytest.raises(mio.SessionClosedError) as info:
            await stream.read()
        assert "closed locally" in str(info.value)
        await eventually(lambda: server.is_closed)
        assert server.close_error is not None
        assert server.close_error.code == ErrorCode.INTERNAL_ERROR


async def test_async_for_ends_at_eof_and_raises_a_reset(loop_kind: str) -> None:
    """``async for`` yields everything, then stops at the peer's half-close; on a stream the
    peer reset it raises the reset (once what arrived before it was read); ``anext()`` at
    the end raises ``StopAsyncIteration``, as often as it is called."""
    async with mio_pair(None) as (client, server):
        stream = await client.open_stream()
        stream.write(b"hi")
        peer = await server.accept_stream()
        peer.write(b"one")
        peer.write_eof()
        got = [chunk async for chunk in stream]
        assert b"".join(got) == b"one"
        for _ in range(2):
            with pytest.raises(StopAsyncIteration):
                await anext(stream)

        stream = await client.open_stream()
        stream.write(b"hi")
        peer = await server.accept_stream()
        peer.reset(ErrorCode.CANCEL)
        with pytest.raises(mio.StreamResetError) as info:
            async for _chunk in stream:
                pass
        assert info.value.code == ErrorCode.CANCEL
        with pytest.raises(mio.StreamResetError):
            await anext(stream)
