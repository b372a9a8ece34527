"""Basic session behaviour on real loopback TCP: echo, stream ids of each side, streams opened
by the server to a client that dialed it, the ``write()`` snapshot, and a few pure framing
checks over ``mio.pipe()``."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from session_util import echo, eventually, mio_pair, roundtrip

import mio


async def test_echo_one_stream(loop_kind: str) -> None:
    async with mio_pair() as (client, server):
        stream = await client.open_stream()
        assert stream.id == 1
        assert await roundtrip(stream, b"hello mio") == b"hello mio"
        await eventually(lambda: client.stream_count == 0 and server.stream_count == 0)


async def test_stream_reader_api() -> None:
    async with mio_pair() as (client, _):
        stream = await client.open_stream()
        stream.write(b"line one\nline two\nabcdefgh")
        stream.write_eof()
        assert await stream.readline() == b"line one\n"
        assert await stream.readuntil(b"two") == b"line two"
        assert await stream.readexactly(3) == b"\nab"
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await stream.readexactly(100)
        assert info.value.partial == b"cdefgh"
        assert await stream.read() == b""
        assert stream.at_eof()


async def test_both_sides_open_at_once_without_collision(loop_kind: str) -> None:
    n = 40
    ids_from_server: list[int] = []

    async def use(stream: mio.Stream, tag: bytes) -> None:
        payload = tag + b"-" + str(stream.id).encode()
        assert await roundtrip(stream, payload) == payload

    async def session_handler(session: mio.Session) -> None:
        streams = [await session.open_stream() for _ in range(n)]
        ids_from_server.extend(s.id for s in streams)
        await asyncio.gather(*(use(s, b"server") for s in streams))
        server_done.set_result(None)

    loop = asyncio.get_running_loop()
    server_done: asyncio.Future[None] = loop.create_future()
    server = await mio.serve(echo, "127.0.0.1", 0, session_handler=session_handler)
    async with server:
        client = await mio.connect("127.0.0.1", server.port, handler=echo)
        async with client:
            streams = [await client.open_stream() for _ in range(n)]
            await asyncio.gather(*(use(s, b"client") for s in streams), server_done)
            client_ids = [s.id for s in streams]
            assert client_ids == list(range(1, 2 * n, 2))
            assert ids_from_server == list(range(2, 2 * n + 1, 2))
            await eventually(lambda: client.stream_count == 0)


async def test_server_opens_stream_to_dialing_client() -> None:
    async def client_handler(stream: mio.Stream) -> None:
        data = await stream.read()
        stream.write(b"client saw " + data)

    async with mio_pair(None, client_handler=client_handler) as (client, server):
        stream = await server.open_stream()
        assert stream.id % 2 == 0
        assert await roundtrip(stream, b"push") == b"client saw push"
        await eventually(lambda: client.stream_count == 0 and server.stream_count == 0)


async def test_accept_stream_and_async_iteration() -> None:
    async with mio_pair(None) as (client, server):
        opened = [await client.open_stream() for _ in range(3)]
        for s in opened:
            s.write(b"x%d" % s.id)
            s.write_eof()
        got = []
        async for stream in server:
            got.append((stream.id, await stream.read()))
            stream.close()
            if len(got) == 3:
                break
        assert got == [(1, b"x1"), (3, b"x3"), (5, b"x5")]
        for s in opened:
            assert await s.read() == b""


@pytest.mark.parametrize("size", [10, 300 * 1024])  # inside and beyond the 256 KiB window
async def test_write_takes_a_snapshot(size: int) -> None:
    async with mio_pair() as (client, _):
        stream = await client.open_stream()
        buf = bytearray(b"a" * size)
        stream.write(buf)
        buf[:] = b"b" * size  # mutate after write(): the wire must carry the original
        view = memoryview(buf)
        stream.write(view[:5])
        view[:5] = b"ccccc"
        stream.write_eof()
        assert await stream.read() == b"a" * size + b"bbbbb"


@pytest.mark.parametrize("piece", [None, 48 * 1024], ids=["whole", "48KiB-pieces"])
async def test_large_transfer_integrity(piece: int | None) -> None:
    """2 MiB per stream, written whole or as separate bytes objects of 48 KiB each."""
    payload = bytes(range(251)) * 8192
    pieces = (
        [payload]
        if piece is None
        else [payload[i : i + piece] for i in range(0, len(payload), piece)]
    )

    async def transfer(stream: mio.Stream) -> bytes:
        async def send() -> None:
            for p in pieces:
                stream.write(p)
                await stream.drain()
            stream.write_eof()

        _, data = await asyncio.gather(send(), stream.read())
        return data

    async with mio_pair() as (client, _):
        streams = [await client.open_stream() for _ in range(4)]
        results = await asyncio.gather(*(transfer(s) for s in streams))
        assert all(r == payload for r in results)


# --------------------------------------------------------------------------------------------
# Pure framing over the in-memory pipe.


async def test_pipe_frames_split_at_max_frame_size() -> None:
    client, server = mio.pipe(mio.Config(max_frame_size=100), server_handler=echo)
    frames_before = client.frames_sent
    stream = await client.open_stream()
    stream.write(b"z" * 1000)
    stream.write_eof()
    assert await stream.read() == b"z" * 1000
    # OPEN + 10 DATA frames, the last one carrying HFR: no separate half-close frame.
    assert client.frames_sent - frames_before == 11
    client.close()
    await client.wait_closed()
    await server.wait_closed()


async def test_pipe_session_properties() -> None:
    client, server = mio.pipe()
    assert client.is_client
    assert not server.is_client
    assert not client.is_closed
    stream = await client.open_stream()
    assert stream.session is client
    assert stream.get_extra_info("stream_id") == 1
    assert client.stream_count == 1
    client.close()
    assert client.is_closed
    assert isinstance(client.close_error, mio.SessionClosedError)
    await server.wait_closed()
    assert server.is_closed
    assert server.close_error is not None
    assert server.close_error.code == 0


async def test_stream_ids_run_out_with_stream_limit_error() -> None:
    client, server = mio.pipe()
    client._next_id = mio.wire.MAX_STREAM_ID  # the last odd id (white-box: 2^31 opens is slow)
    last = await client.open_stream()
    assert last.id == mio.wire.MAX_STREAM_ID
    with pytest.raises(mio.StreamLimitError, match="exhausted"):
        await client.open_stream()
    last.write(b"still works")
    last.write_eof()
    peer = await asyncio.wait_for(server.accept_stream(), 5)
    assert await peer.read() == b"still works"
    client.close()
    await client.wait_closed()
    await server.wait_closed()


async def test_handler_tasks_come_from_the_loops_task_factory(loop_kind: str) -> None:
    # Handler tasks skip loop.create_task only while no task factory is set: one set by
    # the application (e.g. eager tasks on 3.12+) still makes them.
    loop = asyncio.get_running_loop()
    made: list[str] = []

    def factory(loop: asyncio.AbstractEventLoop, coro, **kw):  # type: ignore[no-untyped-def]
        made.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop, **kw)

    seen: list[asyncio.Task[object] | None] = []

    async def handler(stream: mio.Stream) -> None:
        seen.append(asyncio.current_task())
        await stream.send(await stream.read())

    server = await mio.serve(handler, "127.0.0.1", 0)
    client = await mio.connect("127.0.0.1", server.port)
    try:
        stream = await client.open_stream()
        assert await roundtrip(stream, b"a") == b"a"
        assert made == []  # no factory: made directly
        loop.set_task_factory(factory)
        try:
            stream = await client.open_stream()
            assert await roundtrip(stream, b"b") == b"b"
        finally:
            loop.set_task_factory(None)
        assert made.count("SessionCore._run_handler") == 1
        assert len(seen) == 2
        assert all(task is not None for task in seen)
    finally:
        client.close()
        await client.wait_closed()
        server.close()
        await server.wait_closed()


class _Sink(mio.StreamProtocol):
    def stream_opened(self, stream: mio.Stream) -> None:
        self.stream = stream

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> None:
        self.stream.close()


@pytest.mark.skipif(not hasattr(asyncio, "eager_task_factory"), reason="Python 3.12+")
@pytest.mark.parametrize("ending", ["close", "set_protocol"])
async def test_eager_handlers_that_never_suspend_keep_the_stream_count(ending: str) -> None:
    # With asyncio.eager_task_factory a handler runs inside create_task, before _on_open has
    # stored its task in stream._handled: one that returns at once must still count against
    # max_streams exactly once (not twice, not never), and leave no task behind.
    loop = asyncio.get_running_loop()
    quick = True

    async def handler(stream: mio.Stream) -> None:
        if not quick:
            await stream.read()
        elif ending == "close":
            stream.write(b"hi")
            stream.close()  # finishes the stream inside the eager step (RST NO_ERROR)
        else:
            stream.set_protocol(_Sink())  # the protocol owns it: finished later

    server = await mio.serve(handler, "127.0.0.1", 0, config=mio.Config(max_streams=2))
    client = await mio.connect("127.0.0.1", server.port)
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[arg-type]
    try:
        for _ in range(4):
            stream = await client.open_stream()
            stream.write(b"x")
            stream.write_eof()
            with contextlib.suppress(mio.StreamClosedError):
                await stream.read()
            await stream.wait_closed()
        (session,) = server.sessions
        await eventually(lambda: not session.streams)
        assert session._remote_count == 0
        assert not session._handler_tasks
        # and max_streams still holds: two waiting handlers, the third stream is refused
        quick = False
        waiting = [await client.open_stream() for _ in range(3)]
        for stream in waiting:
            stream.write(b"y")
        with pytest.raises(mio.StreamResetError):
            await waiting[2].read()
        for stream in waiting[:2]:
            stream.close()
    finally:
        loop.set_task_factory(None)
        client.close()
        await client.wait_closed()
        server.close()
        await server.wait_closed()
