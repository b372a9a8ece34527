"""The memory account (docs/PROTOCOL.md section 6a): a session budgets the bytes it holds for
its peer, not the windows the peer was promised, and never leaves a waiting reader stuck.

Real loopback TCP; a scripted raw peer fills streams where a test needs exact control."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from session_util import (
    DATA,
    DATA_HFR,
    RST,
    Accepted,
    RawPeer,
    echo,
    eventually,
    mio_pair,
    raw_server,
)

import mio
from mio.budget import MemoryBudget
from mio.wire import ErrorCode

LIMIT = 1024 * 1024  # max_session_memory of these tests
READ_SLACK = 256 * 1024  # one transport read past the limit
CHUNK = 64 * 1024


async def fill(raw: RawPeer, sid: int, nbytes: int) -> None:
    """Open ``sid`` at the reference's window and send ``nbytes`` in 16 KiB frames."""
    raw.open(sid)
    raw.data(sid, b"x" * nbytes, max_frame=16 * 1024)
    await raw.drain()


async def fill_all(raw: RawPeer, sids: range, nbytes: int) -> None:
    for sid in sids:
        await fill(raw, sid, nbytes)


@contextlib.asynccontextmanager
async def unread_server() -> AsyncIterator[tuple[mio.Server, RawPeer, mio.Session]]:
    """A server whose application accepts streams and reads only when told to."""
    config = mio.Config(max_session_memory=LIMIT)
    accepted = Accepted()
    server = await mio.serve(None, "127.0.0.1", 0, config=config, session_handler=accepted)
    try:
        raw = await RawPeer.connect(server.port)
        session = await accepted.get()
        yield server, raw, session
        await raw.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_unread_streams_pause_reading_within_the_limit() -> None:
    async with unread_server() as (server, raw, session):
        # 24 streams x 256 KiB = 6 MiB promised and sent; nobody reads.
        sender = asyncio.create_task(fill_all(raw, range(2, 50, 2), 256 * 1024))
        await eventually(lambda: session.is_reading_paused)
        await asyncio.sleep(0.2)  # the peer keeps pushing: nothing more may be read
        held = session.memory["inbound"]
        assert LIMIT <= held <= LIMIT + READ_SLACK
        assert session.stats["read_pauses"] >= 1
        assert server.budget.held == held  # the server's shared budget counts the same bytes
        # The application reads: memory falls under the resume mark, reading resumes, and
        # every byte sent arrives; nothing was shed (no reader waited while paused).
        for _ in range(24):
            stream = await asyncio.wait_for(session.accept_stream(), 5)
            got = await asyncio.wait_for(stream.readexactly(256 * 1024), 10)
            assert got == b"x" * 256 * 1024
        await asyncio.wait_for(sender, 10)
        assert session.memory["inbound"] == 0
        assert not session.is_reading_paused
        assert session.stats["streams_shed"] == 0
        assert not raw.frames(RST)


async def test_waiting_reader_sheds_the_largest_unread_stream() -> None:
    async with unread_server() as (_server, raw, session):
        await fill(raw, 2, 700 * 1024)  # the largest holder
        await fill(raw, 4, 400 * 1024)
        await eventually(lambda: session.is_reading_paused)
        big = await session.accept_stream()
        small = await session.accept_stream()
        raw.open(6)
        raw.data(6, b"wanted", hfr=True)
        await raw.drain()
        # Stream 6 cannot be read while the session is paused; waiting for it sheds stream 2.
        wanted = await asyncio.wait_for(session.accept_stream(), 5)
        assert await asyncio.wait_for(wanted.read(), 5) == b"wanted"
        rst = await raw.expect([RST])
        assert (rst.sid, rst.value) == (2, ErrorCode.RESOURCE_LIMIT)
        with pytest.raises(mio.StreamResetError) as info:
            await big.read()
        assert info.value.code == ErrorCode.RESOURCE_LIMIT
        assert "memory limit" in str(info.value)
        assert session.stats["streams_shed"] == 1
        # The smaller stream kept every byte.
        assert await asyncio.wait_for(small.readexactly(400 * 1024), 5) == b"x" * 400 * 1024
        assert session.memory["inbound"] == 0


async def test_a_reader_that_reads_is_never_shed() -> None:
    """A reader waiting in readexactly() for more than the limit is never shed, nor a stream
    whose reader keeps reading: reading resumes instead."""
    async with unread_server() as (_server, raw, session):
        size = 3 * LIMIT
        await fill(raw, 2, size)
        stream = await asyncio.wait_for(session.accept_stream(), 5)
        data = await asyncio.wait_for(stream.readexactly(size), 20)
        assert len(data) == size
        assert session.stats["streams_shed"] == 0
        assert not raw.frames(RST)


