"""Flow control: per-stream windows hold writers back in ``drain()``, a stalled reader stalls
only its own stream, window updates are batched, data beyond the window is answered with RST
FLOW_CONTROL_ERROR on that stream only, and transport backpressure keeps memory bounded."""

from __future__ import annotations

import asyncio

import pytest
from session_util import (
    DATA,
    DATA_HFR,
    RST,
    WINDOW_UPDATE,
    Accepted,
    RawPeer,
    eventually,
    mio_pair,
    roundtrip,
)

import mio
from mio.wire import ErrorCode

SMALL = mio.Config(initial_window=4096, max_window=4096)
CHUNK = 64 * 1024


async def blocked(aw: object, timeout: float = 0.2) -> bool:
    """True if the awaitable does not finish within ``timeout`` (it is cancelled then)."""
    try:
        await asyncio.wait_for(aw, timeout)  # type: ignore[arg-type]
    except TimeoutError:
        return True
    return False


async def test_writer_waits_in_drain_and_resumes_as_reader_reads(loop_kind: str) -> None:
    payload = bytes(range(256)) * 256  # 64 KiB through a 4 KiB window
    async with mio_pair(None, config=SMALL) as (client, server):
        stream = await client.open_stream()
        stream.write(payload)
        assert stream.write_pending == len(payload) - 4096
        assert await blocked(stream.drain())
        peer = await server.accept_stream()
        await eventually(lambda: peer.buffered == 4096)
        assert await blocked(stream.drain())
        assert stream.write_pending == len(payload) - 4096  # nothing more went out

        drained = asyncio.ensure_future(stream.drain())
        received = bytearray()
        while len(received) < len(payload):
            received += await peer.read(1000)
            assert peer.buffered <= 4096
        await drained
        assert received == payload
        assert stream.write_pending == 0


async def test_stalled_reader_does_not_stop_other_streams() -> None:
    async with mio_pair(None, config=SMALL) as (client, server):
        stalled = await client.open_stream()
        stalled.write(b"s" * 50_000)
        stalled_peer = await server.accept_stream()
        assert await blocked(stalled.drain())

        async def serve_echo() -> None:
            for _ in range(5):
                stream = await server.accept_stream()
                await stream.send(await stream.read())
                stream.close()

        echo_task = asyncio.ensure_future(serve_echo())
        for i in range(5):
            other = await client.open_stream()
            payload = b"%d" % i * 10_000  # larger than the window: needs updates
            assert await roundtrip(other, payload) == payload
        await echo_task
        assert stalled.write_pending > 0  # still held back

        stalled.write_eof()
        assert await stalled_peer.read() == b"s" * 50_000
        await stalled.drain()


async def test_window_updates_are_batched() -> None:
    """The reference acknowledges every read; mio sends an update per half window consumed."""
    total = 64 * 1024
    accepted = Accepted()
    async with await mio.serve(None, "127.0.0.1", 0, session_handler=accepted) as server:
        raw = await RawPeer.connect(server.port)
        session = await accepted.get()
        raw.open(2, window=total)
        raw.data(2, b"w" * total)  # 512 frames of 128 bytes, exactly the window
        stream = await session.accept_stream()
        await eventually(lambda: stream.buffered == total)
        reads = 0
        while stream.buffered:
            assert len(await stream.read(100)) <= 100
            reads += 1
        assert reads == 656
        raw.data(2, b"", hfr=True)
        await stream.read()
        stream.close()
        await stream.wait_closed()
        session.close()
        await raw.read_to_eof()
        updates = raw.frames(WINDOW_UPDATE)
        assert 1 <= len(updates) <= 3
        assert all(f.sid == 2 for f in updates)
        # batched at half the window: what is consumed past the last update waits for more
        assert sum(f.value for f in updates) >= total // 2
        assert not raw.frames(RST)
        await raw.close()


