"""Limits: over ``max_streams`` or the accept backlog, or with a window above ``max_open_window``,
an OPEN is answered with RST REFUSED; the opener reads StreamRefusedError and nothing else
breaks."""

from __future__ import annotations

import asyncio

import pytest
from session_util import RST, Accepted, RawPeer, eventually, mio_pair, roundtrip

import mio
from mio.wire import ErrorCode


async def hold_then_echo(stream: mio.Stream) -> None:
    """Keep the stream open until the client half-closes, then echo."""
    stream.write(await stream.read())


async def test_over_max_streams_is_refused() -> None:
    server_config = mio.Config(max_streams=2)
    async with mio_pair(hold_then_echo, config=server_config, client_config=mio.Config()) as (
        client,
        server,
    ):
        held = [await client.open_stream() for _ in range(2)]
        for s in held:
            s.write(b"held")
        refused = await client.open_stream()
        refused.write(b"too many")
        with pytest.raises(mio.StreamRefusedError) as info:
            await refused.read()
        assert info.value.code == ErrorCode.REFUSED
        assert info.value.remote
        with pytest.raises(mio.StreamRefusedError):
            refused.write(b"x")
        assert refused.is_closed
        assert client.stream_count == 2
        assert server.stream_count == 2

        for s in held:  # the admitted streams are unaffected
            s.write_eof()
            assert await s.read() == b"held"
        await eventually(lambda: server.stream_count == 0)
        again = await client.open_stream()  # room again
        assert await roundtrip(again, b"later") == b"later"
        assert not client.is_closed
        assert not server.is_closed


async def test_over_accept_backlog_is_refused() -> None:
    async with mio_pair(None, config=mio.Config(accept_backlog=2), client_config=mio.Config()) as (
        client,
        server,
    ):
        streams = [await client.open_stream() for _ in range(3)]
        for s in streams:
            s.write(b"%d" % s.id)
            s.write_eof()
        with pytest.raises(mio.StreamRefusedError):
            await streams[2].read()
        for expected in streams[:2]:
            peer = await server.accept_stream()
            assert peer.id == expected.id
            assert await peer.read() == b"%d" % expected.id
            peer.write(b"ok")
            peer.close()
        for s in streams[:2]:
            assert await s.read() == b"ok"
        # Accepting made room in the backlog.
        late = await client.open_stream()
        late.write_eof()
        peer = await server.accept_stream()
        assert peer.id == late.id
        peer.close()
        assert await late.read() == b""


async def test_open_with_window_above_max_open_window_is_refused() -> None:
    config = mio.Config(initial_window=4096, max_open_window=65536)
    accepted = Accepted()
    async with await mio.serve(
        None, "127.0.0.1", 0, config=config, session_handler=accepted
    ) as server:
        raw = await RawPeer.connect(server.port)
        session = await accepted.get()
        raw.open(2, window=0xFFFFFF)
        raw.open(4, window=65536)
        rst = await raw.expect([RST])
        assert (rst.sid, rst.value) == (2, ErrorCode.REFUSED)
        stream = await asyncio.wait_for(session.accept_stream(), 5)
        assert stream.id == 4
        raw.data(4, b"", hfr=True)
        stream.close()
        await stream.wait_closed()
        assert len(raw.frames(RST)) == 1
        await raw.close()


async def test_zero_window_open_is_refused() -> None:
    """An OPEN with window 0 could never carry a byte either way: RST REFUSED, nothing
    reaches the application, and the next stream is accepted as usual."""
    accepted = Accepted()
    async with await mio.serve(None, "127.0.0.1", 0, session_handler=accepted) as server:
        raw = await RawPeer.connect(server.port)
        session = await accepted.get()
        raw.open(2, window=0)
        raw.open(4, window=1)
        rst = await raw.expect([RST])
        assert (rst.sid, rst.value) == (2, ErrorCode.REFUSED)
        stream = await asyncio.wait_for(session.accept_stream(), 5)
        assert stream.id == 4
        assert session.stats["streams_refused"] == 1
        raw.data(4, b"x", hfr=True)
        assert await stream.read() == b"x"
        stream.close()
        await stream.wait_closed()
        assert len(raw.frames(RST)) == 1
        await raw.close()


async def test_open_windows_are_promises_not_a_budget() -> None:
    """OPENs at the reference's 0xFFFFFF window are admitted up to max_streams, whatever the
    windows add up to (1000 x 16 MiB): memory is budgeted by the bytes actually held."""
    config = mio.Config(max_streams=1000)
    accepted = Accepted()
    async with await mio.serve(
        None, "127.0.0.1", 0, config=config, session_handler=accepted
    ) as server:
        raw = await RawPeer.connect(server.port)
        session = await accepted.get()
        for sid in range(2, 2002, 2):
            raw.open(sid, window=0xFFFFFF)
        raw.open(2002, window=0xFFFFFF)  # the 1001st: over max_streams
        rst = await raw.expect([RST])
        assert (rst.sid, rst.value) == (2002, ErrorCode.REFUSED)
        streams = [await asyncio.wait_for(session.accept_stream(), 5) for _ in range(1000)]
        assert [s.id for s in streams] == list(range(2, 2002, 2))
        assert session.stats["streams_refused"] == 1
        await raw.close()