async def test_shared_budget_pauses_every_session() -> None:
    budget = MemoryBudget(LIMIT)
    accepted = Accepted()
    config = mio.Config()  # per-session limit far above the budget
    server = await mio.serve(
        None, "127.0.0.1", 0, config=config, session_handler=accepted, budget=budget
    )
    try:
        raws = [await RawPeer.connect(server.port) for _ in range(2)]
        sessions = [await accepted.get() for _ in raws]
        assert budget.sessions == 2
        senders = [
            asyncio.create_task(fill(raw, sid, 512 * 1024))
            for raw in raws
            for sid in range(2, 12, 2)
        ]
        await eventually(lambda: all(s.is_reading_paused for s in sessions))
        assert LIMIT <= budget.held <= LIMIT + 2 * READ_SLACK
        assert budget.held == sum(s.memory["inbound"] for s in sessions)

        async def read_all(session: mio.Session) -> None:
            for _ in range(5):
                stream = await asyncio.wait_for(session.accept_stream(), 5)
                await asyncio.wait_for(stream.readexactly(512 * 1024), 10)

        # Both applications read: everything arrives, nothing is shed.
        await asyncio.gather(*(read_all(s) for s in sessions))
        await asyncio.wait_for(asyncio.gather(*senders), 10)
        assert sum(s.stats["streams_shed"] for s in sessions) == 0
        assert budget.held == 0
        assert budget.peak >= LIMIT
        for raw in raws:
            await raw.close()
        await eventually(lambda: budget.sessions == 0)
    finally:
        server.close()
        await server.wait_closed()


async def test_writes_wait_in_streams_while_the_transport_is_paused() -> None:
    """Many streams writing to a peer that does not read: about one transport's worth of
    output, the rest held in the streams (counted), every byte delivered once it reads."""
    window = 256 * 1024
    config = mio.Config(write_buffer_high=256 * 1024)
    async with mio_pair(None, config=config) as (client, server):
        streams = [await client.open_stream() for _ in range(64)]
        for s in streams:
            s.write(b"open")
        remote = [await asyncio.wait_for(server.accept_stream(), 5) for _ in streams]
        for s in remote:
            assert await s.readexactly(4) == b"open"
        client._transport.pause_reading()  # type: ignore[union-attr]  # the peer stops reading
        for s in remote:
            s.write(b"y" * window)  # 16 MiB: more than the kernel's socket buffers take
        await eventually(lambda: server._write_paused)
        for s in remote:
            s.write(b"y" * window)  # while paused: held in the stream
        memory = server.memory
        assert memory["queued"] >= 64 * window
        assert memory["output"] <= 1024 * 1024  # none of it reached the transport
        client._transport.resume_reading()  # type: ignore[union-attr]
        for s in streams:
            got = await asyncio.wait_for(s.readexactly(2 * window), 10)
            assert got == b"y" * 2 * window
        await eventually(lambda: server.memory["queued"] == 0)


async def test_drain_parked_on_a_paused_transport_wakes_on_reset() -> None:
    """drain() waiting for a paused transport raises as soon as its stream or session ends
    (not only when the transport resumes)."""
    async with mio_pair(None) as (client, _server):
        held, idle, other = [await client.open_stream() for _ in range(3)]
        client.pause_writing()  # as asyncio does over the transport's high-water mark
        held.write(b"z" * 1000)  # held in the stream while paused
        assert client.memory["queued"] == 1000
        drains = {s: asyncio.create_task(s.drain()) for s in (held, idle, other)}
        await asyncio.sleep(0.05)
        assert not any(t.done() for t in drains.values())
        held.reset(ErrorCode.INTERNAL_ERROR)
        idle.reset(ErrorCode.INTERNAL_ERROR)
        for s in (held, idle):
            with pytest.raises(mio.StreamResetError):
                await asyncio.wait_for(drains[s], 1)
        assert client.memory["queued"] == 0
        assert not drains[other].done()  # still waits for the transport
        client.close()
        with pytest.raises(mio.SessionClosedError):
            await asyncio.wait_for(drains[other], 1)