async def test_data_beyond_window_resets_only_that_stream() -> None:
    accepted = Accepted()
    async with await mio.serve(None, "127.0.0.1", 0, session_handler=accepted) as server:
        raw = await RawPeer.connect(server.port)
        session = await accepted.get()
        raw.open(2, window=1024)
        raw.open(4, window=1024)
        raw.data(2, b"x" * 1024)  # the whole window, unread
        raw.data(2, b"y")  # one byte too many
        rst = await raw.expect([RST])
        assert (rst.sid, rst.value) == (2, ErrorCode.FLOW_CONTROL_ERROR)
        raw.data(2, b"z" * 10)  # late data for the reset stream: no second RST

        violated = await session.accept_stream()
        with pytest.raises(mio.StreamResetError) as info:
            await violated.read()
        assert info.value.code == ErrorCode.FLOW_CONTROL_ERROR
        with pytest.raises(mio.StreamResetError):
            violated.write(b"nope")

        raw.data(4, b"still fine", hfr=True)
        other = await session.accept_stream()
        assert other.id == 4
        assert await other.read() == b"still fine"
        other.write(b"pong")
        other.close()
        assert await raw.read_stream(4) == b"pong"
        raw.rst(4, ErrorCode.NO_ERROR)
        await eventually(lambda: session.stream_count == 0)
        assert [f.sid for f in raw.frames(RST)] == [2]
        assert not session.is_closed
        await raw.close()


def session_buffered(session: mio.Session, stream: mio.Stream) -> int:
    """Bytes the session holds for sending: transport buffer, output buffer, window-held."""
    transport = session._transport
    in_transport = transport.get_write_buffer_size() if transport is not None else 0
    return in_transport + len(session._wbuf) + stream.write_pending


async def wait_stalled(progress: list[int]) -> None:
    """Wait until the writer's progress counter stops moving."""
    last = -1
    stable = 0
    while stable < 3:
        await asyncio.sleep(0.05)
        stable = stable + 1 if progress[0] == last else 0
        last = progress[0]


async def test_transport_backpressure_bounds_memory_raw_peer(loop_kind: str) -> None:
    """A peer grants 100 MiB of window but does not read: the writer blocks in drain() on
    the transport's high-water mark, not by buffering the 100 MiB."""
    total = 100 * 1024 * 1024
    high = 256 * 1024
    config = mio.Config(write_buffer_high=high)
    loop = asyncio.get_running_loop()
    stream_fut: asyncio.Future[mio.Stream] = loop.create_future()
    progress = [0]
    peak = [0]
    chunk = memoryview(bytes(CHUNK))

    async def writer(stream: mio.Stream) -> None:
        stream_fut.set_result(stream)
        while progress[0] < total:
            stream.write(chunk)
            progress[0] += CHUNK
            peak[0] = max(peak[0], session_buffered(stream.session, stream))
            await stream.drain()

    async with await mio.serve(writer, "127.0.0.1", 0, config=config) as server:
        raw = await RawPeer.connect(server.port, rcvbuf=64 * 1024)
        raw.open(2)
        for _ in range(total // 0xFFFFFF + 1):
            raw.window_update(2, 0xFFFFFF)
        stream = await asyncio.wait_for(stream_fut, 10)
        await wait_stalled(progress)
        assert progress[0] < total
        assert await blocked(stream.drain(), 0.3)
        assert session_buffered(stream.session, stream) <= high + 2 * CHUNK
        assert peak[0] <= high + 2 * CHUNK

        received = 0
        while True:
            frame = await raw.expect([DATA, DATA_HFR])
            received += len(frame.payload)
            if frame.kind == DATA_HFR:
                break
        assert received == total
        assert peak[0] <= high + 2 * CHUNK
        raw.data(2, b"", hfr=True)
        await raw.close()


async def test_transport_backpressure_bounds_memory_mio_peer() -> None:
    """A mio peer that does not read: the writer is held by the window, memory stays bounded."""
    total = 16 * 1024 * 1024
    window = 256 * 1024
    config = mio.Config(initial_window=window, max_window=window)
    progress = [0]
    peak = [0]
    chunk = bytes(CHUNK)  # whole bytes objects: the session's zero-copy path
    async with mio_pair(None, config=config) as (client, server):
        stream = await client.open_stream()

        async def writer() -> None:
            while progress[0] < total:
                stream.write(chunk)
                progress[0] += CHUNK
                peak[0] = max(peak[0], session_buffered(client, stream))
                await stream.drain()
            stream.write_eof()

        task = asyncio.ensure_future(writer())
        await wait_stalled(progress)
        assert progress[0] <= window + CHUNK
        assert await blocked(stream.drain())
        bound = window + config.write_buffer_high + CHUNK
        assert session_buffered(client, stream) <= bound

        peer = await server.accept_stream()
        received = 0
        async for data in peer:
            received += len(data)
            assert peer.buffered <= window
        await task
        assert received == total
        assert peak[0] <= bound


async def test_readexactly_announces_batched_window_when_it_needs_it() -> None:
    """Consumed bytes held back by batching must not starve a reader that needs them."""
    config = mio.Config(initial_window=100, max_window=100)
    async with mio_pair(None, config=config, client_config=config) as (client, server):
        stream = await client.open_stream()
        stream.write(b"a" * 40)
        peer = await server.accept_stream()
        assert await peer.readexactly(40) == b"a" * 40  # 40 consumed, below half: unannounced
        writer = asyncio.ensure_future(stream.send(b"b" * 80))  # 60 fit, 20 wait for window
        assert await asyncio.wait_for(peer.readexactly(80), 5) == b"b" * 80
        await asyncio.wait_for(writer, 5)


async def test_window_increments_above_the_24_bit_limit_are_split() -> None:
    """A WINDOW UPDATE carries at most 16 MiB - 1: a larger increment (here the whole
    16 MiB - 1 window read at once, plus the auto-tuning growth to twice that) goes out
    as several frames that add up to it."""
    window = 0xFFFFFF
    accepted = Accepted()
    config = mio.Config(max_window=2 * window)
    async with await mio.serve(
        None, "127.0.0.1", 0, config=config, session_handler=accepted
    ) as server:
        raw = await RawPeer.connect(server.port)
        session = await accepted.get()
        raw.open(1, window=window)
        raw.data(1, b"w" * window, max_frame=65536)
        stream = await asyncio.wait_for(session.accept_stream(), 10)
        assert await asyncio.wait_for(stream.readexactly(window), 30) == b"w" * window
        first = await raw.expect([WINDOW_UPDATE], 1)
        second = await raw.expect([WINDOW_UPDATE], 1)
        assert (first.value, second.value) == (window, window)  # window read + growth
        assert stream.recv_window == 2 * window
        await raw.close()


async def test_a_bulk_stream_queues_at_most_max_window_ahead_by_default(loop_kind: str) -> None:
    """The default Config over loopback TCP: a bulk stream whose reader keeps up has its
    window auto-tuned up to max_window (512 KiB) and no further, so the writer never has
    more than that in flight ahead of other streams' messages (W4, Config.max_window)."""
    config = mio.Config()
    assert config.max_window == 512 * 1024
    windows: list[int] = []
    total = 0

    async def sink(stream: mio.Stream) -> None:
        nonlocal total
        async for chunk in stream:
            total += len(chunk)
            windows.append(stream._recv.window)
        await stream.send(b"done")

    server = await mio.serve(sink, "127.0.0.1", 0)
    client = await mio.connect("127.0.0.1", server.port)
    try:
        stream = await client.open_stream()
        credit = []
        data = b"x" * CHUNK
        for _ in range(256):  # 16 MiB
            credit.append(stream._send.available)
            stream.write(data)
            await stream.drain()
        stream.write_eof()
        assert await stream.read() == b"done"
        assert total == 256 * CHUNK
        assert max(windows) == config.max_window  # grown to the ceiling ...
        assert max(credit) <= config.max_window  # ... and never beyond it
    finally:
        client.close()
        await client.wait_closed()
        server.close()
        await server.wait_closed()