async def test_idle_timeout_ignores_our_own_pause() -> None:
    config = mio.Config(max_session_memory=LIMIT, idle_timeout=0.3)
    accepted = Accepted()
    server = await mio.serve(None, "127.0.0.1", 0, config=config, session_handler=accepted)
    try:
        raw = await RawPeer.connect(server.port)
        session = await accepted.get()
        sender = asyncio.create_task(fill(raw, 2, 4 * LIMIT))
        await eventually(lambda: session.is_reading_paused)
        await asyncio.sleep(1.0)  # 3 idle timeouts without a read: we paused, not the peer
        assert not session.is_closed
        session._idle_handle.cancel()  # the rest of the test is not about the idle timer
        stream = await session.accept_stream()
        await asyncio.wait_for(stream.readexactly(4 * LIMIT), 10)
        await asyncio.wait_for(sender, 10)
        await raw.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_4096_streams_between_default_peers_are_all_admitted() -> None:
    async with mio_pair(echo) as (client, server):
        streams = [await client.open_stream() for _ in range(4096)]
        for i, s in enumerate(streams):
            s.write(b"%d" % i)
            s.write_eof()
        replies = await asyncio.wait_for(asyncio.gather(*(s.read() for s in streams)), 60)
        assert replies == [b"%d" % i for i in range(4096)]
        assert server.stats["streams_refused"] == 0
        await eventually(lambda: server.stream_count == 0 and client.stream_count == 0)


async def test_send_resets_false_never_resets_in_graceful_paths() -> None:
    """With the reference preset, a failing handler half-closes (the peer reads what was
    written, then EOF) and a lingering stream is forgotten without RST."""

    async def failing(stream: mio.Stream) -> None:
        stream.write(b"partial")
        raise RuntimeError("handler bug")

    config = mio.Config(send_resets=False, linger_timeout=0.1)
    server = await mio.serve(failing, "127.0.0.1", 0, config=config)
    try:
        raw = await RawPeer.connect(server.port)
        raw.open(2)
        raw.data(2, b"request")  # no half-close: the stream lingers after the handler
        await raw.drain()
        frame = await raw.expect([DATA_HFR, RST], 2)
        got = b"".join(f.payload for f in raw.frames(DATA, DATA_HFR))
        assert frame.kind == DATA_HFR
        assert got == b"partial"
        await asyncio.sleep(0.3)  # past linger_timeout
        raw.data(2, b"late data")  # dropped unanswered
        raw.open(4)
        raw.data(4, b"", hfr=True)
        await raw.drain()
        await raw.expect([DATA_HFR], 4)
        assert not raw.frames(RST)
        (session,) = server.sessions
        assert session.stats["resets_sent"] == 0
        await raw.close()
    finally:
        server.close()
        await server.wait_closed()


def test_budget_validates_and_reports() -> None:
    with pytest.raises(ValueError, match="positive"):
        MemoryBudget(0)
    budget = MemoryBudget(10)
    assert (budget.limit, budget.held, budget.peak, budget.sessions) == (10, 0, 0, 0)
    assert "limit=10" in repr(budget)


def test_config_for_reference() -> None:
    cfg = mio.Config.for_reference(max_streams=2000)
    assert cfg.max_frame_size == 128
    assert cfg.initial_window == 0xFFFFFF
    assert cfg.send_resets is False
    assert cfg.max_streams == 2000
    with pytest.raises(ValueError, match="max_session_memory"):
        mio.Config(max_session_memory=0)


async def test_waiting_readers_hold_up_to_their_windows_beyond_the_limit() -> None:
    """The documented bound: inbound data stays under max_session_memory plus one read,
    except that memory a waiting reader asked for is never shed (M3): while every held
    byte is waited for, reading resumes, up to the receive windows of the streams being
    read. Here those are streams this side opened (windows up to max_window), six waiting
    readers at 512 KiB each hold 3 MiB under a 1 MiB limit, while an unread stream is shed."""
    window = 512 * 1024
    config = mio.Config(max_session_memory=LIMIT, initial_window=window, max_window=window)
    async with raw_server() as (port, peers):
        client = await mio.connect("127.0.0.1", port, config=config)
        async with client:
            raw = await asyncio.wait_for(peers.get(), 10)
            unread = await client.open_stream()
            waited = [await client.open_stream() for _ in range(6)]
            readers = [asyncio.ensure_future(s.readexactly(window)) for s in waited]
            raw.data(unread.id, b"u" * 300 * 1024, max_frame=16 * 1024)
            for stream in waited:
                raw.data(stream.id, b"w" * (window - 1), max_frame=16 * 1024)
            await raw.drain()
            held = 6 * (window - 1)
            await eventually(lambda: client.memory["inbound"] == held)
            assert held > LIMIT + READ_SLACK  # the window term of the bound is real
            assert held <= max(LIMIT, 6 * window) + READ_SLACK
            rst = await raw.expect([RST])
            assert (rst.sid, rst.value) == (unread.id, ErrorCode.RESOURCE_LIMIT)
            assert not any(r.done() for r in readers)  # nothing a reader waits for was lost
            for stream in waited:
                raw.data(stream.id, b"w")
            await raw.drain()
            got = await asyncio.wait_for(asyncio.gather(*readers), 10)
            assert got == [b"w" * window] * 6
            assert client.memory["inbound"] == 0
            assert [f.sid for f in raw.frames(RST)] == [unread.id]
